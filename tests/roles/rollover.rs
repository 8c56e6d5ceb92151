// SPDX-License-Identifier: GPL-3.0-or-later
//! Key rollover without a restart (issue 19, point 5): a reload (SIGHUP) re-opens the key
//! a changed `[signing]` names, after checking that key and certificate belong together and
//! that the certificate is valid now; otherwise the running key stays. Messages made after
//! the reload carry the new certificate; mail signed before it still verifies at its date
//! while the index holds both certificates.

use std::path::Path;
use std::sync::Arc;

use openssl::x509::X509;
use pec::crypto::testing::{self, TestKey};
use pec::crypto::{smime, verify_smime, KeyKind, Signer, VerifyError};
use pec::index::ldif::write_ldif;
use pec::index::{IndexHandle, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::message::time::Instant;
use pec::wiring::{self, Shared};

/// 2026-12-01T10:00:00Z, 2027-01-15T10:00:00Z: before and after the rollover.
const BEFORE: i64 = 1_796_119_200;
const AFTER: i64 = 1_800_007_200;

fn der(pem: &Path) -> Vec<u8> {
    X509::from_pem(&std::fs::read(pem).unwrap())
        .unwrap()
        .to_der()
        .unwrap()
}

fn config_text(dir: &Path, key: &Path, cert: &Path) -> String {
    // Nothing listens: building the roles connects to nothing.
    format!(
        r#"[provider]
name = "PEC Example IT S.p.A."
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
clamd = "tcp:127.0.0.1:9"
"#,
        key = key.display(),
        cert = cert.display(),
        db = dir.join("pec.db").display(),
        ldif = dir.join("index.ldif").display(),
    )
}

/// A signed message as the roles make them: an entity sealed by `signer` at `at`.
fn signed_message(signer: &dyn Signer, at: i64) -> Vec<u8> {
    let entity = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nRicevuta di accettazione\r\n";
    let sealed = smime::seal(signer, entity, Instant::from_unix(at)).unwrap();
    let mut raw = Vec::new();
    for (name, value) in &sealed.headers {
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"Subject: ACCETTAZIONE: rollover\r\n\r\n");
    raw.extend_from_slice(&sealed.body);
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rolls_the_signing_key_over_and_old_mail_still_verifies_at_its_date() {
    let dir = tempfile::tempdir().unwrap();
    let pki = testing::make_test_pki(&dir.path().join("pki")).unwrap();
    // The next key: ECDSA P-256, so the rollover also changes the signature algorithm.
    let next = testing::issue_test_leaf(&pki, "next", TestKey::EcP256, None).unwrap();
    let (old_der, next_der, expired_der) =
        (der(&pki.it_cert), der(&next.cert), der(&pki.expired_cert));
    // The index during the overlap: both certificates (and the long expired one, whose
    // mail of 2020 must still verify at its date).
    let record = ProviderRecord {
        info: ProviderInfo {
            name: "PEC Example IT S.p.A.".into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        },
        certificates: vec![old_der.clone(), next_der.clone(), expired_der.clone()],
    };
    std::fs::write(dir.path().join("index.ldif"), write_ldif(&[record])).unwrap();
    let cfg = dir.path().join("pec.toml");
    std::fs::write(&cfg, config_text(dir.path(), &pki.it_key, &pki.it_cert)).unwrap();
    let config = pec::config::load(&cfg).unwrap();

    let index = ProviderIndex::load_ldif(dir.path().join("index.ldif")).unwrap();
    let shared = Shared {
        signer: wiring::open_signer(&config).unwrap(),
        store: wiring::open_store(&config).unwrap(),
        index: Arc::new(IndexHandle::new(index.clone())),
        rem_peers: None,
    };
    let before = signed_message(&*shared.signer, BEFORE);

    // SIGHUP with the same key: the running signer object stays (no new PKCS#11 sessions).
    let (_, same, _) = pec::serve::reload(&cfg, &config, &shared).await.unwrap();
    assert!(Arc::ptr_eq(&same.signer, &shared.signer));

    // A key and certificate that do not belong together: refused, the running key stays.
    std::fs::write(&cfg, config_text(dir.path(), &next.key, &pki.it_cert)).unwrap();
    let e = pec::serve::reload(&cfg, &config, &shared)
        .await
        .err()
        .unwrap();
    assert!(e.contains("does not match"), "{e}");
    assert!(e.contains("the running signing key stays"), "{e}");
    // A certificate that is not valid now: refused too.
    std::fs::write(
        &cfg,
        config_text(dir.path(), &pki.expired_key, &pki.expired_cert),
    )
    .unwrap();
    let e = pec::serve::reload(&cfg, &config, &shared)
        .await
        .err()
        .unwrap();
    assert!(e.contains("expired on \"2021-01-01"), "{e}");

    // The new key: the roles built by the reload sign with it.
    std::fs::write(&cfg, config_text(dir.path(), &next.key, &next.cert)).unwrap();
    let (applied, rolled, roles) = pec::serve::reload(&cfg, &config, &shared).await.unwrap();
    assert_eq!(rolled.signer.certificate_der(), next_der);
    assert_eq!(
        rolled.signer.key_kind().unwrap(),
        KeyKind::Ecdsa(pec::crypto::Curve::P256)
    );
    assert_eq!(roles.access.kit.signer.certificate_der(), next_der);
    assert!(Arc::ptr_eq(&rolled.store, &shared.store), "the store stays");
    assert_eq!(applied.signing, pec::config::load(&cfg).unwrap().signing);
    let after = signed_message(&*roles.access.kit.signer, AFTER);

    // Both verify at their dates against the index holding both certificates.
    let trust = index.trust();
    let v = verify_smime(&before, trust, Instant::from_unix(BEFORE)).unwrap();
    assert_eq!(v.signer_der, old_der);
    let v = verify_smime(&after, trust, Instant::from_unix(AFTER)).unwrap();
    assert_eq!(v.signer_der, next_der);
    assert_eq!(v.digest, "sha256");
    // Mail of the old key still verifies after the rollover, at its date.
    let v = verify_smime(&before, trust, Instant::from_unix(AFTER)).unwrap();
    assert_eq!(v.signer_der, old_der);

    // A certificate long expired: its mail verifies at its date, not today.
    let old_signer = pec::crypto::PemSigner::from_files(
        &pki.expired_key,
        &pki.expired_cert,
        None,
        pec::crypto::DigestAlg::Sha256,
    )
    .unwrap();
    let in_2020 = 1_590_000_000; // 2020-05-20
    let old_mail = signed_message(&old_signer, in_2020);
    let v = verify_smime(&old_mail, trust, Instant::from_unix(in_2020)).unwrap();
    assert_eq!(v.signer_der, expired_der);
    let e = verify_smime(&old_mail, trust, Instant::from_unix(AFTER)).unwrap_err();
    assert!(matches!(e, VerifyError::Expired { .. }), "{e:?}");

    // Once the old certificate has left the index, its mail is from an unknown signer:
    // the overlap is what keeps it verifiable.
    let without_old = ProviderIndex::from_records(vec![ProviderRecord {
        info: ProviderInfo {
            name: "PEC Example IT S.p.A.".into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        },
        certificates: vec![next_der.clone()],
    }]);
    let e = verify_smime(&before, without_old.trust(), Instant::from_unix(BEFORE)).unwrap_err();
    assert!(matches!(e, VerifyError::UnknownSigner { .. }), "{e:?}");
}

/// Verification keeps accepting what peers send today (RSA-2048 with SHA-1 or SHA-256) and
/// accepts the 2027 keys (RSA-4096 with SHA-384, ECDSA P-256/P-384) through the same path
/// the reception point uses.
#[test]
fn the_verifier_takes_todays_and_2027_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let pki = testing::make_test_pki(&dir.path().join("pki")).unwrap();
    let p256 = testing::issue_test_leaf(&pki, "p256", TestKey::EcP256, None).unwrap();
    let p384 = testing::issue_test_leaf(&pki, "p384", TestKey::EcP384, None).unwrap();
    let rsa4096 = testing::issue_test_leaf(&pki, "rsa4096", TestKey::Rsa4096, None).unwrap();
    use pec::crypto::DigestAlg::{Sha1, Sha256, Sha384};
    let cases = [
        (pki.net_key.clone(), pki.net_cert.clone(), Sha1, "sha1"),
        (pki.net_key.clone(), pki.net_cert.clone(), Sha256, "sha256"),
        (pki.it_key.clone(), pki.it_cert.clone(), Sha256, "sha256"),
        (rsa4096.key, rsa4096.cert, Sha384, "sha384"),
        (p256.key, p256.cert, Sha256, "sha256"),
        (p384.key, p384.cert, Sha384, "sha384"),
    ];
    let index = ProviderIndex::from_records(vec![ProviderRecord {
        info: ProviderInfo {
            name: "PEC Example IT S.p.A.".into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        },
        certificates: cases.iter().map(|(_, c, _, _)| der(c)).collect(),
    }]);
    for (key, cert, digest, name) in &cases {
        let signer = pec::crypto::PemSigner::from_files(key, cert, None, *digest).unwrap();
        let raw = signed_message(&signer, BEFORE);
        let v = verify_smime(&raw, index.trust(), Instant::from_unix(BEFORE))
            .unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
        assert_eq!(v.signer_der, der(cert));
        assert_eq!(v.digest, *name);
    }
}
