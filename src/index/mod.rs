//! Provider index (indice dei gestori, spec §7): what the rest of the code needs to know
//! about other providers. The LDAP / signed-LDIF sync comes with the index issue; the
//! verification code only needs [`TrustSet`].

use std::collections::HashMap;

/// One provider record of the index (spec §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderInfo {
    /// `providerName`.
    pub name: String,
    /// `mailReceipt`: service mailbox for presa in carico and rilevazione virus.
    pub mail_receipt: String,
    /// `managedDomains`, lower-cased.
    pub managed_domains: Vec<String>,
}

impl ProviderInfo {
    /// Whether `domain` is one of this provider's managed domains (case-insensitive).
    pub fn manages(&self, domain: &str) -> bool {
        self.managed_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain.trim()))
    }
}

/// A trusted provider certificate: the DER (for the byte comparison required after the
/// SHA-1 lookup, spec §5.2 item 2) and, when known, its provider record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCert {
    pub der: Vec<u8>,
    pub provider: Option<ProviderInfo>,
}

/// The set of certificates whose signatures we accept as a PEC provider's, keyed by the
/// upper-case hex SHA-1 of the DER (`providerCertificateHash`).
#[derive(Debug, Clone, Default)]
pub struct TrustSet {
    by_sha1: HashMap<String, Vec<TrustedCert>>,
}

impl TrustSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a certificate (DER) with its provider, if known.
    pub fn add(&mut self, der: Vec<u8>, provider: Option<ProviderInfo>) {
        let key = sha1_hex_upper(&der);
        self.by_sha1
            .entry(key)
            .or_default()
            .push(TrustedCert { der, provider });
    }

    /// Looks up a signer certificate: SHA-1 of its DER first (case-insensitive hex), then a
    /// byte comparison with the stored certificate, as the technical rules require.
    pub fn find(&self, der: &[u8]) -> Option<&TrustedCert> {
        self.by_sha1
            .get(&sha1_hex_upper(der))?
            .iter()
            .find(|c| c.der == der)
    }

    pub fn len(&self) -> usize {
        self.by_sha1.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every certificate, for building an OpenSSL store.
    pub fn certificates(&self) -> impl Iterator<Item = &TrustedCert> {
        self.by_sha1.values().flatten()
    }
}

/// Upper-case hex SHA-1, the form of `providerCertificateHash`.
pub fn sha1_hex_upper(der: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    hex::encode_upper(Sha1::digest(der))
}
