// SPDX-License-Identifier: GPL-3.0-or-later
//! TLS to PostgreSQL (`[store] tls` and `ca_file`), with libpq's `sslmode` meanings:
//!
//! - `disable`: no TLS;
//! - `require`: TLS or no connection, the server's certificate not checked (encrypted, but
//!   anyone on the path can stand in for the server);
//! - `verify-ca`: and the certificate chains to `ca_file` (unset: the system's CAs);
//! - `verify-full`: and it was issued for the host the URL names (DNS name or IP address).
//!
//! With `ca_file` only its certificates are trusted, as libpq trusts only `sslrootcert`.
//!
//! With `cert_file` and `key_file` (libpq's `sslcert` and `sslkey`), in every mode with
//! TLS, pec shows that client certificate, for a server whose `pg_hba.conf` authenticates
//! by certificate (`hostssl … cert`, or `clientcert=verify-full`). Both files are read when
//! the store is opened; an unreadable file, one without PEM, or a key that is not the
//! certificate's is an error that names the file.

use std::path::PathBuf;

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;

use crate::store::settings::{StoreConfig, StoreTls};

/// How the store's connections use TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    pub mode: StoreTls,
    /// The only CAs trusted for the server's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM; further certificates after the first are its chain).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
}

impl PgTls {
    /// `store.tls`, `store.ca_file`, `store.cert_file` and `store.key_file`.
    pub fn from_config(config: &StoreConfig) -> PgTls {
        PgTls {
            mode: config.tls,
            ca_file: config.ca_file.clone(),
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
        }
    }

    /// What tokio-postgres is told: no TLS, or TLS required (never "prefer": a server
    /// without TLS must not silently get the connection).
    pub(super) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            StoreTls::Disable => SslMode::Disable,
            StoreTls::Require | StoreTls::VerifyCa | StoreTls::VerifyFull => SslMode::Require,
        }
    }

    /// The TLS settings, for messages: `tls = "verify-full", ca_file "/etc/pec/pg-ca.pem",
    /// cert_file "/etc/pec/pg-client.pem"`.
    pub fn describe(&self) -> String {
        let mode = format!("tls = \"{}\"", self.mode.as_str());
        let mut out = match (&self.ca_file, self.mode) {
            (Some(ca), _) => format!("{mode}, ca_file \"{}\"", ca.display()),
            (None, StoreTls::VerifyCa | StoreTls::VerifyFull) => {
                format!("{mode}, the system's CAs")
            }
            (None, _) => mode,
        };
        if let Some(cert) = &self.cert_file {
            out.push_str(&format!(", cert_file \"{}\"", cert.display()));
        }
        out
    }

    /// The OpenSSL connector for these settings (TLS 1.2 at least).
    pub(super) fn connector(&self) -> Result<MakeTlsConnector, String> {
        let tls = |e: openssl::error::ErrorStack| format!("tls: {e}");
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(tls)?;
        match self.mode {
            StoreTls::Disable | StoreTls::Require => builder.set_verify(SslVerifyMode::NONE),
            StoreTls::VerifyCa | StoreTls::VerifyFull => {
                builder.set_verify(SslVerifyMode::PEER);
                if let Some(path) = &self.ca_file {
                    let fail = |m: String| format!("tls: ca_file \"{}\": {m}", path.display());
                    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
                    let certs = X509::stack_from_pem(&pem).map_err(|e| fail(e.to_string()))?;
                    if certs.is_empty() {
                        return Err(fail("no PEM certificate in it".into()));
                    }
                    let mut store = X509StoreBuilder::new().map_err(tls)?;
                    for cert in certs {
                        store.add_cert(cert).map_err(|e| fail(e.to_string()))?;
                    }
                    builder.set_cert_store(store.build());
                }
            }
        }
        if self.mode != StoreTls::Disable {
            self.client_certificate(&mut builder)?;
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        if self.mode != StoreTls::VerifyFull {
            connector.set_callback(|ssl, _| {
                ssl.set_verify_hostname(false);
                Ok(())
            });
        }
        Ok(connector)
    }

    /// Loads `cert_file` and `key_file` into `builder`, when set.
    fn client_certificate(&self, builder: &mut SslConnectorBuilder) -> Result<(), String> {
        let (cert_path, key_path) = match (&self.cert_file, &self.key_file) {
            (None, None) => return Ok(()),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => return Err("tls: cert_file set without key_file".into()),
            (None, Some(_)) => return Err("tls: key_file set without cert_file".into()),
        };
        let cert_fail = |m: String| format!("tls: cert_file \"{}\": {m}", cert_path.display());
        let key_fail = |m: String| format!("tls: key_file \"{}\": {m}", key_path.display());
        let pem = std::fs::read(cert_path).map_err(|e| cert_fail(e.to_string()))?;
        let mut certs = X509::stack_from_pem(&pem)
            .map_err(|e| cert_fail(e.to_string()))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| cert_fail("no PEM certificate in it".into()))?;
        builder
            .set_certificate(&leaf)
            .map_err(|e| cert_fail(e.to_string()))?;
        for extra in certs {
            builder
                .add_extra_chain_cert(extra)
                .map_err(|e| cert_fail(e.to_string()))?;
        }
        let pem = std::fs::read(key_path).map_err(|e| key_fail(e.to_string()))?;
        let key = PKey::private_key_from_pem(&pem)
            .map_err(|_| key_fail("no PEM private key in it (or it is encrypted)".into()))?;
        let mismatch = |e: openssl::error::ErrorStack| {
            key_fail(format!(
                "not the key of cert_file \"{}\" ({e})",
                cert_path.display()
            ))
        };
        builder.set_private_key(&key).map_err(mismatch)?;
        builder.check_private_key().map_err(mismatch)
    }
}
