// SPDX-License-Identifier: GPL-3.0-or-later
//! Several nodes on one store: concurrent appends form one verifiable chain, exactly-once
//! claims hold across store instances, the refresh lease has one holder at a time, and
//! `pec store copy` moves a SQLite store into PostgreSQL with its chain, anchor and seals.
//! The PostgreSQL cases need `PEC_TEST_PG_URL` (scripts/test.sh sets it) and say SKIPPED
//! without it.

use crate::backends;
use backends::Backend;

use std::sync::{Arc, Barrier};
use std::thread;

use pec::message::kind::{MessageKind, ReceiptType, RecipientType};
use pec::message::time::Instant;
use pec::store::SealRecord;
use pec::store::{EventKind, LogEvent, LogQuery, LogStore, PgStore, SqliteStore, Store};

fn event(pec_id: &str, at: i64, kind: EventKind, related: &str) -> LogEvent {
    LogEvent {
        pec_id: pec_id.into(),
        at: Instant::from_unix(at),
        kind,
        sender: "mario@pec.example.it".into(),
        recipients: vec![("Anna@pec.example.net".into(), RecipientType::Certificato)],
        subject: "Nodo — prova".into(),
        related_ids: vec![related.into()],
        provider: "Example PEC".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
    }
}

const T0: i64 = 1_710_403_200; // 2024-03-14T08:00:00Z

both!(concurrent_nodes_append_one_chain_and_claim_each_notice_once);
fn concurrent_nodes_append_one_chain_and_claim_each_notice_once(backend: &Backend) {
    const NODES: usize = 3;
    const THREADS: usize = 3;
    const EACH: usize = 10;
    let stores: Vec<Arc<dyn LogStore>> = (0..NODES)
        .map(|i| {
            if i == 0 {
                backend.store.clone()
            } else {
                backend.reopen()
            }
        })
        .collect();
    let barrier = Arc::new(Barrier::new(NODES * THREADS));
    let handles: Vec<_> = (0..NODES * THREADS)
        .map(|t| {
            let store = stores[t % NODES].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut won = 0;
                for i in 0..EACH {
                    store
                        .log(&event(
                            &format!("opec.{t}.{i}@pec.example.it"),
                            T0 + i as i64,
                            EventKind::Issued(MessageKind::TransportEnvelope),
                            "x",
                        ))
                        .unwrap();
                    // Every thread tries to claim the same EACH delivery notices.
                    let claim = event(
                        &format!("opec.shared.{i}@pec.example.it"),
                        T0 + i as i64,
                        EventKind::Issued(MessageKind::Delivery(ReceiptType::Completa)),
                        &format!("consegna.{t}.{i}@pec.example.it"),
                    );
                    if store
                        .claim_delivery_notice("anna@pec.example.net", &claim)
                        .unwrap()
                    {
                        won += 1;
                    }
                }
                won
            })
        })
        .collect();
    let won: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        won, EACH,
        "each delivery notice claimed once across the nodes"
    );
    let report = stores[1].verify_chain(None, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.records as usize, NODES * THREADS * EACH + EACH);
    let consegne = stores[2]
        .search_events(&LogQuery {
            kind: Some("Consegna".into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(consegne.len(), EACH);
}

both!(the_refresh_lease_has_one_holder_at_a_time);
fn the_refresh_lease_has_one_holder_at_a_time(backend: &Backend) {
    let (a, b) = (backend.store.clone(), backend.reopen());
    let now = Instant::from_unix(T0);
    assert!(a.try_lease("index-refresh", "a:1", now, 600).unwrap());
    let shared = backend.name == "postgres";
    // SQLite serves one host: there is nothing to share, every caller leads.
    assert_eq!(
        b.try_lease("index-refresh", "b:2", now, 600).unwrap(),
        !shared
    );
    // The holder renews; after its end another node takes over.
    assert!(a
        .try_lease("index-refresh", "a:1", Instant::from_unix(T0 + 300), 600)
        .unwrap());
    assert_eq!(
        b.try_lease("index-refresh", "b:2", Instant::from_unix(T0 + 600), 600)
            .unwrap(),
        !shared
    );
    assert!(b
        .try_lease("index-refresh", "b:2", Instant::from_unix(T0 + 900), 600)
        .unwrap());
    assert_eq!(
        a.try_lease("index-refresh", "a:1", Instant::from_unix(T0 + 901), 600)
            .unwrap(),
        !shared
    );
}

/// A seal record over the day's export as stored (the purge needs a seal, not a signature).
fn fake_seal(store: &dyn LogStore, day: &str, from_at: i64, to_at: i64) -> SealRecord {
    use sha2::Digest;
    let export = store.export_range(from_at, to_at).unwrap();
    SealRecord {
        day: day.into(),
        from_at,
        to_at,
        count: export.count,
        first_id: export.first_id,
        last_id: export.last_id,
        export_sha256: sha2::Sha256::digest(&export.bytes).to_vec(),
        signature: b"not a signature".to_vec(),
        tst: None,
        tsa_url: None,
        sealed_at: to_at + 600,
    }
}

#[test]
fn a_sqlite_store_is_copied_into_postgres_with_its_chain_anchor_and_seals() {
    let Some(pg) = Backend::postgres("copy_from_sqlite") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pec.db");
    let sqlite = SqliteStore::open(&path).unwrap();
    // Day 1: three records, sealed and then purged (the anchor); day 2: more records,
    // sealed; then some state besides the log.
    let day = 86_400;
    for i in 0..3 {
        sqlite
            .log(&event(
                "opec.old@pec.example.it",
                T0 + i,
                EventKind::Quarantined,
                "q",
            ))
            .unwrap();
    }
    sqlite
        .insert_seal(&fake_seal(
            &sqlite,
            "2024-03-14",
            T0 - 3600,
            T0 + day - 3600,
        ))
        .unwrap();
    let now = Instant::from_unix(T0 + day);
    let purged = sqlite.purge(now, now, now, "Example PEC").unwrap();
    assert_eq!(purged.events, 3);
    for i in 0..4 {
        sqlite
            .log(&event(
                &format!("opec.{i}@pec.example.it"),
                T0 + day + i,
                EventKind::Issued(MessageKind::TakeCharge),
                "p",
            ))
            .unwrap();
    }
    sqlite
        .insert_seal(&fake_seal(
            &sqlite,
            "2024-03-15",
            T0 + day - 3600,
            T0 + 2 * day - 3600,
        ))
        .unwrap();
    sqlite
        .allow_sender("segreteria", "info@pec.example.it")
        .unwrap();
    sqlite
        .set_mailbox_policy("a@pec.example.it", &pec::store::MailboxPolicy::Refuse)
        .unwrap();

    // A staged message (its bytes in their own table) and a delivery intent of another node.
    let staged = pec::store::Outbound {
        key: "log-reply:r1".into(),
        message_id: "r1@pec.example.it".into(),
        mail_from: "posta-certificata@pec.example.it".into(),
        rcpt_to: vec!["a@pec.example.it".into()],
        data: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        created_at: Instant::from_unix(T0),
        injected_at: None,
    };
    sqlite
        .stage_outbound(&staged, &pec::store::Effect::Log(Vec::new()))
        .unwrap();
    let intent = |s: &dyn Store, owner: &str| {
        s.begin_deliveries(
            "m1@pec.example.net",
            &["b@pec.example.it".to_string()],
            owner,
            Instant::from_unix(T0 + 2 * day),
        )
        .unwrap()
    };
    assert_eq!(intent(&sqlite, "elsewhere.example:1"), vec![None]);

    let dest = PgStore::open_tls(pg.url.as_deref().unwrap(), 2, &backends::test_tls()).unwrap();
    let report = pec::store::copy::copy_from_sqlite(&path, &dest).unwrap();
    let rows = |t: &str| report.tables.iter().find(|(n, _)| *n == t).unwrap().1;
    assert_eq!(rows("events"), 5); // the purge record and the four of day 2
    assert_eq!(rows("seals"), 1);
    assert_eq!(rows("chain_anchor"), 1);

    // The same chain, exports and seals on both sides; the chain verifies on PostgreSQL.
    let pg_report = dest.verify_chain(None, None).unwrap();
    assert!(pg_report.problems.is_empty(), "{:?}", pg_report.problems);
    assert_eq!(pg_report.records, 5);
    let all = |s: &dyn LogStore| s.search_events(&LogQuery::default()).unwrap();
    assert_eq!(all(&dest), all(&sqlite));
    let (from, to) = (T0 + day - 3600, T0 + 2 * day - 3600);
    assert_eq!(
        dest.export_range(from, to).unwrap(),
        sqlite.export_range(from, to).unwrap()
    );
    assert_eq!(
        dest.seals(i64::MIN, i64::MAX).unwrap(),
        sqlite.seals(i64::MIN, i64::MAX).unwrap()
    );
    assert!(dest
        .sender_allowed("segreteria", "info@pec.example.it")
        .unwrap());
    assert_eq!(
        dest.mailbox_policy("A@pec.example.it").unwrap(),
        Some(pec::store::MailboxPolicy::Refuse)
    );
    assert_eq!(dest.outbound("log-reply:r1").unwrap(), Some(staged));
    assert_eq!(
        intent(&dest, "here.example:2"),
        vec![Some(pec::store::DeliveryMark::Busy)],
        "the intent keeps its owner"
    );
    // New records chain onto the copied ones.
    dest.log(&event(
        "opec.new@pec.example.it",
        T0 + 2 * day,
        EventKind::Quarantined,
        "n",
    ))
    .unwrap();
    let after = dest.verify_chain(None, None).unwrap();
    assert!(after.problems.is_empty() && after.records == 6, "{after:?}");
    // A second copy is refused: the destination is not empty.
    let err = pec::store::copy::copy_from_sqlite(&path, &dest).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn postgres_refuses_updates_of_the_legal_log() {
    let Some(pg) = Backend::postgres("append_only") else {
        return;
    };
    pg.store
        .log(&event(
            "opec.1@pec.example.it",
            T0,
            EventKind::Quarantined,
            "q",
        ))
        .unwrap();
    let url = pg.url.clone().unwrap();
    let err = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = backends::connect_raw(&url).await.unwrap();
            client
                .execute("UPDATE events SET outcome = 'x'", &[])
                .await
                .unwrap_err()
        })
    })
    .join()
    .unwrap();
    let message = err.as_db_error().map(|d| d.message().to_string());
    assert_eq!(message.as_deref(), Some("the legal log is append-only"));
}

/// A configuration whose `[store]` section is `store`.
fn config_with(dir: &std::path::Path, store: &str) -> std::path::PathBuf {
    let path = dir.join("pec.toml");
    let text = format!(
        r#"[provider]
name = "Example PEC"
service_address = "posta-certificata@pec.example.it"
mail_receipt = "ricevute@pec.example.it"
domains = ["pec.example.it"]

[signing]
backend = "pkcs11"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "pec"
key_label = "k"
pin = "1234"

[store]
{store}

[index]
ldif = "{}"

[antivirus]
clamd = "tcp:127.0.0.1:3310"
"#,
        dir.join("index.ldif").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn pec(args: &[&str], cfg: &std::path::Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pec"))
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pec_store_migrate_and_copy_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pec.db");
    let sqlite_cfg = config_with(dir.path(), &format!("path = \"{}\"", db.display()));
    let (code, out, err) = pec(&["store", "migrate"], &sqlite_cfg);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "sqlite:{}: schema version {}",
            db.display(),
            PgStore::known_version()
        )),
        "{out}"
    );
    // Copying needs a PostgreSQL store configured.
    let (code, _, err) = pec(
        &["store", "copy", "--from", "sqlite:/nonexistent"],
        &sqlite_cfg,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must be PostgreSQL"), "{err}");

    let Some(pg) = Backend::postgres("cli_copy") else {
        return;
    };
    {
        let s = SqliteStore::open(&db).unwrap();
        s.log(&event(
            "opec.1@pec.example.it",
            T0,
            EventKind::Quarantined,
            "q",
        ))
        .unwrap();
        s.log(&event(
            "opec.2@pec.example.it",
            T0 + 1,
            EventKind::Quarantined,
            "q",
        ))
        .unwrap();
    }
    let pg_dir = tempfile::tempdir().unwrap();
    let pg_cfg = config_with(
        pg_dir.path(),
        &format!(
            "backend = \"postgres\"\nurl = \"{}\"\npool_size = 2\n{}",
            pg.url.as_deref().unwrap(),
            backends::test_tls_toml()
        ),
    );
    let (code, out, err) = pec(&["store", "migrate"], &pg_cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": schema version "), "{out}");
    let from = format!("sqlite:{}", db.display());
    let (code, out, err) = pec(&["store", "copy", "--from", &from], &pg_cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("events: 2 rows"), "{out}");
    assert!(out.contains("2 records, 0 seals checked: ok"), "{out}");
    let (code, out, err) = pec(&["log", "verify"], &pg_cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 records, 0 seals checked: ok"), "{out}");
    // A second copy is refused and changes nothing.
    let (code, _, err) = pec(&["store", "copy", "--from", &from], &pg_cfg);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(pg.store.verify_chain(None, None).unwrap().records, 2);
}
