// SPDX-License-Identifier: GPL-3.0-or-later
//! Sender certificates validated, not just looked up (issue 19 point 3): a test CA
//! (tests/pki/make-revocation-pki.sh) that revokes provider certificates, its CRL served
//! over HTTP by a server in this test (which can also answer with the wrong CRL, an
//! expired one, or nothing at all), and `openssl ocsp` as the OCSP responder.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::PKey;
use openssl::x509::X509;
use pec::crypto::revocation::{
    RevocationChecker, RevocationMode, RevocationSettings, RevocationStatus,
};
use pec::crypto::verify::{verify_smime_with, ChainPolicy, Verified, VerifyError, VerifyOptions};
use pec::index::TrustSet;
use pec::message::time::Instant;

/// What the CRL server answers.
#[derive(Clone)]
enum Answer {
    Serve(Vec<u8>),
    /// Accepts, reads the request, never answers (until the client gives up).
    Silent,
}

struct CrlServer {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
}

impl CrlServer {
    fn start() -> CrlServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new(Answer::Silent));
        let requests = Arc::new(AtomicUsize::new(0));
        let (a, r) = (answer.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                r.fetch_add(1, Ordering::SeqCst);
                let answer = a.lock().unwrap().clone();
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    match answer {
                        Answer::Serve(body) => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            );
                            let _ = conn.write_all(head.as_bytes());
                            let _ = conn.write_all(&body);
                        }
                        Answer::Silent => {
                            // Hold the connection until the client closes it.
                            while let Ok(n) = conn.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        CrlServer {
            port,
            answer,
            requests,
        }
    }

    fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// `openssl ocsp` on a free port, stopped (by its pid) when dropped.
struct Responder(Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_responder(dir: &Path, port: u16) -> Responder {
    // Readiness is read from its log: an empty probe connection would block the
    // responder (openssl 3.0 waits on it for good).
    let log = dir.join("ocsp.log");
    let child = Command::new("openssl")
        .args(["ocsp", "-index", "index.txt", "-port", &port.to_string()])
        .args([
            "-rsigner", "ca.pem", "-rkey", "ca.key", "-CA", "ca.pem", "-nmin", "10",
        ])
        .current_dir(dir)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl ocsp");
    let r = Responder(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ACCEPT")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "ocsp responder did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    r
}

struct Pki {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Pki {
    fn make(crl_port: u16, ocsp_port: u16) -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pki/make-revocation-pki.sh");
        let out = Command::new("sh")
            .arg(script)
            .arg(&dir)
            .arg(format!("http://127.0.0.1:{crl_port}/ca.crl"))
            .arg(format!("http://127.0.0.1:{ocsp_port}/ocsp"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki { dir, _tmp: tmp }
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }

    fn cert(&self, name: &str) -> X509 {
        X509::from_pem(&self.file(&format!("{name}.pem"))).unwrap()
    }

    /// A multipart/signed message signed by leaf `name`, and a provider index holding it.
    fn signed(&self, name: &str) -> (Vec<u8>, TrustSet) {
        let cert = self.cert(name);
        let key = PKey::private_key_from_pem(&self.file(&format!("{name}.key"))).unwrap();
        let content = b"Content-Type: text/plain\r\n\r\nciao\r\n";
        let p7s = CmsContentInfo::sign(
            Some(&cert),
            Some(&key),
            None,
            Some(content),
            CMSOptions::DETACHED | CMSOptions::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(p7s);
        let mut m = b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"B\"\r\n\r\n--B\r\n".to_vec();
        m.extend_from_slice(content);
        m.extend_from_slice(b"\r\n--B\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        m.extend_from_slice(b64.as_bytes());
        m.extend_from_slice(b"\r\n--B--\r\n");
        let mut trust = TrustSet::new();
        trust.add(cert.to_der().unwrap(), None);
        (m, trust)
    }

    fn policy(&self, checker: Arc<RevocationChecker>) -> ChainPolicy {
        ChainPolicy::from_pem(&self.file("ca.pem"), true)
            .unwrap()
            .with_revocation(checker)
    }
}

fn settings(cache: &Path) -> RevocationSettings {
    RevocationSettings {
        mode: RevocationMode::Grace,
        grace: Duration::from_secs(3 * 86_400),
        cache_dir: Some(cache.to_path_buf()),
        fetch_timeout: Duration::from_millis(700),
        retry_after: Duration::from_secs(60),
        refresh_before: Duration::from_secs(3600),
        ocsp: true,
    }
}

fn now() -> Instant {
    Instant::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

fn verify(
    pki: &Pki,
    leaf: &str,
    policy: &ChainPolicy,
    at: Instant,
) -> Result<Verified, VerifyError> {
    let (raw, trust) = pki.signed(leaf);
    verify_smime_with(&raw, &VerifyOptions::new(&trust, at).with_chain(policy))
}

struct Setup {
    server: CrlServer,
    pki: Pki,
    _ocsp: Responder,
}

fn setup() -> Setup {
    let server = CrlServer::start();
    let ocsp_port = free_port();
    let pki = Pki::make(server.port, ocsp_port);
    server.set(Answer::Serve(pki.file("crl.der")));
    let ocsp = start_responder(&pki.dir, ocsp_port);
    Setup {
        server,
        pki,
        _ocsp: ocsp,
    }
}

#[test]
fn crl_and_ocsp_say_good_and_revoked_and_the_cache_is_used() {
    let Setup { server, pki, _ocsp } = setup();
    let cache = tempfile::tempdir().unwrap();
    let checker = Arc::new(RevocationChecker::new(settings(cache.path())));
    let policy = pki.policy(checker.clone());

    // Good according to the CRL; the second time from the cache (no request).
    let v = verify(&pki, "good", &policy, now()).unwrap();
    match &v.revocation {
        RevocationStatus::Good { source } => {
            assert!(source.starts_with("crl http://127.0.0.1"), "{source}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests(), 1);
    verify(&pki, "good", &policy, now()).unwrap();
    assert_eq!(server.requests(), 1, "warm cache: no fetch");

    // Revoked, by the CRL.
    match verify(&pki, "revoked", &policy, now()) {
        Err(VerifyError::Revoked { reason, by, at, .. }) => {
            assert_eq!(reason, "keyCompromise");
            assert!(by.starts_with("crl "), "{by}");
            assert_eq!(at.rfc3339(), "2024-06-01T00:00:00Z");
        }
        other => panic!("{other:?}"),
    }
    // As of a date before the revocation (pec verify --at): still good then.
    let before = Instant::parse_cli("2024-01-15").unwrap();
    let v = verify(&pki, "revoked", &policy, before).unwrap();
    assert!(
        matches!(&v.revocation, RevocationStatus::Good { source } if source.contains("after the instant checked"))
    );

    // OCSP only: good and revoked, from `openssl ocsp`.
    let v = verify(&pki, "ocspgood", &policy, now()).unwrap();
    assert!(
        matches!(&v.revocation, RevocationStatus::Good { source } if source.starts_with("ocsp ")),
        "{:?}",
        v.revocation
    );
    match verify(&pki, "ocsprev", &policy, now()) {
        Err(VerifyError::Revoked { by, .. }) => assert!(by.starts_with("ocsp "), "{by}"),
        other => panic!("{other:?}"),
    }

    // A restart finds the CRL on disk, with the server down: nothing lost.
    server.set(Answer::Silent);
    let restarted = Arc::new(RevocationChecker::new(settings(cache.path())));
    let policy = pki.policy(restarted);
    let before = server.requests();
    match verify(&pki, "revoked", &policy, now()) {
        Err(VerifyError::Revoked { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        verify(&pki, "good", &policy, now()).unwrap().revocation,
        RevocationStatus::Good { .. }
    ));
    assert_eq!(server.requests(), before, "the disk cache answered");
}

#[test]
fn name_constraints_and_email_protection_are_enforced() {
    let Setup { pki, _ocsp, .. } = setup();
    let cache = tempfile::tempdir().unwrap();
    let policy = pki.policy(Arc::new(RevocationChecker::new(settings(cache.path()))));
    match verify(&pki, "outside", &policy, now()) {
        Err(VerifyError::Chain(r)) => assert!(r.contains("subtree"), "{r}"),
        other => panic!("{other:?}"),
    }
    match verify(&pki, "noeku", &policy, now()) {
        Err(VerifyError::Chain(r)) => assert!(r.contains("emailProtection"), "{r}"),
        other => panic!("{other:?}"),
    }
    // Under an archive anchor a certificate without extendedKeyUsage passes.
    let archive = ChainPolicy::default()
        .with_archive_pem(&pki.file("ca.pem"))
        .unwrap()
        .with_revocation(Arc::new(RevocationChecker::new(settings(cache.path()))));
    let archive = ChainPolicy {
        enforce: true,
        ..archive
    };
    let v = verify(&pki, "noeku", &archive, now()).unwrap();
    assert!(matches!(v.revocation, RevocationStatus::Good { .. }));
    // A forged certificate (self-signed, same profile) does not chain.
    let (raw, _) = pki.signed("good");
    let mut forged_trust = TrustSet::new();
    forged_trust.add(pki.cert("good").to_der().unwrap(), None);
    let wrong_anchor = ChainPolicy::from_pem(&pki.file("impostor.pem"), true).unwrap();
    match verify_smime_with(
        &raw,
        &VerifyOptions::new(&forged_trust, now()).with_chain(&wrong_anchor),
    ) {
        Err(VerifyError::Chain(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn expired_and_wrongly_signed_crls_are_not_believed() {
    let Setup { server, pki, _ocsp } = setup();
    let no_ocsp = |cache: &Path, mode| RevocationSettings {
        ocsp: false,
        mode,
        ..settings(cache)
    };

    // An expired CRL (nextUpdate 2023-02-01): unknown since then, past any grace window.
    server.set(Answer::Serve(pki.file("crl-expired.der")));
    let cache = tempfile::tempdir().unwrap();
    let policy = pki.policy(Arc::new(RevocationChecker::new(no_ocsp(
        cache.path(),
        RevocationMode::Grace,
    ))));
    match verify(&pki, "good", &policy, now()) {
        Err(VerifyError::RevocationUnknown(r)) => {
            assert!(r.contains("stale") && r.contains("grace window"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    // As of a date the expired CRL covered, it answers.
    let v = verify(
        &pki,
        "good",
        &policy,
        Instant::parse_cli("2023-01-15").unwrap(),
    )
    .unwrap();
    assert!(matches!(v.revocation, RevocationStatus::Good { .. }));

    // A CRL in the CA's name signed by another key: refused, so the status is unknown —
    // reported under grace (never "good"), not verified under strict.
    server.set(Answer::Serve(pki.file("crl-wrong-ca.der")));
    let cache = tempfile::tempdir().unwrap();
    let policy = pki.policy(Arc::new(RevocationChecker::new(no_ocsp(
        cache.path(),
        RevocationMode::Grace,
    ))));
    let v = verify(&pki, "revoked", &policy, now()).unwrap();
    match &v.revocation {
        RevocationStatus::Unknown { reason } => assert!(reason.contains("wrong ca"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        std::fs::read_dir(cache.path()).unwrap().all(|e| e
            .unwrap()
            .path()
            .extension()
            .is_none_or(|x| x != "crl")),
        "a refused crl is not cached"
    );
    let strict = pki.policy(Arc::new(RevocationChecker::new(no_ocsp(
        cache.path(),
        RevocationMode::Strict,
    ))));
    assert!(matches!(
        verify(&pki, "revoked", &strict, now()),
        Err(VerifyError::RevocationUnknown(_))
    ));
}

#[test]
fn crl_server_down_grace_window_and_refresh_before_next_update() {
    let Setup { server, pki, _ocsp } = setup();
    server.set(Answer::Silent);
    let cache = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(now().unix()));
    let c = clock.clone();
    let checker = Arc::new(RevocationChecker::with_clock(
        RevocationSettings {
            ocsp: false,
            ..settings(cache.path())
        },
        Box::new(move || c.load(Ordering::SeqCst)),
    ));
    let policy = pki.policy(checker.clone());

    // Down: bounded by the fetch timeout, accepted within the grace window and reported.
    let started = std::time::Instant::now();
    let v = verify(&pki, "good", &policy, now()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&v.revocation, RevocationStatus::Unknown { reason } if reason.contains("timed out")),
        "{:?}",
        v.revocation
    );
    // Within retry_after the location is not tried again.
    let asked = server.requests();
    verify(&pki, "good", &policy, now()).unwrap();
    assert_eq!(server.requests(), asked);
    // Strict: not verified.
    let strict = pki.policy(Arc::new(RevocationChecker::new(RevocationSettings {
        mode: RevocationMode::Strict,
        ocsp: false,
        ..settings(cache.path())
    })));
    assert!(matches!(
        verify(&pki, "good", &strict, now()),
        Err(VerifyError::RevocationUnknown(_))
    ));
    // Four days later, still down: past the 3-day grace window (the first failure is on
    // disk, so a restart does not reopen the window).
    clock.fetch_add(4 * 86_400, Ordering::SeqCst);
    match verify(&pki, "good", &policy, now()) {
        Err(VerifyError::RevocationUnknown(r)) => assert!(r.contains("grace window"), "{r}"),
        other => panic!("{other:?}"),
    }

    // The server is back: the CRL is fetched and used.
    server.set(Answer::Serve(pki.file("crl.der")));
    clock.fetch_add(120, Ordering::SeqCst);
    assert!(matches!(
        verify(&pki, "good", &policy, now()).unwrap().revocation,
        RevocationStatus::Good { .. }
    ));
    let fetched = server.requests();
    // Half an hour before its nextUpdate (inside refresh_before = 1h) it is fetched again.
    let crl = openssl::x509::X509Crl::from_der(&pki.file("crl.der")).unwrap();
    let next = {
        let epoch = openssl::asn1::Asn1Time::from_unix(0).unwrap();
        let d = epoch.diff(crl.next_update().unwrap()).unwrap();
        i64::from(d.days) * 86_400 + i64::from(d.secs)
    };
    clock.store(next - 1800, Ordering::SeqCst);
    assert!(matches!(
        verify(&pki, "good", &policy, now()).unwrap().revocation,
        RevocationStatus::Good { .. }
    ));
    assert_eq!(
        server.requests(),
        fetched + 1,
        "refreshed before nextUpdate"
    );
}
