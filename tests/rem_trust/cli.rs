// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec rem trust sync|show` against a Trusted List and CSI documents served over HTTPS on
//! loopback, and `pec rem csi publish`.

use std::path::{Path, PathBuf};
use std::process::Command;

use pec::rem::csi;
use pec::rem::trust::{DigitalIdentity, RemPeer, TrustService};

use super::https::{kit_list, without_csi, Https};
use super::lists::SignedKit;

/// A configuration whose Trusted List is fetched from `https` at `/TL-CCA.xml`.
fn config(dir: &Path, kit: &SignedKit, https: &Https) -> PathBuf {
    let path = dir.join("pec.toml");
    std::fs::write(
        &path,
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
path = "{db}"

[index]
ldif = "{ldif}"

[antivirus]
clamd = "tcp:127.0.0.1:3310"

[rem.trust]
tl_urls = ["{tl}"]
tl_signer_files = ["{cert}"]
tls_ca_file = "{ca}"

[rem.csi]
street = "Via Roma 1"
locality = "Roma"
information_uri = "https://rem.example.it/info.html"
policy_uri = "https://rem.example.it/policy.html"
pointer_to_tl = "https://tl.example.it/TL-IT.xml"
distribution_point = "https://rem.example.it/csi.xml"
erds_id = "https://rem.example.it/"
erds_domain = "mx.example.it"
tls_certificate = "{tls}"
"#,
            key = kit.pki.it_key.display(),
            cert = kit.pki.it_cert.display(),
            tls = kit.pki.net_cert.display(),
            db = dir.join("pec.db").display(),
            tl = https.url("/TL-CCA.xml"),
            ca = https.ca_file.display(),
            ldif = dir.join("index.ldif").display(),
        ),
    )
    .unwrap();
    path
}

fn pec(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pec"))
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
fn trust_sync_and_show_keep_the_last_good_list_and_csi_publish_signs_ours() {
    let Some(kit) = SignedKit::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Without https supply points: no peer's CSI to fetch here (see the next test).
    let unsigned = without_csi(&kit.unsigned);
    let https = Https::start(&kit);
    https.set("/TL-CCA.xml", Ok(kit.sign(&unsigned)));
    let cfg = config(dir.path(), &kit, &https);

    let (code, out, err) = pec(&cfg, &["rem", "trust", "sync"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("TL-CCA.xml: CCA sequence 1, stored"), "{out}");
    let (code, out, err) = pec(
        &cfg,
        &["rem", "trust", "show", "--at", "2026-12-06T12:00:00Z"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("CCA sequence 1 (CCA Supervision Agency)"),
        "{out}"
    );
    assert!(out.contains("in force"), "{out}");
    assert_eq!(out.matches(": trusted").count(), 3, "{out}");
    assert!(
        out.contains("supply point: smtp:mx.rb-rems.rem:25"),
        "{out}"
    );

    // A tampered list served next: refused, exit 1, the stored one stays.
    https.set(
        "/TL-CCA.xml",
        Ok(kit
            .sign(&unsigned)
            .replace("smtp:mx.rb-rems.rem:25", "smtp:mx.evil.rem:25")),
    );
    let (code, out, err) = pec(&cfg, &["rem", "trust", "sync"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("the stored copy stays"), "{err}");
    let (_, out, _) = pec(
        &cfg,
        &["rem", "trust", "show", "--at", "2026-12-06T12:00:00Z"],
    );
    assert!(
        out.contains("smtp:mx.rb-rems.rem:25") && !out.contains("evil"),
        "{out}"
    );
    // After the list's NextUpdate nothing is trusted any more.
    let (_, out, _) = pec(&cfg, &["rem", "trust", "show", "--at", "2031-10-04"]);
    assert!(
        out.contains("expired") && !out.contains(": trusted"),
        "{out}"
    );
    let (code, out, _) = pec(&cfg, &["rem", "trust", "show", "--history"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");

    // Our CSI, signed with the configured key.
    let out_file = dir.path().join("csi.xml");
    let (code, out, err) = pec(
        &cfg,
        &["rem", "csi", "publish", "--out", out_file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let raw = std::fs::read(&out_file).unwrap();
    let peer = RemPeer {
        territory: "IT".into(),
        list_next_update: None,
        provider: "Example PEC".into(),
        service: TrustService {
            service_type: pec::rem::trust::SERVICE_TYPE_REM_Q.into(),
            name: "Example PEC".into(),
            status: pec::rem::trust::STATUS_GRANTED.into(),
            status_since: pec::message::time::Instant::from_unix(0),
            identity: DigitalIdentity {
                certificates: vec![kit.signer.clone()],
                ..DigitalIdentity::default()
            },
            supply_points: vec![],
            history: vec![],
        },
    };
    let c = csi::verify(&raw, &peer).unwrap();
    assert_eq!(c.operator, "Example PEC");
    assert_eq!(c.erds.domain, "mx.example.it");
    assert_eq!(c.tls_certificate, kit.other);
    // rem.policies, those our evidences name (default: the baseline and Policy-IT).
    assert_eq!(
        c.erds.policies,
        [
            "http://uri.etsi.org/19532/v1#/REMbaseline",
            "https://eidas.agid.gov.it/REM/rem-policy-it"
        ]
    );

    // A [rem.csi] without what the document must say.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("erds_domain = \"mx.example.it\"\n", ""),
    )
    .unwrap();
    let (code, _, err) = pec(
        &cfg,
        &["rem", "csi", "publish", "--out", out_file.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rem.csi.erds_domain is required"), "{err}");
}

#[test]
fn trust_sync_fetches_each_peers_csi_over_https_and_show_says_whom_auto_sends_rem() {
    let Some(kit) = SignedKit::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let https = Https::start(&kit);
    https.set(
        "/TL-CCA.xml",
        Ok(kit.sign(&kit_list(&kit, &https.url("/a.xml"), &https.url("/b.xml")))),
    );
    let b_csi = super::csi_fetch::b_csi(&kit, 1, "2027-06-01T00:00:00Z", csi::REM_BASELINE);
    https.set("/b.xml", Ok(b_csi));
    let cfg = config(dir.path(), &kit, &https);

    // The list stored, RB-REMS's CSI stored; SA-REMS's (not found) and RC-REMS's (server
    // down) named as failures: exit 1.
    let (code, out, err) = pec(&cfg, &["rem", "trust", "sync"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("TL-CCA.xml: CCA sequence 1, stored"), "{out}");
    assert!(
        out.contains("/b.xml: csi of RB-REMS provider sequence 1, stored"),
        "{out}"
    );
    assert!(
        err.contains("csi: fetch https://127.0.0.1:") && err.contains("/a.xml"),
        "{err}"
    );
    assert!(err.contains("/c.xml"), "{err}");
    let (code, out, err) = pec(
        &cfg,
        &["rem", "trust", "show", "--at", "2026-12-06T12:00:00Z"],
    );
    assert_eq!(code, 0, "{err}");
    let b = &out[out.find("/ RB-REMS provider").unwrap()..];
    let b = &b[..b.find("/ RC-REMS").unwrap_or(b.len())];
    assert!(
        b.contains("csi: sequence 1, REM baseline, next update 2027-06-01T00:00:00Z"),
        "{out}"
    );
    assert!(b.contains("routing (rem.mode = auto): REM"), "{out}");
    assert_eq!(
        out.matches("csi: none fetched and verified").count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.matches("routing (rem.mode = auto): REM").count(),
        1,
        "{out}"
    );
    // Past the CSI's own next update: expired, no longer REM.
    let (_, out, _) = pec(&cfg, &["rem", "trust", "show", "--at", "2027-07-01"]);
    assert!(out.contains("— expired"), "{out}");
    assert!(!out.contains("routing (rem.mode = auto): REM"), "{out}");
    let (_, out, _) = pec(&cfg, &["rem", "trust", "show", "--history"]);
    assert!(
        out.contains("/b.xml csi of RB-REMS provider sequence 1: issued 2026-12-01T00:00:00Z"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");
}
