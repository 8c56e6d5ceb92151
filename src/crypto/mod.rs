// SPDX-License-Identifier: GPL-3.0-or-later
//! Signing (PKCS#11 and PEM key behind one trait) and verification of S/MIME.

use thiserror::Error;

/// Digest used in the CMS signature. SHA-256 by default; SHA-384 for the larger keys
/// (RSA-4096, ECDSA P-384); SHA-1 for interoperability with providers that still expect it
/// (spec §12.2; RSA only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DigestAlg {
    Sha1,
    #[default]
    Sha256,
    Sha384,
}

impl DigestAlg {
    /// The `micalg` parameter of `multipart/signed`.
    pub fn micalg(self) -> &'static str {
        match self {
            DigestAlg::Sha1 => "sha1",
            DigestAlg::Sha256 => "sha-256",
            DigestAlg::Sha384 => "sha-384",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" | "sha-1" => Some(DigestAlg::Sha1),
            "sha256" | "sha-256" => Some(DigestAlg::Sha256),
            "sha384" | "sha-384" => Some(DigestAlg::Sha384),
            _ => None,
        }
    }

    /// The digest algorithm OID (`1.3.14.3.2.26`, `2.16.840.1.101.3.4.2.1` or `…2.2`).
    pub fn oid(self) -> const_oid::ObjectIdentifier {
        match self {
            DigestAlg::Sha1 => const_oid::db::rfc5912::ID_SHA_1,
            DigestAlg::Sha256 => const_oid::db::rfc5912::ID_SHA_256,
            DigestAlg::Sha384 => const_oid::db::rfc5912::ID_SHA_384,
        }
    }

    /// Hashes `data` with this algorithm.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            DigestAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            DigestAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
        }
    }

    /// The same digest for OpenSSL.
    pub(crate) fn message_digest(self) -> openssl::hash::MessageDigest {
        match self {
            DigestAlg::Sha1 => openssl::hash::MessageDigest::sha1(),
            DigestAlg::Sha256 => openssl::hash::MessageDigest::sha256(),
            DigestAlg::Sha384 => openssl::hash::MessageDigest::sha384(),
        }
    }
}

/// The named elliptic curves pec signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (prime256v1, secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

/// The type and size of a signing key, read from its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA, signing PKCS#1 v1.5 (what Italian providers verify).
    Rsa { bits: u32 },
    /// ECDSA on a named curve.
    Ecdsa(Curve),
}

impl KeyKind {
    /// Reads the subject public key of a DER certificate. Fails for any other key type or
    /// curve: pec signs with RSA, ECDSA P-256 and ECDSA P-384.
    pub fn of_certificate(cert_der: &[u8]) -> Result<Self, SignError> {
        use openssl::nid::Nid;
        use openssl::pkey::Id;
        let cert = openssl::x509::X509::from_der(cert_der)
            .map_err(|e| SignError::Certificate(format!("cannot parse certificate: {e}")))?;
        let key = cert
            .public_key()
            .map_err(|e| SignError::Certificate(format!("cannot read the public key: {e}")))?;
        match key.id() {
            Id::RSA => Ok(KeyKind::Rsa { bits: key.bits() }),
            Id::EC => {
                let ec = key.ec_key().map_err(|e| {
                    SignError::Certificate(format!("cannot read the ec public key: {e}"))
                })?;
                match ec.group().curve_name() {
                    Some(Nid::X9_62_PRIME256V1) => Ok(KeyKind::Ecdsa(Curve::P256)),
                    Some(Nid::SECP384R1) => Ok(KeyKind::Ecdsa(Curve::P384)),
                    other => Err(SignError::Certificate(format!(
                        "unsupported elliptic curve \"{}\": expected P-256 or P-384",
                        other.and_then(|n| n.short_name().ok()).unwrap_or("unnamed")
                    ))),
                }
            }
            other => Err(SignError::Certificate(format!(
                "unsupported public key type {other:?}: expected rsa or ec"
            ))),
        }
    }

    /// `RSA-3072`, `ECDSA P-256`.
    pub fn describe(self) -> String {
        match self {
            KeyKind::Rsa { bits } => format!("RSA-{bits}"),
            KeyKind::Ecdsa(Curve::P256) => "ECDSA P-256".to_string(),
            KeyKind::Ecdsa(Curve::P384) => "ECDSA P-384".to_string(),
        }
    }

    /// Whether this key may sign with `digest`: ECDSA with SHA-256 or SHA-384 only (no
    /// SHA-1 for new signature schemes, ETSI TS 119 312).
    pub fn check_digest(self, digest: DigestAlg) -> Result<(), SignError> {
        match (self, digest) {
            (KeyKind::Ecdsa(_), DigestAlg::Sha1) => Err(SignError::Key(format!(
                "digest sha1 cannot be used with an {} key: use sha256 or sha384",
                self.describe()
            ))),
            _ => Ok(()),
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

/// A provider signing key with its certificate. Implementations: PKCS#11 token and PEM file,
/// each with RSA or ECDSA keys; every signature pec makes (S/MIME messages, seals, the
/// signed index record) goes through [`Signer::sign`].
pub trait Signer: Send + Sync {
    /// DER of the signer certificate.
    fn certificate_der(&self) -> &[u8];
    /// DER of further certificates to put in the CMS (the issuing CA, optionally).
    fn chain_der(&self) -> &[Vec<u8>];
    /// The digest this signer is configured for.
    fn digest(&self) -> DigestAlg;
    /// The key type, which sets the CMS signature algorithm. By default read from the
    /// certificate; implementations that checked it at open return it directly.
    fn key_kind(&self) -> Result<KeyKind, SignError> {
        KeyKind::of_certificate(self.certificate_der())
    }
    /// Signature over `data` hashed with `digest`, encoded as CMS carries it: RSA PKCS#1 v1.5,
    /// or for ECDSA the DER `ECDSA-Sig-Value` (RFC 5753).
    fn sign(&self, digest: DigestAlg, data: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Verifies `signature` (as [`Signer::sign`] returns it) over `data` with the public key of
/// the DER certificate `cert_der`: how a signer proves at open that its key and certificate
/// belong together, whatever the key type.
pub(crate) fn verify_with_certificate(
    cert_der: &[u8],
    digest: DigestAlg,
    data: &[u8],
    signature: &[u8],
) -> Result<bool, SignError> {
    let cert = openssl::x509::X509::from_der(cert_der)
        .map_err(|e| SignError::Certificate(format!("cannot parse certificate: {e}")))?;
    let key = cert
        .public_key()
        .map_err(|e| SignError::Certificate(format!("cannot read the public key: {e}")))?;
    let mut verifier = openssl::sign::Verifier::new(digest.message_digest(), &key)
        .map_err(|e| SignError::Certificate(format!("cannot use the public key: {e}")))?;
    verifier
        .update(data)
        .map_err(|e| SignError::Certificate(format!("cannot verify: {e}")))?;
    // A malformed signature is "does not match", not an error.
    Ok(verifier.verify(signature).unwrap_or(false))
}

pub(crate) mod asn1;
pub mod cms_sign;
mod error;
pub mod file_key;
pub mod http;
pub mod pkcs11;
pub mod revocation;
pub mod smime;
pub mod testing;
pub mod tsa;
pub mod verify;
pub mod xmldsig;

pub use cms_sign::{sign_attached, sign_detached};
pub use file_key::PemSigner;
pub use pkcs11::{Pkcs11Config, Pkcs11Signer};

pub use error::VerifyError;
pub use verify::{
    verify_smime, verify_smime_shared, verify_smime_with, verify_smime_with_chain, ChainPolicy,
    ChainStatus, SmimeForm, Verified, VerifyOptions,
};
