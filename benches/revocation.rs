// SPDX-License-Identifier: GPL-3.0-or-later
//! Verification of a 4 KB transport-envelope-sized message with and without revocation
//! checking (issue 19 point 3), with a warm CRL cache: (a) the provider index only,
//! (b) index + chain to the anchor (name constraints, emailProtection), (c) as (b) plus
//! the revocation check. Prints the medians and the ratios c/b and c/a; the target is
//! c/b ≤ 1.2.
//!
//! The test CA is made with tests/pki/make-revocation-pki.sh in a temporary directory; its
//! CRL is served once by a thread of this bench, then answered from the cache.
//!
//! Run: `cargo bench --bench revocation`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant as Clock};

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::PKey;
use openssl::x509::X509;
use pec::crypto::revocation::{RevocationChecker, RevocationSettings, RevocationStatus};
use pec::crypto::verify::{verify_smime_with, ChainPolicy, VerifyOptions};
use pec::index::TrustSet;
use pec::message::time::Instant;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median of `rounds` rounds of `per` calls of `f`, per call.
fn measure(rounds: usize, per: u32, mut f: impl FnMut()) -> Duration {
    let samples = (0..rounds)
        .map(|_| {
            let t = Clock::now();
            for _ in 0..per {
                f();
            }
            t.elapsed() / per
        })
        .collect();
    median(samples)
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pki/make-revocation-pki.sh");
    let ok = Command::new("sh")
        .arg(script)
        .arg(&dir)
        .arg(format!("http://127.0.0.1:{port}/ca.crl"))
        .arg("http://127.0.0.1:9/ocsp")
        .status()
        .unwrap()
        .success();
    assert!(ok, "make-revocation-pki.sh failed");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let crl = read("crl.der");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                crl.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&crl);
        }
    });

    let cert = X509::from_pem(&read("good.pem")).unwrap();
    let key = PKey::private_key_from_pem(&read("good.key")).unwrap();
    let mut content = b"Content-Type: text/plain\r\n\r\n".to_vec();
    for i in 0..64 {
        content.extend_from_slice(
            format!("line {i:04} of a four kilobyte message body.....................\r\n")
                .as_bytes(),
        );
    }
    let p7s = CmsContentInfo::sign(
        Some(&cert),
        Some(&key),
        None,
        Some(&content),
        CMSOptions::DETACHED | CMSOptions::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap();
    use base64::Engine;
    let mut raw = b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"B\"\r\n\r\n--B\r\n".to_vec();
    raw.extend_from_slice(&content);
    raw.extend_from_slice(b"\r\n--B\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    raw.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(p7s)
            .as_bytes(),
    );
    raw.extend_from_slice(b"\r\n--B--\r\n");
    let mut trust = TrustSet::new();
    trust.add(cert.to_der().unwrap(), None);

    let cache = tempfile::tempdir().unwrap();
    let checker = Arc::new(RevocationChecker::new(RevocationSettings {
        cache_dir: Some(cache.path().to_path_buf()),
        ocsp: false,
        ..RevocationSettings::default()
    }));
    let chain = ChainPolicy::from_pem(&read("ca.pem"), true).unwrap();
    let revoc = chain.clone().with_revocation(checker);
    let now = Instant::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let index_only = VerifyOptions::new(&trust, now);
    let with_chain = VerifyOptions::new(&trust, now).with_chain(&chain);
    let with_revocation = VerifyOptions::new(&trust, now).with_chain(&revoc);
    // Warm the cache (one fetch), and check that the status is really known.
    let v = verify_smime_with(&raw, &with_revocation).unwrap();
    assert!(
        matches!(v.revocation, RevocationStatus::Good { .. }),
        "{:?}",
        v.revocation
    );

    let (rounds, per) = (31, 50);
    // Interleave the three so that machine load hits them alike.
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(measure(1, per, || {
            black_box(verify_smime_with(black_box(&raw), &index_only).unwrap());
        }));
        b.push(measure(1, per, || {
            black_box(verify_smime_with(black_box(&raw), &with_chain).unwrap());
        }));
        c.push(measure(1, per, || {
            black_box(verify_smime_with(black_box(&raw), &with_revocation).unwrap());
        }));
    }
    let (a, b, c) = (median(a), median(b), median(c));
    println!("verify, provider index only:            {a:?} per message");
    println!("verify, index + chain:                  {b:?} per message");
    println!("verify, index + chain + revocation:     {c:?} per message (warm crl cache)");
    println!(
        "ratio revocation / chain without revocation: {:.3} (target <= 1.2)",
        c.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "ratio revocation / index only:               {:.3}",
        c.as_secs_f64() / a.as_secs_f64()
    );
}
