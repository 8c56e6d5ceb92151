// SPDX-License-Identifier: GPL-3.0-or-later
//! The legal log (issue 7): hash chain, daily seals with a real RFC 3161 round trip against
//! a test TSA (`tests/tsa/`), detection of every kind of tampering, search and export,
//! owner extracts, and the retention purge. The tests that do not tamper with the SQLite
//! file directly run on PostgreSQL too (with `PEC_TEST_PG_URL`).

use crate::backends;
use crate::tsa::{self, TsaProcess};
use backends::Backend;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::NaiveDate;
use pec::crypto::testing::{self, TestPki};
use pec::crypto::{DigestAlg, PemSigner};
use pec::doubles::TestStore;
use pec::log::{self, TsaSettings, VerifyOptions};
use pec::message::build::Certification;
use pec::message::daticert::Destinatario;
use pec::message::kind::{MessageKind, ReceiptType, RecipientType};
use pec::message::time::Instant;
use pec::store::chain::ChainRecord;
use pec::store::{Accepted, EventKind, LogEvent, LogQuery, LogStore, Refused, SqliteStore, Store};
use rusqlite::{params, Connection};

/// 2024-03-14 (a Thursday), in Rome.
fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 14).unwrap()
}

/// `h:m` on 2024-03-14, Rome (UTC+1).
fn at(h: i64, m: i64) -> Instant {
    let (start, _) = log::day_bounds(day());
    Instant::from_unix(start + h * 3600 + m * 60)
}

fn after_the_day() -> Instant {
    Instant::from_unix(log::day_bounds(day()).1 + 600)
}

struct Tsa {
    _dir: tempfile::TempDir,
    pki: TestPki,
    /// make-tsa.sh's output: certificates, tsa.cnf, password.
    files: PathBuf,
    _child: TsaProcess,
    url: String,
}

/// Starts tsa.py on `cnf` (make-tsa.sh's when `None`) over HTTPS, requiring basic
/// authentication (user "pec") and a client certificate, as accredited TSAs do; `mode_file`
/// makes it play faults. Returns the process and its URL.
fn spawn_tsa(files: &Path, cnf: Option<&Path>, mode_file: Option<&Path>) -> (TsaProcess, String) {
    tsa::spawn(
        files,
        &tsa::Options {
            cnf,
            mode_file,
            https: true,
            basic_auth_user: Some("pec"),
            client_ca: Some(&files.join("../pki/ca.pem")),
            ..Default::default()
        },
    )
}

/// The test PKI and a running test TSA (HTTPS, authenticated), once per test binary.
fn tsa() -> &'static Tsa {
    // Leaked on purpose: tsa.py exits when this process ends and its stdin closes.
    static REF: OnceLock<&'static Tsa> = OnceLock::new();
    REF.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = testing::make_test_pki(&dir.path().join("pki")).unwrap();
        let files = dir.path().join("tsa");
        tsa::make_files(&files, &pki.dir);
        let (child, url) = spawn_tsa(&files, None, None);
        Box::leak(Box::new(Tsa {
            _dir: dir,
            pki,
            files,
            _child: child,
            url,
        }))
    })
}

/// Settings for the TSA at `url` (one of [`spawn_tsa`]'s), with every credential.
fn settings_for(url: &str) -> TsaSettings {
    let t = tsa();
    TsaSettings {
        url: url.to_string(),
        timeout: Duration::from_secs(20),
        ca_file: Some(t.pki.ca_cert.clone()),
        policy: Some("1.3.6.1.4.1.99999.1.1".into()),
        basic_auth: Some(("pec".into(), t.files.join("password"))),
        client_cert: Some((t.files.join("client.pem"), t.files.join("client.key"))),
        tls_ca_file: Some(t.pki.ca_cert.clone()),
    }
}

fn signer(pki: &TestPki) -> PemSigner {
    PemSigner::from_files(&pki.it_key, &pki.it_cert, None, DigestAlg::Sha256).unwrap()
}

fn tsa_settings() -> TsaSettings {
    settings_for(&tsa().url)
}

fn opts() -> VerifyOptions {
    VerifyOptions {
        tsa_ca: Some(tsa().pki.ca_cert.clone()),
        signer_ca: Some(tsa().pki.ca_cert.clone()),
    }
}

fn cert(pec_id: &str, sender: &str, to: &[&str], subject: &str) -> Certification {
    Certification {
        mittente: sender.into(),
        destinatari: to
            .iter()
            .map(|a| Destinatario {
                address: a.to_string(),
                tipo: RecipientType::Certificato,
            })
            .collect(),
        risposte: sender.into(),
        oggetto: subject.into(),
        identificativo: pec_id.into(),
        msgid: None,
        requested: ReceiptType::Completa,
        to: to.iter().map(|a| a.to_string()).collect(),
        cc: Vec::new(),
    }
}

/// A day of traffic through every insert path: two accepted messages with their
/// acceptance, a refused infected one (with quarantine), a delivery and an SMTP rejection.
fn populate(store: &dyn Store) {
    for (i, (sender, to, subject)) in [
        (
            "mario@pec.example.it",
            vec!["anna@pec.example.net"],
            "Fattura 12",
        ),
        (
            "anna@pec.example.net",
            vec!["mario@pec.example.it", "ufficio@pec.example.it"],
            "Ricorso",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let pec_id = format!("opec.{i}@pec.example.it");
        let a = Accepted {
            auth_at: None,
            pec_id: pec_id.clone(),
            queue_id: Some(format!("Q{i}")),
            at: at(9, i as i64),
            cert: cert(&pec_id, sender, &to, subject),
            login: sender.into(),
            provider: "PEC Example IT S.p.A.".into(),
        };
        store.record_accepted(&a).unwrap();
        assert!(store
            .acceptance_emitted(
                &pec_id,
                &format!("acc.{i}@pec.example.it"),
                at(9, i as i64 + 1)
            )
            .unwrap());
    }
    store
        .record_refused(&Refused {
            auth_at: None,
            pec_id: "opec.v@pec.example.it".into(),
            queue_id: None,
            at: at(10, 0),
            cert: cert(
                "opec.v@pec.example.it",
                "mario@pec.example.it",
                &["x@pec.example.net"],
                "virus",
            ),
            kind: MessageKind::NonAcceptanceVirus,
            reason: "Eicar-Test-Signature".into(),
            notice_id: "n.v@pec.example.it".into(),
            quarantine: Some(b"infected".to_vec()),
            provider: "PEC Example IT S.p.A.".into(),
            login: None,
        })
        .unwrap();
    store
        .log(&LogEvent {
            pec_id: "opec.0@pec.example.it".into(),
            at: at(11, 0),
            kind: EventKind::Issued(MessageKind::Delivery(ReceiptType::Completa)),
            sender: "mario@pec.example.it".into(),
            recipients: vec![("anna@pec.example.net".into(), RecipientType::Certificato)],
            subject: "Fattura 12".into(),
            related_ids: vec!["cons.0@pec.example.net".into()],
            provider: "PEC Example NET S.p.A.".into(),
            queue_id: None,
            outcome: "ok".into(),
            reason: None,
        })
        .unwrap();
    store
        .log(&LogEvent {
            pec_id: "opec.r@pec.example.it".into(),
            at: at(12, 0),
            kind: EventKind::RejectedInSmtp,
            sender: "luigi@pec.example.it".into(),
            recipients: vec![("anna@pec.example.net".into(), RecipientType::Certificato)],
            subject: "Troppo grande".into(),
            related_ids: Vec::new(),
            provider: "PEC Example IT S.p.A.".into(),
            queue_id: None,
            outcome: "refused".into(),
            reason: Some("size".into()),
        })
        .unwrap();
}

/// 8 records: envelope, acceptance ×2, non-acceptance, quarantine, delivery, rejection.
const RECORDS: i64 = 8;

fn fresh() -> (tempfile::TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pec.db");
    let store = SqliteStore::open(&path).unwrap();
    populate(&store);
    (dir, path, store)
}

/// A sealed day, time-stamped at the test TSA.
fn sealed() -> (tempfile::TempDir, PathBuf, SqliteStore) {
    let (dir, path, store) = fresh();
    let s = signer(&tsa().pki);
    log::seal_day(&store, &s, Some(&tsa_settings()), day(), after_the_day()).unwrap();
    (dir, path, store)
}

/// Populates `store` and seals the day, time-stamped at the test TSA.
fn seal_populated(store: &dyn pec::store::LogStore) {
    populate(store);
    let s = signer(&tsa().pki);
    log::seal_day(store, &s, Some(&tsa_settings()), day(), after_the_day()).unwrap();
}

/// A raw connection for tampering, with the append-only triggers dropped.
fn raw(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch("DROP TRIGGER events_append_only; DROP TRIGGER seals_append_only;")
        .unwrap();
    c
}

fn problem_ids(report: &pec::store::VerifyReport) -> Vec<Option<i64>> {
    report.problems.iter().map(|p| p.id).collect()
}

both!(every_insert_path_chains_and_the_chain_verifies);
fn every_insert_path_chains_and_the_chain_verifies(backend: &Backend) {
    let store = &*backend.store;
    populate(store);
    let report = store.verify_chain(None, None).unwrap();
    assert_eq!(report.records, RECORDS as u64);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let all = store.search_events(&LogQuery::default()).unwrap();
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=RECORDS).collect::<Vec<_>>());
    assert!(all.iter().all(|e| e.hash.len() == 32));
}

both!(a_sealed_day_round_trips_through_a_real_tsa_and_verifies);
fn a_sealed_day_round_trips_through_a_real_tsa_and_verifies(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = &*backend.store;
    seal_populated(store);
    let report = log::verify(store, None, None, &opts()).unwrap();
    assert_eq!((report.records, report.seals), (RECORDS as u64, 1));
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // The token verifies with OpenSSL's own TSA verifier over the day's export.
    let (from, to) = log::day_bounds(day());
    let seal = store.seals(from, to).unwrap().remove(0);
    assert_eq!(seal.count, RECORDS);
    let export = store.export_range(from, to).unwrap().bytes;
    std::fs::write(dir.path().join("export.jsonl"), &export).unwrap();
    std::fs::write(dir.path().join("token.der"), seal.tst.as_ref().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(dir.path().join("token.der"))
        .arg("-data")
        .arg(dir.path().join("export.jsonl"))
        .arg("-CAfile")
        .arg(&tsa().pki.ca_cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The export is one canonical JSON line per record.
    assert_eq!(
        export.iter().filter(|b| **b == b'\n').count(),
        RECORDS as usize
    );

    // Sealing twice is refused; the claim says the day is done.
    let s = signer(&tsa().pki);
    assert!(log::seal_day(store, &s, None, day(), after_the_day()).is_err());
    assert!(
        log::seal_day_once(store, &s, None, day(), after_the_day(), "me")
            .unwrap()
            .is_none()
    );
    // An open day cannot be sealed, nor a day that closed less than 5 minutes ago.
    let today = log::legal_day(after_the_day());
    assert!(log::seal_day(store, &s, None, today, after_the_day()).is_err());
    let just_after = Instant::from_unix(log::day_bounds(today).1 + 299);
    let err = log::seal_day(store, &s, None, today, just_after).unwrap_err();
    assert!(err.to_string().contains("can be sealed from"), "{err}");
}

both!(a_token_for_other_data_or_from_an_untrusted_tsa_is_refused);
fn a_token_for_other_data_or_from_an_untrusted_tsa_is_refused(backend: &Backend) {
    let _dir = tempfile::tempdir().unwrap();
    let store = &*backend.store;
    seal_populated(store);
    let (from, to) = log::day_bounds(day());
    let seal = store.seals(from, to).unwrap().remove(0);
    let token = seal.tst.unwrap();
    let sha: [u8; 32] = seal.export_sha256[..].try_into().unwrap();
    pec::crypto::tsa::verify_token(&token, &sha, Some(&tsa().pki.ca_cert)).unwrap();
    assert!(pec::crypto::tsa::verify_token(&token, &[0; 32], Some(&tsa().pki.ca_cert)).is_err());
    // The provider leaf is no CA: the TSA does not chain to it.
    assert!(pec::crypto::tsa::verify_token(&token, &sha, Some(&tsa().pki.it_cert)).is_err());
}

#[test]
fn an_altered_field_is_found_at_its_id() {
    let (_dir, path, store) = sealed();
    raw(&path)
        .execute("UPDATE events SET subject = 'Fattura 13' WHERE id = 3", [])
        .unwrap();
    let report = log::verify(&store, None, None, &opts()).unwrap();
    assert_eq!(report.problems[0].id, Some(3), "{:?}", report.problems);
    assert!(report.problems[0].what.contains("hash mismatch"));
    // The seal of the day no longer matches either.
    assert!(report
        .problems
        .iter()
        .any(|p| p.day.as_deref() == Some("2024-03-14")));
}

#[test]
fn a_deleted_record_is_found_at_the_next_id() {
    let (_dir, path, store) = sealed();
    raw(&path)
        .execute("DELETE FROM events WHERE id = 4", [])
        .unwrap();
    let report = log::verify(&store, None, None, &opts()).unwrap();
    let chain: Vec<_> = report.problems.iter().filter(|p| p.day.is_none()).collect();
    assert!(
        !chain.is_empty() && chain.iter().all(|p| p.id == Some(5)),
        "{chain:?}"
    );
    assert!(report.problems.iter().any(|p| p.day.is_some()));
}

#[test]
fn deleting_the_last_record_of_a_sealed_day_is_found_by_the_seal() {
    let (_dir, path, store) = sealed();
    raw(&path)
        .execute("DELETE FROM events WHERE id = ?1", params![RECORDS])
        .unwrap();
    let report = log::verify(&store, None, None, &opts()).unwrap();
    assert!(
        report.problems.iter().all(|p| p.day.is_some()),
        "{:?}",
        report.problems
    );
    assert!(!report.problems.is_empty());
}

#[test]
fn an_inserted_forged_record_is_found() {
    let (_dir, path, store) = sealed();
    // A careless forgery: any hash.
    let c = raw(&path);
    c.execute(
        "INSERT INTO events (id, pec_id, at, kind, sender, recipients, subject, related_ids,
                             provider, outcome, prev_hash, hash)
         VALUES (?1, 'forged', ?2, 'Consegna', 'a@b.it', '[]', '', '[]', 'P', 'ok', ?3, ?3)",
        params![RECORDS + 1, at(13, 0).unix(), vec![7u8; 32]],
    )
    .unwrap();
    let report = store.verify_chain(None, None).unwrap();
    assert!(
        problem_ids(&report).contains(&Some(RECORDS + 1)),
        "{:?}",
        report.problems
    );

    // A careful one, chained correctly onto the tail: only the seal shows it.
    c.execute("DELETE FROM events WHERE id = ?1", params![RECORDS + 1])
        .unwrap();
    let prev: Vec<u8> = c
        .query_row(
            "SELECT hash FROM events WHERE id = ?1",
            params![RECORDS],
            |r| r.get(0),
        )
        .unwrap();
    let forged = ChainRecord {
        id: RECORDS + 1,
        pec_id: "forged".into(),
        at: at(13, 0).unix(),
        kind: "Consegna".into(),
        receipt_type: Some("completa".into()),
        sender: "a@b.it".into(),
        recipients: "[]".into(),
        subject: String::new(),
        related_ids: "[]".into(),
        provider: "P".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
        prev_hash: prev,
    };
    c.execute(
        "INSERT INTO events (id, pec_id, at, kind, receipt_type, sender, recipients, subject,
                             related_ids, provider, outcome, prev_hash, hash)
         VALUES (?1, 'forged', ?2, 'Consegna', 'completa', 'a@b.it', '[]', '', '[]', 'P', 'ok',
                 ?3, ?4)",
        params![RECORDS + 1, forged.at, forged.prev_hash, &forged.hash()[..]],
    )
    .unwrap();
    let report = log::verify(&store, None, None, &opts()).unwrap();
    assert!(!report.problems.is_empty());
    assert!(report
        .problems
        .iter()
        .all(|p| p.day.as_deref() == Some("2024-03-14")));
}

#[test]
fn two_swapped_records_are_found() {
    let (_dir, path, store) = sealed();
    let c = raw(&path);
    // Swap the positions of records 2 and 3 (each keeps its own content and hashes).
    c.execute_batch(
        "UPDATE events SET id = -2 WHERE id = 2;
         UPDATE events SET id = 2 WHERE id = 3;
         UPDATE events SET id = 3 WHERE id = -2;",
    )
    .unwrap();
    let report = log::verify(&store, None, None, &opts()).unwrap();
    let ids = problem_ids(&report);
    assert!(
        ids.contains(&Some(2)) && ids.contains(&Some(3)),
        "{:?}",
        report.problems
    );
}

#[test]
fn an_altered_seal_is_found() {
    for (column, value) in [
        ("export_sha256", vec![0u8; 32]),
        ("signature", vec![0x30, 0x00]),
        ("tst", vec![0x30, 0x00]),
        ("count", Vec::new()),
    ] {
        let (_dir, path, store) = sealed();
        let c = raw(&path);
        if column == "count" {
            c.execute("UPDATE seals SET count = count - 1", []).unwrap();
        } else {
            c.execute(&format!("UPDATE seals SET {column} = ?1"), params![value])
                .unwrap();
        }
        let report = log::verify(&store, None, None, &opts()).unwrap();
        assert!(
            !report.problems.is_empty()
                && report
                    .problems
                    .iter()
                    .all(|p| p.day.as_deref() == Some("2024-03-14")),
            "{column}: {:?}",
            report.problems
        );
    }
}

#[test]
fn a_signature_by_another_key_is_found() {
    let (_dir, path, store) = fresh();
    // Sealed with the outsider's key: valid CMS, but not chaining to the provider CA.
    let outsider = PemSigner::from_files(
        &tsa().pki.outsider_key,
        &tsa().pki.outsider_cert,
        None,
        DigestAlg::Sha256,
    )
    .unwrap();
    log::seal_day(
        &store,
        &outsider,
        Some(&tsa_settings()),
        day(),
        after_the_day(),
    )
    .unwrap();
    let report = log::verify(&store, None, None, &opts()).unwrap();
    assert!(
        report.problems.iter().any(|p| p.what.contains("signature")),
        "{:?}",
        report.problems
    );
    drop(path);
}

both!(search_by_every_criterion);
fn search_by_every_criterion(backend: &Backend) {
    let store = &*backend.store;
    populate(store);
    let ids = |q: LogQuery| -> Vec<i64> {
        store
            .search_events(&q)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    };
    let q = LogQuery::default;
    // mario sent opec.0 (1, 2, 7) and opec.v (5, 6), and received opec.1 (3, 4).
    assert_eq!(
        ids(LogQuery {
            mailbox: Some("MARIO@pec.example.it".into()),
            ..q()
        }),
        vec![1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        ids(LogQuery {
            sender: Some("anna@pec.example.net".into()),
            ..q()
        }),
        vec![3, 4]
    );
    assert_eq!(
        ids(LogQuery {
            recipient: Some("anna@pec.example.net".into()),
            ..q()
        }),
        vec![1, 2, 7, 8]
    );
    assert_eq!(
        ids(LogQuery {
            kind: Some("Accettazione".into()),
            ..q()
        }),
        vec![2, 4]
    );
    assert_eq!(
        ids(LogQuery {
            subject: Some("fattura".into()),
            ..q()
        }),
        vec![1, 2, 7]
    );
    assert_eq!(
        ids(LogQuery {
            pec_id: Some("opec.1@pec.example.it".into()),
            ..q()
        }),
        vec![3, 4]
    );
    assert_eq!(
        ids(LogQuery {
            from: Some(at(10, 0)),
            to: Some(at(12, 0)),
            ..q()
        }),
        vec![5, 6, 7]
    );
    assert_eq!(
        ids(LogQuery {
            mailbox: Some("anna@pec.example.net".into()),
            from: Some(at(11, 0)),
            ..q()
        }),
        vec![7, 8]
    );
    assert_eq!(
        ids(LogQuery {
            limit: Some(2),
            ..q()
        }),
        vec![1, 2]
    );
}

both!(exports_and_owner_extracts);
fn exports_and_owner_extracts(backend: &Backend) {
    let store = &*backend.store;
    populate(store);
    let all = store.search_events(&LogQuery::default()).unwrap();
    let csv = log::to_csv(&all);
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1 + RECORDS as usize);
    assert_eq!(lines[0], log::CSV_HEADER.trim_end());
    assert!(
        lines[1].starts_with("1,14/03/2024,09:01:00+0100,BustaTrasporto,,opec.0@pec.example.it,"),
        "{}",
        lines[1]
    );
    let json: serde_json::Value = serde_json::from_str(&log::to_json(&all)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), RECORDS as usize);
    assert_eq!(json[6]["kind"], "Consegna");
    assert_eq!(json[6]["receipt_type"], "completa");
    assert_eq!(json[5]["receipt_type"], serde_json::Value::Null);
    assert_eq!(json[0]["recipients"][0]["address"], "anna@pec.example.net");

    // The owner extract shows only the owner's messages, the same from either store.
    let (from, to) = (at(0, 0), after_the_day());
    let luigi = log::log_extract_for_owner(store, "luigi@pec.example.it", from, to).unwrap();
    assert_eq!(luigi.lines().count(), 2, "{luigi}");
    assert!(luigi.contains("Troppo grande") && !luigi.contains("Fattura"));
    let mem = TestStore::new();
    populate(&mem);
    let strip_hash = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    for owner in [
        "mario@pec.example.it",
        "ufficio@pec.example.it",
        "nobody@pec.example.it",
    ] {
        let a = log::log_extract_for_owner(store, owner, from, to).unwrap();
        let b = log::log_extract_for_owner(&mem, owner, from, to).unwrap();
        assert_eq!(strip_hash(&a), strip_hash(&b), "{owner}");
    }
    let ufficio = log::log_extract_for_owner(store, "ufficio@pec.example.it", from, to).unwrap();
    assert_eq!(ufficio.lines().count(), 3, "{ufficio}");
    assert!(!ufficio.contains("Fattura"));
}

both!(the_purge_deletes_only_sealed_days_and_keeps_the_chain_verifiable);
fn the_purge_deletes_only_sealed_days_and_keeps_the_chain_verifiable(backend: &Backend) {
    let store = &*backend.store;
    populate(store);
    let s = signer(&tsa().pki);
    let next_day = day().succ_opt().unwrap();
    let (next_start, next_end) = log::day_bounds(next_day);
    store
        .log(&LogEvent {
            pec_id: "opec.n@pec.example.it".into(),
            at: Instant::from_unix(next_start + 3600),
            kind: EventKind::Issued(MessageKind::TransportEnvelope),
            sender: "mario@pec.example.it".into(),
            recipients: Vec::new(),
            subject: "dopo".into(),
            related_ids: Vec::new(),
            provider: "P".into(),
            queue_id: None,
            outcome: "ok".into(),
            reason: None,
        })
        .unwrap();
    let now = Instant::from_unix(next_end + 10);
    // Nothing sealed: the log purge stops at the first record, the quarantine goes.
    let r = store.purge(now, now, now, "P").unwrap();
    assert_eq!((r.events, r.quarantined), (0, 1));
    assert!(r.stopped_at.unwrap().contains("record 1"));
    // Only the first day sealed: its records go, the next day's stay.
    log::seal_day(store, &s, None, day(), now).unwrap();
    let r = store.purge(now, now, now, "P").unwrap();
    assert_eq!((r.events, r.anchor_id), (RECORDS as u64, Some(RECORDS)));
    assert_eq!(r.seals, 1);
    let left = store.search_events(&LogQuery::default()).unwrap();
    let kinds: Vec<EventKind> = left.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Issued(MessageKind::TransportEnvelope),
            EventKind::Purged,
            EventKind::Purged
        ]
    );
    // The chain verifies across the purge boundary, and keeps growing from it.
    let report = store.verify_chain(None, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(left[0].id, RECORDS + 1);
    store.log(&left[0].event).unwrap();
    let report = store.verify_chain(None, None).unwrap();
    assert!(
        report.problems.is_empty() && report.records == 4,
        "{report:?}"
    );
}

#[test]
fn purge_cutoffs_follow_the_retention_months() {
    let now = Instant::parse_cli("2026-11-23T05:00:00Z").unwrap();
    let cut = pec::store::months_before(now, 30).unwrap();
    assert_eq!(cut.rfc3339(), "2024-05-23T05:00:00Z");
}

/// `pec log …` end to end on a configuration file: seal (with the TSA), verify, search,
/// export, purge; a tampered record makes verify exit 1 and name its id.
#[test]
fn the_pec_log_commands() {
    let (dir, path, store) = fresh();
    drop(store);
    let pki = &tsa().pki;
    let config = dir.path().join("pec.toml");
    std::fs::write(
        &config,
        format!(
            r#"[provider]
name = "PEC Example IT S.p.A."
service_address = "posta-certificata@pec.example.it"
mail_receipt = "ricevute@pec.example.it"
domains = ["pec.example.it"]
[signing]
backend = "pem"
key_file = "{}"
cert_file = "{}"
seal_key_file = "{}"
seal_cert_file = "{}"
[store]
path = "{}"
[index]
ldif = "/nonexistent.ldif"
[antivirus]
clamd = "tcp:127.0.0.1:3310"
[log]
tsa_url = "{}"
tsa_ca_file = "{}"
tsa_tls_ca_file = "{}"
tsa_policy = "1.3.6.1.4.1.99999.1.1"
tsa_username = "pec"
tsa_password_file = "{}"
tsa_client_cert = "{}"
tsa_client_key = "{}"
"#,
            pki.it_key.display(),
            pki.it_cert.display(),
            pki.it_seal_key.display(),
            pki.it_seal_cert.display(),
            path.display(),
            tsa().url,
            pki.ca_cert.display(),
            pki.ca_cert.display(),
            tsa().files.join("password").display(),
            tsa().files.join("client.pem").display(),
            tsa().files.join("client.key").display(),
        ),
    )
    .unwrap();
    let pec = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pec"))
            .arg("log")
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = pec(&["seal", "--day", "2024-03-14"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("sealed 2024-03-14: 8 records") && out.contains("time-stamped"),
        "{out}"
    );
    let (code, out, err) = pec(&["verify", "--ca", pki.ca_cert.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("8 records, 1 seals checked: ok"), "{out}");
    // Issue 19: the seal is signed by the seal key, whose certificate it carries, not by
    // the PEC message key.
    let der = |pem: &Path| {
        openssl::x509::X509::from_pem(&std::fs::read(pem).unwrap())
            .unwrap()
            .to_der()
            .unwrap()
    };
    let seal = SqliteStore::open(&path)
        .unwrap()
        .seals(i64::MIN, i64::MAX)
        .unwrap();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&seal[0].signature, &der(&pki.it_seal_cert)));
    assert!(!contains(&seal[0].signature, &der(&pki.it_cert)));

    let (code, out, _) = pec(&["search", "--mailbox", "luigi@pec.example.it"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 1);
    assert!(
        out.starts_with("8 14/03/2024 12:00:00+0100 RifiutoSmtp "),
        "{out}"
    );
    let (_, out, _) = pec(&[
        "export",
        "--from",
        "2024-03-14",
        "--to",
        "2024-03-14",
        "--kind",
        "Accettazione",
    ]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (_, out, _) = pec(&["export", "--format", "json", "--subject", "RICORSO"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let pdf = config.with_file_name("luigi.pdf");
    let (code, _, err) = pec(&[
        "export",
        "--format",
        "pdf",
        "--mailbox",
        "luigi@pec.example.it",
        "--output",
        pdf.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let pdf = std::fs::read(&pdf).unwrap();
    assert!(pdf.starts_with(b"%PDF-1.4\n") && pdf.ends_with(b"%%EOF\n"));
    let text = String::from_utf8_lossy(&pdf);
    assert!(text.contains("(Registro dei messaggi - casella luigi@pec.example.it)"));
    assert!(
        text.contains("RifiutoSmtp") && !text.contains("Fattura"),
        "only luigi's"
    );
    let (code, _, err) = pec(&["search", "--from", "yesterday"]);
    assert_eq!(code, Some(2), "{err}");

    // The quarantine, for the authorities, and the kept receipts (none here).
    let quarantine = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pec"))
            .arg("quarantine")
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = quarantine(&["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(" opec.v@pec.example.it 8 bytes \"Eicar-Test-Signature\" "),
        "{out}"
    );
    let id = out.split(' ').next().unwrap().to_string();
    let (code, out, _) = quarantine(&["show", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("verdict: Eicar-Test-Signature"), "{out}");
    let exported = config.with_file_name("q.eml");
    let (code, _, err) = quarantine(&["export", &id, "-o", exported.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::read(&exported).unwrap(), b"infected");
    // Bad input: an unknown id fails (1), a non-numeric one or a bad date is a usage
    // error (2).
    let (code, _, err) = quarantine(&["export", "424242"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no quarantined message 424242"), "{err}");
    assert_eq!(quarantine(&["show", "uno"]).0, Some(2));
    assert_eq!(quarantine(&["list", "--from", "ieri"]).0, Some(2));
    assert_eq!(
        quarantine(&["list", "--pec-id", "nobody@pec.example.it"]).1,
        ""
    );
    let (code, out, _) = pec(&["receipts", "--pec-id", "opec.v@pec.example.it"]);
    assert_eq!((code, out.as_str()), (Some(0), ""));

    // Retention is 30 months: 2024-03 is older than that (the test runs after 2026-09).
    let (code, out, _) = pec(&["purge"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("purged 8 records, 1 seals, 1 quarantined messages, 0 kept receipts"),
        "{out}"
    );
    let (code, out, _) = pec(&["verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(quarantine(&["list"]).1, "", "purged");

    raw(&path)
        .execute("UPDATE events SET sender = 'x@y.it' WHERE id = 9", [])
        .unwrap();
    let (code, out, _) = pec(&["verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("record 9: hash mismatch"), "{out}");
}

both!(one_process_seals_a_day_and_an_abandoned_claim_expires);
fn one_process_seals_a_day_and_an_abandoned_claim_expires(backend: &Backend) {
    let store = &*backend.store;
    populate(store);
    let now = after_the_day();
    assert!(store.claim_seal("2024-03-14", "a:1", now).unwrap());
    assert!(!store.claim_seal("2024-03-14", "b:2", now).unwrap());
    // After an hour the claim is considered abandoned.
    let later = Instant::from_unix(now.unix() + 3601);
    assert!(store.claim_seal("2024-03-14", "b:2", later).unwrap());
    store.release_seal_claim("2024-03-14").unwrap();
    let s = signer(&tsa().pki);
    let seal = log::seal_day_once(store, &s, None, day(), later, "c:3").unwrap();
    assert_eq!(seal.unwrap().seal.count, RECORDS);
    assert!(!store.claim_seal("2024-03-14", "d:4", later).unwrap());
    // A verification limited to another day sees neither these records nor the seal.
    let next = Instant::from_unix(log::day_bounds(day()).1);
    let r = log::verify(store, Some(next), None, &VerifyOptions::default()).unwrap();
    assert_eq!((r.records, r.seals), (0, 0));
    let r = log::verify(store, Some(at(10, 0)), Some(at(11, 30)), &opts()).unwrap();
    assert_eq!((r.records, r.seals), (3, 1));
    // Sealed without a TSA: verify says so.
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].what.contains("not time-stamped"));
}

// The `pec serve` task: seals the last closed day and the unsealed days before it, once;
// the log starts with its first record, so the empty days before it are not sealed (a
// fresh installation seals nothing from before it existed).
both!(the_daily_sealer_seals_the_closed_days_once);
fn the_daily_sealer_seals_the_closed_days_once(backend: &Backend) {
    let store = &*backend.store;
    populate(store);
    let store = backend.store.clone();
    let signer: std::sync::Arc<dyn pec::crypto::Signer> = std::sync::Arc::new(signer(&tsa().pki));
    let clock = std::sync::Arc::new(pec::message::time::FixedClock::new(after_the_day()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = rt.spawn(log::daily_sealer(
        store.clone(),
        signer,
        Some(tsa_settings()),
        Duration::from_secs(60),
        clock,
        stop_rx,
    ));
    let (from, to) = log::day_bounds(day());
    let week = from - 6 * 86_400;
    rt.block_on(async {
        for _ in 0..200 {
            if !store.seals(week, to).unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    });
    let seals = store.seals(week, to).unwrap();
    let days: Vec<&str> = seals.iter().map(|s| s.day.as_str()).collect();
    // The days are tried oldest first: when the last one is sealed, the six empty days
    // before the first record were passed over.
    assert_eq!(days, ["2024-03-14"]);
    assert_eq!(seals[0].count, RECORDS);
    assert!(seals.iter().all(|s| s.tst.is_some()));
    let report = log::verify(&*store, None, None, &opts()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.seals, 1);
}

/// Seals stay verifiable for the whole retention: the provider certificate is checked as of
/// the sealing, not today (this one expired on 2021-01-01).
#[test]
fn a_seal_made_before_the_certificate_expired_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
    let day = NaiveDate::from_ymd_opt(2020, 6, 10).unwrap();
    let (from, to) = log::day_bounds(day);
    let mut e = LogEvent {
        pec_id: "opec.old@pec.example.it".into(),
        at: Instant::from_unix(from + 3600),
        kind: EventKind::Issued(MessageKind::TransportEnvelope),
        sender: "mario@pec.example.it".into(),
        recipients: Vec::new(),
        subject: "2020".into(),
        related_ids: Vec::new(),
        provider: "P".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
    };
    store.log(&e).unwrap();
    let pki = &tsa().pki;
    let expired =
        PemSigner::from_files(&pki.expired_key, &pki.expired_cert, None, DigestAlg::Sha256)
            .unwrap();
    log::seal_day(&store, &expired, None, day, Instant::from_unix(to + 3600)).unwrap();
    e.at = Instant::from_unix(to + 7200);
    store.log(&e).unwrap();
    let r = log::verify(&store, None, None, &opts()).unwrap();
    let what: Vec<&str> = r.problems.iter().map(|p| p.what.as_str()).collect();
    assert_eq!(what, ["not time-stamped"], "{:?}", r.problems);
}

/// A TSA of its own for a test that plays faults (its mode file, its serial file), with
/// the shared TSA's certificates and credentials. Returns the process, its URL and the
/// mode file (absent: answers normally).
fn fault_tsa(dir: &Path) -> (TsaProcess, String, PathBuf) {
    let files = &tsa().files;
    let cnf = std::fs::read_to_string(files.join("tsa.cnf")).unwrap();
    let cnf = cnf.replace(
        "serial = $dir/tsaserial",
        &format!("serial = {}/serial", dir.display()),
    );
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    std::fs::write(dir.join("tsa.cnf"), cnf).unwrap();
    let mode = dir.join("mode");
    let (child, url) = spawn_tsa(files, Some(&dir.join("tsa.cnf")), Some(&mode));
    (child, url, mode)
}

// Issue 19: a TSA that is down, or that answers what cannot be believed (a token over other
// data, from an expired certificate, without our nonce, a refusal, garbage), does not stop
// the seal and is never believed: the seal is stored without its stamp, each retry fails
// with the reason and leaves it so, `pec status`'s overdue list names the day once the
// grace is over; when the TSA is back the stamp is added once, and the seal verifies.
both!(a_faulty_tsa_leaves_the_seal_waiting_for_its_stamp_until_a_good_one);
fn a_faulty_tsa_leaves_the_seal_waiting_for_its_stamp_until_a_good_one(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_tsa, url, mode) = fault_tsa(dir.path());
    let settings = settings_for(&url);
    let store = &*backend.store;
    populate(store);
    let s = signer(&tsa().pki);

    std::fs::write(&mode, "down").unwrap();
    let sealed = log::seal_day(store, &s, Some(&settings), day(), after_the_day()).unwrap();
    let err = sealed.stamp_error.expect("the stamp failed").to_string();
    assert!(err.contains("503"), "{err}");
    assert!(sealed.seal.tst.is_none());
    assert_eq!(sealed.seal.tsa_url.as_deref(), Some(url.as_str()));
    let (from, to) = log::day_bounds(day());
    assert_eq!(
        store.seals(from, to).unwrap().len(),
        1,
        "the seal is stored"
    );
    // Within the grace nothing is overdue; past it the day is.
    let grace = Duration::from_secs(6 * 3600);
    let before = Instant::from_unix(to + 3600);
    assert!(log::overdue_stamps(store, grace, before)
        .unwrap()
        .is_empty());
    let past = Instant::from_unix(to + 6 * 3600 + 1);
    assert_eq!(
        log::overdue_stamps(store, grace, past).unwrap(),
        ["2024-03-14"]
    );

    let pending = log::unstamped(store, i64::MIN, i64::MAX).unwrap();
    assert_eq!(pending.len(), 1);
    for (fault, reason) in [
        ("down", "503"),
        ("other-imprint", "other data"),
        ("expired", "signature"),
        ("no-nonce", "nonce"),
        ("refuse", "status 2 (refused)"),
        ("garbage", "time-stamp token"),
    ] {
        std::fs::write(&mode, fault).unwrap();
        let err = match log::stamp_seal(store, &settings, &pending[0]) {
            Err(e) => e.to_string(),
            Ok(added) => panic!("{fault}: a stamp was accepted (added: {added})"),
        };
        assert!(err.contains(reason), "{fault}: {err}");
        assert_eq!(
            log::unstamped(store, i64::MIN, i64::MAX).unwrap().len(),
            1,
            "{fault}: still waiting"
        );
    }
    // A token from the expired certificate would verify as of its own time only if the
    // certificate was valid then: it is not (genTime is now).
    std::fs::write(&mode, "ok").unwrap();
    assert!(log::stamp_seal(store, &settings, &pending[0]).unwrap());
    assert!(log::unstamped(store, i64::MIN, i64::MAX)
        .unwrap()
        .is_empty());
    assert!(log::overdue_stamps(store, grace, past).unwrap().is_empty());
    // Once only: a second stamp is not added over the first.
    assert!(!store
        .add_seal_stamp("2024-03-14", b"x", "http://x/")
        .unwrap());
    let report = log::verify(store, None, None, &opts()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// The seals table accepts one change: a missing token added. Anything else is refused by
/// the database itself (migration 13).
#[test]
fn a_seal_accepts_no_other_change() {
    let (_dir, path, _store) = sealed();
    let db = Connection::open(&path).unwrap();
    let err = db
        .execute("UPDATE seals SET count = count + 1", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = db.execute("UPDATE seals SET tst = X'00'", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

/// The TSA's authentication: without the password, with a wrong one, without the client
/// certificate or without trusting its server certificate, no token.
#[test]
fn the_tsa_wants_its_credentials() {
    let sha = [7u8; 32];
    let good = tsa_settings();
    pec::crypto::tsa::timestamp(&good, &sha).unwrap();
    let mut s = good.clone();
    s.basic_auth = None;
    let err = pec::crypto::tsa::timestamp(&s, &sha).unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wrong"), "wrong\n").unwrap();
    s.basic_auth = Some(("pec".into(), dir.path().join("wrong")));
    let err = pec::crypto::tsa::timestamp(&s, &sha).unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let mut s = good.clone();
    s.client_cert = None;
    assert!(pec::crypto::tsa::timestamp(&s, &sha).is_err());
    let mut s = good.clone();
    s.tls_ca_file = Some(tsa().pki.it_cert.clone());
    let err = pec::crypto::tsa::timestamp(&s, &sha).unwrap_err();
    assert!(err.to_string().contains("tls"), "{err}");
    // A policy the TSA does not issue under: refused by the TSA, or a token not believed.
    let mut s = good.clone();
    s.policy = Some("1.2.3.4".into());
    assert!(pec::crypto::tsa::timestamp(&s, &sha).is_err());
    // A TSA not chained to the configured CA is not believed.
    let mut s = good;
    s.ca_file = Some(tsa().pki.it_cert.clone());
    assert!(pec::crypto::tsa::timestamp(&s, &sha).is_err());
}

/// The HTTPS TSA's TLS context is built once for its settings and reused by every stamp;
/// it is built again when one of its files changes, so a CA file rewritten in place applies
/// at the next stamp without a restart.
#[test]
fn one_tls_context_serves_every_stamp_until_its_files_change() {
    use pec::crypto::tsa::{timestamp, tls_context_builds};
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("server-ca.pem");
    std::fs::copy(&tsa().pki.ca_cert, &ca).unwrap();
    let mut s = tsa_settings();
    s.tls_ca_file = Some(ca.clone());
    assert_eq!(tls_context_builds(&s), 0);
    for i in 0..4u8 {
        timestamp(&s, &[i; 32]).unwrap();
    }
    assert_eq!(tls_context_builds(&s), 1);
    // The same file now holds a certificate that did not issue the server's: refused.
    std::fs::copy(&tsa().pki.it_cert, &ca).unwrap();
    let err = timestamp(&s, &[9; 32]).unwrap_err();
    assert!(err.to_string().contains("tls"), "{err}");
    assert_eq!(tls_context_builds(&s), 2);
    // And back to the server's CA (one more line, another length): stamped again.
    let pem = std::fs::read_to_string(&tsa().pki.ca_cert).unwrap();
    std::fs::write(&ca, format!("{pem}\n")).unwrap();
    timestamp(&s, &[10; 32]).unwrap();
    timestamp(&s, &[11; 32]).unwrap();
    assert_eq!(tls_context_builds(&s), 3);
}

/// With `tls_ca_file` that file alone is trusted for the TSA's server: a system trust store
/// that trusts the server (`SSL_CERT_FILE` naming its CA, set in a child process running
/// this test alone) is not consulted. Without `tls_ca_file`, the same system store is.
#[test]
fn the_tls_ca_file_is_trusted_alone() {
    use pec::crypto::tsa::timestamp;
    const CHILD: &str = "PEC_TEST_TSA_SYSTEM_STORE_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "legal_log::the_tls_ca_file_is_trusted_alone",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    // The child: the only test running in this process, before any TLS connection.
    std::env::set_var("SSL_CERT_FILE", &tsa().pki.ca_cert);
    let mut s = tsa_settings();
    s.tls_ca_file = None;
    timestamp(&s, &[1; 32]).unwrap();
    s.tls_ca_file = Some(tsa().pki.it_cert.clone());
    let err = timestamp(&s, &[2; 32]).unwrap_err();
    assert!(err.to_string().contains("tls"), "{err}");
}

/// Runs `openssl` with `args` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS server certificate and key under `dir` named `name`: for `san`
/// (subjectAltName), issued by the test CA, or by a CA of its own when `own_ca`.
fn server_cert(dir: &Path, name: &str, san: &str, own_ca: bool) -> (PathBuf, PathBuf) {
    let (ca_cert, ca_key) = if own_ca {
        let (c, k) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &k,
                "-out",
                &c,
                "-days",
                "30",
                "-subj",
                "/CN=Another CA",
            ],
        );
        (dir.join(c), dir.join(k))
    } else {
        let pki = &tsa().pki;
        (pki.ca_cert.clone(), pki.dir.join("ca.key"))
    };
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "[ext]\nbasicConstraints = critical, CA:FALSE\nextendedKeyUsage = serverAuth\n\
             subjectAltName = {san}\n"
        ),
    )
    .unwrap();
    let (key, csr, cert) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=tsa server",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca_cert.to_str().unwrap(),
            "-CAkey",
            ca_key.to_str().unwrap(),
            "-set_serial",
            "0x4001",
            "-days",
            "30",
            "-sha256",
            "-extfile",
            ext.to_str().unwrap(),
            "-extensions",
            "ext",
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// A test TSA over HTTPS serving `cert`, with the suite's credentials.
fn spawn_tsa_with_cert(cert: &(PathBuf, PathBuf)) -> (TsaProcess, String) {
    let files = &tsa().files;
    tsa::spawn(
        files,
        &tsa::Options {
            https: true,
            server_cert: Some((&cert.0, &cert.1)),
            basic_auth_user: Some("pec"),
            client_ca: Some(&files.join("../pki/ca.pem")),
            ..Default::default()
        },
    )
}

/// The TSA's server certificate must name the host of the URL: a certificate of the
/// trusted CA for another name is refused (hostname verification), at the IP address and
/// at a host name alike; the same CA's certificate for the right names is accepted (the
/// control: only the name differs).
#[test]
fn a_tsa_certificate_for_another_name_is_refused() {
    use pec::crypto::tsa::timestamp;
    let dir = tempfile::tempdir().unwrap();
    let other = server_cert(dir.path(), "other", "DNS:tsa.other.example", false);
    let (_child, url) = spawn_tsa_with_cert(&other);
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let s = settings_for(&format!("https://{host}:{port}/tsa"));
        let err = timestamp(&s, &[1; 32]).unwrap_err();
        assert!(
            err.to_string().contains("certificate verify failed")
                && err.to_string().contains("mismatch"),
            "{host}: {err}"
        );
    }
    let right = server_cert(dir.path(), "right", "IP:127.0.0.1, DNS:localhost", false);
    let (_child, url) = spawn_tsa_with_cert(&right);
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    for host in ["127.0.0.1", "localhost"] {
        timestamp(
            &settings_for(&format!("https://{host}:{port}/tsa")),
            &[2; 32],
        )
        .unwrap();
    }
}

/// The TSA's server certificate must chain to `tsa_tls_ca_file`: one for the right names
/// from another CA is refused (chain verification), with or without a client certificate.
#[test]
fn a_tsa_certificate_from_another_ca_is_refused() {
    use pec::crypto::tsa::timestamp;
    let dir = tempfile::tempdir().unwrap();
    let foreign = server_cert(dir.path(), "foreign", "IP:127.0.0.1, DNS:localhost", true);
    let (_child, url) = spawn_tsa_with_cert(&foreign);
    let mut s = settings_for(&url);
    let err = timestamp(&s, &[1; 32]).unwrap_err();
    assert!(
        err.to_string().contains("certificate verify failed"),
        "{err}"
    );
    s.client_cert = None;
    let err = timestamp(&s, &[2; 32]).unwrap_err();
    assert!(
        err.to_string().contains("certificate verify failed"),
        "{err}"
    );
    // The same server trusted through its own CA: accepted (only the CA differed).
    s.client_cert = settings_for(&url).client_cert;
    s.tls_ca_file = Some(dir.path().join("foreign-ca.pem"));
    timestamp(&s, &[3; 32]).unwrap();
}

/// Stamps in a row share one HTTPS connection to the TSA (keep-alive): one connection
/// opened for five stamps. A TSA that closes a kept connection under its client (it reads
/// the request and closes unanswered: "close-reused") costs a new connection, and the
/// stamp is sent again there once: each stamp still succeeds, one new connection each.
#[test]
fn stamps_share_a_kept_alive_connection_and_survive_its_closing() {
    use pec::crypto::http::connections_opened;
    use pec::crypto::tsa::timestamp;
    let dir = tempfile::tempdir().unwrap();
    let mode = dir.path().join("mode");
    let (_child, url) = spawn_tsa(&tsa().files, None, Some(&mode));
    let s = settings_for(&url);
    for i in 0..5u8 {
        timestamp(&s, &[i; 32]).unwrap();
    }
    assert_eq!(connections_opened(&url), 1);
    std::fs::write(&mode, "close-reused").unwrap();
    for i in 0..3u8 {
        timestamp(&s, &[10 + i; 32]).unwrap();
        assert_eq!(connections_opened(&url), 2 + u64::from(i));
    }
    // A TSA that fails a request on a fresh connection too is not asked again.
    std::fs::write(&mode, "down").unwrap();
    let err = timestamp(&s, &[20; 32]).unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(connections_opened(&url), 4);
}

/// `pec serve`'s sealer with the TSA down: the seal is made at once without its stamp, and
/// the stamp is retried (backoff from `stamp_retry`) until the TSA is back; then it is
/// there, once.
#[test]
fn the_daily_sealer_retries_the_stamp_until_the_tsa_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_tsa, url, mode) = fault_tsa(dir.path());
    std::fs::write(&mode, "down").unwrap();
    let store: std::sync::Arc<dyn LogStore> =
        std::sync::Arc::new(SqliteStore::open(&dir.path().join("pec.db")).unwrap());
    populate(&*store);
    let signer: std::sync::Arc<dyn pec::crypto::Signer> = std::sync::Arc::new(signer(&tsa().pki));
    let clock = std::sync::Arc::new(pec::message::time::FixedClock::new(after_the_day()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = rt.spawn(log::daily_sealer(
        store.clone(),
        signer,
        Some(settings_for(&url)),
        Duration::from_secs(1),
        clock,
        stop_rx,
    ));
    let (from, to) = log::day_bounds(day());
    let seals = |store: &dyn LogStore| store.seals(from, to).unwrap();
    rt.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seals(&*store).is_empty() {
            assert!(std::time::Instant::now() < deadline, "no seal made");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(seals(&*store)[0].tst.is_none(), "the TSA is down");
        std::fs::write(&mode, "ok").unwrap();
        while seals(&*store)[0].tst.is_none() {
            assert!(std::time::Instant::now() < deadline, "never stamped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    });
    let report = log::verify(&*store, None, None, &opts()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.seals, 1);
}

/// A token signed by a certificate issued for something else (here the provider's PEC
/// certificate, emailProtection) is no time stamp, even from our own CA, even when only the
/// token's own certificate is checked.
#[test]
fn a_token_signed_without_the_timestamping_usage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sha = [9u8; 32];
    let token = pec::crypto::tsa::timestamp(&tsa_settings(), &sha).unwrap();
    let d = |name: &str| dir.path().join(name);
    std::fs::write(d("token.der"), &token).unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The TSTInfo, signed again by the PEC key.
    openssl(&[
        "cms".as_ref(),
        "-verify".as_ref(),
        "-noverify".as_ref(),
        "-binary".as_ref(),
        "-inform".as_ref(),
        "DER".as_ref(),
        "-in".as_ref(),
        d("token.der").as_os_str(),
        "-out".as_ref(),
        d("tst.der").as_os_str(),
    ]);
    let pki = &tsa().pki;
    openssl(&[
        "cms".as_ref(),
        "-sign".as_ref(),
        "-binary".as_ref(),
        "-nodetach".as_ref(),
        "-nosmimecap".as_ref(),
        "-md".as_ref(),
        "sha256".as_ref(),
        "-econtent_type".as_ref(),
        "1.2.840.113549.1.9.16.1.4".as_ref(),
        "-outform".as_ref(),
        "DER".as_ref(),
        "-in".as_ref(),
        d("tst.der").as_os_str(),
        "-signer".as_ref(),
        pki.it_cert.as_os_str(),
        "-inkey".as_ref(),
        pki.it_key.as_os_str(),
        "-out".as_ref(),
        d("forged.der").as_os_str(),
    ]);
    let forged = std::fs::read(d("forged.der")).unwrap();
    // The same TSTInfo: imprint and time are right, only the signer is wrong.
    assert_eq!(
        pec::crypto::tsa::token_info(&forged).unwrap(),
        pec::crypto::tsa::token_info(&token).unwrap()
    );
    let err = pec::crypto::tsa::verify_token(&forged, &sha, None).unwrap_err();
    assert!(err.to_string().contains("extended key usage"), "{err}");
    assert!(pec::crypto::tsa::verify_token(&forged, &sha, Some(&pki.ca_cert)).is_err());
    pec::crypto::tsa::verify_token(&token, &sha, Some(&pki.ca_cert)).unwrap();
}

/// The files of a package, in order.
fn untar(package: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(package);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

fn retar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o444);
        b.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Rewrites the manifest's entry for `name` to match `bytes` (what a forger would do).
fn relist(files: &mut [(String, Vec<u8>)], name: &str) {
    use sha2::Digest;
    let bytes = files.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let m = files
        .iter_mut()
        .find(|(n, _)| n == "manifest.json")
        .unwrap();
    let mut manifest: log::package::Manifest = serde_json::from_slice(&m.1).unwrap();
    let entry = manifest.files.iter_mut().find(|f| f.name == name).unwrap();
    entry.size = bytes.len() as u64;
    entry.sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    if name == log::package::EXPORT {
        manifest.export_sha256 = entry.sha256.clone();
    }
    m.1 = serde_json::to_vec(&manifest).unwrap();
}

fn package_problems(package: &[u8], opts: &VerifyOptions) -> Vec<String> {
    log::package::verify(package, opts).unwrap().problems
}

both!(a_sealed_day_packaged_for_preservation_verifies_offline_and_tampering_shows);
fn a_sealed_day_packaged_for_preservation_verifies_offline_and_tampering_shows(backend: &Backend) {
    let store = &*backend.store;
    seal_populated(store);
    let mut package = Vec::new();
    let manifest = log::package::write(
        store,
        day(),
        "PEC Example IT S.p.A.",
        after_the_day(),
        &mut package,
    )
    .unwrap();
    assert_eq!(manifest.records, RECORDS);
    assert_eq!(manifest.day, "2024-03-14");
    let files = untar(&package);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "LEGGIMI.txt",
            "manifest.json",
            "registro.jsonl",
            "registro.csv",
            "sigillo.p7s",
            "marca.tsr",
            "certificati.pem"
        ]
    );
    let report = log::package::verify(&package[..], &opts()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.records, RECORDS);
    // The export is the sealed one, byte for byte; OpenSSL verifies the signature over it
    // with the certificate the package carries, chained to the CA.
    let (from, to) = log::day_bounds(day());
    assert_eq!(files[2].1, store.export_range(from, to).unwrap().bytes);
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-binary", "-inform", "DER", "-in"])
        .arg(dir.path().join("sigillo.p7s"))
        .arg("-content")
        .arg(dir.path().join("registro.jsonl"))
        .arg("-CAfile")
        .arg(&tsa().pki.ca_cert)
        .args(["-purpose", "any", "-out", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&files[6].1).contains("BEGIN CERTIFICATE"));

    // A changed CSV, an extra file, a missing token.
    let mut f = files.clone();
    f[3].1[20] ^= 1;
    let p = package_problems(&retar(&f), &opts());
    assert!(
        p.iter()
            .any(|x| x.starts_with("registro.csv: does not match")),
        "{p:?}"
    );
    let mut f = files.clone();
    f.push(("extra.txt".into(), b"x".to_vec()));
    let p = package_problems(&retar(&f), &opts());
    assert_eq!(p, ["extra.txt: not in the manifest"]);
    let mut f = files.clone();
    f.retain(|(n, _)| n != "marca.tsr");
    let p = package_problems(&retar(&f), &opts());
    assert!(
        p.contains(&"marca.tsr: listed but missing".to_string()),
        "{p:?}"
    );
    assert!(p.contains(&"not time-stamped".to_string()), "{p:?}");

    // A forger alters a record and rewrites the manifest: the record's hash, the
    // signature and the time stamp all say so.
    let mut f = files.clone();
    let export = String::from_utf8(f[2].1.clone()).unwrap();
    let altered = export.replacen("\"subject\":\"", "\"subject\":\"X", 1);
    assert_ne!(altered, export);
    f[2].1 = altered.into_bytes();
    relist(&mut f, log::package::EXPORT);
    let p = package_problems(&retar(&f), &opts());
    assert!(p.iter().any(|x| x.contains("altered (its hash")), "{p:?}");
    assert!(p.iter().any(|x| x.starts_with("sigillo.p7s: ")), "{p:?}");
    assert!(p.iter().any(|x| x.starts_with("marca.tsr: ")), "{p:?}");
    // A record removed: the chain and the count.
    let mut f = files.clone();
    let lines: Vec<&str> = export.split_inclusive('\n').collect();
    f[2].1 = [lines[0], lines[2]]
        .concat()
        .into_bytes()
        .into_iter()
        .chain(lines[3..].concat().into_bytes())
        .collect();
    relist(&mut f, log::package::EXPORT);
    let p = package_problems(&retar(&f), &opts());
    assert!(p.iter().any(|x| x.contains("ids not consecutive")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("the manifest says")), "{p:?}");
    // Another TSA's CA, another provider's CA.
    let other = VerifyOptions {
        tsa_ca: Some(tsa().pki.it_cert.clone()),
        signer_ca: Some(tsa().pki.it_cert.clone()),
    };
    let p = package_problems(&package, &other);
    assert!(p.iter().any(|x| x.starts_with("marca.tsr: ")), "{p:?}");
    assert!(p.iter().any(|x| x.starts_with("sigillo.p7s: ")), "{p:?}");
    // Not a package at all; an unsealed day is not packaged.
    let err = log::package::verify(&b"not a tar"[..], &opts()).unwrap_err();
    assert!(err.to_string().starts_with("not a package"), "{err}");
    let empty = package_problems(&retar(&[]), &opts());
    assert_eq!(empty, ["no manifest.json"]);
    let next = day().succ_opt().unwrap();
    let err = log::package::write(store, next, "P", after_the_day(), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("is not sealed"), "{err}");
}

#[test]
fn a_day_altered_after_its_seal_is_not_packaged() {
    let (_dir, path, store) = sealed();
    raw(&path)
        .execute("UPDATE events SET subject = 'forged' WHERE id = 2", [])
        .unwrap();
    let err = log::package::write(&store, day(), "P", after_the_day(), Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("no longer match its seal"),
        "{err}"
    );
}

#[test]
fn pec_log_package_and_verify_package_from_the_command_line() {
    let (dir, path, _store) = sealed();
    let cfg = dir.path().join("pec.toml");
    std::fs::write(
        &cfg,
        format!(
            "[provider]\nname = \"PEC Example IT S.p.A.\"\n\
             service_address = \"posta-certificata@pec.example.it\"\n\
             mail_receipt = \"ricevute@pec.example.it\"\ndomains = [\"pec.example.it\"]\n\n\
             [signing]\nbackend = \"pkcs11\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
             token_label = \"pec\"\nkey_label = \"k\"\npin = \"1234\"\n\n\
             [store]\npath = \"{}\"\n\n[index]\nldif = \"{}\"\n\n\
             [antivirus]\nclamd = \"tcp:127.0.0.1:3310\"\n",
            path.display(),
            dir.path().join("index.ldif").display()
        ),
    )
    .unwrap();
    let pec = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pec"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let cfg = cfg.to_str().unwrap();
    let (code, out) = pec(&["log", "package", "-c", cfg, "--day", "2024-03-14"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("day 2024-03-14, {RECORDS} records")),
        "{out}"
    );
    assert!(
        out.contains("time-stamped") && !out.contains("NOT"),
        "{out}"
    );
    let package = dir.path().join("pec-registro-2024-03-14.tar");
    assert!(package.exists());
    assert!(!dir
        .path()
        .join("pec-registro-2024-03-14.tar.partial")
        .exists());
    let ca = tsa().pki.ca_cert.to_str().unwrap().to_string();
    let p = package.to_str().unwrap();
    // Offline: no configuration at all.
    let (code, out) = pec(&[
        "log",
        "verify",
        "--package",
        p,
        "--ca",
        &ca,
        "--tsa-ca",
        &ca,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("package of 2024-03-14: {RECORDS} records: ok")),
        "{out}"
    );
    // One byte of the CSV changed: exit 1, named.
    let mut bytes = std::fs::read(&package).unwrap();
    let at = bytes.windows(8).position(|w| w == b"id,data,").unwrap();
    bytes[at] = b'I';
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, out) = pec(&["log", "verify", "--package", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("registro.csv: does not match the manifest"),
        "{out}"
    );
    // A day that is not sealed: exit 1, no file left behind.
    let (code, out) = pec(&["log", "package", "-c", cfg, "--day", "2024-03-15"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not sealed"), "{out}");
    assert!(!dir.path().join("pec-registro-2024-03-15.tar").exists());
    assert!(!dir
        .path()
        .join("pec-registro-2024-03-15.tar.partial")
        .exists());
}
