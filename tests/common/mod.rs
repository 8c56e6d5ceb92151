// SPDX-License-Identifier: GPL-3.0-or-later
//! Shared test support: a test PKI and a SoftHSM2-backed signer, made once per test binary.
#![allow(dead_code)]

pub mod pki {
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use pec::crypto::testing::{self, TestPki};
    use pec::crypto::{DigestAlg, Pkcs11Config, Pkcs11Signer, Signer};

    pub struct Env {
        _dir: tempfile::TempDir,
        pki: TestPki,
        signer: Pkcs11Signer,
    }

    impl Env {
        pub fn dir(&self) -> &Path {
            &self.pki.dir
        }
        pub fn ca_pem(&self) -> &Path {
            &self.pki.ca_cert
        }
        pub fn pki(&self) -> &TestPki {
            &self.pki
        }
        /// The provider `pec.example.it` key in a SoftHSM2 token (SHA-256).
        pub fn hsm_signer(&self) -> &dyn Signer {
            &self.signer
        }
        pub fn provider_a_cert_der(&self) -> Vec<u8> {
            self.signer.certificate_der().to_vec()
        }
        pub fn provider_a_cert_pem(&self) -> PathBuf {
            self.pki.it_cert.clone()
        }
    }

    /// One PKI and one token per test process (a PKCS#11 module is initialised once per
    /// process). Fails loudly when SoftHSM2 is missing: nothing real is skipped silently.
    pub fn shared() -> &'static Env {
        static ENV: OnceLock<Env> = OnceLock::new();
        ENV.get_or_init(|| {
            assert!(
                testing::softhsm_available(),
                "softhsm2 is not installed: run scripts/install-deps.sh"
            );
            let dir = tempfile::tempdir().expect("temp dir");
            let pki = testing::make_test_pki(&dir.path().join("pki")).expect("test pki");
            let token = testing::make_test_token(
                &dir.path().join("hsm"),
                "pec-golden",
                "1234",
                &pki.it_key,
                &pki.it_cert,
                "pec-signer",
            )
            .expect("softhsm token");
            std::env::set_var("SOFTHSM2_CONF", &token.softhsm2_conf);
            let mut cfg = Pkcs11Config::new(
                testing::softhsm_module().expect("softhsm2 module"),
                "pec-golden",
                "pec-signer",
                "1234",
            );
            cfg.digest = DigestAlg::Sha256;
            let signer = Pkcs11Signer::open(&cfg).expect("open pkcs#11 signer");
            Env {
                _dir: dir,
                pki,
                signer,
            }
        })
    }
}
