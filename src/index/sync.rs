// SPDX-License-Identifier: GPL-3.0-or-later
//! Keeping the local copy of the provider index (spec §7.2): fetch it from an LDAP server
//! or from a signed LDIF (`.p7m`), check it, store it, swap it in.
//!
//! Whatever the source, what is fetched becomes LDIF text and goes through
//! [`super::ldif::parse_ldif`], which checks every provider record (required attributes,
//! `providerCertificateHash` = SHA-1 of a `providerCertificate`, …): one validation path.
//! A copy that fails it, that is empty, or that has fewer than half the providers of the
//! current copy is refused unless forced, and the last good copy stays in use (a source
//! that is down or returns garbage must not take the provider down, spec §7.2 "protect the
//! local copy").

use std::path::{Path, PathBuf};
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::x509::X509;
use thiserror::Error;

use super::ldif::{parse_ldif, write_attr};
use super::{IndexError, ProviderIndex};
use crate::message::time::Instant;
use crate::store::{Store, StoreError, StoredIndex};

/// Base DN of the index (spec §7.1).
pub const BASE_DN: &str = "o=postacert";

/// The attributes fetched from LDAP (spec §7.1); certificates with `;binary`.
pub const ATTRIBUTES: &[&str] = &[
    "objectClass",
    "providerName",
    "providerUnit",
    "providerCertificateHash",
    "providerCertificate;binary",
    "mailReceipt",
    "managedDomains",
    "LDIFLocationURL",
    "description",
];

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("LDAP {url}: {reason}")]
    Ldap { url: String, reason: String },
    #[error("cannot read \"{}\": {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signed LDIF \"{source_name}\": {reason}")]
    Signed { source_name: String, reason: String },
    #[error("index from {source_name} is invalid: {error}")]
    Invalid {
        source_name: String,
        error: IndexError,
    },
    #[error(
        "index from {source_name} refused: {reason} (the current copy stays; force to accept it)"
    )]
    Refused { source_name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the index comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An LDAP server: anonymous when `bind_dn` is `None`.
    Ldap {
        url: String,
        bind_dn: Option<String>,
        password: Option<String>,
        timeout: Duration,
    },
    /// A signed LDIF file (CMS SignedData, DER, LDIF encapsulated) and the PEM file of the
    /// certificate(s) allowed to sign it.
    SignedLdif { path: PathBuf, signer_cert: PathBuf },
}

impl Source {
    /// Shown in logs and stored with the copy.
    pub fn name(&self) -> String {
        match self {
            Source::Ldap { url, .. } => url.clone(),
            Source::SignedLdif { path, .. } => path.display().to_string(),
        }
    }

    /// Fetches the index as LDIF text (not yet checked).
    pub async fn fetch(&self) -> Result<String, SyncError> {
        match self {
            Source::Ldap {
                url,
                bind_dn,
                password,
                timeout,
            } => fetch_ldap(url, bind_dn.as_deref(), password.as_deref(), *timeout).await,
            Source::SignedLdif { path, signer_cert } => {
                let read = |p: &Path| {
                    std::fs::read(p).map_err(|source| SyncError::Read {
                        path: p.to_path_buf(),
                        source,
                    })
                };
                let (der, pem) = (read(path)?, read(signer_cert)?);
                open_signed_ldif(&der, &pem).map_err(|reason| SyncError::Signed {
                    source_name: path.display().to_string(),
                    reason,
                })
            }
        }
    }
}

/// Searches `o=postacert` for `(objectClass=provider)` and writes the entries as LDIF.
pub async fn fetch_ldap(
    url: &str,
    bind_dn: Option<&str>,
    password: Option<&str>,
    timeout: Duration,
) -> Result<String, SyncError> {
    let err = |reason: String| SyncError::Ldap {
        url: url.to_string(),
        reason,
    };
    let settings = LdapConnSettings::new().set_conn_timeout(timeout);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .map_err(|e| err(format!("connect: {e}")))?;
    ldap3::drive!(conn);
    if let Some(dn) = bind_dn {
        ldap.with_timeout(timeout)
            .simple_bind(dn, password.unwrap_or(""))
            .await
            .and_then(|r| r.success())
            .map_err(|e| err(format!("bind as \"{dn}\": {e}")))?;
    }
    let (entries, _) = ldap
        .with_timeout(timeout)
        .search(
            BASE_DN,
            Scope::Subtree,
            "(objectClass=provider)",
            ATTRIBUTES.to_vec(),
        )
        .await
        .and_then(|r| r.success())
        .map_err(|e| err(format!("search {BASE_DN}: {e}")))?;
    let _ = ldap.unbind().await;
    let mut out = String::from("version: 1\n");
    for e in entries {
        let e = SearchEntry::construct(e);
        out.push('\n');
        write_attr(&mut out, "dn", e.dn.as_bytes());
        let mut names: Vec<&String> = e.attrs.keys().chain(e.bin_attrs.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            // Certificates always as binary (`;binary` transfer, spec §7.1).
            let desc = if name
                .to_ascii_lowercase()
                .starts_with("providercertificate;")
                || name.eq_ignore_ascii_case("providerCertificate")
            {
                "providerCertificate;binary"
            } else {
                name.as_str()
            };
            for v in e.attrs.get(name).into_iter().flatten() {
                write_attr(&mut out, desc, v.as_bytes());
            }
            for v in e.bin_attrs.get(name).into_iter().flatten() {
                write_attr(&mut out, desc, v);
            }
        }
    }
    Ok(out)
}

/// Verifies a signed LDIF (CMS SignedData, DER, content encapsulated) against the
/// certificate(s) of `signer_pem` and returns the LDIF. The signer must be one of those
/// certificates (no other certificate, in particular none carried in the CMS, is used);
/// their chain is not checked: configuring them is the trust decision.
pub fn open_signed_ldif(der: &[u8], signer_pem: &[u8]) -> Result<String, String> {
    let certs =
        X509::stack_from_pem(signer_pem).map_err(|e| format!("signer certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("signer certificate file: no certificate".into());
    }
    let mut stack = Stack::new().map_err(|e| e.to_string())?;
    for c in certs {
        stack.push(c).map_err(|e| e.to_string())?;
    }
    let mut cms = CmsContentInfo::from_der(der).map_err(|e| format!("not a CMS DER: {e}"))?;
    let mut content = Vec::new();
    cms.verify(
        Some(&stack),
        None,
        None,
        Some(&mut content),
        CMSOptions::NOINTERN | CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
    )
    .map_err(|e| format!("signature not valid or not by the configured signer: {e}"))?;
    String::from_utf8(content).map_err(|_| "the signed content is not UTF-8 LDIF".into())
}

/// A checked copy, ready to store and swap in.
#[derive(Debug, Clone)]
pub struct Checked {
    pub stored: StoredIndex,
    pub index: ProviderIndex,
}

/// Checks fetched LDIF against the current copy: valid records, not empty, not shrunk
/// below half of `current_providers` — unless `force`.
pub fn check(
    ldif: String,
    source_name: &str,
    current_providers: Option<usize>,
    force: bool,
    now: Instant,
) -> Result<Checked, SyncError> {
    let records = parse_ldif(&ldif).map_err(|error| SyncError::Invalid {
        source_name: source_name.to_string(),
        error,
    })?;
    let n = records.len();
    let refused = |reason: String| SyncError::Refused {
        source_name: source_name.to_string(),
        reason,
    };
    if !force {
        if n == 0 {
            return Err(refused("no provider in it".into()));
        }
        if let Some(current) = current_providers {
            if n * 2 < current {
                return Err(refused(format!(
                    "{n} providers, fewer than half of the current copy's {current}"
                )));
            }
        }
    }
    Ok(Checked {
        stored: StoredIndex {
            ldif,
            providers: n,
            fetched_at: now,
            source: source_name.to_string(),
        },
        index: ProviderIndex::from_records(records),
    })
}

/// Fetches from `source`, checks against the stored copy, stores the new copy (blocking
/// store calls: run from `spawn_blocking` or a CLI). Returns the new copy.
pub async fn sync(
    store: &dyn Store,
    source: &Source,
    force: bool,
    now: Instant,
) -> Result<Checked, SyncError> {
    let ldif = source.fetch().await?;
    let current = store.stored_index()?.map(|s| s.providers);
    let checked = check(ldif, &source.name(), current, force, now)?;
    store.replace_index(&checked.stored)?;
    Ok(checked)
}

/// One refresh of a running service: fetch, check against the stored copy, store, and
/// swap the new copy into `handle`. On any error the stored copy and `handle` are left as
/// they were.
pub async fn refresh(
    store: std::sync::Arc<dyn Store>,
    handle: &super::IndexHandle,
    source: &Source,
    force: bool,
    now: Instant,
) -> Result<StoredIndex, SyncError> {
    let ldif = source.fetch().await?;
    let name = source.name();
    let checked = tokio::task::spawn_blocking(move || {
        let current = store.stored_index()?.map(|s| s.providers);
        let checked = check(ldif, &name, current, force, now)?;
        store.replace_index(&checked.stored)?;
        Ok::<_, SyncError>(checked)
    })
    .await
    .map_err(|e| SyncError::Store(StoreError::Database(format!("sync task: {e}"))))??;
    handle.replace(checked.index);
    Ok(checked.stored)
}

/// The copy the roles use: the stored one, else the configured LDIF file.
pub fn load_current(
    store: &dyn Store,
    fallback_ldif: &Path,
) -> Result<(ProviderIndex, String), SyncError> {
    if let Some(s) = store.stored_index()? {
        let index = ProviderIndex::parse(&s.ldif).map_err(|error| SyncError::Invalid {
            source_name: format!("the store (copy from {})", s.source),
            error,
        })?;
        let from = format!(
            "store (from {}, fetched {})",
            s.source,
            s.fetched_at.utc().to_rfc3339()
        );
        return Ok((index, from));
    }
    let index = ProviderIndex::load_ldif(fallback_ldif).map_err(|error| SyncError::Invalid {
        source_name: fallback_ldif.display().to_string(),
        error,
    })?;
    Ok((index, fallback_ldif.display().to_string()))
}

/// Our own provider record as a signed LDIF (`.p7m`: CMS SignedData, DER, the LDIF
/// encapsulated), to publish at our `LDIFLocationURL` (spec §7.2). `record` lists every
/// certificate to publish (during a renewal, the old and the new one); one
/// `providerCertificateHash` is written per certificate.
pub fn publish(
    record: &super::ProviderRecord,
    signer: &dyn crate::crypto::Signer,
    at: Instant,
) -> Result<Vec<u8>, crate::crypto::SignError> {
    let ldif = super::ldif::write_ldif(std::slice::from_ref(record));
    crate::crypto::sign_attached(signer, ldif.as_bytes(), at)
}
