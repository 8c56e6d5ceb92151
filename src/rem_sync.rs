// SPDX-License-Identifier: GPL-3.0-or-later
//! Keeping the REM trust data: the Trusted Lists of `[rem.trust] tl_urls` fetched over
//! HTTPS, accepted by [`crate::rem::trust::accept`] (signed by a configured signer, not
//! past `NextUpdate`, not older than the stored copy), stored with their history, and the
//! peers view ([`RemPeers`]) rebuilt from the stored copies. `pec rem trust sync` runs one
//! pass; `pec serve` runs [`run`] every `rem.trust.refresh`, as the provider index refresh.
//!
//! A list that cannot be fetched or is refused leaves the stored copy of its source as it
//! was: the last good copy stays in use (and stops counting once its own `NextUpdate` is
//! past, [`RemPeers`] sees to that).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::{error, info, warn};

use crate::message::time::{Clock, Instant, SystemClock};
use crate::rem::trust::{self, PeersHandle, RemPeers, SignatureCheck, TrustError, TrustedList};
use crate::store::{LogStore, Store, StoreError, StoredTrustedList, TrustedListVersion};
use crate::xml::MAX_XML;

/// The checked `[rem.trust]` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustSettings {
    /// Where the Trusted Lists are fetched from.
    pub tl_urls: Vec<String>,
    /// PEM files of the certificates allowed to sign them.
    pub signer_files: Vec<PathBuf>,
    /// `rem.trust.refresh`: how often `pec serve` fetches them again.
    pub refresh: Duration,
    /// `rem.trust.timeout`: connection and each read or write.
    pub timeout: Duration,
    /// `rem.trust.tls_ca_file`: CA file for the HTTPS servers; `None`: the system store.
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("cannot read trusted list signer file \"{}\": {reason}", path.display())]
    Signers { path: PathBuf, reason: String },
    #[error("fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url}: {error} (the stored copy stays)")]
    Refused { url: String, error: TrustError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TrustSettings {
    /// The signer certificates (DER) of every signer file (all certificates of each).
    pub fn signers(&self) -> Result<Vec<Vec<u8>>, SyncError> {
        let mut out = Vec::new();
        for path in &self.signer_files {
            let err = |reason: String| SyncError::Signers {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            let certs =
                openssl::x509::X509::stack_from_pem(&pem).map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no certificate in it".into()));
            }
            for c in certs {
                out.push(c.to_der().map_err(|e| err(e.to_string()))?);
            }
        }
        Ok(out)
    }
}

/// How a list is fetched: HTTP(S) in service, a double in tests.
pub trait Fetch: Send + Sync {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, String>;
}

/// HTTP(S) GET through [`crate::crypto::http::get`], at most [`MAX_XML`] bytes.
#[derive(Debug, Clone)]
pub struct HttpFetch {
    pub timeout: Duration,
    pub tls_ca_file: Option<PathBuf>,
}

impl Fetch for HttpFetch {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        crate::crypto::http::get(
            url,
            self.tls_ca_file.as_deref(),
            self.timeout,
            MAX_XML as u64,
        )
    }
}

/// Each configured URL with the outcome of its synchronisation.
pub type SyncReport = Vec<(String, Result<Synced, SyncError>)>;

/// One source synchronised: the version now current, and whether it is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub version: TrustedListVersion,
    pub new: bool,
}

/// Fetches the list of `url`, accepts it against the stored copy of that source and
/// stores it (blocking: run from `spawn_blocking` or a CLI). On any error the store is
/// left as it was.
pub fn sync_source(
    store: &dyn Store,
    fetch: &dyn Fetch,
    check: &dyn SignatureCheck,
    signers: &[Vec<u8>],
    url: &str,
    now: Instant,
) -> Result<Synced, SyncError> {
    let raw = fetch.fetch(url).map_err(|reason| SyncError::Fetch {
        url: url.to_string(),
        reason,
    })?;
    let have = store
        .trusted_lists()?
        .into_iter()
        .find(|l| l.version.source == url)
        .map(|l| l.version.sequence);
    let list =
        trust::accept(&raw, check, signers, now, have).map_err(|error| SyncError::Refused {
            url: url.to_string(),
            error,
        })?;
    // accept() passed the gate: the text is UTF-8 (a BOM dropped).
    let xml = crate::xml::check_plain(&raw)
        .map_err(|e| SyncError::Refused {
            url: url.to_string(),
            error: e.into(),
        })?
        .to_string();
    let version = TrustedListVersion {
        source: url.to_string(),
        territory: list.territory,
        sequence: list.sequence,
        issued_at: list.issued_at,
        next_update: list.next_update,
        fetched_at: now,
        checked_at: now,
    };
    let new = store.store_trusted_list(&StoredTrustedList {
        version: version.clone(),
        xml,
    })?;
    Ok(Synced { version, new })
}

/// [`sync_source`] for every configured URL, each on its own (one failing leaves the
/// others synchronised).
pub fn sync_all(
    store: &dyn Store,
    fetch: &dyn Fetch,
    check: &dyn SignatureCheck,
    settings: &TrustSettings,
    now: Instant,
) -> Result<SyncReport, SyncError> {
    let signers = settings.signers()?;
    Ok(settings
        .tl_urls
        .iter()
        .map(|url| {
            (
                url.clone(),
                sync_source(store, fetch, check, &signers, url, now),
            )
        })
        .collect())
}

/// The stored current copies of the configured sources, each verified again against the
/// configured signers (a signer no longer configured no longer counts; `NextUpdate` is
/// not checked here: [`RemPeers`] checks it at each instant). Returns the lists and, for
/// each stored copy left out, why.
pub fn load_lists(
    store: &dyn Store,
    check: &dyn SignatureCheck,
    settings: &TrustSettings,
) -> Result<(Vec<TrustedList>, Vec<String>), SyncError> {
    let signers = settings.signers()?;
    let mut lists = Vec::new();
    let mut left_out = Vec::new();
    for stored in store.trusted_lists()? {
        let source = &stored.version.source;
        if !settings.tl_urls.contains(source) {
            continue;
        }
        // The instant of the check is the list's own issue time: only the signature and
        // the signer are checked again.
        match trust::accept(
            stored.xml.as_bytes(),
            check,
            &signers,
            stored.version.issued_at,
            None,
        ) {
            Ok(list) => lists.push(list),
            Err(e) => left_out.push(format!("{source}: {e}")),
        }
    }
    Ok((lists, left_out))
}

/// [`load_lists`] as a peers view.
pub fn load_peers(
    store: &dyn Store,
    check: &dyn SignatureCheck,
    settings: &TrustSettings,
) -> Result<(RemPeers, Vec<String>), SyncError> {
    let (lists, left_out) = load_lists(store, check, settings)?;
    Ok((RemPeers::new(&lists), left_out))
}

/// The refresh of `pec serve`: every `settings.refresh` (one node at a time, through a
/// lease in the store) the lists are synchronised, and the peers view in `peers` is
/// rebuilt from the stored copies, until `shutdown`.
pub async fn run(
    store: Arc<dyn LogStore>,
    peers: Arc<PeersHandle>,
    settings: TrustSettings,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut tick = tokio::time::interval(settings.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let owner = crate::store::ledger::node_owner();
    let lease = i64::try_from(settings.refresh.as_secs())
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(3)
        / 2
        + 60;
    let fetch = HttpFetch {
        timeout: settings.timeout,
        tls_ca_file: settings.tls_ca_file.clone(),
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let (st, s, f, o) = (
            store.clone(),
            settings.clone(),
            fetch.clone(),
            owner.clone(),
        );
        let done = tokio::task::spawn_blocking(move || {
            let now = SystemClock.now();
            if st.try_lease("rem-trust-refresh", &o, now, lease)? {
                for (url, r) in sync_all(&*st, &f, &trust::XmlDsig, &s, now)? {
                    match r {
                        Ok(synced) if synced.new => info!(
                            source = %url,
                            territory = %synced.version.territory,
                            sequence = synced.version.sequence,
                            "rem trusted list: new version stored"
                        ),
                        Ok(_) => {}
                        Err(e) => warn!("rem trusted list: {e}"),
                    }
                }
            }
            load_peers(&*st, &trust::XmlDsig, &s)
        })
        .await;
        match done {
            Ok(Ok((view, left_out))) => {
                for why in left_out {
                    error!("rem trusted list: stored copy not used: {why}");
                }
                peers.replace(view);
            }
            Ok(Err(e)) => warn!("rem trust refresh: {e}"),
            Err(e) => error!("rem trust refresh: {e}"),
        }
    }
}
