// SPDX-License-Identifier: GPL-3.0-or-later
//! Provider index (indice dei gestori, spec §7): what the rest of the code needs to know
//! about other providers. The LDAP / signed-LDIF sync comes with the index issue; the
//! verification code only needs [`TrustSet`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use thiserror::Error;

use crate::message::kind::RecipientType;

pub mod ldif;
pub mod refresh;
pub mod sync;
pub mod tls_policy;

/// Errors reading the provider index. Line numbers are those of the LDIF text (1-based, the
/// first physical line of a folded line); a provider error carries the line of the entry's
/// `dn:` or of the offending attribute.
#[derive(Debug, Error)]
pub enum IndexError {
    #[error("cannot read provider index \"{}\": {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An error in a file, with the file's name in front.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: Box<IndexError>,
    },
    /// Malformed LDIF (RFC 2849).
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// A well-formed entry that is not a valid provider record (spec §7.1).
    #[error("line {line}: provider \"{provider}\": {message}")]
    Provider {
        line: usize,
        /// `providerName`, or the DN when the name itself is missing.
        provider: String,
        message: String,
    },
}

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

/// One provider of the index with its certificates (DER).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderRecord {
    pub info: ProviderInfo,
    pub certificates: Vec<Vec<u8>>,
}

/// The local copy of the provider index, used for every lookup (spec §7.2).
#[derive(Debug, Clone, Default)]
pub struct ProviderIndex {
    providers: Vec<ProviderInfo>,
    /// lower-case domain → position in `providers`.
    domains: HashMap<String, usize>,
    trust: TrustSet,
}

impl ProviderIndex {
    /// Reads the local copy of the index, an LDIF file in the shape of the national index
    /// (spec §7.1), with [`ldif::parse_ldif`]. Errors name the file and the line.
    pub fn load_ldif(path: impl AsRef<Path>) -> Result<ProviderIndex, IndexError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| IndexError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ProviderIndex::parse(&text).map_err(|e| IndexError::File {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parses LDIF text of the index (as [`ProviderIndex::load_ldif`], without a file).
    pub fn parse(text: &str) -> Result<ProviderIndex, IndexError> {
        Ok(ProviderIndex::from_records(ldif::parse_ldif(text)?))
    }

    pub fn from_records(records: Vec<ProviderRecord>) -> Self {
        let mut index = ProviderIndex::default();
        for r in records {
            let pos = index.providers.len();
            for d in &r.info.managed_domains {
                index.domains.insert(d.trim().to_ascii_lowercase(), pos);
            }
            for c in r.certificates {
                index.trust.add(c, Some(r.info.clone()));
            }
            index.providers.push(r.info);
        }
        index
    }

    /// The provider managing `domain` (case-insensitive).
    pub fn provider_for_domain(&self, domain: &str) -> Option<&ProviderInfo> {
        self.domains
            .get(&domain.trim().to_ascii_lowercase())
            .map(|i| &self.providers[*i])
    }

    /// `certificato` when the address's domain is in any `managedDomains`, else `esterno`
    /// (spec §5.1).
    pub fn recipient_type(&self, address: &str) -> RecipientType {
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if self.provider_for_domain(domain).is_some() {
            RecipientType::Certificato
        } else {
            RecipientType::Esterno
        }
    }

    /// The trusted signer certificates.
    pub fn trust(&self) -> &TrustSet {
        &self.trust
    }

    pub fn providers(&self) -> &[ProviderInfo] {
        &self.providers
    }
}

/// The provider index shared by the roles and replaced at runtime by the refresh (spec
/// §7.2): readers take the current copy ([`IndexHandle::current`]) and keep using it for
/// the transaction in progress; [`IndexHandle::replace`] swaps in a new one atomically.
#[derive(Debug, Default)]
pub struct IndexHandle {
    current: RwLock<Arc<ProviderIndex>>,
}

impl IndexHandle {
    pub fn new(index: ProviderIndex) -> Self {
        IndexHandle {
            current: RwLock::new(Arc::new(index)),
        }
    }

    /// The current copy.
    pub fn current(&self) -> Arc<ProviderIndex> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the copy; transactions in progress keep the one they took.
    pub fn replace(&self, index: ProviderIndex) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }

    /// [`ProviderIndex::recipient_type`] on the current copy.
    pub fn recipient_type(&self, address: &str) -> RecipientType {
        self.current().recipient_type(address)
    }
}

impl From<ProviderIndex> for IndexHandle {
    fn from(index: ProviderIndex) -> Self {
        IndexHandle::new(index)
    }
}

impl From<Arc<ProviderIndex>> for IndexHandle {
    fn from(index: Arc<ProviderIndex>) -> Self {
        IndexHandle {
            current: RwLock::new(index),
        }
    }
}
