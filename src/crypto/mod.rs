// SPDX-License-Identifier: GPL-3.0-or-later
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

    /// The digest algorithm OID (`1.3.14.3.2.26` or `2.16.840.1.101.3.4.2.1`).
    pub fn oid(self) -> const_oid::ObjectIdentifier {
        match self {
            DigestAlg::Sha1 => const_oid::db::rfc5912::ID_SHA_1,
            DigestAlg::Sha256 => const_oid::db::rfc5912::ID_SHA_256,
        }
    }

    /// Hashes `data` with this algorithm.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            DigestAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            DigestAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
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

mod asn1;
pub mod cms_sign;
mod error;
pub mod file_key;
pub mod pkcs11;
pub mod revocation;
pub mod smime;
pub mod testing;
pub mod tsa;
pub mod verify;

pub use cms_sign::{sign_attached, sign_detached};
pub use file_key::PemSigner;
pub use pkcs11::{Pkcs11Config, Pkcs11Signer};

/// The RSA public key of a DER certificate.
pub(crate) fn certificate_public_key(cert_der: &[u8]) -> Result<rsa::RsaPublicKey, SignError> {
    use der::{Decode, Encode};
    use rsa::pkcs8::DecodePublicKey;
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| SignError::Certificate(format!("cannot parse certificate: {e}")))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| SignError::Certificate(format!("cannot encode public key: {e}")))?;
    rsa::RsaPublicKey::from_public_key_der(&spki)
        .map_err(|e| SignError::Certificate(format!("not an rsa public key: {e}")))
}

pub use error::VerifyError;
pub use verify::{
    verify_smime, verify_smime_shared, verify_smime_with, verify_smime_with_chain, ChainPolicy,
    ChainStatus, SmimeForm, Verified, VerifyOptions,
};
