// SPDX-License-Identifier: GPL-3.0-or-later
//! CMS signing with a PEM key and with a PKCS#11 token (SoftHSM2), checked by the system
//! `openssl` (an independent implementation) and by parsing the DER.
//!
//! The test PKI and tokens come from `tests/pki/*.sh`, written into per-test temporary
//! directories. All PKCS#11 checks run inside one `#[test]` because the process holds a single
//! PKCS#11 context and SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use const_oid::db::{rfc5911, rfc5912};
use der::{Decode, Encode};
use pec::crypto::testing::{self, TestKey, TestPki};
use pec::crypto::{
    sign_detached, Curve, DigestAlg, KeyKind, PemSigner, Pkcs11Config, Pkcs11Signer, SignError,
    Signer,
};
use pec::message::time::Instant;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use signature::Verifier;
use tempfile::TempDir;

/// 2025-06-03T10:11:12Z
const AT: i64 = 1_748_945_472;

const CONTENT: &[u8] = b"Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nRicevuta di accettazione\r\n--inner--\r\n";

fn pki() -> (TempDir, TestPki) {
    let dir = TempDir::new().unwrap();
    let pki = testing::make_test_pki(&dir.path().join("pki")).unwrap();
    (dir, pki)
}

fn pem_to_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let certs = x509_cert::Certificate::load_pem_chain(&pem).unwrap();
    certs[0].to_der().unwrap()
}

/// `openssl cms -verify` of a detached DER signature; returns (success, stderr).
fn openssl_cms_verify(p7s: &[u8], content: &[u8], ca: &Path) -> (bool, String) {
    let dir = TempDir::new().unwrap();
    let sig = dir.path().join("smime.p7s");
    let data = dir.path().join("content");
    std::fs::write(&sig, p7s).unwrap();
    std::fs::write(&data, content).unwrap();
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-binary", "-inform", "DER", "-in"])
        .arg(&sig)
        .arg("-content")
        .arg(&data)
        .arg("-CAfile")
        .arg(ca)
        .args(["-purpose", "any", "-out", "/dev/null"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wraps content + signature in `multipart/signed` and runs `openssl smime -verify`.
fn openssl_smime_verify(p7s: &[u8], content: &[u8], micalg: &str, ca: &Path) -> (bool, String) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(p7s);
    let mut msg = Vec::new();
    msg.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg={micalg}; boundary=\"outer\"\r\n\r\nThis is an S/MIME signed message\r\n\r\n--outer\r\n"
        )
        .as_bytes(),
    );
    msg.extend_from_slice(content);
    msg.extend_from_slice(b"\r\n--outer\r\nContent-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n");
    for line in b64.as_bytes().chunks(76) {
        msg.extend_from_slice(line);
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b"\r\n--outer--\r\n");
    let dir = TempDir::new().unwrap();
    let eml = dir.path().join("msg.eml");
    std::fs::write(&eml, &msg).unwrap();
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-in"])
        .arg(&eml)
        .arg("-CAfile")
        .arg(ca)
        .args(["-purpose", "any", "-out", "/dev/null"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Everything a good signature over `content` must satisfy.
fn check_signature(signer: &dyn Signer, p7s: &[u8], content: &[u8], pki: &TestPki) {
    let (ok, err) = openssl_cms_verify(p7s, content, &pki.ca_cert);
    assert!(ok, "openssl cms -verify failed: {err}");

    let mut tampered = content.to_vec();
    let i = tampered.len() - 5;
    tampered[i] ^= 0x01;
    let (ok, _) = openssl_cms_verify(p7s, &tampered, &pki.ca_cert);
    assert!(!ok, "openssl accepted tampered content");

    let (ok, err) = openssl_smime_verify(p7s, content, signer.digest().micalg(), &pki.ca_cert);
    assert!(ok, "openssl smime -verify failed: {err}");

    check_structure(signer, p7s, content);
}

fn check_structure(signer: &dyn Signer, p7s: &[u8], content: &[u8]) {
    let ci = ContentInfo::from_der(p7s).unwrap();
    assert_eq!(ci.content_type, rfc5911::ID_SIGNED_DATA);
    let sd: SignedData = ci.content.decode_as().unwrap();
    assert!(sd.encap_content_info.econtent.is_none(), "not detached");
    assert_eq!(sd.encap_content_info.econtent_type, rfc5911::ID_DATA);
    let digest_oid = signer.digest().oid();
    assert_eq!(sd.digest_algorithms.len(), 1);
    assert_eq!(sd.digest_algorithms.get(0).unwrap().oid, digest_oid);

    let certs: Vec<Vec<u8>> = sd
        .certificates
        .as_ref()
        .unwrap()
        .0
        .iter()
        .map(|c| c.to_der().unwrap())
        .collect();
    let leaf = x509_cert::Certificate::from_der(signer.certificate_der())
        .unwrap()
        .to_der()
        .unwrap();
    assert!(certs.contains(&leaf), "signer certificate missing");
    for extra in signer.chain_der() {
        assert!(certs.contains(extra), "chain certificate missing");
    }

    assert_eq!(sd.signer_infos.0.len(), 1);
    let si = sd.signer_infos.0.get(0).unwrap();
    assert_eq!(si.digest_alg.oid, digest_oid);
    assert!(si.digest_alg.parameters.is_none());
    match signer.key_kind().unwrap() {
        // PKCS#1 v1.5: rsaEncryption with NULL parameters (RFC 3370 §3.2).
        KeyKind::Rsa { .. } => {
            assert_eq!(si.signature_algorithm.oid, rfc5912::RSA_ENCRYPTION);
            assert_eq!(
                si.signature_algorithm
                    .parameters
                    .as_ref()
                    .unwrap()
                    .to_der()
                    .unwrap(),
                vec![0x05, 0x00]
            );
        }
        // ecdsa-with-SHA256/384, parameters absent (RFC 5758 §3.2), DER ECDSA-Sig-Value.
        KeyKind::Ecdsa(_) => {
            let expected = match signer.digest() {
                DigestAlg::Sha256 => rfc5912::ECDSA_WITH_SHA_256,
                DigestAlg::Sha384 => rfc5912::ECDSA_WITH_SHA_384,
                DigestAlg::Sha1 => panic!("ecdsa with sha1"),
            };
            assert_eq!(si.signature_algorithm.oid, expected);
            assert!(si.signature_algorithm.parameters.is_none());
            let sig = si.signature.as_bytes();
            assert_eq!(sig[0], 0x30, "not a DER SEQUENCE: {}", hex::encode(sig));
            openssl::ecdsa::EcdsaSig::from_der(sig).expect("DER ECDSA-Sig-Value");
        }
    }
    let attrs = si.signed_attrs.as_ref().unwrap();
    let value = |oid| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .unwrap_or_else(|| panic!("attribute {oid} missing"))
            .values
            .get(0)
            .unwrap()
            .clone()
    };
    let time = x509_cert::time::Time::from_der(&value(rfc5911::ID_SIGNING_TIME).to_der().unwrap())
        .unwrap();
    assert!(matches!(time, x509_cert::time::Time::UtcTime(_)));
    assert_eq!(time.to_unix_duration().as_secs() as i64, AT);
    let md: der::asn1::OctetString = value(rfc5911::ID_MESSAGE_DIGEST).decode_as().unwrap();
    assert_eq!(md.as_bytes(), signer.digest().digest(content));
    let ct: const_oid::ObjectIdentifier = value(rfc5911::ID_CONTENT_TYPE).decode_as().unwrap();
    assert_eq!(ct, rfc5911::ID_DATA);
    let caps: Vec<spki::AlgorithmIdentifierOwned> =
        value(rfc5911::SMIME_CAPABILITIES).decode_as().unwrap();
    let caps: Vec<_> = caps.iter().map(|c| c.oid).collect();
    assert_eq!(
        caps,
        [
            rfc5911::ID_AES_256_CBC,
            rfc5911::ID_AES_128_CBC,
            rfc5911::DES_EDE_3_CBC
        ]
    );
}

#[test]
fn pem_signer_produces_cms_that_openssl_verifies() {
    let (_dir, pki) = pki();
    for key in [&pki.it_key, &pki.it_key_pkcs1] {
        for digest in [DigestAlg::Sha1, DigestAlg::Sha256] {
            let signer =
                PemSigner::from_files(key, &pki.it_cert, Some(&pki.chain), digest).unwrap();
            assert_eq!(signer.chain_der().len(), 1);
            let p7s = sign_detached(&signer, CONTENT, Instant::from_unix(AT)).unwrap();
            check_signature(&signer, &p7s, CONTENT, &pki);
        }
    }
    // Without a chain the CA comes from -CAfile only.
    let signer =
        PemSigner::from_files(&pki.net_key, &pki.net_cert, None, DigestAlg::Sha256).unwrap();
    assert!(signer.chain_der().is_empty());
    assert_eq!(signer.key_bits(), 2048);
    let p7s = sign_detached(&signer, CONTENT, Instant::from_unix(AT)).unwrap();
    check_signature(&signer, &p7s, CONTENT, &pki);
}

/// The 2027 key types with a PEM key: RSA-3072 (the test PKI's default), RSA-4096 and
/// ECDSA P-256/P-384, each with SHA-256 and SHA-384, verified by `openssl cms` and
/// `openssl smime`; ECDSA with SHA-1 is refused.
#[test]
fn pem_signers_of_every_key_type_verify_with_openssl() {
    let (_dir, pki) = pki();
    let rsa3072 =
        PemSigner::from_files(&pki.it_key, &pki.it_cert, None, DigestAlg::Sha256).unwrap();
    assert_eq!(rsa3072.key_kind().unwrap(), KeyKind::Rsa { bits: 3072 });
    let mut cases = vec![(
        pki.it_key.clone(),
        pki.it_cert.clone(),
        KeyKind::Rsa { bits: 3072 },
    )];
    for (name, key, kind) in [
        ("rsa4096", TestKey::Rsa4096, KeyKind::Rsa { bits: 4096 }),
        ("p256", TestKey::EcP256, KeyKind::Ecdsa(Curve::P256)),
        ("p384", TestKey::EcP384, KeyKind::Ecdsa(Curve::P384)),
    ] {
        let leaf = testing::issue_test_leaf(&pki, name, key, None).unwrap();
        cases.push((leaf.key, leaf.cert, kind));
    }
    for (key, cert, kind) in &cases {
        for digest in [DigestAlg::Sha256, DigestAlg::Sha384] {
            let signer = PemSigner::from_files(key, cert, Some(&pki.chain), digest).unwrap();
            assert_eq!(signer.key_kind().unwrap(), *kind);
            let p7s = sign_detached(&signer, CONTENT, Instant::from_unix(AT)).unwrap();
            check_signature(&signer, &p7s, CONTENT, &pki);
        }
    }
    let (key, cert, _) = &cases[2];
    let err = PemSigner::from_files(key, cert, None, DigestAlg::Sha1).unwrap_err();
    assert!(
        err.to_string()
            .contains("sha1 cannot be used with an ECDSA P-256 key"),
        "{err}"
    );
    // An EC key against an RSA certificate.
    let err = PemSigner::from_files(key, &pki.it_cert, None, DigestAlg::Sha256).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn pem_signer_rejects_a_key_that_does_not_match() {
    let (_dir, pki) = pki();
    let err =
        PemSigner::from_files(&pki.net_key, &pki.it_cert, None, DigestAlg::Sha256).unwrap_err();
    assert!(matches!(err, SignError::Key(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("does not match"), "{msg}");
    assert!(msg.contains("net.key") && msg.contains("it.pem"), "{msg}");

    let err =
        PemSigner::from_files(&pki.it_cert, &pki.it_cert, None, DigestAlg::Sha256).unwrap_err();
    assert!(matches!(err, SignError::Key(_)), "{err:?}");
    let err = PemSigner::from_files(&pki.it_key, &pki.it_key, None, DigestAlg::Sha256).unwrap_err();
    assert!(matches!(err, SignError::Certificate(_)), "{err:?}");
}

/// The test PKI itself: outsider and expired signers must not verify against the test CA.
#[test]
fn outsider_and_expired_signatures_do_not_verify() {
    let (_dir, pki) = pki();
    for (key, cert, why) in [
        (&pki.outsider_key, &pki.outsider_cert, "self-signed"),
        (&pki.expired_key, &pki.expired_cert, "expired"),
    ] {
        let signer = PemSigner::from_files(key, cert, None, DigestAlg::Sha256).unwrap();
        let p7s = sign_detached(&signer, CONTENT, Instant::from_unix(AT)).unwrap();
        let (ok, err) = openssl_cms_verify(&p7s, CONTENT, &pki.ca_cert);
        assert!(!ok, "{why} signer verified");
        assert!(err.contains(why), "{why}: {err}");
    }
}

fn pkcs11_config(
    module: &Path,
    token: &str,
    pin: &str,
    digest: DigestAlg,
    pki: &TestPki,
) -> Pkcs11Config {
    let mut config = Pkcs11Config::new(module, token, "pec-signer", pin);
    config.digest = digest;
    config.chain_pem = Some(pki.chain.clone());
    config.sessions = 2;
    config
}

#[test]
fn pkcs11_signer_with_softhsm() {
    if !testing::softhsm_available() {
        if std::env::var("PEC_ALLOW_MISSING_HSM").as_deref() == Ok("1") {
            eprintln!("\n*** SKIPPED: pkcs11_signer_with_softhsm: softhsm2/opensc not installed (PEC_ALLOW_MISSING_HSM=1) ***\n");
            println!("SKIPPED: pkcs11_signer_with_softhsm (softhsm2 missing)");
            return;
        }
        panic!(
            "softhsm2-util, pkcs11-tool or the softhsm2 module not found: install softhsm2 and opensc \
             (apt-get install softhsm2 opensc), or set PEC_ALLOW_MISSING_HSM=1 to skip this test"
        );
    }
    let module = testing::softhsm_module().unwrap();
    let (dir, pki) = pki();
    let hsm = dir.path().join("hsm");
    let p256 = testing::issue_test_leaf(&pki, "p256", TestKey::EcP256, None).unwrap();
    let p384 = testing::issue_test_leaf(&pki, "p384", TestKey::EcP384, None).unwrap();
    let rsa2048 = testing::issue_test_leaf(&pki, "rsa2048", TestKey::Rsa2048, None).unwrap();
    // All tokens first: SoftHSM scans its token directory at C_Initialize.
    let token = testing::make_test_token(
        &hsm,
        "pec-test",
        "1234",
        &pki.it_key,
        &pki.it_cert,
        "pec-signer",
    )
    .unwrap();
    let other = testing::make_test_token(
        &hsm,
        "pec-mismatch",
        "5678",
        &pki.it_key,
        &pki.net_cert,
        "pec-signer",
    )
    .unwrap();
    assert_eq!(token.softhsm2_conf, other.softhsm2_conf);
    for (label, leaf) in [
        ("pec-p256", &p256),
        ("pec-p384", &p384),
        ("pec-rsa2048", &rsa2048),
    ] {
        testing::make_test_token(&hsm, label, "1234", &leaf.key, &leaf.cert, "pec-signer").unwrap();
    }
    // An EC key under an RSA certificate, and an EC key under another EC certificate.
    testing::make_test_token(
        &hsm,
        "pec-ec-rsa",
        "1234",
        &p256.key,
        &pki.it_cert,
        "pec-signer",
    )
    .unwrap();
    testing::make_test_token(
        &hsm,
        "pec-ec-ec",
        "1234",
        &p256.key,
        &p384.cert,
        "pec-signer",
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &token.softhsm2_conf);

    // Wrong PIN, before anything logs in (login state is per token and process-wide).
    let err = Pkcs11Signer::open(&pkcs11_config(
        &module,
        "pec-test",
        "0000",
        DigestAlg::Sha256,
        &pki,
    ))
    .unwrap_err();
    assert!(matches!(err, SignError::Pkcs11(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("wrong pin") && msg.contains("\"pec-test\""),
        "{msg}"
    );

    // Unknown token label.
    let err = Pkcs11Signer::open(&pkcs11_config(
        &module,
        "no-such-token",
        "1234",
        DigestAlg::Sha256,
        &pki,
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no token labelled \"no-such-token\""), "{msg}");
    assert!(
        msg.contains("\"pec-test\""),
        "lists the tokens present: {msg}"
    );
    // Other tokens are listed: not the look of a token directory this user cannot read.
    assert!(!msg.contains("belong to another user"), "{msg}");

    // The certificate without the PIN (what `pec status` shows): a public object.
    let der = pec::crypto::pkcs11::read_certificate(&module, "pec-test", "pec-signer").unwrap();
    assert_eq!(der, pem_to_der(&pki.it_cert));

    // Key and certificate of different providers under one label.
    let err = Pkcs11Signer::open(&pkcs11_config(
        &module,
        "pec-mismatch",
        "5678",
        DigestAlg::Sha256,
        &pki,
    ))
    .unwrap_err();
    assert!(matches!(err, SignError::Key(_)), "{err:?}");
    assert!(err.to_string().contains("does not match"), "{err}");

    // Missing certificate / key labels.
    let mut config = pkcs11_config(&module, "pec-test", "1234", DigestAlg::Sha256, &pki);
    config.cert_label = Some("no-such-cert".into());
    let msg = Pkcs11Signer::open(&config).unwrap_err().to_string();
    assert!(
        msg.contains("no certificate labelled \"no-such-cert\" on token \"pec-test\""),
        "{msg}"
    );
    let mut config = pkcs11_config(&module, "pec-test", "1234", DigestAlg::Sha256, &pki);
    config.key_label = "no-such-key".into();
    let msg = Pkcs11Signer::open(&config).unwrap_err().to_string();
    assert!(
        msg.contains("no private key labelled \"no-such-key\""),
        "{msg}"
    );

    // Missing module.
    let mut config = pkcs11_config(&module, "pec-test", "1234", DigestAlg::Sha256, &pki);
    config.module = "/nonexistent/libpkcs11.so".into();
    let msg = Pkcs11Signer::open(&config).unwrap_err().to_string();
    assert!(msg.contains("\"/nonexistent/libpkcs11.so\""), "{msg}");

    // Good signatures with both digests.
    for digest in [DigestAlg::Sha1, DigestAlg::Sha256] {
        let signer =
            Pkcs11Signer::open(&pkcs11_config(&module, "pec-test", "1234", digest, &pki)).unwrap();
        assert_eq!(signer.certificate_der(), pem_to_der(&pki.it_cert));
        assert_eq!(signer.chain_der(), [pem_to_der(&pki.ca_cert)]);
        let p7s = sign_detached(&signer, CONTENT, Instant::from_unix(AT)).unwrap();
        check_signature(&signer, &p7s, CONTENT, &pki);
    }

    // ECDSA P-256/P-384 and RSA-2048 keys on tokens: CKM_ECDSA's raw r||s becomes the DER
    // signature openssl verifies; both digests.
    for (label, kind) in [
        ("pec-p256", KeyKind::Ecdsa(Curve::P256)),
        ("pec-p384", KeyKind::Ecdsa(Curve::P384)),
        ("pec-rsa2048", KeyKind::Rsa { bits: 2048 }),
    ] {
        for digest in [DigestAlg::Sha256, DigestAlg::Sha384] {
            let signer =
                Pkcs11Signer::open(&pkcs11_config(&module, label, "1234", digest, &pki)).unwrap();
            assert_eq!(signer.key_kind().unwrap(), kind, "{label}");
            let p7s = sign_detached(&signer, CONTENT, Instant::from_unix(AT)).unwrap();
            check_signature(&signer, &p7s, CONTENT, &pki);
            let raw = signer.bare_sign(CONTENT).unwrap();
            if let KeyKind::Ecdsa(c) = kind {
                assert_eq!(raw.len(), if c == Curve::P256 { 64 } else { 96 });
            }
        }
    }
    // XAdES-B-B evidence signatures (rem::xades) through the token: RSA and ECDSA (raw
    // r||s in XML-DSig), SHA-256 and SHA-384; checked by our verifier and by xmlsec1.
    for (label, digest, method) in [
        ("pec-test", DigestAlg::Sha256, "xmldsig-more#rsa-sha256"),
        ("pec-p256", DigestAlg::Sha256, "xmldsig-more#ecdsa-sha256"),
        ("pec-p384", DigestAlg::Sha384, "xmldsig-more#ecdsa-sha384"),
    ] {
        let signer =
            Pkcs11Signer::open(&pkcs11_config(&module, label, "1234", digest, &pki)).unwrap();
        check_xades_b_b(&signer, &pki, dir.path(), method);
    }

    let err = Pkcs11Signer::open(&pkcs11_config(
        &module,
        "pec-p256",
        "1234",
        DigestAlg::Sha1,
        &pki,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("sha1 cannot be used"), "{err}");
    for label in ["pec-ec-rsa", "pec-ec-ec"] {
        let err = Pkcs11Signer::open(&pkcs11_config(
            &module,
            label,
            "1234",
            DigestAlg::Sha256,
            &pki,
        ))
        .unwrap_err();
        assert!(matches!(err, SignError::Key(_)), "{label}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("is of type") || msg.contains("does not match"),
            "{label}: {msg}"
        );
    }

    // Concurrent use of one signer (2 sessions, 4 threads) and the bare signature.
    let signer = Pkcs11Signer::open(&pkcs11_config(
        &module,
        "pec-test",
        "1234",
        DigestAlg::Sha256,
        &pki,
    ))
    .unwrap();
    let vk = VerifyingKey::<sha2::Sha256>::new(
        rsa::RsaPublicKey::from_public_key_der(
            &x509_cert::Certificate::from_der(signer.certificate_der())
                .unwrap()
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .unwrap(),
        )
        .unwrap(),
    );
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let (signer, vk) = (&signer, &vk);
            s.spawn(move || {
                for i in 0..5u8 {
                    let data = [t, i, 42];
                    let sig = signer.bare_sign(&data).unwrap();
                    vk.verify(&data, &Signature::try_from(sig.as_slice()).unwrap())
                        .unwrap();
                }
            });
        }
    });
    let p7s = sign_detached(&signer, CONTENT, Instant::from_unix(AT)).unwrap();
    let (ok, err) = openssl_cms_verify(&p7s, CONTENT, &pki.ca_cert);
    assert!(ok, "{err}");

    // Lost login: log the application out of the token behind the signer's back (login
    // state is process-wide). The signer's sessions now fail; each is reopened once,
    // logged in again, and the signature retried.
    logout_token(&module, "pec-test");
    for _ in 0..3 {
        let p7s = sign_detached(&signer, CONTENT, Instant::from_unix(AT)).unwrap();
        let (ok, err) = openssl_cms_verify(&p7s, CONTENT, &pki.ca_cert);
        assert!(ok, "{err}");
    }
}

/// An unsigned ERDS evidence in the REM kit's shape.
const EVIDENCE: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    "<tns:Evidence xmlns:tns=\"http://uri.etsi.org/19522/v1#\" version=\"EN319522v1.1.1\">\n",
    "  <tns:EvidenceIdentifier>1@pec.example.it</tns:EvidenceIdentifier>\n",
    "</tns:Evidence>"
);

/// Signs [`EVIDENCE`] into XAdES-B-B with `signer`; the result verifies with our verifier
/// (the token's certificate, the signature method `method`) and with xmlsec1 when installed.
fn check_xades_b_b(signer: &dyn Signer, pki: &TestPki, dir: &Path, method: &str) {
    let xml = pec::rem::xades::sign_b_b(EVIDENCE, signer, Instant::from_unix(AT)).unwrap();
    assert!(xml.contains(method), "{method}");
    let v = pec::crypto::xmldsig::verify(xml.as_bytes()).unwrap();
    assert_eq!(v.signer_certificate(), signer.certificate_der());
    assert!(v.covers_document());
    let altered = xml.replace("1@pec", "2@pec");
    assert!(pec::crypto::xmldsig::verify(altered.as_bytes()).is_err());
    if Command::new("xmlsec1").arg("--version").output().is_err() {
        eprintln!("SKIPPED: xmlsec1 not installed: the xades check by xmlsec1");
        return;
    }
    let file = dir.join("evidence.xml");
    std::fs::write(&file, &xml).unwrap();
    let out = Command::new("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(&pki.ca_cert)
        .args(["--id-attr:Id", "SignedProperties"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{method}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Logs the process out of `label` through a second handle on the (already initialised)
/// module.
fn logout_token(module: &Path, label: &str) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error, RvError};
    let ctx = Pkcs11::new(module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        other => panic!("module should already be initialised: {other:?}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == label)
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    session.logout().unwrap();
}
