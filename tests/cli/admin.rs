// SPDX-License-Identifier: GPL-3.0-or-later
//! The administration commands: `pec sender allow` and `pec mailbox policy` write what the
//! access and reception points read from the store.

use std::path::{Path, PathBuf};
use std::process::Command;

use pec::store::{MailboxPolicy, SqliteStore, Store};

fn config(dir: &Path) -> PathBuf {
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
path = "{}"

[index]
ldif = "{}"

[antivirus]
clamd = "tcp:127.0.0.1:3310"
"#,
        dir.join("pec.db").display(),
        dir.join("index.ldif").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn pec(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pec"));
    cmd.args(&args[..2]).arg("-c").arg(cfg).args(&args[2..]);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sender_allow_maps_a_login_to_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (code, out, err) = pec(
        &cfg,
        &["sender", "allow", "alice", "Alice.Rossi@pec.example.it"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("alice may send as alice.rossi@pec.example.it"),
        "{out}"
    );
    let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
    assert!(store
        .sender_allowed("alice", "alice.rossi@pec.example.it")
        .unwrap());
    assert!(!store.sender_allowed("alice", "bob@pec.example.it").unwrap());
    let (code, _, err) = pec(&cfg, &["sender", "allow", "alice", "not an address"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid address"), "{err}");
}

#[test]
fn mailbox_policy_sets_what_the_reception_point_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (code, out, err) = pec(
        &cfg,
        &[
            "mailbox",
            "policy",
            "bob@pec.example.it",
            "forward",
            "--to",
            "bob@example.org",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("forward to bob@example.org"), "{out}");
    let (code, _, err) = pec(
        &cfg,
        &["mailbox", "policy", "carol@pec.example.it", "refuse"],
    );
    assert_eq!(code, 0, "{err}");
    let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
    assert_eq!(
        store.mailbox_policy("Bob@PEC.example.it").unwrap(),
        Some(MailboxPolicy::Forward("bob@example.org".into()))
    );
    assert_eq!(
        store.mailbox_policy("carol@pec.example.it").unwrap(),
        Some(MailboxPolicy::Refuse)
    );
    assert_eq!(store.mailbox_policy("dave@pec.example.it").unwrap(), None);

    let (code, _, err) = pec(
        &cfg,
        &["mailbox", "policy", "bob@pec.example.it", "forward"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--to"), "{err}");
    let (code, _, err) = pec(
        &cfg,
        &[
            "mailbox",
            "policy",
            "bob@pec.example.it",
            "anomaly",
            "--to",
            "x@example.org",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("goes with forward"), "{err}");
    let (code, _, _) = pec(&cfg, &["mailbox", "policy", "bob@pec.example.it", "drop"]);
    assert_eq!(code, 2, "clap refuses an unknown policy");
}

/// `pec` with the first `n` arguments as the (sub)command, then `-c CFG`, then the rest.
fn pec_n(cfg: &Path, n: usize, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pec"));
    cmd.args(&args[..n]).arg("-c").arg(cfg).args(&args[n..]);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mailbox_set_state_notify_and_show() {
    use pec::message::kind::ReceiptType;
    use pec::store::{MailboxSettings, MailboxState};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let a = "Alice@pec.example.it";
    let (code, out, err) = pec(&cfg, &["mailbox", "show", a]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "mailbox: alice@pec.example.it",
        "state: active",
        "receipt-type: default",
        "max-recipients: default",
        "daily-quota: none",
        "policy: default",
        "arrival-notices: off",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let (code, out, err) = pec(
        &cfg,
        &[
            "mailbox",
            "set",
            a,
            "--receipt-type",
            "breve",
            "--daily-quota",
            "200",
            "--max-recipients",
            "20",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("receipt-type: breve") && out.contains("daily-quota: 200"),
        "{out}"
    );
    // One setting back to the provider's value; the others stay.
    let (code, _, err) = pec(&cfg, &["mailbox", "set", a, "--max-recipients", "default"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pec(&cfg, &["mailbox", "state", a, "read-only"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice@pec.example.it: read-only"), "{out}");
    let (code, _, err) = pec(
        &cfg,
        &[
            "mailbox",
            "notify",
            a,
            "--to",
            "alice@gmail.example",
            "--to",
            "segreteria@example.org",
            "--from",
            "tribunale@pec.giustizia.example",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
    assert_eq!(
        store.mailbox_settings("alice@pec.example.it").unwrap(),
        MailboxSettings {
            receipt_type: Some(ReceiptType::Breve),
            max_recipients: None,
            max_total_size: None,
            daily_quota: Some(200),
            state: MailboxState::ReadOnly,
        }
    );
    let n = store
        .arrival_notice("alice@pec.example.it")
        .unwrap()
        .unwrap();
    assert_eq!(
        n.addresses(),
        vec!["alice@gmail.example", "segreteria@example.org"]
    );
    assert_eq!(n.senders, vec!["tribunale@pec.giustizia.example"]);
    let (_, out, _) = pec(&cfg, &["mailbox", "show", a]);
    assert!(
        out.contains("arrival-notices: alice@gmail.example, segreteria@example.org (from tribunale@pec.giustizia.example)"),
        "{out}"
    );
    let (code, _, err) = pec(&cfg, &["mailbox", "notify", a, "--off"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(store.arrival_notice("alice@pec.example.it").unwrap(), None);

    // Bad input: usage errors, nothing changed.
    for bad in [
        vec!["mailbox", "set", a, "--receipt-type", "lunga"],
        vec!["mailbox", "set", a, "--daily-quota", "0"],
        vec!["mailbox", "set", a, "--daily-quota", "-3"],
        vec!["mailbox", "set", a, "--max-total-size", "10MB"],
        vec!["mailbox", "set", "not-an-address", "--daily-quota", "3"],
        vec!["mailbox", "state", a, "sleeping"],
        vec!["mailbox", "notify", a],
        vec!["mailbox", "notify", a, "--to", "not an address"],
        vec!["mailbox", "notify", a, "--to", "x@example.org", "--off"],
    ] {
        let (code, _, err) = pec(&cfg, &bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
    assert_eq!(
        store
            .mailbox_settings("alice@pec.example.it")
            .unwrap()
            .daily_quota,
        Some(200)
    );
}

#[test]
fn a_retired_mailbox_is_never_given_to_another_holder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let a = "old@pec.example.it";
    let (code, out, _) = pec(
        &cfg,
        &["mailbox", "available", a, "--holder", "RSSMRA80A01H501U"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("available"), "{out}");
    let (code, out, err) = pec(
        &cfg,
        &["mailbox", "retire", a, "--holder", "RSSMRA80A01H501U"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retired (holder RSSMRA80A01H501U)"), "{out}");
    // Not to another holder; to the same one, yes.
    let (code, out, _) = pec(
        &cfg,
        &["mailbox", "available", a, "--holder", "BNCLGU70B02F205X"],
    );
    assert_eq!(code, 1, "{out}");
    let (code, _, _) = pec(
        &cfg,
        &["mailbox", "available", a, "--holder", "RSSMRA80A01H501U"],
    );
    assert_eq!(code, 0);
    // Retiring again, or changing its settings: refused.
    let (code, _, err) = pec(
        &cfg,
        &["mailbox", "retire", a, "--holder", "BNCLGU70B02F205X"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("retired already (holder RSSMRA80A01H501U)"),
        "{err}"
    );
    let (code, _, err) = pec(&cfg, &["mailbox", "state", a, "active"]);
    assert_eq!(code, 2);
    assert!(err.contains("is retired"), "{err}");
    let (_, out, _) = pec(&cfg, &["mailbox", "show", a]);
    assert!(
        out.contains("state: retired") && out.contains("holder RSSMRA80A01H501U"),
        "{out}"
    );
    let (code, _, _) = pec(&cfg, &["mailbox", "retire", a, "--holder", " "]);
    assert_eq!(code, 2);
}

#[test]
fn suspend_resume_and_the_agid_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (code, _, err) = pec_n(&cfg, 1, &["resume"]);
    assert_eq!(code, 2);
    assert!(err.contains("not suspended"), "{err}");
    let (code, _, _) = pec_n(&cfg, 1, &["suspend", "--reason", ""]);
    assert_eq!(code, 2);
    let (code, _, _) = pec_n(&cfg, 1, &["suspend", "--reason", "x", "--kind", "meteor"]);
    assert_eq!(code, 2);
    let (code, out, err) = pec_n(
        &cfg,
        1,
        &[
            "suspend",
            "--reason",
            "guasto al disco",
            "--kind",
            "malfunction",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("service suspended"), "{out}");
    let (code, _, err) = pec_n(&cfg, 1, &["suspend", "--reason", "again"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("suspended already") && err.contains("guasto al disco"),
        "{err}"
    );
    let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
    assert!(store.provider_suspension().unwrap().is_some());
    let (code, out, err) = pec_n(&cfg, 1, &["resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("service resumed"), "{out}");
    assert!(store.provider_suspension().unwrap().is_none());

    let (code, out, err) = pec_n(
        &cfg,
        2,
        &[
            "stats",
            "agid",
            "--from",
            "2020-01-01",
            "--to",
            "2099-01-01",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("periodo_da,periodo_a,domini,caselle"),
        "{out}"
    );
    assert!(
        lines[1].contains(",1,0,0,0,0,0,"),
        "one domain, nothing sent: {out}"
    );
    assert_eq!(lines[2], "");
    assert!(lines[3].starts_with("data,tipo,minuti"), "{out}");
    assert!(
        lines[4].contains(",malfunzionamento,") && lines[4].ends_with("\"guasto al disco\""),
        "{out}"
    );
    for bad in [
        vec![
            "stats",
            "agid",
            "--from",
            "2026-05-01",
            "--to",
            "2026-01-01",
        ],
        vec!["stats", "agid", "--from", "ieri", "--to", "2026-01-01"],
        vec!["stats", "agid", "--from", "2026-01-01"],
    ] {
        let (code, _, err) = pec_n(&cfg, 2, &bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
}
