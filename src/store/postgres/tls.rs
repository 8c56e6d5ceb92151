//! TLS to PostgreSQL (`[store] tls` and `ca_file`), with libpq's `sslmode` meanings:
//!
//! - `disable`: no TLS;
//! - `require`: TLS or no connection, the server's certificate not checked (encrypted, but
//!   anyone on the path can stand in for the server);
//! - `verify-ca`: and the certificate chains to `ca_file` (unset: the system's CAs);
//! - `verify-full`: and it was issued for the host the URL names (DNS name or IP address).
//!
//! With `ca_file` only its certificates are trusted, as libpq trusts only `sslrootcert`.

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;

use crate::config::{StoreConfig, StoreTls};

/// How the store's connections use TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    pub mode: StoreTls,
    /// The only CAs trusted for the server's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
}

impl PgTls {
    /// `store.tls` and `store.ca_file`.
    pub fn from_config(config: &StoreConfig) -> PgTls {
        PgTls {
            mode: config.tls,
            ca_file: config.ca_file.clone(),
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

    /// The TLS settings, for messages: `tls = "verify-full", ca_file "/etc/pec/pg-ca.pem"`.
    pub fn describe(&self) -> String {
        let mode = format!("tls = \"{}\"", self.mode.as_str());
        match (&self.ca_file, self.mode) {
            (Some(ca), _) => format!("{mode}, ca_file \"{}\"", ca.display()),
            (None, StoreTls::VerifyCa | StoreTls::VerifyFull) => {
                format!("{mode}, the system's CAs")
            }
            (None, _) => mode,
        }
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
        let mut connector = MakeTlsConnector::new(builder.build());
        if self.mode != StoreTls::VerifyFull {
            connector.set_callback(|ssl, _| {
                ssl.set_verify_hostname(false);
                Ok(())
            });
        }
        Ok(connector)
    }
}
