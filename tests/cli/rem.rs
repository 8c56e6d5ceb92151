// SPDX-License-Identifier: GPL-3.0-or-later
//! REM (issue 20): the `[rem]` section checked with file, line and key; `pec evidence
//! show|export|list` print what the store holds and export it byte-exact; `pec mailbox
//! identity set|show|clear` record who made each change.

use std::path::{Path, PathBuf};
use std::process::Command;

use pec::config::{self, Protocol, RemMode};
use pec::message::kind::RecipientType;
use pec::message::time::Instant;
use pec::store::{Evidence, EvidenceDirection, SqliteStore, Store};

const FILE: &str = "/etc/pec/pec.toml";

/// A minimal valid configuration (lines 1–21), then `extra`.
fn text(store: &str, extra: &str) -> String {
    format!(
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
path = "{store}"

[index]
ldif = "/var/lib/pec/index.ldif"

[antivirus]
clamd = "tcp:127.0.0.1:3310"
{extra}"#
    )
}

fn error(extra: &str) -> String {
    match config::parse(&text("/var/lib/pec/pec.db", extra), FILE) {
        Ok(c) => panic!("parsed: {:?}", c.rem),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_rem_section_has_defaults() {
    let c = config::parse(&text("/var/lib/pec/pec.db", ""), FILE).unwrap();
    let s = c.settings().unwrap().rem;
    assert!(!s.enabled);
    assert_eq!(s.mode, RemMode::Auto);
    assert_eq!(s.provider_name, "Example PEC", "provider.name by default");
    assert_eq!(
        s.policies,
        [
            "http://uri.etsi.org/19532/v1#/REMbaseline",
            "https://eidas.agid.gov.it/REM/rem-policy-it"
        ]
    );
    assert_eq!(s.relay_wait.as_secs(), 24 * 3600);
    assert_eq!(s.consignment_wait.as_secs(), 24 * 3600);
    assert_eq!(s.evidence_tsa, None, "no TSA in [log] either");
    // Off: PEC everywhere, whatever the peer speaks.
    assert_eq!(s.protocol_for("rem.altro.it", || true), Protocol::Pec);
}

#[test]
fn the_rem_section_is_read_and_chooses_the_protocol_per_domain() {
    let extra = r#"
[log]
tsa_url = "https://tsa.example.it/tsa"
tsa_ca_file = "/etc/pec/tsa-ca.pem"

[rem]
enabled = true
mode = "auto"
provider_name = "Example S.p.A."
relay_wait = "12h"
consignment_wait = "2d"

[rem.domains]
"PEC.Vecchio.it" = "pec"
"rem.nuovo.it" = "rem"
"#;
    let s = config::parse(&text("/var/lib/pec/pec.db", extra), FILE)
        .unwrap()
        .settings()
        .unwrap()
        .rem;
    assert!(s.enabled);
    assert_eq!(s.provider_name, "Example S.p.A.");
    assert_eq!(s.relay_wait.as_secs(), 12 * 3600);
    assert_eq!(s.consignment_wait.as_secs(), 2 * 86_400);
    // The evidences use the TSA of [log] by default.
    assert_eq!(
        s.evidence_tsa.as_ref().map(|t| t.url.as_str()),
        Some("https://tsa.example.it/tsa")
    );
    assert_eq!(s.protocol_for("pec.vecchio.it", || true), Protocol::Pec);
    assert_eq!(s.protocol_for("REM.nuovo.it", || false), Protocol::Rem);
    assert_eq!(s.protocol_for("altro.it", || true), Protocol::Rem);
    assert_eq!(s.protocol_for("altro.it", || false), Protocol::Pec);
    let forced = config::parse(
        &text("/x.db", "\n[rem]\nenabled = true\nmode = \"pec\"\n"),
        FILE,
    )
    .unwrap()
    .settings()
    .unwrap()
    .rem;
    assert_eq!(forced.protocol_for("altro.it", || true), Protocol::Pec);
    // Its own TSA.
    let own = config::parse(
        &text(
            "/x.db",
            "\n[rem]\nevidence_tsa_url = \"https://tsa2.example.it/rem\"\n\
             evidence_tsa_timeout = \"10s\"\n",
        ),
        FILE,
    )
    .unwrap()
    .settings()
    .unwrap()
    .rem
    .evidence_tsa
    .unwrap();
    assert_eq!(own.url, "https://tsa2.example.it/rem");
    assert_eq!(own.timeout.as_secs(), 10);
}

#[test]
fn rem_errors_name_the_file_the_line_and_the_key() {
    // Line 22 is the blank line after BASE; [rem] is on 23.
    assert_eq!(
        error("\n[rem]\nmode = \"sometimes\"\n"),
        r#"/etc/pec/pec.toml: line 24: key "rem.mode": unknown mode "sometimes": expected auto, pec or rem"#
    );
    let wait = error("\n[rem]\nenabled = true\nrelay_wait = \"tomorrow\"\n");
    assert!(
        wait.starts_with(
            r#"/etc/pec/pec.toml: line 25: key "rem.relay_wait": invalid duration "tomorrow""#
        ),
        "{wait}"
    );
    assert_eq!(
        error("\n[rem]\npolicies = []\n"),
        r#"/etc/pec/pec.toml: line 24: key "rem.policies": at least one policy is needed (the REM baseline's by default)"#
    );
    assert_eq!(
        error("\n[rem]\npolicies = [\"not a uri\"]\n"),
        r#"/etc/pec/pec.toml: line 24: key "rem.policies": invalid policy "not a uri": expected a URI"#
    );
    assert_eq!(
        error("\n[rem.domains]\n\"altro.it\" = \"smtp\"\n"),
        r#"/etc/pec/pec.toml: line 24: key "rem.domains.altro.it": unknown value "smtp": expected pec or rem"#
    );
    assert_eq!(
        error("\n[rem.domains]\n\"not a domain\" = \"rem\"\n"),
        r#"/etc/pec/pec.toml: line 24: key "rem.domains.not a domain": invalid domain "not a domain""#
    );
    assert_eq!(
        error("\n[rem]\nevidence_tsa_ca_file = \"/etc/pec/ca.pem\"\n"),
        r#"/etc/pec/pec.toml: line 24: key "rem.evidence_tsa_ca_file": needs rem.evidence_tsa_url (without every evidence_tsa_* key, the evidences use the TSA of [log])"#
    );
    assert_eq!(
        error("\n[rem]\nevidence_tsa_url = \"ftp://tsa\"\n"),
        r#"/etc/pec/pec.toml: line 24: key "rem.evidence_tsa_url": invalid url "ftp://tsa": expected https://HOST[:PORT]/PATH or http://…"#
    );
    // Unknown keys are refused, at every level of the section.
    let unknown = error("\n[rem]\nenable = true\n");
    assert!(
        unknown.starts_with(r#"/etc/pec/pec.toml: line 24: key "rem.enable": unknown"#),
        "{unknown}"
    );
    let unknown = error("\n[rem.nonsense]\nx = 1\n");
    assert!(
        unknown.starts_with(r#"/etc/pec/pec.toml: line 23: key "rem.nonsense": unknown"#),
        "{unknown}"
    );
}

fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("pec.toml");
    let db = dir.join("pec.db");
    std::fs::write(&path, text(&db.display().to_string(), "")).unwrap();
    path
}

/// Runs `pec WORDS... -c CFG ARGS...`: exit status, stdout (bytes), stderr.
fn pec(words: &[&str], cfg: &Path, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pec"))
        .args(words)
        .arg("-c")
        .arg(cfg)
        .args(args)
        .env("USER", "operator1")
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pec_evidence_shows_lists_and_exports_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path());
    // Bytes a text round trip would change: NUL, lone CR, 8-bit, CRLF, no final newline.
    let mut xml = b"<?xml version=\"1.0\"?>\r\n<Evidence>\x00\r\xff\x80".to_vec();
    xml.extend_from_slice(b"</Evidence>");
    let evidence = Evidence {
        id: "ev-42".into(),
        message_id: "rem-msg@rem.example.it".into(),
        event: "http://uri.etsi.org/REM/Event#ContentConsignmentFailure".into(),
        reason: Some("http://uri.etsi.org/REM/RejectionReason#MailboxFull".into()),
        recipient: Some("anna@rem.altro.it".into()),
        issuer: "CN=REM Altro, C=IT".into(),
        at: Instant::from_unix(1_705_314_605),
        direction: EvidenceDirection::Received,
        xml: xml.clone(),
    };
    {
        let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
        let event = evidence.log_event(
            "mario@pec.example.it",
            vec![("anna@rem.altro.it".into(), RecipientType::Certificato)],
            "Fattura",
            "REM Altro",
            None,
        );
        assert!(store.record_evidence(&evidence, &event).unwrap());
        let mut second = evidence.clone();
        second.id = "ev-43".into();
        second.event = "http://uri.etsi.org/REM/Event#SubmissionAcceptance".into();
        second.reason = None;
        second.recipient = None;
        second.direction = EvidenceDirection::Issued;
        second.xml = b"<x/>".to_vec();
        let event = second.log_event("mario@pec.example.it", vec![], "Fattura", "P", None);
        assert!(store.record_evidence(&second, &event).unwrap());
    }
    let digest = hex::encode(evidence.sha256());

    let (code, out, err) = pec(&["evidence", "show"], &cfg, &["ev-42"]);
    assert_eq!(code, 0, "{err}");
    let out = text_of(&out);
    for line in [
        "evidence: ev-42\n",
        "message: rem-msg@rem.example.it\n",
        "event: http://uri.etsi.org/REM/Event#ContentConsignmentFailure\n",
        "reason: http://uri.etsi.org/REM/RejectionReason#MailboxFull\n",
        "time: 2024-01-15T10:30:05Z\n",
        "direction: received\n",
        "issuer: CN=REM Altro, C=IT\n",
        "recipient: anna@rem.altro.it\n",
        &format!("sha256: {digest}\n"),
        "log record: 1\n",
    ] {
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    assert!(!out.contains("<Evidence>"), "no XML without --xml");
    let (code, out, _) = pec(&["evidence", "show"], &cfg, &["ev-42", "--xml"]);
    assert_eq!(code, 0);
    assert!(
        out.windows(xml.len()).any(|w| w == xml.as_slice()),
        "--xml prints the XML"
    );

    // Export: byte-exact, to standard output and to a file.
    let (code, out, err) = pec(&["evidence", "export"], &cfg, &["ev-42"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, xml);
    let file = dir.path().join("ev.xml");
    let (code, out, err) = pec(
        &["evidence", "export"],
        &cfg,
        &["ev-42", "--out", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), xml);

    let (code, out, err) = pec(
        &["evidence", "list"],
        &cfg,
        &["--message", "rem-msg@rem.example.it"],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<String> = text_of(&out).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "ev-42 2024-01-15T10:30:05Z received \
             http://uri.etsi.org/REM/Event#ContentConsignmentFailure \
             reason http://uri.etsi.org/REM/RejectionReason#MailboxFull \
             recipient anna@rem.altro.it",
            "ev-43 2024-01-15T10:30:05Z issued \
             http://uri.etsi.org/REM/Event#SubmissionAcceptance reason - recipient -",
        ]
    );
    let (code, out, _) = pec(&["evidence", "list"], &cfg, &["--message", "nobody"]);
    assert_eq!((code, out.len()), (0, 0));

    // Unknown evidence: exit 1, said on standard error.
    let (code, out, err) = pec(&["evidence", "show"], &cfg, &["ev-0"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("no evidence \"ev-0\""), "{err}");
    let (code, _, err) = pec(&["evidence", "export"], &cfg, &["ev-0"]);
    assert_eq!(code, 1);
    assert!(err.contains("no evidence"), "{err}");
}

#[test]
fn pec_mailbox_identity_sets_shows_and_clears_with_who_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path());
    let id = ["mailbox", "identity"];
    let set = |args: &[&str]| {
        let mut words = id.to_vec();
        words.push("set");
        pec(&words, &cfg, args)
    };
    let person = "http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier";
    let (code, out, err) = set(&[
        "Mario.Rossi@pec.example.it",
        "--attr",
        &format!("{person}=IT/IT/RSSMRA80A01H501U"),
        "--attr",
        "http://eidas.europa.eu/attributes/naturalperson/CurrentFamilyName=Rossi",
        "--level",
        "http://eidas.europa.eu/LoA/substantial",
        "--proofing",
        "spid",
        "--policy",
        "agid-rem-1",
    ]);
    assert_eq!(code, 0, "{err}");
    let out = text_of(&out);
    for line in [
        "mailbox: mario.rossi@pec.example.it\n",
        &format!("attribute: {person} = IT/IT/RSSMRA80A01H501U\n"),
        "attribute: http://eidas.europa.eu/attributes/naturalperson/CurrentFamilyName = Rossi\n",
        "level: http://eidas.europa.eu/LoA/substantial\n",
        "policy: agid-rem-1\n",
        "proofing: spid\n",
    ] {
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    assert!(out.contains(" by operator1\n"), "who set it: {out}");
    // In the store, as the access point will read it.
    {
        let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
        let identity = store
            .sender_identity("mario.rossi@pec.example.it")
            .unwrap()
            .unwrap();
        assert_eq!(identity.attributes.len(), 2);
        assert_eq!(identity.set_by, "operator1");
        assert_eq!(identity.proofing, "spid");
    }

    let mut show = id.to_vec();
    show.push("show");
    let (code, out, err) = pec(&show, &cfg, &["mario.rossi@pec.example.it"]);
    assert_eq!(code, 0, "{err}");
    assert!(text_of(&out).contains("proofing: spid\n"));

    // Bad input: usage errors, nothing changed.
    for (args, says) in [
        (
            vec![
                "mario.rossi@pec.example.it",
                "--attr",
                "noequals",
                "--level",
                "urn:x",
                "--proofing",
                "cie",
            ],
            "expected NAME=VALUE",
        ),
        (
            vec![
                "mario.rossi@pec.example.it",
                "--attr",
                "a=b",
                "--level",
                "substantial",
                "--proofing",
                "cie",
            ],
            "expected a URI",
        ),
        (
            vec![
                "not an address",
                "--attr",
                "a=b",
                "--level",
                "urn:x",
                "--proofing",
                "cie",
            ],
            "invalid address",
        ),
    ] {
        let (code, _, err) = set(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(says), "{err}");
    }

    let mut clear = id.to_vec();
    clear.push("clear");
    let (code, out, err) = pec(
        &clear,
        &cfg,
        &["mario.rossi@pec.example.it", "--by", "auditor"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(text_of(&out).contains("sender identity cleared by auditor"));
    let (code, out, _) = pec(&show, &cfg, &["mario.rossi@pec.example.it"]);
    assert_eq!(code, 1, "no identity any more");
    let out = text_of(&out);
    assert!(out.contains("identity: none\n"), "{out}");
    let changes: Vec<&str> = out.lines().filter(|l| l.starts_with("change: ")).collect();
    assert_eq!(changes.len(), 2, "{out}");
    assert!(changes[0].starts_with("change: set ") && changes[0].ends_with(" by operator1"));
    assert!(changes[1].starts_with("change: clear ") && changes[1].ends_with(" by auditor"));
    // Clearing again: nothing to clear, exit 1.
    let (code, _, err) = pec(&clear, &cfg, &["mario.rossi@pec.example.it"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no sender identity"), "{err}");
}
