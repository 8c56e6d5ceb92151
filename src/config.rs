//! Configuration: one TOML file (`/etc/pec/pec.toml`), checked at start. Unknown keys are
//! errors; every error names the file, the line and the key (style rule 4).

use std::path::PathBuf;

use serde::Deserialize;

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

/// The signing key (spec §2.1).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
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
        /// `sha256` (default) or `sha1`.
        #[serde(default = "default_digest")]
        digest: String,
        /// Concurrent PKCS#11 sessions.
        #[serde(default = "default_sessions")]
        sessions: usize,
    },
    /// Key in a PEM file: development only.
    Pem {
        key_file: PathBuf,
        cert_file: PathBuf,
        #[serde(default)]
        chain_file: Option<PathBuf>,
        #[serde(default = "default_digest")]
        digest: String,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file.
    pub path: PathBuf,
}

/// The provider index (spec §7). For now a local LDIF file in the shape of the national
/// index; the LDAP sync comes with the index work.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    pub ldif: PathBuf,
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
    /// Attachment extensions refused (lower case, without the dot).
    pub blocked_extensions: Vec<String>,
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
            blocked_extensions: Vec::new(),
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
