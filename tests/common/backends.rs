// SPDX-License-Identifier: GPL-3.0-or-later
//! The store backends the contract tests run on: SQLite in a temporary directory, and
//! PostgreSQL when `PEC_TEST_PG_URL` names a server (scripts/test.sh starts one). Each
//! PostgreSQL store gets a schema of its own, so tests run side by side on one database.
//!
//! With `PEC_TEST_PG_TLS` (`require`, `verify-ca` or `verify-full`; and
//! `PEC_TEST_PG_TLS_CA`, the CA file) every PostgreSQL connection uses TLS that way
//! (tests/e2e/store_tls.sh runs the contract so against a server that accepts TLS only).
//!
//! Include with `#[path = "common/backends.rs"] mod backends;` and generate one test per
//! backend with `both!(name);` for a `fn name(b: &Backend)`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pec::config::StoreTls;
use pec::store::postgres::PgTls;
use pec::store::{LogStore, PgStore, SqliteStore};

/// One fresh store, and the means to open more connections to it (another process).
pub struct Backend {
    pub name: &'static str,
    pub store: Arc<dyn LogStore>,
    open: Box<dyn Fn() -> Arc<dyn LogStore> + Send + Sync>,
    /// SQLite: the database file.
    pub path: Option<PathBuf>,
    /// PostgreSQL: the URL of this store's schema.
    pub url: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// Another, independent store on the same data (as another process would open it).
    pub fn reopen(&self) -> Arc<dyn LogStore> {
        (self.open)()
    }

    pub fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pec.db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let p = path.clone();
        Backend {
            name: "sqlite",
            store,
            open: Box::new(move || Arc::new(SqliteStore::open(&p).unwrap())),
            path: Some(path),
            url: None,
            _dir: Some(dir),
        }
    }

    /// A PostgreSQL store in a new schema, or `None` (and a loud SKIPPED) without
    /// `PEC_TEST_PG_URL`.
    pub fn postgres(test: &str) -> Option<Backend> {
        let Some(base) = std::env::var("PEC_TEST_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!(
                "SKIPPED {test} on PostgreSQL: PEC_TEST_PG_URL is not set \
                 (scripts/test.sh starts a server and sets it)"
            );
            return None;
        };
        let url = fresh_schema(&base, test);
        let tls = test_tls();
        let store = Arc::new(PgStore::open_tls(&url, 8, &tls).unwrap());
        let u = url.clone();
        Some(Backend {
            name: "postgres",
            store,
            open: Box::new(move || Arc::new(PgStore::open_tls(&u, 8, &tls).unwrap())),
            path: None,
            url: Some(url),
            _dir: None,
        })
    }
}

/// The TLS the tests connect with: `PEC_TEST_PG_TLS` and `PEC_TEST_PG_TLS_CA`.
pub fn test_tls() -> PgTls {
    let mode = match std::env::var("PEC_TEST_PG_TLS").as_deref() {
        Ok("require") => StoreTls::Require,
        Ok("verify-ca") => StoreTls::VerifyCa,
        Ok("verify-full") => StoreTls::VerifyFull,
        Ok("") | Ok("disable") | Err(_) => StoreTls::Disable,
        Ok(other) => panic!("PEC_TEST_PG_TLS: unknown mode {other:?}"),
    };
    PgTls {
        mode,
        ca_file: std::env::var_os("PEC_TEST_PG_TLS_CA").map(PathBuf::from),
        ..PgTls::default()
    }
}

/// Creates (anew) a schema for `test` and returns `base` with it as the search path.
pub fn fresh_schema(base: &str, test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "t_{}_{}_{}",
        test.chars()
            .map(|c| if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            })
            .take(40)
            .collect::<String>(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    // On a thread of its own: the caller may be inside a runtime (tokio tests).
    let (base_owned, schema_owned) = (base.to_string(), schema.clone());
    std::thread::spawn(move || create_schema(&base_owned, &schema_owned))
        .join()
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

fn create_schema(base: &str, schema: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = connect_raw(base)
            .await
            .unwrap_or_else(|e| panic!("PEC_TEST_PG_URL {base}: {e}"));
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
            ))
            .await
            .unwrap();
    });
}

/// A plain tokio-postgres client on `url` (call inside a runtime), over TLS when
/// `PEC_TEST_PG_TLS` asks for it (the server may accept nothing else; its certificate is
/// not checked here: the store's own connections check it).
pub async fn connect_raw(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    if test_tls().mode == StoreTls::Disable {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        return Ok(client);
    }
    let mut ssl = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    ssl.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let mut tls = postgres_openssl::MakeTlsConnector::new(ssl.build());
    tls.set_callback(|c, _| {
        c.set_verify_hostname(false);
        Ok(())
    });
    let mut config: tokio_postgres::Config = url.parse()?;
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The `[store]` lines of [`test_tls`], for a configuration file.
pub fn test_tls_toml() -> String {
    let t = test_tls();
    let mut lines = format!("tls = \"{}\"\n", t.mode.as_str());
    if let Some(ca) = &t.ca_file {
        lines.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
    }
    lines
}

/// `both!(name)`: tests `name::sqlite` and `name::postgres` calling `name(&Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::backends::Backend::sqlite());
            }
            #[test]
            fn postgres() {
                if let Some(b) = super::backends::Backend::postgres(stringify!($name)) {
                    super::$name(&b);
                }
            }
        }
    };
}
