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
