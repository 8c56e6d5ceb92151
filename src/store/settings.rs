// SPDX-License-Identifier: GPL-3.0-or-later
//! The `[store]` section of `pec.toml`: which backend holds the state and how to reach it
//! (parsed by [`crate::config`], which re-exports these types; the store needs nothing else
//! of the configuration).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// `sqlite` (one host, the default) or `postgres` (several nodes on one database).
    #[serde(default)]
    pub backend: StoreBackend,
    /// PostgreSQL connection URL (`postgres://USER:PASSWORD@HOST:PORT/DB`), with
    /// `backend = "postgres"`.
    #[serde(default)]
    pub url: Option<String>,
    /// At most this many PostgreSQL connections per process.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// TLS to PostgreSQL, named as libpq's `sslmode`: `disable` (the default), `require`
    /// (encrypted, the server not authenticated), `verify-ca` (its certificate signed by
    /// `ca_file`) or `verify-full` (and issued for the host of `url`).
    #[serde(default)]
    pub tls: StoreTls,
    /// The CA certificates (PEM) that sign the PostgreSQL server's certificate, for
    /// `tls = "verify-ca"` or `"verify-full"` (libpq's `sslrootcert`); unset: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM, the first one pec's, any further ones its chain) shown
    /// to PostgreSQL when TLS is on (libpq's `sslcert`), for a server that authenticates
    /// clients by certificate (`pg_hba.conf` `cert` or `clientcert=verify-full`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of `cert_file` (libpq's `sslkey`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `store.tls`: whether and how the connections to PostgreSQL use TLS.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreTls {
    #[default]
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

impl StoreTls {
    /// The name in the configuration (libpq's `sslmode` value).
    pub fn as_str(self) -> &'static str {
        match self {
            StoreTls::Disable => "disable",
            StoreTls::Require => "require",
            StoreTls::VerifyCa => "verify-ca",
            StoreTls::VerifyFull => "verify-full",
        }
    }
}

/// Which store implementation holds the state.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
}

fn default_store_path() -> PathBuf {
    PathBuf::from("/var/lib/pec/pec.db")
}

fn default_pool_size() -> usize {
    16
}
