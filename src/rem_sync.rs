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
//!
//! The Capability and Security Information of each granted peer (EN 319 532-4 Annex C,
//! published at the `https://` supply point of its Trusted List entry) is kept the same
//! way ([`sync_csi`]): fetched over HTTPS, accepted by [`crate::rem::csi::accept`] (signed
//! with the peer's Trusted List identity, `CSINextUpdate` not past, not older than the
//! stored copy), stored with its history, verified again when loaded into the peers view
//! ([`RemPeers::rem_baseline_at`]: whom `rem.mode = "auto"` sends REM to). A document that
//! cannot be fetched or is refused leaves the last good copy in use.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::{error, info, warn};

use crate::message::time::{Clock, Instant, SystemClock};
use crate::rem::csi::{self, CsiError};
use crate::rem::trust::{self, PeersHandle, RemPeers, SignatureCheck, TrustError, TrustedList};
use crate::store::{
    CsiVersion, LogStore, Store, StoreError, StoredCsi, StoredTrustedList, TrustedListVersion,
};
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
    #[error("{url}: {error} (the stored copy stays)")]
    CsiRefused { url: String, error: CsiError },
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

/// [`load_lists`] as a peers view, with what the stored CSI of each peer says
/// ([`attach_csi`]). Returns the view and, for each stored list or CSI left out, why.
pub fn load_peers(
    store: &dyn Store,
    check: &dyn SignatureCheck,
    settings: &TrustSettings,
) -> Result<(RemPeers, Vec<String>), SyncError> {
    let (lists, mut left_out) = load_lists(store, check, settings)?;
    let mut view = RemPeers::new(&lists);
    left_out.extend(attach_csi(store, &mut view)?);
    Ok((view, left_out))
}

/// Sets in `view` what the stored current CSI of each peer says, each verified again
/// against the identity of the listed service whose supply point it came from (a source
/// no listed service names any more is passed over). Returns, for each one left out, why.
pub fn attach_csi(store: &dyn Store, view: &mut RemPeers) -> Result<Vec<String>, SyncError> {
    let mut left_out = Vec::new();
    for stored in store.peer_csis()? {
        let source = &stored.version.source;
        let Some(peer) = view
            .all()
            .iter()
            .find(|p| p.service.csi_url() == Some(source.as_str()))
        else {
            continue;
        };
        match csi::verify(stored.xml.as_bytes(), peer) {
            Ok(c) => view.set_csi(source, c.peer_csi()),
            Err(e) => left_out.push(format!("{source}: {e}")),
        }
    }
    Ok(left_out)
}

/// Each peer's `https://` supply point with the outcome of its CSI synchronisation.
pub type CsiReport = Vec<(String, Result<CsiSynced, SyncError>)>;

/// One peer's CSI synchronised: the version now current, and whether it is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiSynced {
    pub version: CsiVersion,
    pub new: bool,
}

/// Fetches the CSI of every service of `peers` granted at `now` from its `https://` supply
/// point, accepts it against the service's identity and the stored copy of that source,
/// and stores it (blocking). Each on its own: one failing leaves its stored copy and the
/// others synchronised. Returns each supply point with its outcome.
pub fn sync_csi(
    store: &dyn Store,
    fetch: &dyn Fetch,
    peers: &RemPeers,
    now: Instant,
) -> Result<CsiReport, SyncError> {
    let stored = store.peer_csis()?;
    let mut done: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for peer in peers.trusted_at(now) {
        let Some(url) = peer.service.csi_url() else {
            continue;
        };
        if done.iter().any(|d| d == url) {
            continue;
        }
        done.push(url.to_string());
        let have = stored
            .iter()
            .find(|s| s.version.source == url)
            .map(|s| s.version.sequence);
        let refused = |error: CsiError| SyncError::CsiRefused {
            url: url.to_string(),
            error,
        };
        let result = fetch
            .fetch(url)
            .map_err(|reason| SyncError::Fetch {
                url: url.to_string(),
                reason,
            })
            .and_then(|raw| {
                let c = csi::accept(&raw, peer, now, have).map_err(refused)?;
                // accept() passed the gate: the text is UTF-8 (a BOM dropped).
                let xml = crate::xml::check_plain(&raw)
                    .map_err(|e| refused(e.into()))?
                    .to_string();
                let version = CsiVersion {
                    source: url.to_string(),
                    service: peer.service.name.clone(),
                    sequence: c.sequence,
                    issued_at: c.issued_at,
                    next_update: c.next_update,
                    profile: c.erds.profile,
                    fetched_at: now,
                    checked_at: now,
                };
                let new = store.store_peer_csi(&StoredCsi {
                    version: version.clone(),
                    xml,
                })?;
                Ok(CsiSynced { version, new })
            });
        out.push((url.to_string(), result));
    }
    Ok(out)
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
    // What the last view held (services granted now, those whose CSI says REM baseline):
    // said when it changes, so an operator (and the end-to-end tests) see when routing does.
    let mut said: Option<(usize, usize)> = None;
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
                let (listed, _) = load_peers(&*st, &trust::XmlDsig, &s)?;
                for (url, r) in sync_csi(&*st, &f, &listed, now)? {
                    match r {
                        Ok(synced) if synced.new => info!(
                            source = %url,
                            service = %synced.version.service,
                            sequence = synced.version.sequence,
                            "rem peer csi: new version stored"
                        ),
                        Ok(_) => {}
                        Err(e) => warn!("rem peer csi: {e}"),
                    }
                }
            }
            load_peers(&*st, &trust::XmlDsig, &s)
        })
        .await;
        match done {
            Ok(Ok((view, left_out))) => {
                for why in left_out {
                    error!("rem trust data: stored copy not used: {why}");
                }
                let now = SystemClock.now();
                let held = (
                    view.trusted_at(now).count(),
                    view.rem_baseline_at(now).count(),
                );
                if said != Some(held) {
                    info!(
                        granted = held.0,
                        rem_baseline = held.1,
                        "rem peers view updated"
                    );
                    said = Some(held);
                }
                peers.replace(view);
            }
            Ok(Err(e)) => warn!("rem trust refresh: {e}"),
            Err(e) => error!("rem trust refresh: {e}"),
        }
    }
}
