//! Signing (PKCS#11 and PEM key behind one trait) and verification of S/MIME.

use thiserror::Error;

/// Digest used in the CMS signature. SHA-256 by default; SHA-1 for interoperability with
/// providers that still expect it (spec §12.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DigestAlg {
    Sha1,
    #[default]
    Sha256,
}

impl DigestAlg {
    /// The `micalg` parameter of `multipart/signed`.
    pub fn micalg(self) -> &'static str {
        match self {
            DigestAlg::Sha1 => "sha1",
            DigestAlg::Sha256 => "sha-256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" | "sha-1" => Some(DigestAlg::Sha1),
            "sha256" | "sha-256" => Some(DigestAlg::Sha256),
            _ => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum SignError {
    #[error("signing key: {0}")]
    Key(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("pkcs#11: {0}")]
    Pkcs11(String),
    #[error("cms: {0}")]
    Cms(String),
}

/// A provider signing key with its certificate. Implementations: PKCS#11 token and PEM file.
pub trait Signer: Send + Sync {
    /// DER of the signer certificate.
    fn certificate_der(&self) -> &[u8];
    /// DER of further certificates to put in the CMS (the issuing CA, optionally).
    fn chain_der(&self) -> &[Vec<u8>];
    /// The digest this signer is configured for.
    fn digest(&self) -> DigestAlg;
    /// RSA PKCS#1 v1.5 signature over `data` hashed with `digest`.
    fn sign_pkcs1(&self, digest: DigestAlg, data: &[u8]) -> Result<Vec<u8>, SignError>;
}

pub mod verify;
pub mod verify_cmd;

pub use verify::{
    verify_smime, verify_smime_with, verify_smime_with_chain, ChainPolicy, ChainStatus, SmimeForm,
    Verified, VerifyError, VerifyOptions,
};
