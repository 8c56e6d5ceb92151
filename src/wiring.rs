// SPDX-License-Identifier: GPL-3.0-or-later
//! Wiring: builds the provider's parts from a checked configuration — its identity, the
//! signer, the store, the provider index and the role objects — for `pec serve`, the
//! timers command and the operator commands alike.

use std::sync::Arc;

use thiserror::Error;

use crate::access::{AccessPoint, AttachmentPolicy, Bounds, Limits, Policy};
use crate::antivirus::{Antivirus, AvError, Clamd};
use crate::config::{Config, Endpoint, InvalidValue, Settings, SigningConfig};
use crate::crypto::{PemSigner, Pkcs11Config, Pkcs11Signer, SignError, Signer};
use crate::delivery::DeliveryPoint;
use crate::index::sync::SyncError;
use crate::index::IndexHandle;
use crate::issuing::Issuing;
use crate::message::build::Issuer;
use crate::message::ids::IdGenerator;
use crate::message::time::{Clock, SystemClock};
use crate::reception::{AfterQueue, Reception};
use crate::smtp::client::SmtpInjector;
use crate::smtp::lmtp::{LmtpAddr, LmtpClient};
use crate::store::{LogStore, StoreError};
use crate::timers::Timers;

/// What cannot be built; the message names the part.
#[derive(Debug, Error)]
pub enum WiringError {
    #[error("configuration: {0}")]
    Config(#[from] InvalidValue),
    /// A setting that is valid in the file but not where it is used.
    #[error("configuration: {0}")]
    Setting(String),
    #[error("signing key: {0}")]
    Signer(#[from] SignError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("provider index: {0}")]
    Index(#[from] SyncError),
    #[error("antivirus: {0}")]
    Antivirus(#[from] AvError),
}

/// Who we are on the wire (`[provider]`): the issuer of every generated message, the
/// message identifiers and the name we greet with.
#[derive(Clone)]
pub struct Identity {
    /// The domain of `provider.service_address`.
    pub domain: String,
    pub issuer: Issuer,
    pub ids: Arc<IdGenerator>,
    /// `pec.<domain>`: our EHLO/LHLO name and the name our listeners greet with.
    pub helo: String,
}

impl Identity {
    pub fn of(config: &Config) -> Self {
        let p = &config.provider;
        let domain = p
            .service_address
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        Identity {
            ids: Arc::new(IdGenerator::new(domain.clone(), p.node)),
            issuer: Issuer {
                provider_name: p.name.clone(),
                service_address: p.service_address.clone(),
                envelope_sender_header: p.envelope_sender_header,
            },
            helo: format!("pec.{domain}"),
            domain,
        }
    }
}

/// The certificate validation of `[verify]`: `None` when no anchor is configured (the
/// provider index alone decides, as before issue 19); otherwise the chain to the anchors
/// is enforced and revocation is checked as `verify.revocation` says.
pub fn chain_policy(
    config: &Config,
) -> Result<Option<Arc<crate::crypto::ChainPolicy>>, WiringError> {
    use crate::crypto::revocation::RevocationChecker;
    use crate::crypto::ChainPolicy;
    let v = &config.verify;
    if v.anchors.is_empty() && v.archive_anchors.is_empty() {
        return Ok(None);
    }
    let settings = config.settings()?;
    let read = |key: &str, path: &std::path::Path| -> Result<Vec<u8>, WiringError> {
        std::fs::read(path).map_err(|e| {
            WiringError::Setting(format!("{key}: cannot read \"{}\": {e}", path.display()))
        })
    };
    let mut policy = ChainPolicy {
        enforce: true,
        ..ChainPolicy::default()
    };
    for path in &v.anchors {
        let pem = read("verify.anchors", path)?;
        let more = ChainPolicy::from_pem(&pem, true).map_err(|e| {
            WiringError::Setting(format!("verify.anchors: \"{}\": {e}", path.display()))
        })?;
        if more.anchors.is_empty() {
            return Err(WiringError::Setting(format!(
                "verify.anchors: no certificate in \"{}\"",
                path.display()
            )));
        }
        policy.anchors.extend(more.anchors);
    }
    for path in &v.archive_anchors {
        let pem = read("verify.archive_anchors", path)?;
        policy = policy.with_archive_pem(&pem).map_err(|e| {
            WiringError::Setting(format!(
                "verify.archive_anchors: \"{}\": {e}",
                path.display()
            ))
        })?;
    }
    Ok(Some(Arc::new(policy.with_revocation(Arc::new(
        RevocationChecker::new(settings.revocation),
    )))))
}

/// `host:port` of a TCP endpoint, or an error naming the setting.
pub fn tcp(endpoint: &Endpoint, what: &str) -> Result<String, WiringError> {
    match endpoint {
        Endpoint::Inet { host, port } if host.contains(':') => Ok(format!("[{host}]:{port}")),
        Endpoint::Inet { host, port } => Ok(format!("{host}:{port}")),
        Endpoint::Unix(p) => Err(WiringError::Setting(format!(
            "{what}: unix socket \"{}\" not supported here, use HOST:PORT",
            p.display()
        ))),
    }
}

/// The LMTP client's address of an endpoint (TCP or Unix socket).
pub fn lmtp_addr(endpoint: &Endpoint, what: &str) -> Result<LmtpAddr, WiringError> {
    Ok(match endpoint {
        Endpoint::Unix(p) => LmtpAddr::Unix(p.clone()),
        inet => LmtpAddr::Tcp(tcp(inet, what)?),
    })
}

/// Where one key of `[signing]` is: the PEC message key or the seal key of the legal log.
enum KeyPlace<'a> {
    Token {
        module: &'a std::path::Path,
        token_label: &'a str,
        key_label: &'a str,
        /// The certificate object's label (default: `key_label`).
        cert_label: Option<&'a str>,
        chain_file: Option<&'a std::path::Path>,
        sessions: usize,
    },
    Files {
        key_file: &'a std::path::Path,
        cert_file: &'a std::path::Path,
        chain_file: Option<&'a std::path::Path>,
    },
}

impl<'a> KeyPlace<'a> {
    /// The PEC message key.
    fn pec(config: &'a Config) -> Self {
        match &config.signing {
            SigningConfig::Pkcs11 {
                module,
                token_label,
                key_label,
                cert_label,
                chain_file,
                sessions,
                ..
            } => KeyPlace::Token {
                module,
                token_label,
                key_label,
                cert_label: cert_label.as_deref(),
                chain_file: chain_file.as_deref(),
                sessions: *sessions,
            },
            SigningConfig::Pem {
                key_file,
                cert_file,
                chain_file,
                ..
            } => KeyPlace::Files {
                key_file,
                cert_file,
                chain_file: chain_file.as_deref(),
            },
        }
    }

    /// The seal key (`signing.seal_*`), when one is configured. One session: one seal a day.
    fn seal(config: &'a Config) -> Option<Self> {
        match &config.signing {
            SigningConfig::Pkcs11 {
                module,
                token_label,
                seal_key_label: Some(key_label),
                seal_cert_label,
                chain_file,
                ..
            } => Some(KeyPlace::Token {
                module,
                token_label,
                key_label,
                cert_label: seal_cert_label.as_deref(),
                chain_file: chain_file.as_deref(),
                sessions: 1,
            }),
            SigningConfig::Pem {
                seal_key_file: Some(key_file),
                seal_cert_file: Some(cert_file),
                chain_file,
                ..
            } => Some(KeyPlace::Files {
                key_file,
                cert_file,
                chain_file: chain_file.as_deref(),
            }),
            _ => None,
        }
    }

    /// The key's certificate (DER), read without the PIN: from the token without logging
    /// in (a certificate is a public object), or from its PEM file.
    fn certificate(&self) -> Result<Vec<u8>, WiringError> {
        match self {
            KeyPlace::Token {
                module,
                token_label,
                key_label,
                cert_label,
                ..
            } => Ok(crate::crypto::pkcs11::read_certificate(
                module,
                token_label,
                cert_label.unwrap_or(key_label),
            )?),
            KeyPlace::Files { cert_file, .. } => {
                let certs = crate::crypto::file_key::read_pem_certificates(cert_file)?;
                certs.into_iter().next().ok_or_else(|| {
                    WiringError::Setting(format!("{}: no certificate", cert_file.display()))
                })
            }
        }
    }

    /// Opens the key (a PKCS#11 login with the configured PIN, or the PEM files): opening
    /// checks that key and certificate belong together.
    fn open(&self, settings: &Settings) -> Result<Arc<dyn Signer>, WiringError> {
        match self {
            KeyPlace::Token {
                module,
                token_label,
                key_label,
                cert_label,
                chain_file,
                sessions,
            } => {
                let pin = settings
                    .pin
                    .as_ref()
                    .ok_or_else(|| WiringError::Setting("signing: no pin".into()))?
                    .resolve()?;
                let mut cfg = Pkcs11Config::new(*module, *token_label, *key_label, &pin);
                cfg.cert_label = cert_label.map(str::to_string);
                cfg.chain_pem = chain_file.map(std::path::Path::to_path_buf);
                cfg.digest = settings.digest;
                cfg.sessions = *sessions;
                Ok(Arc::new(Pkcs11Signer::open(&cfg)?))
            }
            KeyPlace::Files {
                key_file,
                cert_file,
                chain_file,
            } => Ok(Arc::new(PemSigner::from_files(
                key_file,
                cert_file,
                *chain_file,
                settings.digest,
            )?)),
        }
    }
}

/// The signing certificate (DER), read without the PIN. `pec status` shows its expiry this
/// way, so that monitoring need not hold the PIN.
pub fn signing_certificate(config: &Config) -> Result<Vec<u8>, WiringError> {
    KeyPlace::pec(config).certificate()
}

/// Opens the signing key the configuration names.
pub fn open_signer(config: &Config) -> Result<Arc<dyn Signer>, WiringError> {
    KeyPlace::pec(config).open(&config.settings()?)
}

/// The seal key's certificate (DER), read without the PIN like [`signing_certificate`];
/// `None` when no seal key is configured.
pub fn seal_certificate(config: &Config) -> Result<Option<Vec<u8>>, WiringError> {
    KeyPlace::seal(config).map(|k| k.certificate()).transpose()
}

/// Opens the key that signs the daily seals of the legal log (`signing.seal_*`), found
/// and paired with its certificate like the PEC key; never the PEC key itself.
pub fn open_seal_signer(config: &Config) -> Result<Arc<dyn Signer>, WiringError> {
    config.check_seal_key()?;
    let settings = config.settings()?;
    KeyPlace::seal(config)
        .ok_or_else(|| WiringError::Setting("signing: no seal key".into()))?
        .open(&settings)
}

/// What a reload does with the signing key ([`reopen_signer`]).
pub enum Reopened {
    /// The configuration names the same key and certificate: the running signer stays.
    Same,
    /// A new key and certificate, checked: they belong together and the certificate is
    /// valid now.
    New(Arc<dyn Signer>),
}

/// Key rollover without a restart: opens the key `config` names (a PKCS#11 login, or the
/// PEM files read again; opening checks that key and certificate belong together) and
/// checks that its certificate is valid at `now`. The same certificate as `running` (and
/// the same `[signing]` settings) keeps the running signer. Any failure leaves the running
/// signer in place: the caller keeps it and logs the error.
pub fn reopen_signer(
    config: &Config,
    running_config: &Config,
    running: &Arc<dyn Signer>,
    now: crate::message::time::Instant,
) -> Result<Reopened, WiringError> {
    let new = open_signer(config)?;
    if new.certificate_der() == running.certificate_der()
        && config.signing == running_config.signing
    {
        return Ok(Reopened::Same);
    }
    certificate_valid_at(new.certificate_der(), now)?;
    Ok(Reopened::New(new))
}

/// Fails unless the DER certificate is valid at `now`.
pub fn certificate_valid_at(
    der: &[u8],
    now: crate::message::time::Instant,
) -> Result<(), WiringError> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| {
        WiringError::Signer(SignError::Certificate(format!(
            "cannot parse the signing certificate: {e}"
        )))
    })?;
    let validity = &cert.tbs_certificate.validity;
    let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    let (from, until) = (secs(&validity.not_before), secs(&validity.not_after));
    let show = |t: i64| crate::message::time::Instant::from_unix(t).rfc3339();
    if now.unix() < from {
        return Err(WiringError::Signer(SignError::Certificate(format!(
            "the signing certificate is not valid yet (from \"{}\", now \"{}\")",
            show(from),
            now.rfc3339()
        ))));
    }
    if now.unix() > until {
        return Err(WiringError::Signer(SignError::Certificate(format!(
            "the signing certificate expired on \"{}\" (now \"{}\")",
            show(until),
            now.rfc3339()
        ))));
    }
    Ok(())
}

/// Opens (and migrates) the configured store.
pub fn open_store(config: &Config) -> Result<Arc<dyn LogStore>, StoreError> {
    crate::store::open(&config.store)
}

/// The PEC domains served: `provider.domains` and those added with `pec domain add`.
pub fn served_domains(config: &Config, store: &dyn LogStore) -> Result<Vec<String>, WiringError> {
    let mut domains = config.provider.domains.clone();
    for d in store.extra_domains()? {
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    Ok(domains)
}

/// What every role shares: opened at start; a reload keeps the store and the index, and
/// replaces the signer when the configuration names a new key ([`reopen_signer`]).
#[derive(Clone)]
pub struct Shared {
    pub signer: Arc<dyn Signer>,
    pub store: Arc<dyn LogStore>,
    pub index: Arc<IndexHandle>,
    /// The REM peers view the Trusted List refresh keeps (`[rem.trust]`); `None`: no
    /// peer is known to speak REM.
    pub rem_peers: Option<Arc<crate::rem::trust::PeersHandle>>,
}

/// The access point's REM part when `[rem] enabled`: the settings, our domains, the peers
/// view and the system resolver for the MX check (a resolver that cannot be set up is
/// said, and no peer domain is taken to speak REM).
fn rem_access(
    config: &Config,
    settings: &crate::config::RemSettings,
    shared: &Shared,
) -> Option<Arc<crate::access::rem::RemAccess>> {
    if !settings.enabled {
        return None;
    }
    Some(Arc::new(crate::access::rem::RemAccess {
        settings: settings.clone(),
        domains: config.provider.domains.clone(),
        peers: shared.rem_peers.clone(),
        mx: rem_mx("peer domains are sent as pec"),
    }))
}

/// The system resolver for the REM MX check; `None` (said, with `without`: what follows)
/// when it cannot be set up.
fn rem_mx(without: &str) -> Option<Arc<dyn crate::rem::dns::MxLookup>> {
    match crate::dns::DnsResolver::system() {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!(error = %e, "rem: no dns resolver: {without}");
            None
        }
    }
}

/// The chain policy of peers' REM signatures: the certificates of every `[rem] anchors`
/// file, enforced (the reception point's judgement, and `pec capacity`'s timing of it).
pub fn rem_chain(config: &Config) -> Result<crate::crypto::ChainPolicy, WiringError> {
    use crate::crypto::ChainPolicy;
    let mut chain = ChainPolicy {
        enforce: true,
        ..ChainPolicy::default()
    };
    for path in &config.rem.anchors {
        let pem = std::fs::read(path).map_err(|e| {
            WiringError::Setting(format!(
                "rem.anchors: cannot read \"{}\": {e}",
                path.display()
            ))
        })?;
        let more = ChainPolicy::from_pem(&pem, true).map_err(|e| {
            WiringError::Setting(format!("rem.anchors: \"{}\": {e}", path.display()))
        })?;
        chain.anchors.extend(more.anchors);
    }
    Ok(chain)
}

/// The reception point's REM part when `[rem] enabled`: the settings, the REM PKI anchors
/// (`[rem] anchors`), the time-stamp anchors (`[rem] tsa_anchors`) and the peers view.
fn rem_reception(
    config: &Config,
    settings: &crate::config::RemSettings,
    shared: &Shared,
) -> Result<Option<Arc<crate::reception::rem::RemReception>>, WiringError> {
    if !settings.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(crate::reception::rem::RemReception {
        settings: settings.clone(),
        chain: rem_chain(config)?,
        tsa_anchors: config.rem.tsa_anchors.clone(),
        peers: shared.rem_peers.clone(),
        mx: rem_mx("no peer's receipt is correlated"),
    })))
}

/// The role objects built from one configuration.
pub struct Roles {
    pub access: Arc<AccessPoint>,
    pub after_queue: Arc<AfterQueue>,
    pub delivery: Arc<DeliveryPoint>,
    pub timers: Option<(Arc<Timers>, std::time::Duration)>,
    /// Injects the outbox rows left unsent ([`crate::outbox`]).
    pub outbox: Arc<dyn crate::smtp::Injector>,
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

/// The antivirus client of `antivirus.clamd`.
pub fn clamd(settings: &Settings, timeout: std::time::Duration) -> Result<Clamd, WiringError> {
    let addr = clamd_addr(settings);
    Ok(Clamd::new(&addr, timeout)?)
}

/// `antivirus.clamd` as the antivirus client names it (`tcp:HOST:PORT`, `unix:PATH`).
pub fn clamd_addr(settings: &Settings) -> String {
    match &settings.clamd {
        Endpoint::Inet { host, port } => format!("tcp:{host}:{port}"),
        Endpoint::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// Builds the roles of `config` around `shared` (no listener is bound, nothing is opened
/// but the clamd and Dovecot client settings).
pub fn build_roles(config: &Config, shared: &Shared) -> Result<Roles, WiringError> {
    let settings = config.settings()?;
    let (signer, store, index) = (
        shared.signer.clone(),
        shared.store.clone(),
        shared.index.clone(),
    );
    let antivirus: Arc<dyn Antivirus> = Arc::new(clamd(&settings, settings.antivirus_timeout)?);
    let Identity {
        issuer, ids, helo, ..
    } = Identity::of(config);
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
            },
            hard_size_limit: settings.access.hard_size_limit,
            reject_in_smtp: config.access.reject_in_smtp,
            attachments: AttachmentPolicy {
                blocked_extensions: config.access.blocked_extensions.clone(),
                bounds: Bounds {
                    max_depth: config.access.attachment_max_depth,
                    max_entries: config.access.attachment_max_entries,
                    max_bytes: settings.access.attachment_max_bytes,
                    max_time: settings.access.attachment_max_time,
                },
            },
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
        rem: rem_access(config, &settings.rem, shared),
    });
    let timers = config.timers.enabled.then(|| {
        (
            Arc::new(
                Timers::new(
                    store.clone(),
                    access_injector.clone(),
                    issuer.clone(),
                    signer.clone(),
                    ids.clone(),
                    Arc::new(SystemClock),
                )
                .with_rem(settings.rem.enabled.then(|| settings.rem.clone())),
            ),
            settings.timers_interval,
        )
    });
    let delivery_injector = shared_injector(
        &access_injector,
        tcp(&settings.delivery.reinject, "delivery.reinject")?,
        &helo,
    );
    let dovecot = lmtp_addr(&settings.delivery.dovecot, "delivery.dovecot")?;
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
        .with_rem(
            settings
                .rem
                .enabled
                .then(|| crate::delivery::rem::RemDelivery {
                    settings: settings.rem.clone(),
                    domains: config.provider.domains.clone(),
                }),
        )
        .with_rem_settings(Some(Arc::new(settings.rem.clone())))
        .with_duplicate_check(
            crate::delivery::dedup::CommandProbe::new(config.delivery.duplicate_check.clone())
                .map(|p| Arc::new(p) as Arc<dyn crate::delivery::dedup::MailboxProbe>),
        ),
    );
    let reception = Reception {
        index: index.clone(),
        chain: chain_policy(config)?,
        antivirus,
        domains: served_domains(config, &*store)?,
        mail_receipt: config.provider.mail_receipt.clone(),
        default_policy: settings.default_policy.clone(),
    };
    let after_queue = Arc::new(
        AfterQueue::new(store, filter_injector, issuer, signer, ids, reception)
            .with_log_requests(settings.log_requests.clone())
            .with_rem(rem_reception(config, &settings.rem, shared)?)
            .with_kept_receipt_max(
                usize::try_from(settings.kept_receipt_max).unwrap_or(usize::MAX),
            ),
    );
    Ok(Roles {
        access: ap,
        after_queue,
        delivery,
        timers,
        outbox: access_injector,
    })
}

/// The pieces of [`Timers`] from the configuration, for `pec timers run`: opens the signer
/// and the store, injects through `access.reinject`.
pub fn open_timers(config: &Config, clock: Arc<dyn Clock>) -> Result<Timers, WiringError> {
    let settings = config.settings()?;
    let signer = open_signer(config)?;
    let store = open_store(config)?;
    let Identity {
        issuer, ids, helo, ..
    } = Identity::of(config);
    let injector = Arc::new(SmtpInjector::new(
        tcp(&settings.access.reinject, "access.reinject")?,
        helo,
    ));
    Ok(Timers::new(store, injector, issuer, signer, ids, clock)
        .with_rem(settings.rem.enabled.then(|| settings.rem.clone())))
}
