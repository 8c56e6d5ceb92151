// SPDX-License-Identifier: GPL-3.0-or-later
//! A signing key read from PEM files. **Development only**: production keys live in a
//! PKCS#11 token ([`super::pkcs11`]); a key file on disk is what the PEC rules try to avoid.

use std::path::Path;

use openssl::pkey::{PKey, Private};
use x509_cert::Certificate;

use super::{DigestAlg, KeyKind, SignError, Signer};

/// Private key (RSA, or ECDSA P-256/P-384) + certificate (+ chain) from PEM files, signing
/// in process with OpenSSL (RSA PKCS#1 v1.5 with blinding; ECDSA with a DER signature).
pub struct PemSigner {
    key: PKey<Private>,
    kind: KeyKind,
    cert_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
    digest: DigestAlg,
}

impl std::fmt::Debug for PemSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemSigner")
            .field("kind", &self.kind)
            .field("digest", &self.digest)
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

impl PemSigner {
    /// Loads `key` (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC 1 `EC PRIVATE KEY`,
    /// unencrypted), `cert` (the first certificate of the file is the signer's; any further
    /// ones are added to the chain) and the optional `chain` file (any number of
    /// certificates). Fails when the key does not match the certificate's public key, or
    /// cannot sign with `digest` (ECDSA with SHA-1).
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

        let kind = KeyKind::of_certificate(&leaf)
            .map_err(|e| SignError::Certificate(format!("\"{}\": {e}", cert.display())))?;
        let public = openssl::x509::X509::from_der(&leaf)
            .and_then(|c| c.public_key())
            .map_err(|e| SignError::Certificate(format!("\"{}\": {e}", cert.display())))?;
        if !public.public_eq(&private) {
            return Err(SignError::Key(format!(
                "key \"{}\" does not match the public key of certificate \"{}\"",
                key.display(),
                cert.display()
            )));
        }
        kind.check_digest(digest)?;
        Ok(PemSigner {
            key: private,
            kind,
            cert_der: leaf,
            chain_der,
            digest,
        })
    }

    /// Key size in bits (the modulus for RSA, the field for ECDSA).
    pub fn key_bits(&self) -> u32 {
        self.key.bits()
    }
}

fn parse_private_key(pem: &str) -> Result<PKey<Private>, String> {
    // Checked first: OpenSSL would ask for a passphrase on the terminal.
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || pem.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err("encrypted keys are not supported".to_string());
    }
    let form = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        "pkcs#1 rsa"
    } else if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
        "sec1 ec"
    } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
        "pkcs#8"
    } else {
        return Err(
            "no \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" pem block".to_string(),
        );
    };
    PKey::private_key_from_pem(pem.as_bytes()).map_err(|e| format!("invalid {form} key: {e}"))
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

    fn key_kind(&self) -> Result<KeyKind, SignError> {
        Ok(self.kind)
    }

    fn sign(&self, digest: DigestAlg, data: &[u8]) -> Result<Vec<u8>, SignError> {
        self.kind.check_digest(digest)?;
        let failed = |e: openssl::error::ErrorStack| {
            SignError::Key(format!("{} signature failed: {e}", self.kind.describe()))
        };
        let mut signer =
            openssl::sign::Signer::new(digest.message_digest(), &self.key).map_err(failed)?;
        signer.update(data).map_err(failed)?;
        signer.sign_to_vec().map_err(failed)
    }
}
