// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec serve`: runs the enabled roles on one tokio runtime — the access-point milter, the
//! after-queue content filter (reception point), the delivery point's LMTP proxy and the
//! 12 h / 24 h timers — with the signer, store, provider index, antivirus and Postfix
//! reinjection they share. It supervises: the parts are built by [`crate::wiring`], the
//! index refresh is [`crate::index::refresh`].

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinError;
use tracing::{error, info, warn};

use crate::config::{Config, Endpoint, InvalidValue};
use crate::index::{refresh, sync, IndexHandle};
use crate::message::time::SystemClock;
use crate::reload::Current;
use crate::smtp::lmtp::{self, LmtpServerOptions};
use crate::smtp::server::{self, ServerOptions};
use crate::timers::Timers;
use crate::wiring::{self, build_roles, tcp, Identity, Roles, Shared, WiringError};

#[derive(Debug, Error)]
pub enum ServeError {
    /// The signer, the store, the index or a role cannot be built.
    #[error(transparent)]
    Wiring(#[from] WiringError),
    #[error("configuration: {0}")]
    Config(#[from] InvalidValue),
    #[error("configuration: metrics.listen: cannot resolve \"{0}\"")]
    Resolve(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// A start-up task did not finish; `what` names the part it was opening.
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        source: JoinError,
    },
}

/// Runs `f` off the async workers; a task that does not finish is reported as `what`.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ServeError::Task { what, source })
}

/// Binds the TCP listener of a role; the error names the setting and the address.
async fn listen(endpoint: &Endpoint, what: &str) -> Result<(String, TcpListener), ServeError> {
    let addr = tcp(endpoint, what)?;
    match TcpListener::bind(&addr).await {
        Ok(listener) => Ok((addr, listener)),
        Err(source) => Err(ServeError::Listen { addr, source }),
    }
}

/// Runs every role until `shutdown` completes; returns once they have stopped.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    run_with(config, None, shutdown).await
}

/// Configuration reloads: each message on `requests` (SIGHUP) re-reads `path`; a valid
/// file is swapped in whole (see [`crate::reload`]), an invalid one is logged and the
/// running configuration stays.
pub struct Reloads {
    pub path: std::path::PathBuf,
    pub requests: tokio::sync::mpsc::Receiver<()>,
}

/// A background task with its own stop switch (the timers, the daily sealer), so that a
/// reload can restart it.
struct StoppableTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_timers(timers: Option<(Arc<Timers>, std::time::Duration)>) -> Option<StoppableTask> {
    let (t, interval) = timers?;
    info!(interval = ?interval, "timers running");
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        t.run(interval, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await
    });
    Some(StoppableTask { stop, task })
}

async fn stop_timers(task: Option<StoppableTask>) {
    if let Some(t) = task {
        let _ = t.stop.send(true);
        let _ = t.task.await;
    }
}

/// The daily sealer, signing with the seal key, with its own stop switch.
fn start_sealer(
    store: &Arc<dyn crate::store::LogStore>,
    seal_signer: &Arc<dyn crate::crypto::Signer>,
    tsa: &Option<crate::log::TsaSettings>,
    tsa_retry: std::time::Duration,
) -> StoppableTask {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(crate::log::daily_sealer(
        store.clone(),
        seal_signer.clone(),
        tsa.clone(),
        tsa_retry,
        Arc::new(SystemClock),
        rx,
    ));
    StoppableTask { stop, task }
}

/// [`run`], with configuration reloads.
pub async fn run_with(
    config: Config,
    reloads: Option<Reloads>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let settings = config.settings()?;
    config.check_serve()?;
    if settings.tsa.is_none() {
        tracing::warn!(
            "log.dev_insecure_no_tsa: the legal log is sealed WITHOUT time stamps; \
             this is not a legal seal (development only)"
        );
    }
    let cfg = config.clone();
    let signer = blocking("signing key", move || wiring::open_signer(&cfg)).await??;
    let cfg = config.clone();
    let store = blocking("store", move || wiring::open_store(&cfg))
        .await?
        .map_err(WiringError::from)?;
    let (index, from) = {
        let (store, file) = (store.clone(), config.index.ldif.clone());
        blocking("provider index", move || sync::load_current(&*store, &file))
            .await?
            .map_err(WiringError::from)?
    };
    info!(providers = index.providers().len(), from = %from, "provider index loaded");
    let tls_policy =
        config
            .index
            .tls_policy_map
            .clone()
            .map(|path| crate::index::tls_policy::Target {
                path,
                own: config.provider.domains.clone(),
            });
    if let Some(t) = &tls_policy {
        t.write_logged(&index);
    }
    let index = Arc::new(IndexHandle::new(index));
    // The REM peers view from the Trusted Lists (`[rem.trust]`), refreshed below; the
    // access point routes by it.
    // The stored last good lists are loaded before serving: a restart must not judge a
    // granted peer untrusted until the first refresh ends (found by faults.sh's REM load).
    let rem_peers = match settings.rem_trust.clone() {
        None => None,
        Some(trust) => {
            let handle = Arc::new(crate::rem::trust::PeersHandle::default());
            let st = store.clone();
            let loaded = blocking("rem trust data", move || {
                crate::rem_sync::load_peers(&*st, &crate::rem::trust::XmlDsig, &trust)
            })
            .await?;
            match loaded {
                Ok((view, left_out)) => {
                    for why in left_out {
                        error!("rem trust data: stored copy not used: {why}");
                    }
                    // Nothing stored yet (a new install): no view until the first refresh.
                    if !view.all().is_empty() {
                        info!(
                            services = view.all().len(),
                            "rem peers view loaded from the stored trusted lists"
                        );
                        handle.replace(view);
                    }
                }
                // Nothing usable stored: the first refresh loads the view; until then the
                // reception point answers REM with a temporary failure.
                Err(e) => warn!("rem trust data: the stored lists cannot be loaded: {e}"),
            }
            Some(handle)
        }
    };
    let mut shared = Shared {
        signer: signer.clone(),
        store: store.clone(),
        index: index.clone(),
        rem_peers: rem_peers.clone(),
    };
    let roles = build_roles(&config, &shared)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The metrics endpoint first: a wrong address stops the start like a listener would.
    let metrics = match &settings.metrics {
        None => None,
        Some(endpoint) => {
            let addr = tcp(endpoint, "metrics.listen")?;
            let sock = tokio::net::lookup_host(&addr)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| ServeError::Resolve(addr.clone()))?;
            let exporter = crate::metrics::install(sock).map_err(|e| ServeError::Listen {
                addr: addr.clone(),
                source: std::io::Error::other(e.message),
            })?;
            info!(metrics = %addr, "metrics endpoint listening");
            let stop = stopped(stop_rx.clone());
            let sampler = crate::metrics::sample_store(store.clone(), stopped(stop_rx.clone()));
            Some(tokio::spawn(async move {
                tokio::select! {
                    _ = stop => {}
                    _ = exporter => {}
                    _ = sampler => {}
                }
            }))
        }
    };
    // The sealer reads a whole day (up to millions of records): its own connection, so
    // that the mail path's connection is never held for the export (WAL readers do not
    // block the writer).
    let cfg = config.clone();
    let seal_store = blocking("store", move || wiring::open_store(&cfg))
        .await?
        .map_err(WiringError::from)?;
    let cfg = config.clone();
    let seal_signer = blocking("seal key", move || wiring::open_seal_signer(&cfg)).await??;
    // The seal key is not the PEC key: a rollover of the PEC key (reload) leaves the
    // sealer alone; a new seal key takes a restart.
    let sealer = start_sealer(&seal_store, &seal_signer, &settings.tsa, settings.tsa_retry);
    // The retention purge, every log.purge_interval (one node per interval), on the
    // sealer's connection: both are the legal log's housekeeping.
    let purger = settings.purge_interval.map(|every| {
        info!(every = ?every, "retention purge running");
        tokio::spawn(crate::log::scheduled_purge(
            seal_store.clone(),
            crate::log::PurgeSchedule {
                every,
                log_months: config.log.retention_months,
                quarantine_months: config.quarantine.retention_months,
                provider: config.provider.name.clone(),
            },
            Arc::new(SystemClock),
            stop_rx.clone(),
        ))
    });
    let access = Arc::new(Current::new(roles.access));
    let after_queue = Arc::new(Current::new(roles.after_queue));
    let delivery_point = Arc::new(Current::new(roles.delivery));
    let mut timers = start_timers(roles.timers);
    // The outbox sweep: at start-up, then periodically (not restarted by a reload).
    let outbox = tokio::spawn(crate::outbox::run(
        store.clone(),
        roles.outbox.clone(),
        Arc::new(SystemClock),
        stopped(stop_rx.clone()),
    ));

    // `serve.roles`: the listeners of the roles this process serves (all by default).
    let on = config.serve.enabled()?;
    let milter_listener = match on.access {
        true => Some(listen(&settings.access.listen, "access.listen").await?),
        false => None,
    };
    let filter_listener = match on.filter {
        true => Some(listen(&settings.filter.listen, "filter.listen").await?),
        false => None,
    };
    let lmtp_listener = match on.delivery {
        true => Some(listen(&settings.delivery.listen, "delivery.listen").await?),
        false => None,
    };
    let shown = |l: &Option<(String, TcpListener)>| {
        l.as_ref()
            .map_or_else(|| "-".to_string(), |(a, _)| a.clone())
    };
    info!(
        milter = %shown(&milter_listener),
        filter = %shown(&filter_listener),
        lmtp = %shown(&lmtp_listener),
        "pec serving"
    );

    let milter = milter_listener.map(|(_, listener)| {
        tokio::spawn(crate::access::milter::run_current(
            listener,
            access.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    let helo = Identity::of(&config).helo;
    // Whatever passed the content filter may be delivered: same size limit.
    let lmtp_options = LmtpServerOptions {
        hostname: helo.clone(),
        max_message_size: usize::try_from(settings.filter.max_size).unwrap_or(usize::MAX),
        ..LmtpServerOptions::default()
    };
    let delivery = lmtp_listener.map(|(_, listener)| {
        tokio::spawn(lmtp::serve(
            listener,
            delivery_point.clone(),
            lmtp_options,
            stopped(stop_rx.clone()),
        ))
    });
    let options = ServerOptions {
        hostname: helo,
        max_message_size: usize::try_from(settings.filter.max_size).unwrap_or(usize::MAX),
        ..ServerOptions::default()
    };
    let filter = filter_listener.map(|(_, listener)| {
        tokio::spawn(server::serve(
            listener,
            after_queue.clone(),
            options,
            stopped(stop_rx.clone()),
        ))
    });
    let refresh = settings.index_source.clone().map(|source| {
        let (store, index, every, force) = (
            store.clone(),
            index.clone(),
            settings.index_refresh,
            config.index.force,
        );
        let stop = stopped(stop_rx.clone());
        info!(source = %source.name(), every = ?every, "provider index refresh running");
        let tls_policy = tls_policy.clone();
        tokio::spawn(refresh::run(
            store, index, source, every, force, tls_policy, stop,
        ))
    });
    // The REM peers view from the Trusted Lists (`[rem.trust]`); the REM roles take it
    // from `rem_peers` when they are wired.
    let rem_trust = settings.rem_trust.clone().zip(rem_peers).map(|(trust, peers)| {
        let stop = stopped(stop_rx.clone());
        info!(lists = trust.tl_urls.len(), every = ?trust.refresh, "rem trusted list refresh running");
        let task = tokio::spawn(crate::rem_sync::run(
            store.clone(),
            peers.clone(),
            trust,
            stop,
        ));
        (peers, task)
    });

    tokio::pin!(shutdown);
    let mut running = config;
    let mut reloads = reloads;
    loop {
        let request = async {
            match reloads.as_mut() {
                Some(r) => r.requests.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            got = request => {
                let Some(()) = got else {
                    reloads = None;
                    continue;
                };
                let Some(path) = reloads.as_ref().map(|r| r.path.clone()) else {
                    continue;
                };
                match reload(&path, &running, &shared).await {
                    Ok((applied, new_shared, roles)) => {
                        shared = new_shared;
                        access.set(roles.access);
                        after_queue.set(roles.after_queue);
                        delivery_point.set(roles.delivery);
                        stop_timers(timers.take()).await;
                        timers = start_timers(roles.timers);
                        running = applied;
                        crate::metrics::reload(true);
                        info!(config = %path.display(), "configuration reloaded");
                    }
                    Err(e) => {
                        crate::metrics::reload(false);
                        error!(config = %path.display(), "configuration not reloaded, the running one stays: {e}");
                    }
                }
            }
        }
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(milter) = milter {
        if let Ok(Err(e)) = milter.await {
            error!(error = %e, "milter stopped with an error");
        }
    }
    if let Some(filter) = filter {
        let _ = filter.await;
    }
    if let Some(delivery) = delivery {
        let _ = delivery.await;
    }
    stop_timers(timers).await;
    if let Some(r) = refresh {
        let _ = r.await;
    }
    if let Some((_peers, task)) = rem_trust {
        let _ = task.await;
    }
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let _ = sealer.stop.send(true);
    let _ = sealer.task.await;
    if let Some(p) = purger {
        let _ = p.await;
    }
    let _ = outbox.await;
    Ok(())
}

/// Reads and checks `path`, re-opens the signing key when `[signing]` names another key
/// or certificate (key rollover: checked first, see [`wiring::reopen_signer`]), and builds
/// the roles of what a reload may apply (warning about the keys that need a restart).
/// Returns the configuration applied, the shared parts (with the signer in use from now
/// on) and the roles; an error leaves everything running as it was.
pub async fn reload(
    path: &std::path::Path,
    running: &Config,
    shared: &Shared,
) -> Result<(Config, Shared, Roles), String> {
    let p = path.to_path_buf();
    let new = tokio::task::spawn_blocking(move || crate::config::load(&p))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let restart = crate::reload::restart_only(running, &new);
    if !restart.is_empty() {
        warn!(
            keys = %restart.join(", "),
            "configuration: these changes take effect at the next restart"
        );
    }
    // The mix of new and running values must itself be valid (e.g. a larger
    // access.max_total_size against the running filter.max_size).
    let applied = crate::reload::applicable(running, &new)
        .rechecked()
        .map_err(|e| {
            format!(
                "{}: {e} (with the running values of the keys that need a restart)",
                path.display()
            )
        })?;
    let (cfg, run_cfg, old) = (applied.clone(), running.clone(), shared.signer.clone());
    let reopened = tokio::task::spawn_blocking(move || {
        wiring::reopen_signer(
            &cfg,
            &run_cfg,
            &old,
            crate::message::time::Clock::now(&SystemClock),
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{e}; the running signing key stays"))?;
    let mut sh = shared.clone();
    if let wiring::Reopened::New(signer) = reopened {
        let describe = |der: &[u8]| {
            let kind = crate::crypto::KeyKind::of_certificate(der)
                .map(|k| k.describe())
                .unwrap_or_default();
            format!("{kind} {}", crate::index::sha1_hex_upper(der))
        };
        info!(
            old = %describe(shared.signer.certificate_der()),
            new = %describe(signer.certificate_der()),
            "signing key rollover: new messages are signed with the new certificate"
        );
        sh.signer = signer;
    }
    let (cfg, sh2) = (applied.clone(), sh.clone());
    let roles = tokio::task::spawn_blocking(move || build_roles(&cfg, &sh2))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok((applied, sh, roles))
}
