//! CMS signing through SoftHSM2: one bare `CKM_SHA256_RSA_PKCS` signature (the baseline)
//! against `sign_detached` over 100 KB and 10 MB of content, so the overhead of hashing the
//! content and assembling the CMS can be read as a ratio.
//!
//! Needs softhsm2 and opensc; the token is created with `tests/pki/*.sh` in a temporary
//! directory.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pec::crypto::testing;
use pec::crypto::{sign_detached, DigestAlg, Pkcs11Config, Pkcs11Signer};
use pec::message::time::Instant;

fn signing(c: &mut Criterion) {
    assert!(
        testing::softhsm_available(),
        "softhsm2-util, pkcs11-tool or the softhsm2 module not found: install softhsm2 and opensc"
    );
    let module = testing::softhsm_module().expect("softhsm2 module");
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let pki = testing::make_test_pki(&dir.path().join("pki")).expect("test pki");
    let token = testing::make_test_token(
        &dir.path().join("hsm"),
        "pec-bench",
        "1234",
        &pki.it_key,
        &pki.it_cert,
        "pec-signer",
    )
    .expect("softhsm token");
    std::env::set_var("SOFTHSM2_CONF", &token.softhsm2_conf);

    let mut config = Pkcs11Config::new(&module, "pec-bench", "pec-signer", "1234");
    config.digest = DigestAlg::Sha256;
    config.chain_pem = Some(pki.chain.clone());
    config.sessions = 1;
    let signer = Pkcs11Signer::open(&config).expect("pkcs#11 signer");
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
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
