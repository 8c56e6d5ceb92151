// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec capacity`: the operations it times and the floor it prints (their structure and
//! counts, never the timings).

use std::path::Path;
use std::process::Command;

use pec::crypto::testing::make_test_pki;

/// A configuration with a PEM key (no HSM) and an index file listing that key's certificate.
fn config(dir: &Path) -> std::path::PathBuf {
    let pki = make_test_pki(&dir.join("pki")).unwrap();
    let pem = std::fs::read(&pki.it_cert).unwrap();
    // Our own record, as `pec setup index` writes it.
    let ldif = pec::setup::own_index_ldif(
        "PEC Example IT S.p.A.",
        "ricevute@pec.example.it",
        &["pec.example.it".to_string()],
        &pem,
    )
    .unwrap();
    std::fs::write(dir.join("index.ldif"), ldif).unwrap();
    let path = dir.join("pec.toml");
    std::fs::write(
        &path,
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

[store]
path = "{}"

[index]
ldif = "{}"

[antivirus]
clamd = "tcp:127.0.0.1:3310"
"#,
            pki.it_key.display(),
            pki.it_cert.display(),
            dir.join("pec.db").display(),
            dir.join("index.ldif").display()
        ),
    )
    .unwrap();
    path
}

fn capacity(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pec"))
        .arg("capacity")
        .arg("-c")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn capacity_times_four_signatures_and_four_verifications_per_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (status, out, err) = capacity(&cfg, &["--count", "3", "--size", "2048", "--json"]);
    assert_eq!(status, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["key"], "RSA-3072");
    assert_eq!(v["count"], 3);
    assert_eq!(v["size"], 2048);
    assert_eq!(v["verification"], "provider index");
    // No [rem]: no REM floor.
    assert!(v["rem"].is_null(), "{out}");
    let ops = v["pec"]["operations"].as_array().unwrap();
    let names: Vec<(&str, &str, &str)> = ops
        .iter()
        .map(|o| {
            (
                o["side"].as_str().unwrap(),
                o["role"].as_str().unwrap(),
                o["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "sender",
                "access point (milter)",
                "sign the transport envelope"
            ),
            (
                "sender",
                "after-queue filter",
                "sign the acceptance receipt"
            ),
            (
                "recipient",
                "reception point",
                "verify the transport envelope"
            ),
            ("recipient", "reception point", "sign the presa in carico"),
            (
                "recipient",
                "delivery point",
                "verify the transport envelope again"
            ),
            (
                "recipient",
                "delivery point",
                "sign the delivery receipt (completa)"
            ),
            ("sender", "reception point", "verify the presa in carico"),
            ("sender", "reception point", "verify the delivery receipt"),
        ]
    );
    for o in ops {
        assert_eq!(o["per_transaction"], 1);
        assert!(o["cpu_ms"].as_f64().unwrap() >= 0.0);
        assert!(o["wall_ms"].as_f64().unwrap() > 0.0);
    }
    // The envelope and the completa receipt carry the original; the other two do not.
    let bytes = |i: usize| ops[i]["bytes"].as_u64().unwrap();
    assert!(bytes(0) > 2048 && bytes(5) > 2048, "{out}");
    assert!(bytes(1) < bytes(0) && bytes(3) < bytes(0), "{out}");
    for side in ["sender", "recipient"] {
        assert_eq!(v["pec"][side]["signatures"], 2, "{side}");
        assert_eq!(v["pec"][side]["verifications"], 2, "{side}");
    }
    let ms = |p: &str| v["pec"][p]["cpu_ms"].as_f64().unwrap();
    let sum: f64 = ops.iter().map(|o| o["cpu_ms"].as_f64().unwrap()).sum();
    assert!((ms("sender") + ms("recipient") - sum).abs() < 1e-9);
    assert!((ms("transaction") - sum).abs() < 1e-9);

    let (status, text, err) = capacity(&cfg, &["--count", "1"]);
    assert_eq!(status, 0, "{err}");
    assert!(text.contains("key RSA-3072"), "{text}");
    assert!(text.contains("sender side: "), "{text}");
    assert!(text.contains("(2 signatures, 2 verifications)"), "{text}");
    assert!(
        text.contains("PEC transactions per second per core"),
        "{text}"
    );
    assert!(text.contains("REM: not enabled"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" sign the ")).count(),
        4,
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(" verify the ")).count(),
        4,
        "{text}"
    );
}

#[test]
fn capacity_refuses_a_key_the_index_does_not_list() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::write(dir.path().join("index.ldif"), "version: 1\n\n").unwrap();
    let (status, _, err) = capacity(&cfg, &["--count", "1"]);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("not in the provider index"), "{err}");
}
