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
use crate::message::build::Issuer;
use crate::message::ids::IdGenerator;
use crate::message::time::{Clock, SystemClock};
use crate::reception::{AfterQueue, Reception};
use crate::smtp::client::SmtpInjector;
use crate::smtp::server::{self, ServerOptions};
use crate::store::{SqliteStore, Store};
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
    let settings = config
        .settings()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let cfg = config.clone();
    let signer = tokio::task::spawn_blocking(move || open_signer(&cfg))
        .await
        .map_err(|e| ServeError::Signer(e.to_string()))??;
    let store_path = config.store.path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&store_path))
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?
        .map_err(|e| ServeError::Store(e.to_string()))?;
    let store = Arc::new(store);
    let (index, from) = {
        let (store, file) = (store.clone(), config.index.ldif.clone());
        tokio::task::spawn_blocking(move || sync::load_current(&*store, &file))
            .await
            .map_err(|e| ServeError::Index(e.to_string()))?
            .map_err(|e| ServeError::Index(e.to_string()))?
    };
    info!(providers = index.providers().len(), from = %from, "provider index loaded");
    let index = Arc::new(IndexHandle::new(index));
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

    let (stop_tx, stop_rx) = watch::channel(false);
    // The sealer reads a whole day (up to millions of records): its own connection, so
    // that the mail path's connection is never held for the export (WAL readers do not
    // block the writer).
    let seal_path = config.store.path.clone();
    let seal_store = tokio::task::spawn_blocking(move || SqliteStore::open(&seal_path))
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?
        .map_err(|e| ServeError::Store(e.to_string()))?;
    let sealer = tokio::spawn(crate::log::daily_sealer(
        Arc::new(seal_store),
        signer.clone(),
        settings.tsa.clone(),
        Arc::new(SystemClock),
        stop_rx.clone(),
    ));
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
        issuer: issuer.clone(),
        signer: signer.clone(),
        ids: ids.clone(),
        index: index.clone(),
        store: store.clone(),
        antivirus: antivirus.clone(),
        injector: access_injector.clone(),
        clock: Arc::new(SystemClock),
    });
    let timers = config.timers.enabled.then(|| {
        Arc::new(Timers::new(
            store.clone(),
            access_injector.clone(),
            issuer.clone(),
            signer.clone(),
            ids.clone(),
            Arc::new(SystemClock),
        ))
    });
    // The reception and delivery points use the index as loaded at start; the access point
    // follows refreshes through the handle.
    let snapshot = index.current();
    let delivery_injector = shared_injector(
        &access_injector,
        tcp(&settings.delivery.reinject, "delivery.reinject")?,
        &helo,
    );
    let dovecot = match &settings.delivery.dovecot {
        Endpoint::Unix(p) => LmtpAddr::Unix(p.clone()),
        inet => LmtpAddr::Tcp(tcp(inet, "delivery.dovecot")?),
    };
    let delivery_point = Arc::new(
        DeliveryPoint::new(
            store.clone(),
            delivery_injector,
            Arc::new(LmtpClient::new(dovecot, helo.clone())),
            Arc::new(snapshot.trust().clone()),
            issuer.clone(),
            signer.clone(),
            ids.clone(),
        )
        .with_arrival_notices(config.delivery.arrival_notices),
    );
    let store_for_index = store.clone();
    let reception = Reception {
        index: snapshot.clone(),
        antivirus,
        domains: config.provider.domains.clone(),
        mail_receipt: config.provider.mail_receipt.clone(),
        default_policy: settings.default_policy.clone(),
    };
    let after_queue = Arc::new(AfterQueue::new(
        store,
        filter_injector,
        issuer,
        signer,
        ids,
        reception,
    ));

    let (milter_addr, milter_listener) = listen(&settings.access.listen, "access.listen").await?;
    let (filter_addr, filter_listener) = listen(&settings.filter.listen, "filter.listen").await?;
    let (lmtp_addr, lmtp_listener) = listen(&settings.delivery.listen, "delivery.listen").await?;
    info!(milter = %milter_addr, filter = %filter_addr, lmtp = %lmtp_addr, "pec serving");

    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let milter = tokio::spawn(crate::access::milter::run(
        milter_listener,
        ap,
        stopped(stop_rx.clone()),
    ));
    // Whatever passed the content filter may be delivered: same size limit.
    let lmtp_options = LmtpServerOptions {
        hostname: helo.clone(),
        max_message_size: usize::try_from(settings.filter.max_size).unwrap_or(usize::MAX),
        ..LmtpServerOptions::default()
    };
    let delivery = tokio::spawn(lmtp::serve(
        lmtp_listener,
        delivery_point,
        lmtp_options,
        stopped(stop_rx.clone()),
    ));
    let options = ServerOptions {
        hostname: helo,
        max_message_size: usize::try_from(settings.filter.max_size).unwrap_or(usize::MAX),
        ..ServerOptions::default()
    };
    let filter = tokio::spawn(server::serve(
        filter_listener,
        after_queue,
        options,
        stopped(stop_rx.clone()),
    ));
    let refresh = settings.index_source.clone().map(|source| {
        let (store, index, every, force) = (
            store_for_index.clone(),
            index.clone(),
            settings.index_refresh,
            config.index.force,
        );
        let stop = stopped(stop_rx.clone());
        info!(source = %source.name(), every = ?every, "provider index refresh running");
        tokio::spawn(refresh_index(store, index, source, every, force, stop))
    });
    let timers = timers.map(|t| {
        let interval = settings.timers_interval;
        info!(interval = ?interval, "timers running");
        let stop = stopped(stop_rx);
        tokio::spawn(async move { t.run(interval, stop).await })
    });

    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = milter.await {
        error!(error = %e, "milter stopped with an error");
    }
    let _ = filter.await;
    let _ = delivery.await;
    if let Some(t) = timers {
        let _ = t.await;
    }
    if let Some(r) = refresh {
        let _ = r.await;
    }
    let _ = sealer.await;
    Ok(())
}

/// Synchronises the index from `source` now and then every `every`, until `shutdown`;
/// a failed or refused sync keeps the current copy.
async fn refresh_index(
    store: Arc<SqliteStore>,
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
    tokio::pin!(shutdown);
    loop {
        let sync_now = tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => true,
            _ = look.tick() => false,
        };
        if sync_now {
            match sync::refresh(store.clone(), &index, &source, force, SystemClock.now()).await {
                Ok(stored) => {
                    info!(providers = stored.providers, source = %stored.source, "provider index synchronised");
                    seen = Some((stored.fetched_at.unix(), stored.source));
                }
                Err(e) => warn!("provider index: sync failed, keeping the current copy: {e}"),
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
    let store =
        SqliteStore::open(&config.store.path).map_err(|e| ServeError::Store(e.to_string()))?;
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
    Ok(Timers::new(
        Arc::new(store),
        injector,
        issuer,
        signer,
        ids,
        clock,
    ))
}
