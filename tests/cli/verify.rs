// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec verify` as a user runs it, on the real samples.

use crate::samples;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use openssl::x509::X509;

const ARUBA_SHA1: &str = "AAA71BFD2DBC9FE67AA23C9F33AAF3316DF1AA66";
const ACCETTAZIONE: &str = "aruba-2014-ricevuta-accettazione.eml";
const CONSEGNA: &str = "aruba-2014-ricevuta-avvenuta-consegna-completa.eml";

fn pec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pec"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running pec: {e}"))
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The Aruba signer certificate alone, as a PEM file in `tmp`.
fn aruba_signer_pem(dir: &Path, tmp: &Path) -> PathBuf {
    let chain = std::fs::read(dir.join("aruba-2014-signer-chain.pem")).unwrap();
    let signer = X509::stack_from_pem(&chain).unwrap().remove(0);
    let path = tmp.join("aruba-signer.pem");
    std::fs::write(&path, signer.to_pem().unwrap()).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn valid_receipts_exit_0_with_kind_and_sha1() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pem = aruba_signer_pem(&dir, tmp.path());
    let acc = dir.join(ACCETTAZIONE);
    let con = dir.join(CONSEGNA);
    let o = pec(&[
        "verify",
        "--trust",
        s(&pem),
        "--at",
        "2014-11-15",
        s(&acc),
        s(&con),
    ]);
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("kind: receipt: accettazione"), "{out}");
    assert!(
        out.contains("kind: receipt: avvenuta-consegna (completa)"),
        "{out}"
    );
    assert!(out.contains(&format!("signer sha1: {ARUBA_SHA1}")), "{out}");
    assert!(
        out.contains("signer email: posta-certificata@pec.aruba.it"),
        "{out}"
    );
    assert!(out.contains("signing time: 2014-11-14T17:26:32Z"), "{out}");
    assert!(out.contains("digest: sha1"), "{out}");
    assert!(out.contains("  identificativo: opec275.20141114182632.23219.07.1.48@pec.aruba.it"));
    assert!(out.contains("  consegna: thinkstudio@pec.it"), "{out}");
    assert!(
        out.contains("  destinatario: thinkstudio@pec.it (certificato)"),
        "{out}"
    );
    assert_eq!(
        out.matches("verdict: valid PEC message").count(),
        2,
        "{out}"
    );
}

#[test]
fn json_has_one_object_per_file() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pem = aruba_signer_pem(&dir, tmp.path());
    let env = dir.join("aruba-2014-busta-trasporto-1.eml");
    let con = dir.join(CONSEGNA);
    let o = pec(&[
        "verify",
        "--json",
        "--trust",
        s(&pem),
        "--at",
        "2014-11-15",
        s(&env),
        s(&con),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    let objs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(objs.len(), 2);
    let e = &objs[0];
    assert_eq!(e["kind"], "transport envelope (busta di trasporto)");
    assert_eq!(e["valid"], true);
    assert_eq!(e["signer"]["sha1"], ARUBA_SHA1);
    assert_eq!(e["signer"]["email"], "posta-certificata@pec.aruba.it");
    assert_eq!(e["signer"]["not_after"], "2017-02-10T12:32:21Z");
    assert_eq!(e["signer"]["digest"], "sha1");
    assert_eq!(e["daticert"]["tipo"], "posta-certificata");
    assert_eq!(e["daticert"]["mittente"], "thinkstudio@pec.it");
    assert_eq!(e["daticert"]["destinatari"][0]["tipo"], "certificato");
    assert_eq!(e["daticert"]["ricevuta"], "completa");
    assert_eq!(e["daticert"]["giorno"], "07/11/2014");
    assert_eq!(e["daticert"]["zona"], "+0100");
    assert_eq!(e["headers"]["tipo_ricevuta"], "completa");
    assert_eq!(e["headers"]["has_postacert"], true);
    let c = &objs[1];
    assert_eq!(c["kind"], "receipt: avvenuta-consegna (completa)");
    assert_eq!(c["daticert"]["consegna"], "thinkstudio@pec.it");
    assert_eq!(c["reason"], serde_json::Value::Null);
}

#[test]
fn tampered_file_exits_1() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pem = aruba_signer_pem(&dir, tmp.path());
    let raw = std::fs::read_to_string(dir.join(ACCETTAZIONE)).unwrap();
    let tampered = raw.replacen(
        "thinkstudio@pec.it (\"posta",
        "thinkstudi0@pec.it (\"posta",
        1,
    );
    assert_ne!(raw, tampered);
    let path = tmp.path().join("tampered.eml");
    std::fs::write(&path, tampered).unwrap();
    let good = dir.join(ACCETTAZIONE);
    let o = pec(&[
        "verify",
        "--trust",
        s(&pem),
        "--at",
        "2014-11-15",
        s(&good),
        s(&path),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("reason: bad signature: content altered"),
        "{out}"
    );
    assert!(out.contains("verdict: invalid: not a PEC message"), "{out}");
}

#[test]
fn without_trust_the_signature_is_checked_but_not_the_signer() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let acc = dir.join(ACCETTAZIONE);
    let o = pec(&["verify", "--at", "2014-11-15", s(&acc)]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("kind: receipt: accettazione"), "{out}");
    assert!(
        out.contains(
            "verdict: signature valid, signer not checked against a provider index (use --trust)"
        ),
        "{out}"
    );
    // Still expired today.
    let o = pec(&["verify", s(&acc)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("reason: signer certificate expired"),
        "{}",
        text(&o)
    );
}

#[test]
fn usage_and_io_errors_exit_2() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pem = aruba_signer_pem(&dir, tmp.path());
    let acc = dir.join(ACCETTAZIONE);
    let missing = tmp.path().join("missing.eml");

    let o = pec(&[
        "verify",
        "--trust",
        s(&pem),
        "--at",
        "2014-11-15",
        s(&acc),
        s(&missing),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.eml"));

    let o = pec(&["verify", "--trust", s(&pem), "--at", "15/11/2014", s(&acc)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--at"));

    let bad_pem = tmp.path().join("bad.pem");
    std::fs::write(&bad_pem, "not a certificate\n").unwrap();
    let o = pec(&["verify", "--trust", s(&bad_pem), s(&acc)]);
    assert_eq!(o.status.code(), Some(2));

    let o = pec(&["verify", "--trust", s(&missing), s(&acc)]);
    assert_eq!(o.status.code(), Some(2));

    let o = pec(&["verify"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_documents_the_no_trust_behaviour() {
    let o = pec(&["verify", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = text(&o);
    assert!(
        out.contains("signer not checked against a provider index"),
        "{out}"
    );
}

/// `--archive-anchors` with revocation checking on the Aruba 2014 receipt (its certificate
/// names no CRL or OCSP location): under the default grace policy it verifies at its date
/// and the status is reported as unknown; `--revocation strict` makes it not valid (exit
/// 1); `--anchors` alone refuses it (no extendedKeyUsage: not today's profile).
#[test]
fn revocation_policy_on_the_aruba_sample() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    if !Path::new(bundle).exists() {
        eprintln!("SKIPPED: {bundle} not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pem = aruba_signer_pem(&dir, tmp.path());
    let acc = dir.join(ACCETTAZIONE);
    let cache = tmp.path().join("crl");
    let base = [
        "verify",
        "--trust",
        s(&pem),
        "--at",
        "2014-11-15",
        "--crl-cache",
        s(&cache),
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.push(s(&acc));
        pec(&args)
    };
    let o = run(&["--archive-anchors", bundle]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("chain: valid"), "{out}");
    assert!(
        out.contains("revocation: unknown, accepted within the grace window")
            && out.contains("names no crl distribution point"),
        "{out}"
    );
    let o = run(&["--archive-anchors", bundle, "--revocation", "strict"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("revocation status unknown"), "{out}");
    let o = run(&["--anchors", bundle]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("extendedKeyUsage"), "{}", text(&o));
    let o = run(&["--archive-anchors", bundle, "--revocation", "sometimes"]);
    assert_eq!(o.status.code(), Some(2));
}
