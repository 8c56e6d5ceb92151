//! `pec serve`: runs the enabled roles on one tokio runtime — the access-point milter and
//! the after-queue content filter — with the signer, store, provider index, antivirus and
//! Postfix reinjection they share.

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info};

use crate::access::{AccessPoint, Limits, Policy};
use crate::antivirus::Clamd;
use crate::config::{Config, Endpoint, SigningConfig};
use crate::crypto::{PemSigner, Pkcs11Config, Pkcs11Signer, Signer};
use crate::index::ProviderIndex;
use crate::message::build::Issuer;
use crate::message::ids::IdGenerator;
use crate::message::time::SystemClock;
use crate::reception::AfterQueue;
use crate::smtp::client::SmtpInjector;
use crate::smtp::server::{self, ServerOptions};
use crate::store::SqliteStore;

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
    let index = ProviderIndex::load_ldif(&config.index.ldif)
        .map_err(|e| ServeError::Index(e.to_string()))?;
    info!(providers = index.providers().len(), file = %config.index.ldif.display(), "provider index loaded");
    let clamd_addr = match &settings.clamd {
        Endpoint::Inet { host, port } => format!("tcp:{host}:{port}"),
        Endpoint::Unix(p) => format!("unix:{}", p.display()),
    };
    let antivirus = Clamd::new(&clamd_addr, settings.antivirus_timeout)
        .map_err(|e| ServeError::Antivirus(e.to_string()))?;

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
    let filter_injector = Arc::new(SmtpInjector::new(
        tcp(&settings.filter.reinject, "filter.reinject")?,
        helo.clone(),
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
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
        index: Arc::new(index),
        store: store.clone(),
        antivirus: Arc::new(antivirus),
        injector: access_injector,
        clock: Arc::new(SystemClock),
    });
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
    let after_queue = Arc::new(AfterQueue::new(store, filter_injector, issuer, signer, ids));

    let milter_addr = tcp(&settings.access.listen, "access.listen")?;
    let milter_listener =
        TcpListener::bind(&milter_addr)
            .await
            .map_err(|source| ServeError::Listen {
                addr: milter_addr.clone(),
                source,
            })?;
    let filter_addr = tcp(&settings.filter.listen, "filter.listen")?;
    let filter_listener =
        TcpListener::bind(&filter_addr)
            .await
            .map_err(|source| ServeError::Listen {
                addr: filter_addr.clone(),
                source,
            })?;
    info!(milter = %milter_addr, filter = %filter_addr, "pec serving");

    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let milter = tokio::spawn(crate::access::milter::run(
        milter_listener,
        ap,
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
        stopped(stop_rx),
    ));

    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = milter.await {
        error!(error = %e, "milter stopped with an error");
    }
    let _ = filter.await;
    let _ = sealer.await;
    Ok(())
}
