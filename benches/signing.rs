// SPDX-License-Identifier: GPL-3.0-or-later
//! CMS signing through SoftHSM2: one bare `CKM_SHA256_RSA_PKCS` signature (the baseline)
//! against `sign_detached` over 100 KB and 10 MB of content, and against building and
//! signing a whole transport envelope for a 100 KB and a 10 MB original, so the overhead
//! can be read as a ratio. After criterion's report, the bench prints those ratios from
//! medians measured in the same run.
//!
//! Then, for the keys of 2027 (issue 19), each on its own SoftHSM2 token: RSA-2048,
//! RSA-3072 and ECDSA P-256, the cost of signing one message (`sign_detached` of a receipt-
//! sized entity, and a whole transport envelope for a 100 KB original) as a ratio to the
//! bare signature of the same key, measured in the same run. `cargo bench --bench signing
//! -- key_types` runs only that part (criterion skips its benchmarks, the ratios are
//! printed anyway).
//!
//! Needs softhsm2 and opensc; the tokens are created with `tests/pki/*.sh` in a temporary
//! directory.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pec::crypto::testing::{self, TestKey};
use pec::crypto::{sign_detached, DigestAlg, Pkcs11Config, Pkcs11Signer, Signer};
use pec::message::build::{Builder, Certification, Issuer, OriginalInfo};
use pec::message::ids::IdGenerator;
use pec::message::kind::RecipientType;
use pec::message::time::Instant;

/// An original of about `size` bytes: a short text and one base64 attachment.
fn original(size: usize) -> Vec<u8> {
    use base64::Engine;
    let payload: Vec<u8> = (0..size * 3 / 4).map(|i| (i * 7 % 256) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut m = String::from(
        "From: alice@pec.example.it\r\nTo: bob@pec.example.net\r\nSubject: bench\r\n\
         Message-ID: <bench@client.example.it>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nciao\r\n--b\r\n\
         Content-Type: application/octet-stream; name=\"a.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n",
    );
    for line in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        m.push_str("\r\n");
    }
    m.push_str("--b--\r\n");
    m.into_bytes()
}

/// Median wall time of `runs` calls, in seconds.
fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = std::time::Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[runs / 2]
}

fn signing(c: &mut Criterion) {
    assert!(
        testing::softhsm_available(),
        "softhsm2-util, pkcs11-tool or the softhsm2 module not found: install softhsm2 and opensc"
    );
    let module = testing::softhsm_module().expect("softhsm2 module");
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let pki = testing::make_test_pki(&dir.path().join("pki")).expect("test pki");
    // The criterion part measures RSA-2048, as before; the test PKI's own key is RSA-3072.
    let rsa2048 =
        testing::issue_test_leaf(&pki, "rsa2048", TestKey::Rsa2048, None).expect("rsa-2048 leaf");
    let p256 = testing::issue_test_leaf(&pki, "p256", TestKey::EcP256, None).expect("p-256 leaf");
    let hsm = dir.path().join("hsm");
    let mut conf = None;
    for (label, key, cert) in [
        ("pec-bench", &rsa2048.key, &rsa2048.cert),
        ("pec-rsa3072", &pki.it_key, &pki.it_cert),
        ("pec-p256", &p256.key, &p256.cert),
    ] {
        let token = testing::make_test_token(&hsm, label, "1234", key, cert, "pec-signer")
            .expect("softhsm token");
        conf = Some(token.softhsm2_conf);
    }
    std::env::set_var("SOFTHSM2_CONF", conf.expect("a token"));
    let open = |label: &str| {
        let mut config = Pkcs11Config::new(&module, label, "pec-signer", "1234");
        config.digest = DigestAlg::Sha256;
        config.chain_pem = Some(pki.chain.clone());
        config.sessions = 1;
        Pkcs11Signer::open(&config).expect("pkcs#11 signer")
    };
    let signer = open("pec-bench");
    let at = Instant::from_unix(1_748_945_472);

    let mut group = c.benchmark_group("signing");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // About the size of the signed attributes that sign_detached hands to the token.
    let attrs_sized = vec![0x5au8; 200];
    group.bench_function("pkcs11_bare_sign_sha256", |b| {
        b.iter(|| signer.bare_sign(black_box(&attrs_sized)).expect("sign"))
    });

    for (name, size) in [("100KB", 100 * 1024), ("10MB", 10 * 1024 * 1024)] {
        let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("sign_detached_sha256_{name}"), |b| {
            b.iter(|| sign_detached(&signer, black_box(&content), at).expect("sign_detached"))
        });
    }

    let issuer = Issuer {
        provider_name: "PEC Example IT S.p.A.".into(),
        service_address: "posta-certificata@pec.example.it".into(),
        envelope_sender_header: true,
    };
    let ids = IdGenerator::new("pec.example.it", 1);
    let builder = Builder {
        issuer: &issuer,
        signer: &signer,
        ids: &ids,
    };
    let envelope = |raw: &[u8]| {
        let info = OriginalInfo::parse(raw).expect("original");
        let cert = Certification::for_submission(
            &info,
            "alice@pec.example.it",
            &[("bob@pec.example.net".into(), RecipientType::Certificato)],
            &ids.next(at),
        );
        builder
            .transport_envelope(raw, &cert, at)
            .expect("envelope")
            .to_bytes()
    };
    let originals: Vec<(&str, Vec<u8>)> = vec![
        ("100KB", original(100 * 1024)),
        ("10MB", original(10 * 1024 * 1024)),
    ];
    for (name, raw) in &originals {
        group.throughput(Throughput::Bytes(raw.len() as u64));
        group.bench_function(format!("transport_envelope_build_sign_{name}"), |b| {
            b.iter(|| envelope(black_box(raw)))
        });
    }
    group.finish();

    // Per key type: the cost of one message against the bare signature of the same key.
    let entity = original(2 * 1024);
    println!("\nkey types on SoftHSM2, SHA-256, medians of this run:");
    println!("  key | bare signature | sign_detached 2 KB (ratio) | envelope 100 KB (ratio)");
    for label in ["pec-bench", "pec-rsa3072", "pec-p256"] {
        let s = if label == "pec-bench" {
            None
        } else {
            Some(open(label))
        };
        let key: &Pkcs11Signer = s.as_ref().unwrap_or(&signer);
        let name = key.key_kind().expect("key kind").describe();
        let bare = median(300, || {
            key.bare_sign(black_box(&attrs_sized)).expect("sign");
        });
        let cms = median(300, || {
            sign_detached(key, black_box(&entity), at).expect("sign_detached");
        });
        let b = Builder {
            issuer: &issuer,
            signer: key,
            ids: &ids,
        };
        let raw = &originals[0].1;
        let env = median(200, || {
            let info = OriginalInfo::parse(raw).expect("original");
            let cert = Certification::for_submission(
                &info,
                "alice@pec.example.it",
                &[("bob@pec.example.net".into(), RecipientType::Certificato)],
                &ids.next(at),
            );
            black_box(
                b.transport_envelope(raw, &cert, at)
                    .expect("envelope")
                    .to_bytes(),
            );
        });
        println!(
            "  {name} | {:.3} ms | {:.3} ms ({:.2}x) | {:.3} ms ({:.2}x)",
            bare * 1e3,
            cms * 1e3,
            cms / bare,
            env * 1e3,
            env / bare
        );
    }

    evidences(&open, &pki, dir.path(), at);

    // Ratios against the bare signature, from medians measured here, in this run.
    let bare = median(200, || {
        signer.bare_sign(black_box(&attrs_sized)).expect("sign");
    });
    println!(
        "\nratios against the bare PKCS#11 RSA-2048 signature ({:.3} ms):",
        bare * 1e3
    );
    for (name, raw) in &originals {
        let runs = if raw.len() > 1_000_000 { 15 } else { 200 };
        let t = median(runs, || {
            envelope(black_box(raw));
        });
        println!(
            "  transport envelope build+sign {name}: {:.3} ms = {:.2}x bare signature ({:.1} MB/s)",
            t * 1e3,
            t / bare,
            raw.len() as f64 / t / 1e6
        );
    }
}

/// A running tsa.py (plain HTTP), killed when dropped.
struct TsaProcess(std::process::Child);

impl Drop for TsaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ERDS evidence signatures (issue 20), RSA-3072 and ECDSA P-256 on SoftHSM2: XAdES-B-B
/// (`xades::sign_b_b`) and B-T (`xades::sign`, with tests/tsa/tsa.py on this machine over
/// HTTP and the token checked against the test CA), as ratios to the bare signature of the
/// same key, medians of this run.
fn evidences(
    open: &dyn Fn(&str) -> Pkcs11Signer,
    pki: &testing::TestPki,
    dir: &std::path::Path,
    at: Instant,
) {
    use std::io::BufRead;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tsa");
    let files = dir.join("tsa");
    let made = std::process::Command::new("sh")
        .arg(root.join("make-tsa.sh"))
        .arg(&files)
        .arg(&pki.dir)
        .output()
        .expect("make-tsa.sh");
    assert!(made.status.success(), "make-tsa.sh failed");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(root.join("tsa.py"))
        .arg(files.join("tsa.cnf"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 for the test TSA");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("tsa.py port");
    let _tsa = TsaProcess(child);
    let port: u16 = line.trim().parse().expect("tsa.py prints its port");
    let settings = pec::crypto::tsa::TsaSettings {
        ca_file: Some(pki.ca_cert.clone()),
        policy: Some("1.3.6.1.4.1.99999.1.1".into()),
        ..pec::crypto::tsa::TsaSettings::new(
            &format!("http://127.0.0.1:{port}/tsa"),
            Duration::from_secs(20),
        )
    };
    let xml = pec::cli::capacity::unsigned_evidence();
    let attrs_sized = vec![0x5au8; 200];
    println!("\nERDS evidence (XAdES) on SoftHSM2, medians of this run:");
    println!("  key | bare signature | B-B (ratio) | B-T with a local TSA (ratio)");
    for label in ["pec-rsa3072", "pec-p256"] {
        let key = open(label);
        let name = key.key_kind().expect("key kind").describe();
        let bare = median(200, || {
            key.bare_sign(black_box(&attrs_sized)).expect("sign");
        });
        let b_b = median(200, || {
            black_box(pec::rem::xades::sign_b_b(&xml, &key, at).expect("b-b"));
        });
        let b_t = median(40, || {
            black_box(pec::rem::xades::sign(&xml, &key, at, &settings).expect("b-t"));
        });
        println!(
            "  {name} | {:.3} ms | {:.3} ms ({:.2}x) | {:.3} ms ({:.2}x)",
            bare * 1e3,
            b_b * 1e3,
            b_b / bare,
            b_t * 1e3,
            b_t / bare
        );
    }
}

criterion_group!(benches, signing);
criterion_main!(benches);
