// SPDX-License-Identifier: GPL-3.0-or-later
//! A test PKI whose provider key is a PEM file (no HSM), made once per test binary, and the
//! provider `pec.example.it` it signs for: for in-process tests that sign many messages.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use pec::crypto::testing::{make_test_pki, TestPki};
use pec::crypto::{DigestAlg, PemSigner};
use pec::message::build::Issuer;

/// Name of the provider `pec.example.it`.
pub const PROVIDER: &str = "PEC Example IT S.p.A.";

pub struct Pki {
    _dir: tempfile::TempDir,
    pub pki: TestPki,
    /// `pec.example.it`'s key and certificate, SHA-256.
    pub signer: Arc<PemSigner>,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_test_pki(&dir.path().join("pki")).unwrap();
        let signer =
            PemSigner::from_files(&pki.it_key, &pki.it_cert, None, DigestAlg::Sha256).unwrap();
        Pki {
            _dir: dir,
            pki,
            signer: Arc::new(signer),
        }
    })
}

/// `pec.example.it` as the issuer of the messages it generates.
pub fn issuer() -> Issuer {
    Issuer {
        provider_name: PROVIDER.into(),
        service_address: "posta-certificata@pec.example.it".into(),
        envelope_sender_header: true,
    }
}

/// An original message from tests/fixtures/originals.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/originals")
        .join(name);
    std::fs::read(path).unwrap()
}
