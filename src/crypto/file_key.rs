// SPDX-License-Identifier: GPL-3.0-or-later
//! A signing key read from PEM files. **Development only**: production keys live in a
//! PKCS#11 token ([`super::pkcs11`]); a key file on disk is what the PEC rules try to avoid.

use std::path::Path;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use x509_cert::Certificate;

use super::{DigestAlg, SignError, Signer};

/// RSA private key + certificate (+ chain) from PEM files, signing PKCS#1 v1.5 in process
/// with the `rsa` crate (with blinding).
pub struct PemSigner {
    key: RsaPrivateKey,
    cert_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
    digest: DigestAlg,
}

impl std::fmt::Debug for PemSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemSigner")
            .field("digest", &self.digest)
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

impl PemSigner {
    /// Loads `key` (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`, unencrypted), `cert`
    /// (the first certificate of the file is the signer's; any further ones are added to the
    /// chain) and the optional `chain` file (any number of certificates). Fails when the key
    /// does not match the certificate's public key.
    pub fn from_files(
        key: &Path,
        cert: &Path,
        chain: Option<&Path>,
        digest: DigestAlg,
    ) -> Result<Self, SignError> {
        let key_pem = std::fs::read_to_string(key)
            .map_err(|e| SignError::Key(format!("cannot read \"{}\": {e}", key.display())))?;
        let private = parse_private_key(&key_pem)
            .map_err(|e| SignError::Key(format!("\"{}\": {e}", key.display())))?;

        let mut certs = read_pem_certificates(cert)?.into_iter();
        let leaf = certs.next().ok_or_else(|| {
            SignError::Certificate(format!("\"{}\": no certificate found", cert.display()))
        })?;
        let mut chain_der: Vec<Vec<u8>> = certs.collect();
        if let Some(chain) = chain {
            chain_der.extend(read_pem_certificates(chain)?);
        }

        let public = super::certificate_public_key(&leaf)?;
        if public != RsaPublicKey::from(&private) {
            return Err(SignError::Key(format!(
                "key \"{}\" does not match the public key of certificate \"{}\"",
                key.display(),
                cert.display()
            )));
        }
        Ok(PemSigner {
            key: private,
            cert_der: leaf,
            chain_der,
            digest,
        })
    }

    /// Modulus size in bits.
    pub fn key_bits(&self) -> usize {
        self.key.n().bits()
    }
}

fn parse_private_key(pem: &str) -> Result<RsaPrivateKey, String> {
    if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| format!("invalid pkcs#1 rsa key: {e}"))
    } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
        RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| format!("invalid pkcs#8 rsa key: {e}"))
    } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        Err("encrypted keys are not supported".to_string())
    } else {
        Err("no \"PRIVATE KEY\" or \"RSA PRIVATE KEY\" pem block".to_string())
    }
}

/// DER of every certificate in a PEM file, in file order.
pub(crate) fn read_pem_certificates(path: &Path) -> Result<Vec<Vec<u8>>, SignError> {
    let pem = std::fs::read(path)
        .map_err(|e| SignError::Certificate(format!("cannot read \"{}\": {e}", path.display())))?;
    let certs = Certificate::load_pem_chain(&pem)
        .map_err(|e| SignError::Certificate(format!("\"{}\": invalid pem: {e}", path.display())))?;
    certs
        .iter()
        .map(|c| {
            der::Encode::to_der(c).map_err(|e| {
                SignError::Certificate(format!("\"{}\": cannot encode: {e}", path.display()))
            })
        })
        .collect()
}

impl Signer for PemSigner {
    fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    fn digest(&self) -> DigestAlg {
        self.digest
    }

    fn sign_pkcs1(&self, digest: DigestAlg, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let scheme = match digest {
            DigestAlg::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
            DigestAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        };
        self.key
            .sign_with_rng(&mut rand::thread_rng(), scheme, &digest.digest(data))
            .map_err(|e| SignError::Key(format!("rsa signature failed: {e}")))
    }
}
