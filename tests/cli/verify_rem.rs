// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec verify` on REM messages and standalone evidences of the kit (`../shared/rem-kit`
//! or `$PEC_REM_KIT`), human and `--json`, with the kit's anchors and TSA roots and a
//! signed local copy of the kit's Trusted List.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::samples;

const S1_DISPATCH: &str =
    "etsi-en-319-532-4/INFORMATIVE-EXAMPLES/SCENARIOS/S1/2a.Issued_by_S-REMS-A/REM_Dispatch.RA01.eml";
const AGID_ACCEPTANCE: &str = "agid-rem-policy-it/Intra-REM-flow/REM_RelayAcceptance.RB01.eml";

fn pec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pec"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running pec: {e}"))
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Env {
    kit: PathBuf,
    dir: tempfile::TempDir,
    anchors: PathBuf,
    tsa: Vec<PathBuf>,
}

impl Env {
    fn new() -> Option<Env> {
        let kit = samples::rem_kit_dir()?;
        let dir = tempfile::tempdir().unwrap();
        let anchors = samples::rem_kit_anchors(&kit, dir.path());
        let tsa = samples::rem_kit_tsa_anchors(&kit, dir.path());
        Some(Env {
            kit,
            dir,
            anchors,
            tsa,
        })
    }

    /// `verify --rem-anchors … --tsa-anchors … --tsa-anchors …` then `extra`.
    fn verify(&self, extra: &[&str]) -> Output {
        let mut args = vec!["verify", "--rem-anchors", s(&self.anchors)];
        for t in &self.tsa {
            args.extend(["--tsa-anchors", s(t)]);
        }
        args.extend(extra);
        pec(&args)
    }

    /// The kit's TL_CCA, its services granted from 2021-11-23 and in force until 2031,
    /// signed with the test PKI's `pec.example.it` key; returns (list, signer PEM).
    fn signed_list(&self) -> (PathBuf, PathBuf) {
        use pec::crypto::xmldsig::{sign_enveloped, Enveloped, SignSpec};
        let text = std::fs::read_to_string(
            self.kit
                .join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/COMMON_SERVICE_INTERFACE/TL_CCA.xml"),
        )
        .unwrap()
        .replace("2021-10-03T08:29:59Z", "2031-10-03T08:29:59Z")
        .replace("2021-12-30T22:00:00Z", "2021-11-23T00:00:00Z");
        let pki_dir = self.dir.path().join("pki");
        std::fs::create_dir_all(&pki_dir).unwrap();
        let pki = pec::crypto::testing::make_test_pki(&pki_dir).unwrap();
        let signer = pec::crypto::PemSigner::from_files(
            &pki.it_key,
            &pki.it_cert,
            None,
            pec::crypto::DigestAlg::Sha256,
        )
        .unwrap();
        let spec = SignSpec {
            signature_id: Some("tl-signature".into()),
            enveloped: Enveloped::EnvelopedSignature,
            ..SignSpec::default()
        };
        let signed = sign_enveloped(&text, &signer, &spec).unwrap();
        let path = self.dir.path().join("TL_CCA.signed.xml");
        std::fs::write(&path, signed).unwrap();
        (path, pki.it_cert.clone())
    }
}

#[test]
fn kit_messages_without_a_trusted_list_are_checked_but_not_trusted() {
    let Some(env) = Env::new() else { return };
    let dispatch = env.kit.join(S1_DISPATCH);
    let acceptance = env.kit.join(AGID_ACCEPTANCE);
    let o = env.verify(&[s(&dispatch), s(&acceptance)]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("kind: rem dispatch"), "{out}");
    assert!(out.contains("event: SubmissionAcceptance"), "{out}");
    assert!(out.contains("reason code: RA01"), "{out}");
    assert!(out.contains("kind: rem receipt"), "{out}");
    assert!(out.contains("event: RelayAcceptance"), "{out}");
    assert!(out.contains("reason code: RB01"), "{out}");
    assert!(out.contains("trust: not checked"), "{out}");
    assert!(out.contains("time stamp: 20"), "{out}");
    assert!(
        out.contains("digest: ePggZQ9/Uwbe6ui/mqn+moZJcfkdFVIluG1B4a3ov9k="),
        "{out}"
    );
    assert!(!out.contains("failure:"), "{out}");
    assert_eq!(
        out.matches(pec::cli::verify_rem::UNCHECKED_VERDICT).count(),
        2,
        "{out}"
    );
}

#[test]
fn with_a_signed_trusted_list_the_kit_dispatch_is_valid_and_an_altered_copy_is_not() {
    let Some(env) = Env::new() else { return };
    let (list, signer) = env.signed_list();
    let dispatch = env.kit.join(S1_DISPATCH);
    let tl = ["--trusted-list", s(&list), "--tl-signer", s(&signer)];

    let o = env.verify(&[&tl[..], &[s(&dispatch)]].concat());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("trust: granted: S-REMS-A provider / SA-REMS provider (CCA)"),
        "{out}"
    );
    assert!(out.contains("verdict: valid rem dispatch"), "{out}");

    // JSON, one object per file, with an altered copy and a standalone evidence.
    let raw = std::fs::read(&dispatch).unwrap();
    let mut altered = raw.clone();
    let at = raw
        .windows(b"REM-Section-Type: rem_message/introduction".len())
        .position(|w| w == b"REM-Section-Type: rem_message/introduction")
        .unwrap()
        + 200;
    altered[at] = if altered[at] == b'x' { b'y' } else { b'x' };
    let altered_path = env.dir.path().join("altered.eml");
    std::fs::write(&altered_path, &altered).unwrap();
    let evidence = pec::rem::message::parse(&raw).unwrap().evidences[0]
        .body
        .clone();
    let evidence_path = env.dir.path().join("evidence.xml");
    std::fs::write(&evidence_path, &evidence).unwrap();

    let o = env.verify(
        &[
            &tl[..],
            &["--json", s(&dispatch), s(&altered_path), s(&evidence_path)],
        ]
        .concat(),
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let objs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 3, "{out}");
    let good = &objs[0];
    assert_eq!(good["kind"], "rem dispatch");
    assert_eq!(good["valid"], true);
    assert_eq!(good["event"], "SubmissionAcceptance");
    assert_eq!(good["reason_code"], "RA01");
    assert!(
        good["signer"].as_str().unwrap().contains("SA-REMS"),
        "{good}"
    );
    assert!(good["time_stamp_time"].as_str().is_some());
    let stated = pec::rem::message::parse(&raw)
        .unwrap()
        .rem
        .digest_value
        .unwrap();
    assert_eq!(good["digest"], stated.as_str());
    assert!(good["trust"].as_str().unwrap().starts_with("granted"));
    assert_eq!(good["rejection_code"], serde_json::Value::Null);

    let bad = &objs[1];
    assert_eq!(bad["valid"], false);
    assert_eq!(bad["rejection_code"], "RB04", "{bad}");
    assert!(bad["verdict"].as_str().unwrap().starts_with("invalid"));

    let ev = &objs[2];
    assert_eq!(ev["kind"], "erds evidence");
    assert_eq!(ev["valid"], true, "{ev}");
    assert_eq!(ev["event"], "SubmissionAcceptance");
    assert!(ev["trust"].as_str().unwrap().starts_with("granted"));
}

#[test]
fn rem_usage_errors_exit_2() {
    let Some(env) = Env::new() else { return };
    let dispatch = env.kit.join(S1_DISPATCH);
    // A Trusted List without the certificate that signs it.
    let list = env
        .kit
        .join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/COMMON_SERVICE_INTERFACE/TL_CCA.xml");
    let o = env.verify(&["--trusted-list", s(&list), s(&dispatch)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tl-signer"));
    // The kit's list as published is not signed: refused.
    let o = env.verify(&[
        "--trusted-list",
        s(&list),
        "--tl-signer",
        s(&env.anchors),
        s(&dispatch),
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_rem_anchors_of_a_configuration_are_used() {
    let Some(env) = Env::new() else { return };
    let d = env.dir.path();
    let pki_dir = d.join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = pec::crypto::testing::make_test_pki(&pki_dir).unwrap();
    std::fs::write(d.join("index.ldif"), "").unwrap();
    // Only the ETSI PKI: an AgID message does not chain (RB05), an ETSI one does.
    let mut etsi = std::fs::read(
        env.kit
            .join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES/REM-ROOT-CA.crt"),
    )
    .unwrap();
    etsi.extend(
        std::fs::read(
            env.kit.join(
                "etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES/REM-INTERMEDIATE-CA.crt",
            ),
        )
        .unwrap(),
    );
    std::fs::write(d.join("etsi.pem"), etsi).unwrap();
    let cfg = d.join("pec.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[provider]
name = "Example PEC"
service_address = "posta-certificata@pec.example.it"
mail_receipt = "ricevute@pec.example.it"
domains = ["pec.example.it"]

[signing]
backend = "pem"
key_file = "{key}"
cert_file = "{cert}"

[store]
path = "{dir}/pec.db"

[index]
ldif = "{dir}/index.ldif"

[antivirus]
clamd = "tcp:127.0.0.1:3310"

[rem]
anchors = ["{dir}/etsi.pem"]
tsa_anchors = ["{t0}", "{t1}"]
"#,
            key = pki.it_key.display(),
            cert = pki.it_cert.display(),
            dir = d.display(),
            t0 = env.tsa[0].display(),
            t1 = env.tsa[1].display(),
        ),
    )
    .unwrap();
    let o = pec(&[
        "verify",
        "-c",
        s(&cfg),
        "--json",
        s(&env.kit.join(S1_DISPATCH)),
        s(&env.kit.join(AGID_ACCEPTANCE)),
    ]);
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let objs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs[0]["failures"], serde_json::json!([]), "{out}");
    assert_eq!(objs[0]["trust"], "not checked");
    assert_eq!(objs[1]["rejection_code"], "RB05", "{out}");
}
