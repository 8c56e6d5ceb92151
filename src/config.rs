// SPDX-License-Identifier: GPL-3.0-or-later
//! Configuration: one TOML file (`/etc/pec/pec.toml`), checked at start. Unknown keys are
//! errors; every error names the file, the line and the key (style rule 4):
//!
//! ```text
//! /etc/pec/pec.toml: line 12: key "access.max_total_size": invalid size "5x"
//! ```
//!
//! [`load`] / [`parse`] read the file into [`Config`] (the values as written, with the PEC
//! domains and blocked extensions lower-cased) and check every value; [`Config::settings`]
//! gives the checked values in typed form ([`Settings`]: byte counts, durations, socket
//! addresses, the digest, the PIN source).
//!
//! Value syntax:
//! * sizes: a whole number and a unit, `B`, `KB` = 1 000, `MB` = 1 000 000, `GB` =
//!   10⁹, or `KiB` = 1 024, `MiB` = 1 048 576, `GiB` = 2³⁰ (units case-insensitive);
//!   decimal units because the regulatory limits are written that way (spec §5.1);
//! * durations: a whole number and `s`, `m`, `h` or `d` (`30s`, `5m`, `2h`, `1d`);
//! * socket addresses: `HOST:PORT`, `inet:HOST:PORT`, `tcp:HOST:PORT` (IPv6 as `[::1]:PORT`),
//!   or `unix:/PATH` where a Unix socket makes sense.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::access::attachments::DEFAULT_BLOCKED_EXTENSIONS;
use crate::crypto::DigestAlg;
use crate::store::MailboxPolicy;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub provider: ProviderConfig,
    pub signing: SigningConfig,
    pub store: StoreConfig,
    pub index: IndexConfig,
    pub antivirus: AntivirusConfig,
    #[serde(default)]
    pub access: AccessConfig,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub reception: ReceptionConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub timers: TimersConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub clock: ClockConfig,
    #[serde(default)]
    pub rem: RemConfig,
    /// The typed values, checked once by [`parse`]; see [`Config::settings`].
    #[serde(skip)]
    checked: Option<Box<Settings>>,
}

/// Who we are (spec §1, §7).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `providerName` as in the index and the certificate (`gestore-emittente`).
    pub name: String,
    /// Service address, sender of envelopes and receipts (`posta-certificata@<domain>`).
    pub service_address: String,
    /// Service mailbox for presa in carico and rilevazione virus (`mailReceipt`).
    pub mail_receipt: String,
    /// The PEC domains whose mailboxes live here.
    pub domains: Vec<String>,
    /// Node number, distinguishes hosts that share a domain in message identifiers.
    #[serde(default = "default_node")]
    pub node: u32,
    /// Add `Sender:` to transport envelopes (technical rules); default true.
    #[serde(default = "yes")]
    pub envelope_sender_header: bool,
}

/// The signing key (spec §2.1). In the file, `backend = "pkcs11"` or `backend = "pem"`
/// selects the variant. Read through [`RawSigning`] rather than serde's internally tagged
/// enums, which buffer the table and lose the position of a wrongly typed value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawSigning")]
pub enum SigningConfig {
    /// Key on a PKCS#11 token (production: an HSM; tests: SoftHSM2).
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        key_label: String,
        /// Certificate object label on the token (default: `key_label`).
        #[serde(default)]
        cert_label: Option<String>,
        /// The user PIN, or…
        #[serde(default)]
        pin: Option<String>,
        /// …the name of the environment variable that holds it.
        #[serde(default)]
        pin_env: Option<String>,
        /// PEM file with further certificates for the CMS (the issuing CA).
        #[serde(default)]
        chain_file: Option<PathBuf>,
        /// `sha256` (default), `sha384` or `sha1` (RSA only).
        #[serde(default = "default_digest")]
        digest: String,
        /// Concurrent PKCS#11 sessions.
        #[serde(default = "default_sessions")]
        sessions: usize,
        /// Label of the key (on the same token) that signs the daily seals of the legal
        /// log: a key of its own, never the PEC message key. Required by `pec serve`.
        #[serde(default)]
        seal_key_label: Option<String>,
        /// Label of its certificate (default: `seal_key_label`).
        #[serde(default)]
        seal_cert_label: Option<String>,
    },
    /// Key in a PEM file: development only.
    Pem {
        key_file: PathBuf,
        cert_file: PathBuf,
        #[serde(default)]
        chain_file: Option<PathBuf>,
        #[serde(default = "default_digest")]
        digest: String,
        /// Key and certificate (PEM) that sign the daily seals: not the PEC message key.
        /// Required by `pec serve`.
        #[serde(default)]
        seal_key_file: Option<PathBuf>,
        #[serde(default)]
        seal_cert_file: Option<PathBuf>,
    },
}

// `[store]`: its types live with the store (store::settings), which reads nothing of
// the configuration module.
pub use crate::store::settings::{StoreBackend, StoreConfig, StoreTls};

/// The provider index (spec §7): a local LDIF file in the shape of the national index,
/// used until a copy synchronised from `ldap_url` or `signed_ldif` is in the store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    pub ldif: PathBuf,
    /// LDAP server of the index, `ldap://HOST:PORT` or `ldaps://…` (base `o=postacert`).
    #[serde(default)]
    pub ldap_url: Option<String>,
    /// Bind DN; anonymous when absent.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// Bind password (with `bind_dn`).
    #[serde(default)]
    pub bind_password: Option<String>,
    /// Signed LDIF file (`.p7m`, CMS SignedData DER) instead of LDAP.
    #[serde(default)]
    pub signed_ldif: Option<PathBuf>,
    /// PEM certificate(s) allowed to sign `signed_ldif`.
    #[serde(default)]
    pub signer_cert: Option<PathBuf>,
    /// Refresh period inside `pec serve` (default `1d`).
    #[serde(default = "default_index_refresh")]
    pub refresh: String,
    /// LDAP connection and search timeout (default `30s`).
    #[serde(default = "default_av_timeout")]
    pub timeout: String,
    /// Accept an empty or shrunken index (normally refused).
    #[serde(default)]
    pub force: bool,
    /// Postfix TLS policy map (`texthash:` format) that `pec index sync`, `pec index
    /// tls-policy` and `pec serve` write from the index: every other provider's certified
    /// domain with `verify` (see [`crate::index::tls_policy`]). Not written when absent.
    #[serde(default)]
    pub tls_policy_map: Option<PathBuf>,
}

fn default_index_refresh() -> String {
    "1d".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AntivirusConfig {
    /// `tcp:HOST:PORT` or `unix:/path/to/clamd.sock`.
    pub clamd: String,
    /// Per-scan timeout, e.g. `30s`.
    #[serde(default = "default_av_timeout")]
    pub timeout: String,
}

/// Access point (milter on the submission service, spec §5.1).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Milter listener: `inet:HOST:PORT` or `unix:/path`.
    pub listen: String,
    /// Limit on size × number of recipients, e.g. `100MB` (the seed providers' value).
    pub max_total_size: String,
    /// Above this size the message is rejected in SMTP without a notice (spec §3.3).
    pub hard_size_limit: String,
    pub max_recipients: usize,
    /// Attachment extensions refused (lower case, without the dot); the default is
    /// [`DEFAULT_BLOCKED_EXTENSIONS`], `[]` blocks none.
    pub blocked_extensions: Vec<String>,
    /// Attachment checks: containers within containers looked into (messages, archives).
    pub attachment_max_depth: usize,
    /// Attachment checks: archive entries looked at per submission.
    pub attachment_max_entries: usize,
    /// Attachment checks: bytes decompressed from archives per submission, e.g. `200MB`.
    pub attachment_max_bytes: String,
    /// Attachment checks: time per submission, e.g. `10s`.
    pub attachment_max_time: String,
    /// Also reject a refused submission in SMTP (5.7.x) instead of discarding it after the
    /// non-acceptance notice is queued.
    pub reject_in_smtp: bool,
    /// Postfix's reinjection listener for generated messages (no filter, no milter).
    pub reinject: String,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            listen: "inet:127.0.0.1:10030".into(),
            max_total_size: "100MB".into(),
            hard_size_limit: "150MB".into(),
            max_recipients: 500,
            blocked_extensions: DEFAULT_BLOCKED_EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
            attachment_max_depth: 20,
            attachment_max_entries: 5_000,
            attachment_max_bytes: "200MB".into(),
            attachment_max_time: "10s".into(),
            reject_in_smtp: false,
            reinject: "127.0.0.1:10027".into(),
        }
    }
}

/// After-queue content filter (acceptance receipts after queue; the reception point).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// SMTP listener Postfix's `content_filter` delivers to.
    pub listen: String,
    /// Postfix's reinjection listener.
    pub reinject: String,
    /// Largest message accepted by the filter, e.g. `160MB`.
    pub max_size: String,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            listen: "127.0.0.1:10026".into(),
            reinject: "127.0.0.1:10027".into(),
            max_size: "160MB".into(),
        }
    }
}

/// Reception point (spec §5.2): what happens to mail that is not valid PEC.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceptionConfig {
    /// Policy of a mailbox without its own: `anomaly` (wrap in a busta di anomalia and
    /// deliver), `refuse` (refuse in SMTP) or `forward` (to `default_forward_to`).
    pub default_policy: String,
    /// Ordinary address for `default_policy = "forward"`.
    pub default_forward_to: Option<String>,
    /// Largest presa in carico or rilevazione virus from another provider kept, signed,
    /// beside its legal-log record, e.g. `1MB`; a larger one is logged with its size and
    /// SHA-256, not kept.
    pub kept_receipt_max_size: String,
}

impl Default for ReceptionConfig {
    fn default() -> Self {
        ReceptionConfig {
            default_policy: "anomaly".into(),
            default_forward_to: None,
            kept_receipt_max_size: "1MB".into(),
        }
    }
}

/// How the reception point and `pec verify -c` validate sender certificates beyond the
/// provider index: the chain to trust anchors (with the CAs' name constraints and the
/// emailProtection usage) and revocation (CRL, OCSP). See [`crate::crypto::revocation`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// PEM files with the trust anchors of today's providers (AgID CA1, or its root);
    /// empty (the default): the chain is not checked, only the provider index.
    pub anchors: Vec<PathBuf>,
    /// PEM files with the anchors of archived mail (DigitPA CA1 and its root): signer
    /// certificates without extendedKeyUsage are accepted under them.
    pub archive_anchors: Vec<PathBuf>,
    /// `grace` (default), `strict` or `off`: what happens when the revocation status
    /// cannot be had.
    pub revocation: String,
    /// How long an unknown revocation status is accepted under `grace` (default `3d`).
    pub grace: String,
    /// Directory of the CRL cache (default `/var/lib/pec/crl`).
    pub crl_cache: PathBuf,
    /// Total deadline of one CRL or OCSP fetch (default `5s`).
    pub fetch_timeout: String,
    /// After a failed fetch, wait this long before trying the same location (default `1m`).
    pub retry_after: String,
    /// Refetch a cached CRL this long before its nextUpdate (default `1h`).
    pub refresh_before: String,
    /// Ask the OCSP responder a certificate names when its CRLs give no answer (default true).
    pub ocsp: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            anchors: Vec::new(),
            archive_anchors: Vec::new(),
            revocation: "grace".into(),
            grace: "3d".into(),
            crl_cache: PathBuf::from("/var/lib/pec/crl"),
            fetch_timeout: "5s".into(),
            retry_after: "1m".into(),
            refresh_before: "1h".into(),
            ocsp: true,
        }
    }
}

/// REM (ETSI EN 319 532-4 REM baseline with the AgID REM-Policy-IT profile, issue 20),
/// spoken beside PEC.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RemConfig {
    /// Whether the provider speaks REM at all; off, every message is PEC.
    pub enabled: bool,
    /// `auto`: REM to peers whose trust data says they speak the REM baseline, PEC to the
    /// others; `pec`: always PEC; `rem`: always REM.
    pub mode: String,
    /// Per recipient domain, `pec` or `rem`, over `mode` (`"example.it" = "rem"`).
    pub domains: BTreeMap<String, String>,
    /// The provider's legal name in the evidences (`LegalName`); empty: `provider.name`.
    pub provider_name: String,
    /// The policies the evidences name (`PolicyID`), in order.
    pub policies: Vec<String>,
    /// How long a message may wait to be relayed to the recipient's provider before the
    /// relay failure evidence (EN 319 532-4 Annex D).
    pub relay_wait: String,
    /// How long a message may wait for consignment to the recipient before the
    /// consignment failure evidence (EN 319 532-4 Annex D).
    pub consignment_wait: String,
    /// The time-stamping service of the evidences' XAdES B-T signatures; unset: the one of
    /// `[log]` (`log.tsa_*`). When set, the other `evidence_tsa_*` keys describe it (none
    /// is taken from `[log]`).
    pub evidence_tsa_url: Option<String>,
    pub evidence_tsa_ca_file: Option<PathBuf>,
    pub evidence_tsa_timeout: Option<String>,
    pub evidence_tsa_policy: Option<String>,
    pub evidence_tsa_username: Option<String>,
    pub evidence_tsa_password_file: Option<PathBuf>,
    pub evidence_tsa_client_cert: Option<PathBuf>,
    pub evidence_tsa_client_key: Option<PathBuf>,
    pub evidence_tsa_tls_ca_file: Option<PathBuf>,
    /// PEM files of the REM PKI anchors: the S/MIME signer of a peer's REM message and the
    /// signer of its evidences must chain to one of them (`pec verify`, the reception
    /// point). Default: none.
    pub anchors: Vec<PathBuf>,
    /// PEM files of the time-stamp anchors of peers' evidences, each tried on its own.
    /// Default: none.
    pub tsa_anchors: Vec<PathBuf>,
    /// `[rem.trust]`: the Trusted Lists of the REM peers (type in `rem::trust`).
    pub trust: crate::rem::trust::TrustConfig,
    /// `[rem.csi]`: our Capability and Security Information document (type in `rem::csi`).
    pub csi: crate::rem::csi::CsiConfig,
}

/// The REM baseline policy (ETSI EN 319 532-4).
pub const REM_BASELINE_POLICY: &str = "http://uri.etsi.org/19532/v1#/REMbaseline";
/// The AgID REM-Policy-IT profile.
pub const REM_POLICY_IT: &str = "https://eidas.agid.gov.it/REM/rem-policy-it";

impl Default for RemConfig {
    fn default() -> Self {
        RemConfig {
            enabled: false,
            mode: "auto".into(),
            domains: BTreeMap::new(),
            provider_name: String::new(),
            policies: vec![REM_BASELINE_POLICY.into(), REM_POLICY_IT.into()],
            relay_wait: "24h".into(),
            consignment_wait: "24h".into(),
            evidence_tsa_url: None,
            evidence_tsa_ca_file: None,
            evidence_tsa_timeout: None,
            evidence_tsa_policy: None,
            evidence_tsa_username: None,
            evidence_tsa_password_file: None,
            evidence_tsa_client_cert: None,
            evidence_tsa_client_key: None,
            evidence_tsa_tls_ca_file: None,
            anchors: Vec::new(),
            tsa_anchors: Vec::new(),
            trust: crate::rem::trust::TrustConfig::default(),
            csi: crate::rem::csi::CsiConfig::default(),
        }
    }
}

/// `rem.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemMode {
    /// REM to peers that speak the REM baseline, PEC otherwise.
    Auto,
    Pec,
    Rem,
}

/// What a message to one recipient domain is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pec,
    Rem,
}

/// Typed `[rem]` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemSettings {
    pub enabled: bool,
    pub mode: RemMode,
    /// `rem.domains`, the domains lower case.
    pub domains: BTreeMap<String, Protocol>,
    /// `rem.provider_name`, else `provider.name`.
    pub provider_name: String,
    pub policies: Vec<String>,
    pub relay_wait: Duration,
    pub consignment_wait: Duration,
    /// The evidences' TSA: `rem.evidence_tsa_*`, else `log.tsa_*`; `None` without either.
    pub evidence_tsa: Option<crate::log::TsaSettings>,
}

impl RemSettings {
    /// What a message to `domain` goes as: PEC when REM is off; else the domain's
    /// override; else by `mode`, `auto` asking `speaks_rem` (whether the peer's trust data
    /// says it speaks the REM baseline), called only then.
    pub fn protocol_for(&self, domain: &str, speaks_rem: impl FnOnce() -> bool) -> Protocol {
        if !self.enabled {
            return Protocol::Pec;
        }
        if let Some(p) = self.domains.get(&domain.to_ascii_lowercase()) {
            return *p;
        }
        match self.mode {
            RemMode::Pec => Protocol::Pec,
            RemMode::Rem => Protocol::Rem,
            RemMode::Auto if speaks_rem() => Protocol::Rem,
            RemMode::Auto => Protocol::Pec,
        }
    }
}

/// The legal log (spec §8): daily seals and retention.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// RFC 3161 time-stamping service for the daily seals, `https://HOST[:PORT]/PATH` (or
    /// `http://`). Required by `pec serve` (and `pec check-config`) unless
    /// `dev_insecure_no_tsa` is set.
    pub tsa_url: String,
    /// PEM file with the TSA's CA: every token must be signed by a certificate that
    /// chains to it (required with `tsa_url`); also used by `pec log verify`.
    pub tsa_ca_file: Option<PathBuf>,
    /// Time allowed for one time-stamp request.
    pub tsa_timeout: String,
    /// TSA policy OID (dotted) named in each request; the token must carry it.
    pub tsa_policy: Option<String>,
    /// HTTP basic authentication at the TSA: the user name (with `tsa_password_file`;
    /// HTTPS only).
    pub tsa_username: Option<String>,
    /// File holding the TSA password (one line), readable by the service user only.
    pub tsa_password_file: Option<PathBuf>,
    /// TLS client certificate for the TSA (PEM, with `tsa_client_key`).
    pub tsa_client_cert: Option<PathBuf>,
    /// Key of `tsa_client_cert` (PEM).
    pub tsa_client_key: Option<PathBuf>,
    /// PEM CA file for the TSA's HTTPS server certificate; unset: the system trust store.
    pub tsa_tls_ca_file: Option<PathBuf>,
    /// After a failed time stamp (the seal is made without it), the first retry; each
    /// further one waits twice as long, at most 1 h.
    pub tsa_retry: String,
    /// How long after a day's end its seal may lack the time stamp before `pec status`
    /// fails.
    pub tsa_grace: String,
    /// DEVELOPMENT ONLY: let `pec serve` run without `tsa_url`, sealing days without a
    /// time stamp (not a legal seal).
    pub dev_insecure_no_tsa: bool,
    /// Months the records and seals are kept (at least 30, DPR 68/2005).
    pub retention_months: u32,
    /// How often `pec serve` runs the retention purge (`pec log purge`), e.g. `1d`; empty
    /// or `0`: never (by hand only).
    pub purge_interval: String,
    /// Owner self-service: local part of the service address, in each PEC domain, that
    /// mailbox owners write to for their log extract (`registro` → `registro@<domain>`);
    /// empty disables the service.
    pub request_address: String,
    /// Owner self-service: requests accepted per mailbox within `request_window`.
    pub request_limit: u32,
    /// Owner self-service: the window of the rate limit.
    pub request_window: String,
    /// Owner self-service: at most this many records in one extract.
    pub request_max_records: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            tsa_url: String::new(),
            tsa_ca_file: None,
            tsa_timeout: "30s".into(),
            tsa_policy: None,
            tsa_username: None,
            tsa_password_file: None,
            tsa_client_cert: None,
            tsa_client_key: None,
            tsa_tls_ca_file: None,
            tsa_retry: "1m".into(),
            tsa_grace: "6h".into(),
            dev_insecure_no_tsa: false,
            retention_months: crate::store::RETENTION_MONTHS,
            purge_interval: "1d".into(),
            request_address: "registro".into(),
            request_limit: 5,
            request_window: "1h".into(),
            request_max_records: 50_000,
        }
    }
}

/// Delivery point (punto di consegna): the LMTP proxy between Postfix and Dovecot.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// LMTP listener Postfix's `virtual_transport = lmtp:inet:HOST:PORT` delivers to.
    pub listen: String,
    /// Dovecot's LMTP: `HOST:PORT` or `unix:/PATH`.
    pub dovecot: String,
    /// Postfix's reinjection listener, for the receipts and notices.
    pub reinject: String,
    /// Send the per-mailbox arrival notices configured in the store.
    pub arrival_notices: bool,
    /// The command that tells whether a mailbox already holds a message, run when Postfix
    /// retries a delivery whose outcome was not recorded (a crash between Dovecot's 250 and
    /// our reply): `%u` is the recipient, `%m` the Message-ID without angle brackets; exit
    /// 0 with output = held, exit 0 without output = not held. Empty: no check (the
    /// message is delivered again). See `delivery::dedup`.
    pub duplicate_check: Vec<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            listen: "127.0.0.1:10025".into(),
            dovecot: "127.0.0.1:24".into(),
            reinject: "127.0.0.1:10027".into(),
            arrival_notices: false,
            duplicate_check: crate::delivery::dedup::DEFAULT_CHECK
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// The 12 h / 24 h timers of the sending provider (spec §5.4), run inside `pec serve`.
/// Notices are injected through `access.reinject`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    /// Run the timers in `pec serve` (at most one pass at a time per process; several
    /// processes on one store never send a notice twice).
    pub enabled: bool,
    /// Time between passes, e.g. `1m`; at most `10m`, so that the 24 h notice (due from
    /// 23 h 50 min) goes out by 24 h.
    pub interval: String,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            enabled: true,
            interval: "1m".into(),
        }
    }
}

/// Quarantine of infected messages (spec §8).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Months an infected message is kept (at least 30).
    pub retention_months: u32,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            retention_months: crate::store::RETENTION_MONTHS,
        }
    }
}

/// What `pec status` makes of the system clock's synchronisation (the technical rules want
/// the time reference within one second of UTC).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// When the system says the clock is not synchronised: `fail` (default) or `warn`.
    pub unsynchronised: String,
    /// When the synchronisation cannot be read: `warn` (default) or `fail`.
    pub unknown: String,
    /// Largest error bound accepted (the kernel's maximum error), default `1s`.
    pub max_error: String,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            unsynchronised: "fail".into(),
            unknown: "warn".into(),
            max_error: "1s".into(),
        }
    }
}

/// Typed `[clock]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPolicy {
    /// Fail (`true`) or warn when the system says unsynchronised.
    pub fail_unsynchronised: bool,
    /// Fail (`true`) or warn when the state cannot be read.
    pub fail_unknown: bool,
    pub max_error: Duration,
}

impl Default for ClockPolicy {
    fn default() -> Self {
        ClockPolicy {
            fail_unsynchronised: true,
            fail_unknown: false,
            max_error: Duration::from_secs(1),
        }
    }
}

/// The Prometheus metrics endpoint of `pec serve` (`GET /metrics`). Off by default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Listener, `HOST:PORT` (TCP); empty: no endpoint. Keep it on loopback or a
    /// management network: the endpoint has no authentication.
    pub listen: String,
}

fn default_node() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_digest() -> String {
    "sha256".into()
}
fn default_sessions() -> usize {
    4
}
fn default_av_timeout() -> String {
    "30s".into()
}

/// The `[signing]` table as written: the keys of both backends, checked against the chosen
/// `backend` when converted into [`SigningConfig`]. A plain struct, so that serde reports a
/// wrongly typed value at its own position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    backend: Backend,
    module: Option<PathBuf>,
    token_label: Option<String>,
    key_label: Option<String>,
    cert_label: Option<String>,
    pin: Option<String>,
    pin_env: Option<String>,
    chain_file: Option<PathBuf>,
    digest: Option<String>,
    sessions: Option<usize>,
    key_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    seal_key_label: Option<String>,
    seal_cert_label: Option<String>,
    seal_key_file: Option<PathBuf>,
    seal_cert_file: Option<PathBuf>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Pkcs11,
    Pem,
}

impl TryFrom<RawSigning> for SigningConfig {
    /// Worded like serde's own errors, so that [`parse`] locates the key.
    type Error = String;

    fn try_from(raw: RawSigning) -> Result<Self, String> {
        let name = match raw.backend {
            Backend::Pkcs11 => "pkcs11",
            Backend::Pem => "pem",
        };
        let foreign = |present: bool, key: &str| {
            if present {
                Err(format!("unknown field `{key}` for backend `{name}`"))
            } else {
                Ok(())
            }
        };
        fn required<T>(value: Option<T>, key: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("missing field `{key}`"))
        }
        match raw.backend {
            Backend::Pkcs11 => {
                foreign(raw.key_file.is_some(), "key_file")?;
                foreign(raw.cert_file.is_some(), "cert_file")?;
                foreign(raw.seal_key_file.is_some(), "seal_key_file")?;
                foreign(raw.seal_cert_file.is_some(), "seal_cert_file")?;
                Ok(SigningConfig::Pkcs11 {
                    seal_key_label: raw.seal_key_label,
                    seal_cert_label: raw.seal_cert_label,
                    module: required(raw.module, "module")?,
                    token_label: required(raw.token_label, "token_label")?,
                    key_label: required(raw.key_label, "key_label")?,
                    cert_label: raw.cert_label,
                    pin: raw.pin,
                    pin_env: raw.pin_env,
                    chain_file: raw.chain_file,
                    digest: raw.digest.unwrap_or_else(default_digest),
                    sessions: raw.sessions.unwrap_or_else(default_sessions),
                })
            }
            Backend::Pem => {
                foreign(raw.module.is_some(), "module")?;
                foreign(raw.token_label.is_some(), "token_label")?;
                foreign(raw.key_label.is_some(), "key_label")?;
                foreign(raw.cert_label.is_some(), "cert_label")?;
                foreign(raw.pin.is_some(), "pin")?;
                foreign(raw.pin_env.is_some(), "pin_env")?;
                foreign(raw.sessions.is_some(), "sessions")?;
                foreign(raw.seal_key_label.is_some(), "seal_key_label")?;
                foreign(raw.seal_cert_label.is_some(), "seal_cert_label")?;
                Ok(SigningConfig::Pem {
                    seal_key_file: raw.seal_key_file,
                    seal_cert_file: raw.seal_cert_file,
                    key_file: required(raw.key_file, "key_file")?,
                    cert_file: required(raw.cert_file, "cert_file")?,
                    chain_file: raw.chain_file,
                    digest: raw.digest.unwrap_or_else(default_digest),
                })
            }
        }
    }
}

/// A configuration error: `FILE: line N: key "a.b": message`, the line and the key when
/// known (a syntax error has no key; an unreadable file has neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based.
    pub line: Option<usize>,
    /// Dotted key, e.g. `access.max_total_size`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key \"{key}\": ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A value that does not pass the checks of [`Config::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key \"{key}\": {message}")]
pub struct InvalidValue {
    /// Dotted key.
    pub key: String,
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> InvalidValue {
    InvalidValue {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Reads and checks the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, &file)
}

/// Parses and checks a configuration; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let document = DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_at(text, s.start));
        let mut message = e.message().to_string();
        if message == "duplicate key" {
            if let Some(key) = e.span().and_then(|s| text.get(s)) {
                message = format!("duplicate key \"{key}\"");
            }
        }
        ConfigError {
            file: file.to_string(),
            line,
            key: None,
            message,
        }
    })?;
    let keys = KeyIndex::new(text, document.get_ref());
    let mut config: Config = toml::from_str(text).map_err(|e| keys.serde_error(file, &e))?;
    for domain in &mut config.provider.domains {
        *domain = domain.to_ascii_lowercase();
    }
    for extension in &mut config.access.blocked_extensions {
        *extension = extension.to_ascii_lowercase();
    }
    let settings = config.check().map_err(|e| ConfigError {
        file: file.to_string(),
        line: keys.line_of(&e.key),
        key: Some(e.key),
        message: e.message,
    })?;
    config.checked = Some(Box::new(settings));
    Ok(config)
}

/// The commented sample configuration (`etc/pec.toml.sample`).
pub fn example() -> &'static str {
    include_str!("../etc/pec.toml.sample")
}

/// The checked values of a [`Config`], in typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `signing.digest`.
    pub digest: DigestAlg,
    /// Where the PKCS#11 user PIN comes from; `None` for the PEM backend.
    pub pin: Option<PinSource>,
    /// `antivirus.clamd`.
    pub clamd: Endpoint,
    /// `antivirus.timeout`.
    pub antivirus_timeout: Duration,
    pub access: AccessSettings,
    pub filter: FilterSettings,
    /// `reception.default_policy` (with `reception.default_forward_to`).
    pub default_policy: MailboxPolicy,
    /// `reception.kept_receipt_max_size`, bytes.
    pub kept_receipt_max: u64,
    /// `log.purge_interval`: how often `pec serve` runs the retention purge; `None`: never
    /// (`pec log purge` by hand).
    pub purge_interval: Option<Duration>,
    pub delivery: DeliverySettings,
    /// `log.tsa_*`; `None` without a TSA.
    pub tsa: Option<crate::log::TsaSettings>,
    /// `log.tsa_retry`.
    pub tsa_retry: Duration,
    /// `log.tsa_grace`.
    pub tsa_grace: Duration,
    /// `timers.interval`.
    pub timers_interval: Duration,
    /// Where the index is synchronised from, if anywhere.
    pub index_source: Option<crate::index::sync::Source>,
    /// `index.refresh`.
    pub index_refresh: Duration,
    /// `log.request_*` with `provider.domains`; `None` when `log.request_address` is empty.
    pub log_requests: Option<crate::log::request::RequestSettings>,
    /// `metrics.listen`; `None` without an endpoint.
    pub metrics: Option<Endpoint>,
    /// `[verify]`: revocation checking (the anchors stay paths in [`VerifyConfig`]).
    pub revocation: crate::crypto::revocation::RevocationSettings,
    /// `[clock]`.
    pub clock: ClockPolicy,
    /// `[rem.trust]`; `None` without `rem.trust.tl_urls`.
    pub rem_trust: Option<crate::rem_sync::TrustSettings>,
    /// `rem.csi.validity`.
    pub csi_validity: Duration,
    /// `[rem]`.
    pub rem: RemSettings,
}

/// Typed `[delivery]` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// LMTP listener (TCP).
    pub listen: Endpoint,
    /// Dovecot LMTP (TCP or Unix socket).
    pub dovecot: Endpoint,
    /// Postfix's reinjection listener (TCP).
    pub reinject: Endpoint,
}

/// Typed `[access]` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSettings {
    /// Milter listener (TCP or Unix socket).
    pub listen: Endpoint,
    /// Limit on size × number of recipients, in bytes.
    pub max_total_size: u64,
    /// Larger messages are rejected in SMTP without a notice, in bytes.
    pub hard_size_limit: u64,
    /// Postfix's reinjection listener (TCP).
    pub reinject: Endpoint,
    /// `attachment_max_bytes`, in bytes.
    pub attachment_max_bytes: u64,
    /// `attachment_max_time`.
    pub attachment_max_time: Duration,
}

/// Typed `[filter]` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSettings {
    /// Content-filter SMTP listener (TCP).
    pub listen: Endpoint,
    /// Postfix's reinjection listener (TCP).
    pub reinject: Endpoint,
    /// Largest message accepted, in bytes.
    pub max_size: u64,
}

/// Where the PKCS#11 user PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `signing.pin`: written in the file.
    Literal(String),
    /// `signing.pin_env`: the name of an environment variable.
    Env(String),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Literal(_) => f.write_str("Literal(<redacted>)"),
            PinSource::Env(name) => f.debug_tuple("Env").field(name).finish(),
        }
    }
}

impl PinSource {
    /// The PIN itself (reads the environment for [`PinSource::Env`]).
    pub fn resolve(&self) -> Result<String, InvalidValue> {
        match self {
            PinSource::Literal(pin) => Ok(pin.clone()),
            PinSource::Env(name) => std::env::var(name).map_err(|_| {
                invalid(
                    "signing.pin_env",
                    format!("environment variable \"{name}\" is not set"),
                )
            }),
        }
    }
}

/// A socket address: TCP host and port, or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `HOST:PORT`; `host` is a name or an IP address (IPv6 without brackets). Bind or
    /// connect with `(host.as_str(), port)`.
    Inet { host: String, port: u16 },
    /// `unix:/PATH`.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `HOST:PORT`, `inet:HOST:PORT`, `tcp:HOST:PORT` or `unix:/PATH` (absolute).
    pub fn parse(value: &str) -> Option<Endpoint> {
        if let Some(path) = value.strip_prefix("unix:") {
            return (path.len() > 1 && path.starts_with('/'))
                .then(|| Endpoint::Unix(PathBuf::from(path)));
        }
        let host_port = value
            .strip_prefix("inet:")
            .or_else(|| value.strip_prefix("tcp:"))
            .unwrap_or(value);
        let (host, port) = host_port.rsplit_once(':')?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => {
                v6.parse::<Ipv6Addr>().ok()?;
                v6
            }
            None => {
                let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
                if host.is_empty() || !host.bytes().all(plain) {
                    return None;
                }
                host
            }
        };
        Some(Endpoint::Inet {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inet { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Inet { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Splits `123 unit` (one optional space) into the number and the unit.
fn number_and_unit(value: &str) -> Option<(u64, &str)> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, unit) = value.split_at(digits);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    Some((number.parse().ok()?, unit))
}

/// Parses a size (`100MB`, `10KB`, `512B`, `1MiB`; see the module documentation) into bytes.
pub fn parse_size(value: &str) -> Option<u64> {
    let (number, unit) = number_and_unit(value)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// Parses a duration: a whole number and `s`, `m`, `h` or `d`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let (number, unit) = number_and_unit(value)?;
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

/// A syntactically valid domain name: dot-separated labels of letters, digits and hyphens.
pub fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A syntactically valid address `local@domain`, the local part a dot-atom (RFC 5322).
fn valid_email(address: &str) -> bool {
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(atext))
        && valid_domain(domain)
}

fn size(key: &str, value: &str) -> Result<u64, InvalidValue> {
    match parse_size(value) {
        Some(0) => Err(invalid(
            key,
            format!("invalid size \"{value}\": must not be zero"),
        )),
        Some(n) => Ok(n),
        None => Err(invalid(key, format!("invalid size \"{value}\""))),
    }
}

fn duration(key: &str, value: &str) -> Result<Duration, InvalidValue> {
    match parse_duration(value) {
        Some(d) if d.is_zero() => Err(invalid(
            key,
            format!("invalid duration \"{value}\": must not be zero"),
        )),
        Some(d) => Ok(d),
        None => Err(invalid(key, format!("invalid duration \"{value}\""))),
    }
}

/// A socket address; `unix_ok` says whether a Unix socket is acceptable for this key.
fn endpoint(key: &str, value: &str, unix_ok: bool) -> Result<Endpoint, InvalidValue> {
    let expected = if unix_ok {
        "expected HOST:PORT, inet:HOST:PORT, tcp:HOST:PORT or unix:/PATH"
    } else {
        "expected HOST:PORT"
    };
    match Endpoint::parse(value) {
        Some(Endpoint::Unix(_)) if !unix_ok => Err(invalid(
            key,
            format!("invalid address \"{value}\": {expected} (TCP only)"),
        )),
        Some(e) => Ok(e),
        None => Err(invalid(
            key,
            format!("invalid address \"{value}\": {expected}"),
        )),
    }
}

fn email(key: &str, value: &str) -> Result<(), InvalidValue> {
    if valid_email(value) {
        Ok(())
    } else {
        Err(invalid(key, format!("invalid email address \"{value}\"")))
    }
}

fn not_empty(key: &str, value: &str) -> Result<(), InvalidValue> {
    if value.trim().is_empty() {
        Err(invalid(key, "must not be empty"))
    } else {
        Ok(())
    }
}

fn path_not_empty(key: &str, value: &Path) -> Result<(), InvalidValue> {
    not_empty(key, &value.to_string_lossy())
}

fn digest(value: &str) -> Result<DigestAlg, InvalidValue> {
    match value {
        "sha256" => Ok(DigestAlg::Sha256),
        "sha384" => Ok(DigestAlg::Sha384),
        "sha1" => Ok(DigestAlg::Sha1),
        _ => Err(invalid(
            "signing.digest",
            format!("invalid digest \"{value}\": expected \"sha256\", \"sha384\" or \"sha1\""),
        )),
    }
}

impl Config {
    /// The checked values in typed form: those [`parse`] checked (the file was valid), or,
    /// for a configuration put together in code, checked now with [`Config::check`].
    pub fn settings(&self) -> Result<Settings, InvalidValue> {
        match &self.checked {
            Some(settings) => Ok((**settings).clone()),
            None => self.check(),
        }
    }

    /// This configuration with its values checked again and carried: after changing them
    /// in code (a reload's mix of new and running values).
    pub fn rechecked(mut self) -> Result<Config, InvalidValue> {
        self.checked = Some(Box::new(self.check()?));
        Ok(self)
    }

    /// Checks every value and returns them in typed form, section by section (in the order
    /// of the sample file, so that the first error reported stays the same). [`load`] and
    /// [`parse`] run it once and report the error's line.
    ///
    /// Beyond the syntax of each value: at least one PEC domain and no domain twice;
    /// exactly one of `signing.pin` / `signing.pin_env` for PKCS#11; `access.hard_size_limit`
    /// ≥ `access.max_total_size`; `access.max_recipients` ≥ 1; and `filter.max_size` ≥
    /// `access.max_total_size`, since the content filter must take every submission the
    /// access point accepts.
    pub fn check(&self) -> Result<Settings, InvalidValue> {
        self.serve.enabled()?;
        self.check_provider()?;
        let (digest, pin) = self.signing_settings()?;
        self.check_store()?;
        path_not_empty("index.ldif", &self.index.ldif)?;
        if let Some(p) = &self.index.tls_policy_map {
            path_not_empty("index.tls_policy_map", p)?;
        }
        let clamd = endpoint("antivirus.clamd", &self.antivirus.clamd, true)?;
        let antivirus_timeout = duration("antivirus.timeout", &self.antivirus.timeout)?;
        let access = self.access_settings()?;
        let filter = self.filter_settings(&access)?;
        let default_policy = self.reception_policy()?;
        let kept_receipt_max = size(
            "reception.kept_receipt_max_size",
            &self.reception.kept_receipt_max_size,
        )?;
        let purge_interval = match self.log.purge_interval.as_str() {
            "" | "0" => None,
            v => Some(duration("log.purge_interval", v)?),
        };
        let revocation = self.revocation_settings()?;
        let delivery = self.delivery_settings()?;
        let timers_interval = self.timers_interval()?;
        let (tsa, log_requests) = self.log_settings()?;
        let tsa_retry = duration("log.tsa_retry", &self.log.tsa_retry)?;
        let tsa_grace = duration("log.tsa_grace", &self.log.tsa_grace)?;
        let (index_source, index_refresh) = self.index_settings()?;
        let metrics = self.metrics_endpoint()?;
        let clock = self.clock_policy()?;
        let rem = self.rem_settings(tsa.as_ref())?;
        let rem_trust = self.rem_trust_settings()?;
        let csi_validity = duration("rem.csi.validity", &self.rem.csi.validity)?;
        Ok(Settings {
            rem,
            rem_trust,
            csi_validity,
            clock,
            metrics,
            revocation,
            tsa,
            tsa_retry,
            tsa_grace,
            default_policy,
            kept_receipt_max,
            purge_interval,
            index_source,
            index_refresh,
            timers_interval,
            digest,
            pin,
            clamd,
            antivirus_timeout,
            access,
            filter,
            delivery,
            log_requests,
        })
    }

    /// `[provider]`: a name, two addresses, and at least one PEC domain, none twice.
    fn check_provider(&self) -> Result<(), InvalidValue> {
        let p = &self.provider;
        not_empty("provider.name", &p.name)?;
        email("provider.service_address", &p.service_address)?;
        email("provider.mail_receipt", &p.mail_receipt)?;
        if p.domains.is_empty() {
            return Err(invalid(
                "provider.domains",
                "no domain: list the PEC domains whose mailboxes live here",
            ));
        }
        for (i, domain) in p.domains.iter().enumerate() {
            if !valid_domain(domain) {
                return Err(invalid(
                    "provider.domains",
                    format!("invalid domain \"{domain}\""),
                ));
            }
            if p.domains[..i]
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
            {
                return Err(invalid(
                    "provider.domains",
                    format!("domain \"{domain}\" is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// `[signing]`: the digest, and where the PKCS#11 PIN comes from (`None` for PEM).
    fn signing_settings(&self) -> Result<(DigestAlg, Option<PinSource>), InvalidValue> {
        match &self.signing {
            SigningConfig::Pkcs11 {
                module,
                token_label,
                key_label,
                pin,
                pin_env,
                digest: d,
                sessions,
                ..
            } => {
                path_not_empty("signing.module", module)?;
                not_empty("signing.token_label", token_label)?;
                not_empty("signing.key_label", key_label)?;
                let pin = match (pin, pin_env) {
                    (Some(_), Some(_)) => {
                        return Err(invalid("signing.pin", "set pin or pin_env, not both"))
                    }
                    (None, None) => {
                        return Err(invalid("signing.pin", "missing: set pin or pin_env"))
                    }
                    (Some(pin), None) => PinSource::Literal(pin.clone()),
                    (None, Some(name)) => {
                        not_empty("signing.pin_env", name)?;
                        PinSource::Env(name.clone())
                    }
                };
                let digest = digest(d)?;
                if *sessions == 0 {
                    return Err(invalid("signing.sessions", "must be at least 1"));
                }
                Ok((digest, Some(pin)))
            }
            SigningConfig::Pem {
                key_file,
                cert_file,
                digest: d,
                ..
            } => {
                path_not_empty("signing.key_file", key_file)?;
                path_not_empty("signing.cert_file", cert_file)?;
                Ok((digest(d)?, None))
            }
        }
    }

    /// `[store]`: the path, the PostgreSQL URL and pool, and the TLS files.
    fn check_store(&self) -> Result<(), InvalidValue> {
        path_not_empty("store.path", &self.store.path)?;
        if self.store.backend == StoreBackend::Postgres {
            match &self.store.url {
                Some(u) if u.parse::<tokio_postgres::Config>().is_ok() => {}
                Some(_) => return Err(invalid("store.url", "not a PostgreSQL connection URL")),
                None => return Err(invalid("store.url", "required with backend \"postgres\"")),
            }
            if self.store.pool_size == 0 {
                return Err(invalid("store.pool_size", "must be at least 1"));
            }
            if self
                .store
                .url
                .as_deref()
                .is_some_and(|u| u.contains("sslmode"))
            {
                return Err(invalid(
                    "store.url",
                    "set TLS with store.tls and store.ca_file, not sslmode in the URL",
                ));
            }
        }
        if let Some(ca) = &self.store.ca_file {
            path_not_empty("store.ca_file", ca)?;
            if !matches!(self.store.tls, StoreTls::VerifyCa | StoreTls::VerifyFull) {
                return Err(invalid(
                    "store.ca_file",
                    "used only with tls = \"verify-ca\" or \"verify-full\"",
                ));
            }
        }
        match (&self.store.cert_file, &self.store.key_file) {
            (Some(cert), Some(key)) => {
                path_not_empty("store.cert_file", cert)?;
                path_not_empty("store.key_file", key)?;
                if self.store.tls == StoreTls::Disable {
                    return Err(invalid(
                        "store.cert_file",
                        "used only with TLS (tls = \"require\", \"verify-ca\" or \"verify-full\")",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(invalid("store.key_file", "required with store.cert_file"))
            }
            (None, Some(_)) => {
                return Err(invalid("store.cert_file", "required with store.key_file"))
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// `[access]`: the milter listener, the size limits, the recipients and extensions.
    fn access_settings(&self) -> Result<AccessSettings, InvalidValue> {
        let a = &self.access;
        let listen = endpoint("access.listen", &a.listen, true)?;
        let max_total_size = size("access.max_total_size", &a.max_total_size)?;
        let hard_size_limit = size("access.hard_size_limit", &a.hard_size_limit)?;
        if hard_size_limit < max_total_size {
            return Err(invalid(
                "access.hard_size_limit",
                format!(
                    "\"{}\" is smaller than access.max_total_size \"{}\"",
                    a.hard_size_limit, a.max_total_size
                ),
            ));
        }
        if a.max_recipients == 0 {
            return Err(invalid("access.max_recipients", "must be at least 1"));
        }
        for extension in &a.blocked_extensions {
            let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
            if extension.is_empty() || !extension.bytes().all(plain) {
                let hint = if extension.starts_with('.') {
                    ": write it without the dot"
                } else {
                    ""
                };
                return Err(invalid(
                    "access.blocked_extensions",
                    format!("invalid extension \"{extension}\"{hint}"),
                ));
            }
        }
        if a.attachment_max_depth == 0 {
            return Err(invalid("access.attachment_max_depth", "must be at least 1"));
        }
        if a.attachment_max_entries == 0 {
            return Err(invalid(
                "access.attachment_max_entries",
                "must be at least 1",
            ));
        }
        let attachment_max_bytes = size("access.attachment_max_bytes", &a.attachment_max_bytes)?;
        let attachment_max_time = duration("access.attachment_max_time", &a.attachment_max_time)?;
        let reinject = endpoint("access.reinject", &a.reinject, false)?;
        Ok(AccessSettings {
            listen,
            max_total_size,
            hard_size_limit,
            reinject,
            attachment_max_bytes,
            attachment_max_time,
        })
    }

    /// `[filter]`: the content filter, which must take what the access point accepts.
    fn filter_settings(&self, access: &AccessSettings) -> Result<FilterSettings, InvalidValue> {
        let f = &self.filter;
        let filter_listen = endpoint("filter.listen", &f.listen, false)?;
        let filter_reinject = endpoint("filter.reinject", &f.reinject, false)?;
        let max_size = size("filter.max_size", &f.max_size)?;
        if max_size < access.max_total_size {
            return Err(invalid(
                "filter.max_size",
                format!(
                    "\"{}\" is smaller than access.max_total_size \"{}\"",
                    f.max_size, self.access.max_total_size
                ),
            ));
        }
        Ok(FilterSettings {
            listen: filter_listen,
            reinject: filter_reinject,
            max_size,
        })
    }

    /// `[reception]`: the default policy for mail that is not valid PEC.
    fn reception_policy(&self) -> Result<MailboxPolicy, InvalidValue> {
        let r = &self.reception;
        let policy = match (r.default_policy.as_str(), &r.default_forward_to) {
            ("anomaly", None) => MailboxPolicy::Anomaly,
            ("refuse", None) => MailboxPolicy::Refuse,
            ("forward", Some(to)) => {
                email("reception.default_forward_to", to)?;
                MailboxPolicy::Forward(to.clone())
            }
            ("forward", None) => {
                return Err(invalid(
                    "reception.default_forward_to",
                    "missing: default_policy \"forward\" needs an address",
                ))
            }
            ("anomaly" | "refuse", Some(_)) => {
                return Err(invalid(
                    "reception.default_forward_to",
                    format!(
                        "only for default_policy \"forward\", not \"{}\"",
                        r.default_policy
                    ),
                ))
            }
            (other, _) => {
                return Err(invalid(
                    "reception.default_policy",
                    format!("unknown policy \"{other}\": use anomaly, refuse or forward"),
                ))
            }
        };
        Ok(policy)
    }

    /// `[delivery]`: the LMTP listener, Dovecot and the reinjection listener.
    fn delivery_settings(&self) -> Result<DeliverySettings, InvalidValue> {
        let d = &self.delivery;
        Ok(DeliverySettings {
            listen: endpoint("delivery.listen", &d.listen, false)?,
            dovecot: endpoint("delivery.dovecot", &d.dovecot, true)?,
            reinject: endpoint("delivery.reinject", &d.reinject, false)?,
        })
    }

    /// `timers.interval`: at most 10 minutes.
    fn timers_interval(&self) -> Result<Duration, InvalidValue> {
        let timers_interval = duration("timers.interval", &self.timers.interval)?;
        if timers_interval > Duration::from_secs(600) {
            return Err(invalid(
                "timers.interval",
                format!(
                    "\"{}\" is longer than 10m: the 24 h notice, due from 23 h 50 min, would \
                     miss its 24 h deadline",
                    self.timers.interval
                ),
            ));
        }
        Ok(timers_interval)
    }

    /// `[log]` (the TSA, retention, owner requests) and `quarantine.retention_months`.
    fn log_settings(
        &self,
    ) -> Result<
        (
            Option<crate::log::TsaSettings>,
            Option<crate::log::request::RequestSettings>,
        ),
        InvalidValue,
    > {
        let l = &self.log;
        let tsa_timeout = duration("log.tsa_timeout", &l.tsa_timeout)?;
        let tsa = self.tsa_settings(tsa_timeout)?;
        let minimum = crate::store::RETENTION_MONTHS;
        if l.retention_months < minimum {
            return Err(invalid(
                "log.retention_months",
                format!(
                    "{} is less than the {minimum} months required",
                    l.retention_months
                ),
            ));
        }
        let log_requests = self.log_request_settings()?;
        if self.quarantine.retention_months < minimum {
            return Err(invalid(
                "quarantine.retention_months",
                format!(
                    "{} is less than the {minimum} months required",
                    self.quarantine.retention_months
                ),
            ));
        }
        Ok((tsa, log_requests))
    }

    /// `[rem]`, checked; `log_tsa` is the TSA of `[log]`, the evidences' by default.
    fn rem_settings(
        &self,
        log_tsa: Option<&crate::log::TsaSettings>,
    ) -> Result<RemSettings, InvalidValue> {
        let r = &self.rem;
        let mode = match r.mode.as_str() {
            "auto" => RemMode::Auto,
            "pec" => RemMode::Pec,
            "rem" => RemMode::Rem,
            m => {
                return Err(invalid(
                    "rem.mode",
                    format!("unknown mode \"{m}\": expected auto, pec or rem"),
                ))
            }
        };
        let mut domains = BTreeMap::new();
        for (domain, protocol) in &r.domains {
            let key = format!("rem.domains.{domain}");
            if !valid_domain(domain) {
                return Err(invalid(&key, format!("invalid domain \"{domain}\"")));
            }
            let p = match protocol.as_str() {
                "pec" => Protocol::Pec,
                "rem" => Protocol::Rem,
                v => {
                    return Err(invalid(
                        &key,
                        format!("unknown value \"{v}\": expected pec or rem"),
                    ))
                }
            };
            if domains.insert(domain.to_ascii_lowercase(), p).is_some() {
                return Err(invalid(
                    &key,
                    format!("domain \"{domain}\" is listed twice (in another case)"),
                ));
            }
        }
        if r.policies.is_empty() {
            return Err(invalid(
                "rem.policies",
                "at least one policy is needed (the REM baseline's by default)",
            ));
        }
        for p in &r.policies {
            let uri = p
                .split_once(':')
                .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
            if !uri || p.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "rem.policies",
                    format!("invalid policy \"{p}\": expected a URI"),
                ));
            }
        }
        let provider_name = if r.provider_name.is_empty() {
            self.provider.name.clone()
        } else {
            not_empty("rem.provider_name", r.provider_name.trim())?;
            r.provider_name.clone()
        };
        let relay_wait = duration("rem.relay_wait", &r.relay_wait)?;
        let consignment_wait = duration("rem.consignment_wait", &r.consignment_wait)?;
        let own_tsa = [
            ("ca_file", r.evidence_tsa_ca_file.is_some()),
            ("timeout", r.evidence_tsa_timeout.is_some()),
            ("policy", r.evidence_tsa_policy.is_some()),
            ("username", r.evidence_tsa_username.is_some()),
            ("password_file", r.evidence_tsa_password_file.is_some()),
            ("client_cert", r.evidence_tsa_client_cert.is_some()),
            ("client_key", r.evidence_tsa_client_key.is_some()),
            ("tls_ca_file", r.evidence_tsa_tls_ca_file.is_some()),
        ];
        let evidence_tsa = match &r.evidence_tsa_url {
            None => {
                if let Some((key, _)) = own_tsa.iter().find(|(_, set)| *set) {
                    return Err(invalid(
                        &format!("rem.evidence_tsa_{key}"),
                        "needs rem.evidence_tsa_url (without every evidence_tsa_* key, the \
                         evidences use the TSA of [log])",
                    ));
                }
                log_tsa.cloned()
            }
            Some(url) => {
                not_empty("rem.evidence_tsa_url", url)?;
                let timeout = duration(
                    "rem.evidence_tsa_timeout",
                    r.evidence_tsa_timeout.as_deref().unwrap_or("30s"),
                )?;
                let fields = LogConfig {
                    tsa_url: url.clone(),
                    tsa_ca_file: r.evidence_tsa_ca_file.clone(),
                    tsa_policy: r.evidence_tsa_policy.clone(),
                    tsa_username: r.evidence_tsa_username.clone(),
                    tsa_password_file: r.evidence_tsa_password_file.clone(),
                    tsa_client_cert: r.evidence_tsa_client_cert.clone(),
                    tsa_client_key: r.evidence_tsa_client_key.clone(),
                    tsa_tls_ca_file: r.evidence_tsa_tls_ca_file.clone(),
                    ..LogConfig::default()
                };
                tsa_of(&fields, &|k| format!("rem.evidence_{k}"), timeout)?
            }
        };
        Ok(RemSettings {
            enabled: r.enabled,
            mode,
            domains,
            provider_name,
            policies: r.policies.clone(),
            relay_wait,
            consignment_wait,
            evidence_tsa,
        })
    }

    /// The TSA of `[log]`, checked: URL syntax, policy OID, credentials in pairs, basic
    /// authentication over HTTPS only. `None` without `log.tsa_url`.
    fn tsa_settings(
        &self,
        timeout: Duration,
    ) -> Result<Option<crate::log::TsaSettings>, InvalidValue> {
        tsa_of(&self.log, &|k| format!("log.{k}"), timeout)
    }

    /// What `pec serve` needs beyond a valid file (also checked by `pec check-config`):
    /// a seal key of its own (`signing.seal_key_label`, or `seal_key_file` and
    /// `seal_cert_file`), other than the PEC message key; and the daily time stamp, so
    /// `log.tsa_url` and `log.tsa_ca_file`, unless `log.dev_insecure_no_tsa` is set.
    pub fn check_serve(&self) -> Result<(), InvalidValue> {
        self.check_seal_key()?;
        self.check_serve_tsa()
    }

    /// The seal key is configured, and is not the PEC message key (by name: `pec
    /// check-config --live` compares the keys themselves).
    pub fn check_seal_key(&self) -> Result<(), InvalidValue> {
        const WHY: &str = "required: the daily seal is signed by a key of its own, the PEC \
                           message key signs PEC messages only";
        match &self.signing {
            SigningConfig::Pkcs11 {
                key_label,
                seal_key_label,
                ..
            } => match seal_key_label {
                None => Err(invalid("signing.seal_key_label", WHY)),
                Some(l) if l == key_label => Err(invalid(
                    "signing.seal_key_label",
                    "must name another key than signing.key_label",
                )),
                Some(l) => not_empty("signing.seal_key_label", l),
            },
            SigningConfig::Pem {
                key_file,
                seal_key_file,
                seal_cert_file,
                ..
            } => match (seal_key_file, seal_cert_file) {
                (None, _) => Err(invalid("signing.seal_key_file", WHY)),
                (Some(_), None) => Err(invalid(
                    "signing.seal_cert_file",
                    "required with signing.seal_key_file",
                )),
                (Some(k), Some(_)) if k == key_file => Err(invalid(
                    "signing.seal_key_file",
                    "must name another key than signing.key_file",
                )),
                (Some(_), Some(_)) => Ok(()),
            },
        }
    }

    fn check_serve_tsa(&self) -> Result<(), InvalidValue> {
        if self.log.dev_insecure_no_tsa {
            return Ok(());
        }
        if self.log.tsa_url.is_empty() {
            return Err(invalid(
                "log.tsa_url",
                "required: the daily seal of the legal log must be time-stamped (set \
                 log.dev_insecure_no_tsa = true only on a development machine)",
            ));
        }
        if self.log.tsa_ca_file.is_none() {
            return Err(invalid(
                "log.tsa_ca_file",
                "required with log.tsa_url: the tsa certificate must chain to it",
            ));
        }
        Ok(())
    }

    /// `[index]`: the refresh period and the source it is synchronised from, if any.
    fn index_settings(
        &self,
    ) -> Result<(Option<crate::index::sync::Source>, Duration), InvalidValue> {
        let ix = &self.index;
        let index_refresh = duration("index.refresh", &ix.refresh)?;
        let index_timeout = duration("index.timeout", &ix.timeout)?;
        if ix.bind_dn.is_none() && ix.bind_password.is_some() {
            return Err(invalid("index.bind_password", "set without index.bind_dn"));
        }
        if ix.signed_ldif.is_none() && ix.signer_cert.is_some() {
            return Err(invalid(
                "index.signer_cert",
                "set without index.signed_ldif",
            ));
        }
        let index_source = match (&ix.ldap_url, &ix.signed_ldif) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "index.signed_ldif",
                    "set ldap_url or signed_ldif, not both",
                ))
            }
            (Some(url), None) => {
                if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
                    return Err(invalid(
                        "index.ldap_url",
                        format!("\"{url}\" is not an ldap:// or ldaps:// URL"),
                    ));
                }
                Some(crate::index::sync::Source::Ldap {
                    url: url.clone(),
                    bind_dn: ix.bind_dn.clone(),
                    password: ix.bind_password.clone(),
                    timeout: index_timeout,
                })
            }
            (None, Some(path)) => {
                path_not_empty("index.signed_ldif", path)?;
                let Some(cert) = &ix.signer_cert else {
                    return Err(invalid(
                        "index.signed_ldif",
                        "needs index.signer_cert, the certificate allowed to sign it",
                    ));
                };
                Some(crate::index::sync::Source::SignedLdif {
                    path: path.clone(),
                    signer_cert: cert.clone(),
                })
            }
            (None, None) => None,
        };
        Ok((index_source, index_refresh))
    }

    /// `metrics.listen`; `None` without an endpoint.
    /// `[verify]`: the revocation mode and its durations.
    fn revocation_settings(
        &self,
    ) -> Result<crate::crypto::revocation::RevocationSettings, InvalidValue> {
        use crate::crypto::revocation::{RevocationMode, RevocationSettings};
        let v = &self.verify;
        let mode = RevocationMode::parse(&v.revocation).ok_or_else(|| {
            invalid(
                "verify.revocation",
                format!(
                    "invalid value \"{}\" (expected \"grace\", \"strict\" or \"off\")",
                    v.revocation
                ),
            )
        })?;
        path_not_empty("verify.crl_cache", &v.crl_cache)?;
        Ok(RevocationSettings {
            mode,
            grace: duration("verify.grace", &v.grace)?,
            cache_dir: Some(v.crl_cache.clone()),
            fetch_timeout: duration("verify.fetch_timeout", &v.fetch_timeout)?,
            retry_after: duration("verify.retry_after", &v.retry_after)?,
            refresh_before: duration("verify.refresh_before", &v.refresh_before)?,
            ocsp: v.ocsp,
        })
    }

    /// `[clock]`: `fail` or `warn` for each case, and a positive error bound.
    fn clock_policy(&self) -> Result<ClockPolicy, InvalidValue> {
        let fail = |key: &str, value: &str| match value {
            "fail" => Ok(true),
            "warn" => Ok(false),
            other => Err(invalid(
                key,
                format!("invalid value \"{other}\": expected \"fail\" or \"warn\""),
            )),
        };
        Ok(ClockPolicy {
            fail_unsynchronised: fail("clock.unsynchronised", &self.clock.unsynchronised)?,
            fail_unknown: fail("clock.unknown", &self.clock.unknown)?,
            max_error: duration("clock.max_error", &self.clock.max_error)?,
        })
    }

    /// `[rem.trust]`: every URL `http[s]://HOST[:PORT]/PATH`, at least one signer file
    /// with them, the durations.
    fn rem_trust_settings(&self) -> Result<Option<crate::rem_sync::TrustSettings>, InvalidValue> {
        let t = &self.rem.trust;
        let refresh = duration("rem.trust.refresh", t.refresh.as_deref().unwrap_or("1d"))?;
        let timeout = duration("rem.trust.timeout", t.timeout.as_deref().unwrap_or("30s"))?;
        for p in &t.tl_signer_files {
            path_not_empty("rem.trust.tl_signer_files", p)?;
        }
        if t.tl_urls.is_empty() {
            return Ok(None);
        }
        for url in &t.tl_urls {
            if crate::crypto::http::parse_url(url).is_none() {
                return Err(invalid(
                    "rem.trust.tl_urls",
                    format!("\"{url}\": expected http[s]://HOST[:PORT]/PATH"),
                ));
            }
        }
        if t.tl_signer_files.is_empty() {
            return Err(invalid(
                "rem.trust.tl_signer_files",
                "empty: rem.trust.tl_urls needs the certificates allowed to sign the lists",
            ));
        }
        Ok(Some(crate::rem_sync::TrustSettings {
            tl_urls: t.tl_urls.clone(),
            signer_files: t.tl_signer_files.clone(),
            refresh,
            timeout,
            tls_ca_file: t.tls_ca_file.clone(),
        }))
    }

    fn metrics_endpoint(&self) -> Result<Option<Endpoint>, InvalidValue> {
        if self.metrics.listen.is_empty() {
            Ok(None)
        } else {
            endpoint("metrics.listen", &self.metrics.listen, false).map(Some)
        }
    }

    /// The owner self-service settings (`log.request_*`): the local part is a plain one
    /// and its address is neither `provider.service_address` nor `provider.mail_receipt`;
    /// at least one request per window.
    fn log_request_settings(
        &self,
    ) -> Result<Option<crate::log::request::RequestSettings>, InvalidValue> {
        let l = &self.log;
        let window = duration("log.request_window", &l.request_window)?;
        if l.request_address.is_empty() {
            return Ok(None);
        }
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"._-+".contains(&b);
        if !l.request_address.bytes().all(plain) || l.request_address.starts_with('.') {
            return Err(invalid(
                "log.request_address",
                format!(
                    "\"{}\" is not a local part (write the part before @, e.g. \"registro\")",
                    l.request_address
                ),
            ));
        }
        let p = &self.provider;
        for d in &p.domains {
            let address = format!("{}@{d}", l.request_address);
            for (key, other) in [
                ("provider.service_address", &p.service_address),
                ("provider.mail_receipt", &p.mail_receipt),
            ] {
                if address.eq_ignore_ascii_case(other) {
                    return Err(invalid(
                        "log.request_address",
                        format!("{address} is also {key}"),
                    ));
                }
            }
        }
        if l.request_limit == 0 {
            return Err(invalid("log.request_limit", "must be at least 1"));
        }
        if l.request_max_records == 0 {
            return Err(invalid("log.request_max_records", "must be at least 1"));
        }
        Ok(Some(crate::log::request::RequestSettings {
            local_part: l.request_address.clone(),
            domains: p.domains.clone(),
            limit: l.request_limit,
            window,
            max_records: l.request_max_records,
        }))
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// One key of the document: its dotted path and where the key and its value are.
struct Located {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
    table: bool,
}

/// Where an error span falls.
enum Hit<'a> {
    /// On a key.
    Key(&'a Located),
    /// On (or inside) a value; for a `[table]` the span is its header.
    Value(&'a Located),
    /// Nowhere in particular: the document itself.
    Root,
}

/// A TSA's settings checked: URL syntax, policy OID, credentials in pairs, basic
/// authentication over HTTPS only. `None` without a `tsa_url`. `key` names a setting in
/// errors (`log.tsa_url`, `rem.evidence_tsa_url`).
fn tsa_of(
    l: &LogConfig,
    key: &dyn Fn(&str) -> String,
    timeout: Duration,
) -> Result<Option<crate::log::TsaSettings>, InvalidValue> {
    if let Some(ca) = &l.tsa_ca_file {
        path_not_empty(&key("tsa_ca_file"), ca)?;
    }
    if l.tsa_url.is_empty() {
        return Ok(None);
    }
    crate::crypto::tsa::check_url(&l.tsa_url).map_err(|_| {
        invalid(
            &key("tsa_url"),
            format!(
                "invalid url \"{}\": expected https://HOST[:PORT]/PATH or http://…",
                l.tsa_url
            ),
        )
    })?;
    let https = l.tsa_url.starts_with("https://");
    if let Some(p) = &l.tsa_policy {
        if crate::crypto::tsa::oid_der(p).is_none() {
            return Err(invalid(
                &key("tsa_policy"),
                format!("invalid policy \"{p}\": expected a dotted OID"),
            ));
        }
    }
    let basic_auth = match (&l.tsa_username, &l.tsa_password_file) {
        (None, None) => None,
        (Some(u), Some(f)) if https => {
            not_empty(&key("tsa_username"), u)?;
            path_not_empty(&key("tsa_password_file"), f)?;
            Some((u.clone(), f.clone()))
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                &key("tsa_username"),
                "basic authentication needs an https:// tsa_url (the password would \
                 travel in clear)",
            ))
        }
        _ => {
            return Err(invalid(
                &key("tsa_username"),
                "tsa_username and tsa_password_file go together",
            ))
        }
    };
    let client_cert = match (&l.tsa_client_cert, &l.tsa_client_key) {
        (None, None) => None,
        (Some(c), Some(k)) if https => Some((c.clone(), k.clone())),
        (Some(_), Some(_)) => {
            return Err(invalid(
                &key("tsa_client_cert"),
                "a client certificate needs an https:// tsa_url",
            ))
        }
        _ => {
            return Err(invalid(
                &key("tsa_client_cert"),
                "tsa_client_cert and tsa_client_key go together",
            ))
        }
    };
    Ok(Some(crate::log::TsaSettings {
        url: l.tsa_url.clone(),
        timeout,
        ca_file: l.tsa_ca_file.clone(),
        policy: l.tsa_policy.clone(),
        basic_auth,
        client_cert,
        tls_ca_file: l.tsa_tls_ca_file.clone(),
    }))
}

/// Every key of the document with its position, to put a line and a dotted key on errors.
struct KeyIndex<'a> {
    text: &'a str,
    keys: Vec<Located>,
}

impl<'a> KeyIndex<'a> {
    fn new(text: &'a str, document: &DeTable<'_>) -> Self {
        fn walk(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Located>) {
            for (key, value) in table.iter() {
                let path = if prefix.is_empty() {
                    key.get_ref().to_string()
                } else {
                    format!("{prefix}.{}", key.get_ref())
                };
                out.push(Located {
                    path: path.clone(),
                    key: key.span(),
                    value: value.span(),
                    table: matches!(value.get_ref(), DeValue::Table(_)),
                });
                match value.get_ref() {
                    DeValue::Table(t) => walk(t, &path, out),
                    DeValue::Array(items) => {
                        for item in items.iter() {
                            if let DeValue::Table(t) = item.get_ref() {
                                walk(t, &path, out);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut keys = Vec::new();
        walk(document, "", &mut keys);
        KeyIndex { text, keys }
    }

    /// Line of `key`, or of its nearest enclosing table present in the file.
    fn line_of(&self, key: &str) -> Option<usize> {
        let mut path = key;
        loop {
            if let Some(k) = self.keys.iter().find(|k| k.path == path) {
                return Some(line_at(self.text, k.key.start));
            }
            path = path.rsplit_once('.')?.0;
        }
    }

    fn hit(&self, span: &Range<usize>) -> Hit<'_> {
        if let Some(k) = self.keys.iter().find(|k| k.key == *span) {
            return Hit::Key(k);
        }
        if let Some(k) = self.keys.iter().find(|k| k.value == *span) {
            return Hit::Value(k);
        }
        if span.is_empty() {
            return Hit::Root;
        }
        self.keys
            .iter()
            .filter(|k| k.value.start <= span.start && span.end <= k.value.end)
            .min_by_key(|k| k.value.len())
            .map_or(Hit::Root, Hit::Value)
    }

    /// A serde error as `line N: key "a.b": message`. serde names the key for unknown and
    /// missing fields (reported on the key, or on the enclosing table); other errors are
    /// reported on the offending value.
    fn serde_error(&self, file: &str, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let hit = span.as_ref().map_or(Hit::Root, |s| self.hit(s));
        // The table whose field serde names (missing and unknown fields inside a table that
        // serde only saw as a whole: its header, or the document).
        let table = match hit {
            Hit::Key(k) | Hit::Value(k) if k.table => k.path.as_str(),
            _ => "",
        };
        let join = |table: &str, field: &str| {
            if table.is_empty() {
                field.to_string()
            } else {
                format!("{table}.{field}")
            }
        };
        let raw = e.message();
        let (key, message) = if let Some((field, rest)) = named_field(raw, "unknown field `") {
            let key = match hit {
                Hit::Key(k) => k.path.clone(),
                _ => join(table, field),
            };
            let detail = if rest.starts_with(", expected") {
                ""
            } else {
                rest
            };
            (Some(key), format!("unknown key{}", quoted(detail)))
        } else if let Some((field, _)) = named_field(raw, "missing field `") {
            let key = join(table, field);
            (Some(key), "missing required key".to_string())
        } else {
            let key = match hit {
                Hit::Key(k) | Hit::Value(k) => Some(k.path.clone()),
                Hit::Root => None,
            };
            (key, quoted(raw))
        };
        let line = key
            .as_deref()
            .and_then(|k| self.keys.iter().find(|l| l.path == k))
            .map(|l| line_at(self.text, l.key.start))
            .or_else(|| span.map(|s| line_at(self.text, s.start)));
        ConfigError {
            file: file.to_string(),
            line,
            key,
            message,
        }
    }
}

/// For `prefix` = "unknown field `": the field name and what follows it.
fn named_field<'m>(message: &'m str, prefix: &str) -> Option<(&'m str, &'m str)> {
    message.strip_prefix(prefix)?.split_once('`')
}

/// serde quotes with backticks; our messages quote values with double quotes.
fn quoted(message: &str) -> String {
    message.replace('`', "\"")
}

/// What `pec serve` runs (`[serve]`): by default every role in one process. A host may
/// also run one process per role (each with its own `roles`), e.g. to give each its own
/// memory and CPU limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// The roles served: any of `access` (the milter), `filter` (the after-queue content
    /// filter, reception point) and `delivery` (the LMTP proxy), at least one.
    pub roles: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            roles: vec!["access".into(), "filter".into(), "delivery".into()],
        }
    }
}

/// The roles `serve.roles` enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnabledRoles {
    pub access: bool,
    pub filter: bool,
    pub delivery: bool,
}

impl ServeConfig {
    /// The enabled roles; an unknown or repeated name, or none at all, is an error.
    pub fn enabled(&self) -> Result<EnabledRoles, InvalidValue> {
        let mut on = EnabledRoles {
            access: false,
            filter: false,
            delivery: false,
        };
        for role in &self.roles {
            let slot = match role.as_str() {
                "access" => &mut on.access,
                "filter" => &mut on.filter,
                "delivery" => &mut on.delivery,
                other => {
                    return Err(invalid(
                        "serve.roles",
                        format!("unknown role \"{other}\": use access, filter or delivery"),
                    ))
                }
            };
            if *slot {
                return Err(invalid(
                    "serve.roles",
                    format!("role \"{role}\" given twice"),
                ));
            }
            *slot = true;
        }
        if !(on.access || on.filter || on.delivery) {
            return Err(invalid("serve.roles", "no role: name at least one"));
        }
        Ok(on)
    }
}
