// SPDX-License-Identifier: GPL-3.0-or-later
//! Provider index sync without a server: signed LDIF (.p7m) verification, the refusal of
//! bad, empty and shrunken copies, the stored copy and its fallback, the runtime handle.

use std::path::Path;
use std::sync::OnceLock;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::PKey;
use openssl::x509::X509;
use pec::crypto::testing::{make_test_pki, TestPki};
use pec::doubles::TestStore;
use pec::index::ldif::write_ldif;
use pec::index::sync::{self, Source, SyncError};
use pec::index::{IndexHandle, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::message::kind::RecipientType;
use pec::message::time::Instant;
use pec::store::{SqliteStore, Store};

struct Env {
    _dir: tempfile::TempDir,
    pki: TestPki,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_test_pki(&dir.path().join("pki")).unwrap();
        Env { _dir: dir, pki }
    })
}

fn der(pem: &Path) -> Vec<u8> {
    X509::from_pem(&std::fs::read(pem).unwrap())
        .unwrap()
        .to_der()
        .unwrap()
}

fn record(name: &str, domain: &str, cert: &Path) -> ProviderRecord {
    ProviderRecord {
        info: ProviderInfo {
            name: name.into(),
            mail_receipt: format!("ricevute@{domain}"),
            managed_domains: vec![domain.into()],
        },
        certificates: vec![der(cert)],
    }
}

fn two_providers() -> String {
    let p = &env().pki;
    write_ldif(&[
        record("PEC Example IT S.p.A.", "pec.example.it", &p.it_cert),
        record("PEC Example NET S.p.A.", "pec.example.net", &p.net_cert),
    ])
}

/// CMS SignedData, DER, content attached, signed with `key`/`cert`.
fn sign(ldif: &str, key: &Path, cert: &Path) -> Vec<u8> {
    let key = PKey::private_key_from_pem(&std::fs::read(key).unwrap()).unwrap();
    let cert = X509::from_pem(&std::fs::read(cert).unwrap()).unwrap();
    CmsContentInfo::sign(
        Some(&cert),
        Some(&key),
        None,
        Some(ldif.as_bytes()),
        CMSOptions::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap()
}

fn now() -> Instant {
    Instant::parse_cli("2026-01-02T10:00:00Z").unwrap()
}

#[test]
fn a_signed_ldif_by_the_configured_signer_opens_and_others_do_not() {
    let p = &env().pki;
    let ldif = two_providers();
    let signed = sign(&ldif, &p.it_key, &p.it_cert);
    let it_pem = std::fs::read(&p.it_cert).unwrap();
    assert_eq!(sync::open_signed_ldif(&signed, &it_pem).unwrap(), ldif);
    // Signed by someone else.
    let other = sign(&ldif, &p.outsider_key, &p.outsider_cert);
    let e = sync::open_signed_ldif(&other, &it_pem).unwrap_err();
    assert!(e.contains("not by the configured signer"), "{e}");
    // Tampered content.
    let mut tampered = signed.clone();
    let at = tampered
        .windows(14)
        .position(|w| w == b"pec.example.ne")
        .unwrap();
    tampered[at] = b'P';
    assert!(sync::open_signed_ldif(&tampered, &it_pem).is_err());
    // Garbage.
    assert!(sync::open_signed_ldif(b"not cms", &it_pem).is_err());
}

#[tokio::test]
async fn sync_from_a_signed_file_stores_the_copy_and_keeps_it_when_the_source_goes_bad() {
    let p = &env().pki;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
    let file = dir.path().join("index.ldif.p7m");
    std::fs::write(&file, sign(&two_providers(), &p.it_key, &p.it_cert)).unwrap();
    let source = Source::SignedLdif {
        path: file.clone(),
        signer_cert: p.it_cert.clone(),
    };
    let c = sync::sync(&store, &source, false, now()).await.unwrap();
    assert_eq!(c.stored.providers, 2);
    let (index, from) = sync::load_current(&store, Path::new("/nonexistent")).unwrap();
    assert!(from.contains("index.ldif.p7m"), "{from}");
    assert_eq!(
        index.recipient_type("dan@PEC.example.NET"),
        RecipientType::Certificato
    );

    // Source down: the copy stays.
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(
        sync::sync(&store, &source, false, now()).await,
        Err(SyncError::Read { .. })
    ));
    // Shrunk to nothing: refused, then forced.
    std::fs::write(&file, sign("version: 1\n", &p.it_key, &p.it_cert)).unwrap();
    let e = sync::sync(&store, &source, false, now()).await.unwrap_err();
    assert!(matches!(e, SyncError::Refused { .. }), "{e}");
    assert_eq!(store.stored_index().unwrap().unwrap().providers, 2);
    let c = sync::sync(&store, &source, true, now()).await.unwrap();
    assert_eq!(c.stored.providers, 0);
}

#[test]
fn a_copy_with_a_wrong_hash_or_under_half_the_providers_is_refused() {
    let p = &env().pki;
    let ldif = two_providers();
    let bad = ldif.replacen(
        "providerCertificateHash: ",
        "providerCertificateHash: 00",
        1,
    );
    let e = sync::check(bad, "test", None, false, now()).unwrap_err();
    assert!(matches!(e, SyncError::Invalid { .. }), "{e}");
    let one = write_ldif(&[record(
        "PEC Example IT S.p.A.",
        "pec.example.it",
        &p.it_cert,
    )]);
    // 1 of 3: refused; 1 of 2: accepted (not fewer than half).
    let e = sync::check(one.clone(), "test", Some(3), false, now()).unwrap_err();
    assert!(e.to_string().contains("fewer than half"), "{e}");
    assert!(sync::check(one.clone(), "test", Some(2), false, now()).is_ok());
    assert!(sync::check(one, "test", Some(3), true, now()).is_ok());
}

#[test]
fn without_a_stored_copy_the_configured_file_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.ldif");
    std::fs::write(&file, two_providers()).unwrap();
    let store = TestStore::new();
    let (index, from) = sync::load_current(&store, &file).unwrap();
    assert_eq!(index.providers().len(), 2);
    assert_eq!(from, file.display().to_string());
}

#[test]
fn the_handle_swaps_the_index_for_new_readers_only() {
    let handle = IndexHandle::new(ProviderIndex::parse(&two_providers()).unwrap());
    let before = handle.current();
    assert_eq!(
        handle.recipient_type("a@pec.example.net"),
        RecipientType::Certificato
    );
    let p = &env().pki;
    handle.replace(ProviderIndex::from_records(vec![record(
        "PEC Example IT S.p.A.",
        "pec.example.it",
        &p.it_cert,
    )]));
    assert_eq!(
        handle.recipient_type("a@pec.example.net"),
        RecipientType::Esterno
    );
    assert_eq!(
        before.recipient_type("a@pec.example.net"),
        RecipientType::Certificato
    );
}

/// A server that accepts the connection and never answers: the timeout ends the sync.
#[tokio::test]
async fn a_silent_ldap_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            kept.push(s);
        }
    });
    let started = std::time::Instant::now();
    let e = sync::fetch_ldap(
        &format!("ldap://{addr}"),
        None,
        None,
        std::time::Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{e}");
    assert!(matches!(e, SyncError::Ldap { .. }), "{e}");
    held.abort();
}

/// Our record, published as a signed LDIF with our signer, reads back through the same
/// verification the sync uses, with the hash of our certificate.
#[test]
fn our_published_record_verifies_and_parses_back() {
    use pec::crypto::{DigestAlg, PemSigner, Signer};
    let p = &env().pki;
    let signer = PemSigner::from_files(&p.it_key, &p.it_cert, None, DigestAlg::Sha256).unwrap();
    let record = record("PEC Example IT S.p.A.", "pec.example.it", &p.it_cert);
    let der = sync::publish(&record, &signer, now()).unwrap();
    let it_pem = std::fs::read(&p.it_cert).unwrap();
    let ldif = sync::open_signed_ldif(&der, &it_pem).unwrap();
    assert!(ldif.contains(&format!(
        "providerCertificateHash: {}",
        pec::index::sha1_hex_upper(signer.certificate_der())
    )));
    let checked = sync::check(ldif, "published", None, false, now()).unwrap();
    assert_eq!(checked.stored.providers, 1);
    assert!(checked
        .index
        .trust()
        .find(signer.certificate_der())
        .is_some());
    // openssl cms agrees it is an attached SignedData.
    let mut cms = CmsContentInfo::from_der(&der).unwrap();
    let mut out = Vec::new();
    let certs = X509::stack_from_pem(&it_pem).unwrap();
    let mut stack = openssl::stack::Stack::new().unwrap();
    for c in certs {
        stack.push(c).unwrap();
    }
    cms.verify(
        Some(&stack),
        None,
        None,
        Some(&mut out),
        CMSOptions::NOINTERN | CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
    )
    .unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("managedDomains: pec.example.it"));
}

/// The refresh of a running service swaps the handle on success and leaves both the
/// stored copy and the handle alone on a bad or missing source.
#[tokio::test]
async fn a_refresh_swaps_the_handle_only_for_a_good_copy() {
    let p = &env().pki;
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(SqliteStore::open(&dir.path().join("pec.db")).unwrap());
    let handle = IndexHandle::default();
    let file = dir.path().join("index.ldif.p7m");
    let source = Source::SignedLdif {
        path: file.clone(),
        signer_cert: p.it_cert.clone(),
    };
    std::fs::write(&file, sign(&two_providers(), &p.it_key, &p.it_cert)).unwrap();
    let stored = sync::refresh(store.clone(), &handle, &source, false, now())
        .await
        .unwrap();
    assert_eq!(stored.providers, 2);
    assert_eq!(
        handle.recipient_type("a@pec.example.net"),
        RecipientType::Certificato
    );
    // Signed by someone else: refused, nothing changes.
    std::fs::write(
        &file,
        sign(&two_providers(), &p.outsider_key, &p.outsider_cert),
    )
    .unwrap();
    let e = sync::refresh(store.clone(), &handle, &source, false, now())
        .await
        .unwrap_err();
    assert!(matches!(e, SyncError::Signed { .. }), "{e}");
    assert_eq!(handle.current().providers().len(), 2);
    assert_eq!(store.stored_index().unwrap().unwrap().providers, 2);
}

/// The lines of a TLS policy map, without its comments.
fn policy_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// `pec serve`'s refresh rewrites the TLS policy map with each new copy: the other
/// provider's domain gets `verify`, our own domain is left out.
#[tokio::test]
async fn the_refresh_writes_the_tls_policy_map_of_the_new_copy() {
    let p = &env().pki;
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn pec::store::LogStore> =
        std::sync::Arc::new(SqliteStore::open(&dir.path().join("pec.db")).unwrap());
    let handle = std::sync::Arc::new(IndexHandle::default());
    let file = dir.path().join("index.ldif.p7m");
    std::fs::write(&file, sign(&two_providers(), &p.it_key, &p.it_cert)).unwrap();
    let source = Source::SignedLdif {
        path: file,
        signer_cert: p.it_cert.clone(),
    };
    let map = dir.path().join("tls_policy");
    let target = pec::index::tls_policy::Target {
        path: map.clone(),
        own: vec!["pec.example.it".into()],
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pec::index::refresh::run(
        store,
        handle.clone(),
        source,
        std::time::Duration::from_secs(3600),
        false,
        Some(target),
        async {
            let _ = stopped.await;
        },
    ));
    // The first sync happens at once; wait for it (deadline), then stop the task.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !map.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await.unwrap();
    assert_eq!(policy_lines(&map), ["pec.example.net verify"]);
    assert_eq!(handle.current().providers().len(), 2);
}

/// `pec index sync` writes the map of the copy it stored; `pec index tls-policy -o -`
/// prints it; without a path to write, `tls-policy` is a usage error.
#[test]
fn pec_index_sync_and_tls_policy_write_the_map() {
    let p = &env().pki;
    let dir = tempfile::tempdir().unwrap();
    let signed = dir.path().join("index.ldif.p7m");
    std::fs::write(&signed, sign(&two_providers(), &p.it_key, &p.it_cert)).unwrap();
    std::fs::write(dir.path().join("index.ldif"), "version: 1\n").unwrap();
    let map = dir.path().join("tls_policy");
    let config = |with_map: bool| {
        let path = dir
            .path()
            .join(if with_map { "pec.toml" } else { "nomap.toml" });
        let text = format!(
            r#"[provider]
name = "PEC Example NET S.p.A."
service_address = "posta-certificata@pec.example.net"
mail_receipt = "ricevute@pec.example.net"
domains = ["pec.example.net"]

[signing]
backend = "pkcs11"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "pec"
key_label = "k"
pin = "1234"

[store]
path = "{db}"

[index]
ldif = "{ldif}"
signed_ldif = "{signed}"
signer_cert = "{signer}"
{map}

[antivirus]
clamd = "tcp:127.0.0.1:3310"
"#,
            db = dir.path().join("pec.db").display(),
            ldif = dir.path().join("index.ldif").display(),
            signed = signed.display(),
            signer = p.it_cert.display(),
            map = if with_map {
                format!("tls_policy_map = \"{}\"", map.display())
            } else {
                String::new()
            },
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |cfg: &Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pec"))
            .args(&args[..2])
            .arg("-c")
            .arg(cfg)
            .args(&args[2..])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (with_map, without_map) = (config(true), config(false));
    let (code, out, err) = run(&with_map, &["index", "sync"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("TLS policy map"), "{out}");
    // Provider B's view: A's domain, not its own.
    assert_eq!(policy_lines(&map), ["pec.example.it verify"]);

    let (code, out, err) = run(&without_map, &["index", "tls-policy", "-o", "-"]);
    assert_eq!(code, 0, "{err}");
    let printed: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(printed, ["pec.example.it verify"]);

    let (code, _, err) = run(&without_map, &["index", "tls-policy"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tls_policy_map"), "{err}");
}
