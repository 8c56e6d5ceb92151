//! `pec serve`: runs the enabled roles on one tokio runtime — the access-point milter, the
//! after-queue content filter (reception point), the delivery point's LMTP proxy and the
//! 12 h / 24 h timers — with the signer, store, provider index, antivirus and Postfix
//! reinjection they share.

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::access::{AccessPoint, Limits, Policy};
use crate::antivirus::{Antivirus, Clamd};
use crate::config::{Config, Endpoint, SigningConfig};
use crate::crypto::{PemSigner, Pkcs11Config, Pkcs11Signer, Signer};
use crate::delivery::lmtp::{self, LmtpAddr, LmtpClient, LmtpServerOptions};
use crate::delivery::DeliveryPoint;
use crate::index::{sync, IndexHandle};
use crate::issuing::Issuing;
use crate::message::build::Issuer;
use crate::message::ids::IdGenerator;
use crate::message::time::{Clock, SystemClock};
use crate::reception::{AfterQueue, Reception};
use crate::reload::Current;
use crate::smtp::client::SmtpInjector;
use crate::smtp::server::{self, ServerOptions};
use crate::store::{ledger, LogStore};
use crate::timers::Timers;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("signing key: {0}")]
    Signer(String),
    #[error("store: {0}")]
    Store(String),
    #[error("provider index: {0}")]
    Index(String),
    #[error("antivirus: {0}")]
    Antivirus(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// `host:port` of a TCP endpoint, or an error naming the setting.
fn tcp(endpoint: &Endpoint, what: &str) -> Result<String, ServeError> {
    match endpoint {
        Endpoint::Inet { host, port } if host.contains(':') => Ok(format!("[{host}]:{port}")),
        Endpoint::Inet { host, port } => Ok(format!("{host}:{port}")),
        Endpoint::Unix(p) => Err(ServeError::Config(format!(
            "{what}: unix socket \"{}\" not supported here, use HOST:PORT",
            p.display()
        ))),
    }
}

/// Binds the TCP listener of a role; the error names the setting and the address.
async fn listen(endpoint: &Endpoint, what: &str) -> Result<(String, TcpListener), ServeError> {
    let addr = tcp(endpoint, what)?;
    match TcpListener::bind(&addr).await {
        Ok(listener) => Ok((addr, listener)),
        Err(source) => Err(ServeError::Listen { addr, source }),
    }
}

/// Opens the signing key the configuration names.
pub fn open_signer(config: &Config) -> Result<Arc<dyn Signer>, ServeError> {
    let settings = config
        .settings()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    match &config.signing {
        SigningConfig::Pkcs11 {
            module,
            token_label,
            key_label,
            cert_label,
            chain_file,
            sessions,
            ..
        } => {
            let pin = settings
                .pin
                .as_ref()
                .ok_or_else(|| ServeError::Config("signing: no pin".into()))?
                .resolve()
                .map_err(|e| ServeError::Config(e.to_string()))?;
            let mut cfg = Pkcs11Config::new(module, token_label, key_label, &pin);
            cfg.cert_label = cert_label.clone();
            cfg.chain_pem = chain_file.clone();
            cfg.digest = settings.digest;
            cfg.sessions = *sessions;
            let signer = Pkcs11Signer::open(&cfg).map_err(|e| ServeError::Signer(e.to_string()))?;
            Ok(Arc::new(signer))
        }
        SigningConfig::Pem {
            key_file,
            cert_file,
            chain_file,
            ..
        } => {
            let signer =
                PemSigner::from_files(key_file, cert_file, chain_file.as_deref(), settings.digest)
                    .map_err(|e| ServeError::Signer(e.to_string()))?;
            Ok(Arc::new(signer))
        }
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

/// What every role shares and a reload keeps: opened once at start.
#[derive(Clone)]
struct Shared {
    signer: Arc<dyn Signer>,
    store: Arc<dyn LogStore>,
    index: Arc<IndexHandle>,
}

/// The role objects built from one configuration.
struct Roles {
    access: Arc<AccessPoint>,
    after_queue: Arc<AfterQueue>,
    delivery: Arc<DeliveryPoint>,
    timers: Option<(Arc<Timers>, std::time::Duration)>,
    /// Injects the outbox rows left unsent ([`crate::outbox`]).
    outbox: Arc<dyn crate::smtp::Injector>,
}

/// The PEC domains served: `provider.domains` and those added with `pec domain add`.
pub fn served_domains(config: &Config, store: &dyn LogStore) -> Result<Vec<String>, ServeError> {
    let mut domains = config.provider.domains.clone();
    for d in store
        .extra_domains()
        .map_err(|e| ServeError::Store(e.to_string()))?
    {
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    Ok(domains)
}

/// Builds the roles of `config` around `shared` (no listener is bound, nothing is opened
/// but the clamd and Dovecot client settings).
fn build_roles(config: &Config, shared: &Shared) -> Result<Roles, ServeError> {
    let settings = config
        .settings()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let (signer, store, index) = (
        shared.signer.clone(),
        shared.store.clone(),
        shared.index.clone(),
    );
    let clamd_addr = match &settings.clamd {
        Endpoint::Inet { host, port } => format!("tcp:{host}:{port}"),
        Endpoint::Unix(p) => format!("unix:{}", p.display()),
    };
    let antivirus: Arc<dyn Antivirus> = Arc::new(
        Clamd::new(&clamd_addr, settings.antivirus_timeout)
            .map_err(|e| ServeError::Antivirus(e.to_string()))?,
    );

    let domain = config
        .provider
        .service_address
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let ids = Arc::new(IdGenerator::new(domain.clone(), config.provider.node));
    let issuer = Issuer {
        provider_name: config.provider.name.clone(),
        service_address: config.provider.service_address.clone(),
        envelope_sender_header: config.provider.envelope_sender_header,
    };
    let helo = format!("pec.{domain}");
    let access_injector = Arc::new(SmtpInjector::new(
        tcp(&settings.access.reinject, "access.reinject")?,
        helo.clone(),
    ));
    // One pool of reinjection connections per listener, shared by the roles: every kept
    // connection holds one of the listener's smtpd processes (master.cf maxproc), and
    // separate pools could keep them all, leaving a new connection without a greeting.
    let filter_injector = shared_injector(
        &access_injector,
        tcp(&settings.filter.reinject, "filter.reinject")?,
        &helo,
    );
    let ap = Arc::new(AccessPoint {
        policy: Policy {
            limits: Limits {
                max_total_size: settings.access.max_total_size,
                max_recipients: config.access.max_recipients,
                blocked_extensions: config.access.blocked_extensions.clone(),
            },
            hard_size_limit: settings.access.hard_size_limit,
            reject_in_smtp: config.access.reject_in_smtp,
        },
        kit: Issuing {
            store: store.clone(),
            injector: access_injector.clone(),
            issuer: issuer.clone(),
            signer: signer.clone(),
            ids: ids.clone(),
            clock: Arc::new(SystemClock),
        },
        index: index.clone(),
        antivirus: antivirus.clone(),
        log_requests: settings.log_requests.clone(),
    });
    let timers = config.timers.enabled.then(|| {
        (
            Arc::new(Timers::new(
                store.clone(),
                access_injector.clone(),
                issuer.clone(),
                signer.clone(),
                ids.clone(),
                Arc::new(SystemClock),
            )),
            settings.timers_interval,
        )
    });
    let delivery_injector = shared_injector(
        &access_injector,
        tcp(&settings.delivery.reinject, "delivery.reinject")?,
        &helo,
    );
    let dovecot = match &settings.delivery.dovecot {
        Endpoint::Unix(p) => LmtpAddr::Unix(p.clone()),
        inet => LmtpAddr::Tcp(tcp(inet, "delivery.dovecot")?),
    };
    let delivery = Arc::new(
        DeliveryPoint::new(
            store.clone(),
            delivery_injector,
            Arc::new(LmtpClient::new(dovecot, helo)),
            index.clone(),
            issuer.clone(),
            signer.clone(),
            ids.clone(),
        )
        .with_arrival_notices(config.delivery.arrival_notices)
        .with_duplicate_check(
            crate::delivery::dedup::CommandProbe::new(config.delivery.duplicate_check.clone())
                .map(|p| Arc::new(p) as Arc<dyn crate::delivery::dedup::MailboxProbe>),
        ),
    );
    let reception = Reception {
        index: index.clone(),
        antivirus,
        domains: served_domains(config, &*store)?,
        mail_receipt: config.provider.mail_receipt.clone(),
        default_policy: settings.default_policy.clone(),
    };
    let after_queue = Arc::new(
        AfterQueue::new(store, filter_injector, issuer, signer, ids, reception)
            .with_log_requests(settings.log_requests.clone()),
    );
    Ok(Roles {
        access: ap,
        after_queue,
        delivery,
        timers,
        outbox: access_injector,
    })
}

/// The timers task with its own stop switch, so that a reload can restart it.
struct TimersTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_timers(timers: Option<(Arc<Timers>, std::time::Duration)>) -> Option<TimersTask> {
    let (t, interval) = timers?;
    info!(interval = ?interval, "timers running");
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        t.run(interval, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await
    });
    Some(TimersTask { stop, task })
}

async fn stop_timers(task: Option<TimersTask>) {
    if let Some(t) = task {
        let _ = t.stop.send(true);
        let _ = t.task.await;
    }
}

/// [`run`], with configuration reloads.
pub async fn run_with(
    config: Config,
    reloads: Option<Reloads>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let settings = config
        .settings()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let cfg = config.clone();
    let signer = tokio::task::spawn_blocking(move || open_signer(&cfg))
        .await
        .map_err(|e| ServeError::Signer(e.to_string()))??;
    let store_config = config.store.clone();
    let store = tokio::task::spawn_blocking(move || crate::store::open(&store_config))
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?
        .map_err(|e| ServeError::Store(e.to_string()))?;
    let (index, from) = {
        let (store, file) = (store.clone(), config.index.ldif.clone());
        tokio::task::spawn_blocking(move || sync::load_current(&*store, &file))
            .await
            .map_err(|e| ServeError::Index(e.to_string()))?
            .map_err(|e| ServeError::Index(e.to_string()))?
    };
    info!(providers = index.providers().len(), from = %from, "provider index loaded");
    let index = Arc::new(IndexHandle::new(index));
    let shared = Shared {
        signer: signer.clone(),
        store: store.clone(),
        index: index.clone(),
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
                .ok_or_else(|| {
                    ServeError::Config(format!("metrics.listen: cannot resolve \"{addr}\""))
                })?;
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
    let seal_config = config.store.clone();
    let seal_store = tokio::task::spawn_blocking(move || crate::store::open(&seal_config))
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?
        .map_err(|e| ServeError::Store(e.to_string()))?;
    let sealer = tokio::spawn(crate::log::daily_sealer(
        seal_store,
        signer.clone(),
        settings.tsa.clone(),
        Arc::new(SystemClock),
        stop_rx.clone(),
    ));
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
    let on = config
        .serve
        .enabled()
        .map_err(|e| ServeError::Config(e.to_string()))?;
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
    let domain = config
        .provider
        .service_address
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let helo = format!("pec.{domain}");
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
        tokio::spawn(refresh_index(store, index, source, every, force, stop))
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
                    Ok((applied, roles)) => {
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
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let _ = sealer.await;
    let _ = outbox.await;
    Ok(())
}

/// Reads and checks `path`, and builds the roles of what a reload may apply (warning about
/// the keys that need a restart).
async fn reload(
    path: &std::path::Path,
    running: &Config,
    shared: &Shared,
) -> Result<(Config, Roles), String> {
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
    let applied = crate::reload::applicable(running, &new);
    // The mix of new and running values must itself be valid (e.g. a larger
    // access.max_total_size against the running filter.max_size).
    applied.settings().map_err(|e| {
        format!(
            "{}: {e} (with the running values of the keys that need a restart)",
            path.display()
        )
    })?;
    let (cfg, sh) = (applied.clone(), shared.clone());
    let roles = tokio::task::spawn_blocking(move || build_roles(&cfg, &sh))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok((applied, roles))
}

/// Synchronises the index from `source` now and then every `every`, until `shutdown`;
/// a failed or refused sync keeps the current copy.
async fn refresh_index(
    store: Arc<dyn LogStore>,
    index: Arc<IndexHandle>,
    source: sync::Source,
    every: std::time::Duration,
    force: bool,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A copy stored by someone else (`pec index sync`, another `pec serve` on the same
    // store) is picked up within a minute.
    let mut look = tokio::time::interval(std::time::Duration::from_secs(60));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<(i64, String)> = None;
    // Nodes sharing a store take turns through a lease: one of them fetches, the others
    // load the copy it stored (a lone node always holds it).
    let owner = ledger::node_owner();
    let lease = i64::try_from(every.as_secs())
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(3)
        / 2
        + 60;
    tokio::pin!(shutdown);
    loop {
        let sync_now = tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => true,
            _ = look.tick() => false,
        };
        if sync_now {
            let (st, owner) = (store.clone(), owner.clone());
            let leader = tokio::task::spawn_blocking(move || {
                st.try_lease("index-refresh", &owner, SystemClock.now(), lease)
            })
            .await;
            match leader {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => continue,
                Ok(Err(e)) => {
                    warn!("provider index: cannot take the refresh lease: {e}");
                    continue;
                }
                Err(e) => {
                    error!("provider index: {e}");
                    continue;
                }
            }
            match sync::refresh(store.clone(), &index, &source, force, SystemClock.now()).await {
                Ok(stored) => {
                    crate::metrics::index_sync(true);
                    info!(providers = stored.providers, source = %stored.source, "provider index synchronised");
                    seen = Some((stored.fetched_at.unix(), stored.source));
                }
                Err(e) => {
                    crate::metrics::index_sync(false);
                    warn!("provider index: sync failed, keeping the current copy: {e}")
                }
            }
            continue;
        }
        let st = store.clone();
        let stored = match tokio::task::spawn_blocking(move || st.stored_index()).await {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                warn!("provider index: cannot read the stored copy: {e}");
                continue;
            }
            Err(e) => {
                error!("provider index: {e}");
                continue;
            }
        };
        let key = (stored.fetched_at.unix(), stored.source.clone());
        if seen.as_ref() == Some(&key) {
            continue;
        }
        match crate::index::ProviderIndex::parse(&stored.ldif) {
            Ok(i) => {
                if seen.is_some() {
                    info!(providers = stored.providers, source = %stored.source, "provider index: newer stored copy loaded");
                }
                index.replace(i);
                seen = Some(key);
            }
            Err(e) => error!(
                "provider index: the stored copy does not parse, keeping the current one: {e}"
            ),
        }
    }
}

/// `existing` when it reaches `addr` (one connection pool per listener), else a new
/// injector.
fn shared_injector(existing: &Arc<SmtpInjector>, addr: String, helo: &str) -> Arc<SmtpInjector> {
    if existing.addr() == addr {
        existing.clone()
    } else {
        Arc::new(SmtpInjector::new(addr, helo.to_string()))
    }
}

/// The pieces of [`Timers`] from the configuration, for `pec timers run`: opens the signer
/// and the store, injects through `access.reinject`.
pub fn open_timers(config: &Config, clock: Arc<dyn Clock>) -> Result<Timers, ServeError> {
    let settings = config
        .settings()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let signer = open_signer(config)?;
    let store = crate::store::open(&config.store).map_err(|e| ServeError::Store(e.to_string()))?;
    let domain = config
        .provider
        .service_address
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let ids = Arc::new(IdGenerator::new(domain.clone(), config.provider.node));
    let issuer = Issuer {
        provider_name: config.provider.name.clone(),
        service_address: config.provider.service_address.clone(),
        envelope_sender_header: config.provider.envelope_sender_header,
    };
    let injector = Arc::new(SmtpInjector::new(
        tcp(&settings.access.reinject, "access.reinject")?,
        format!("pec.{domain}"),
    ));
    Ok(Timers::new(store, injector, issuer, signer, ids, clock))
}
