// SPDX-License-Identifier: GPL-3.0-or-later
//! PostgreSQL backend of the store: several `pec` nodes share one database. It supplies
//! the connections and transactions the shared query layer ([`super::sql`]) runs on, and
//! the schema and its migrations.
//!
//! The trait is synchronous and its callers run inside tokio tasks (or in
//! `spawn_blocking`), where blocking on another future of the caller's runtime is not
//! allowed. So the store owns a small runtime of its own: the connections (a deadpool pool
//! of tokio-postgres clients) are made and driven there, and a call takes one from the pool
//! on that runtime, then waits on its own thread for the answers of its statements, which
//! the connection's task on the store's runtime delivers.
//!
//! Once across nodes:
//! - every transaction that appends to the legal log first locks the chain-head row
//!   (`SELECT … FOR UPDATE`), so the appends of all nodes form one chain, each record
//!   chained to the one committed before it;
//! - the exactly-once claims are decided by a key or a row lock inside the transaction
//!   (delivery notices: `INSERT … ON CONFLICT DO NOTHING`; acceptance receipts and seals: a
//!   conditional `UPDATE`/`INSERT`; timer notices: `SELECT … FOR UPDATE SKIP LOCKED`);
//! - the purge locks the chain head too; the index refresh runs under a lease
//!   ([`super::LogStore::try_lease`]).
//!
//! Transactions run at READ COMMITTED: every conditional write re-checks its condition on
//! the row it locked.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::sql::{self, Arg, Backend, Cell, Conn, DbError, Dialect, Row};
use super::StoreError;

mod schema;
mod tls;

pub use tls::PgTls;

/// Prometheus histogram (seconds) of the time a store call waited for a pooled connection
/// (`store.pool_size` of them per process): its sum over its count is the mean wait, and a
/// sum that grows with the load says the pool, not the database, is what the calls queue on.
/// Described on the endpoint by [`crate::metrics`].
pub const POOL_WAIT: &str = "pec_store_pool_wait_seconds";

/// Advisory-lock key of the migrations (one migrator at a time across nodes).
const MIGRATION_LOCK: i64 = 0x0070_6563_5f6d_6967; // "pec_mig"

/// The PostgreSQL store. Open one per process; every node of a provider opens the same
/// database.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pub(super) pool: Pool,
    shown: String,
    tls: PgTls,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    /// The store may be dropped inside an async context, where a runtime cannot be shut
    /// down by blocking: let it go in the background.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The URL without its password, for messages.
fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => with_causes(e),
    }
}

/// `e` and the causes its own text leaves out (a TLS handshake's OpenSSL error and
/// certificate check).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

/// Maps a tokio-postgres error to [`StoreError::Database`] with what we were doing.
pub(super) fn pg(context: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Database(format!("{context}: {}", pg_message(&e)))
}

impl PgStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?…]`, or the
    /// key=value form) with at most `pool_size` connections, without TLS, and brings the
    /// schema up to date.
    pub fn open(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::open_tls(url, pool_size, &PgTls::default())
    }

    /// [`PgStore::open`] with the store's configuration (`url`, `pool_size`, `tls`,
    /// `ca_file`).
    pub fn open_config(config: &crate::store::settings::StoreConfig) -> Result<Self, StoreError> {
        let url = config.url.as_deref().ok_or_else(|| {
            StoreError::Database("store.url is required with backend \"postgres\"".into())
        })?;
        Self::open_tls(url, config.pool_size, &PgTls::from_config(config))
    }

    /// [`PgStore::open`] with TLS as `tls` says. A connection that fails names the TLS
    /// settings, so that a refused handshake reads as a TLS problem.
    pub fn open_tls(url: &str, pool_size: usize, tls: &PgTls) -> Result<Self, StoreError> {
        let shown = shown_url(url);
        let settings = tls.describe();
        let fail = |m: String| StoreError::Database(format!("open \"{shown}\" ({settings}): {m}"));
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| fail(format!("{e}")))?;
        config.ssl_mode(tls.ssl_mode());
        let connector = tls.connector().map_err(fail)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pec-store-pg")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| fail(format!("pool: {e}")))?;
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            shown: shown.clone(),
            tls: tls.clone(),
        };
        let pool = store.pool.clone();
        store
            .call(async move { migrate(&pool).await })
            .map_err(|e| match e {
                StoreError::Database(m) => fail(m),
                other => other,
            })?;
        Ok(store)
    }

    /// Runs `fut` on the store's runtime and waits for its result.
    pub(super) fn call<T, F>(&self, fut: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let Some(rt) = &self.runtime else {
            return Err(StoreError::Database("postgres store closed".into()));
        };
        let (tx, rx) = mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Database("postgres store: the request was dropped".into()))?
    }

    /// The schema version of the database (the number of migrations applied).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v: i64 = self.read(|c| {
            sql::one(
                c,
                "read schema version",
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                &[],
            )?
            .get(0)
        })?;
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// The TLS settings the store connects with.
    pub fn tls(&self) -> &PgTls {
        &self.tls
    }

    /// What the server says of this connection's TLS (`pg_stat_ssl`): the protocol
    /// version and cipher, or `None` for a connection in clear.
    pub fn session_tls(&self) -> Result<Option<(String, String)>, StoreError> {
        let row = self.read(|c| {
            sql::one(
                c,
                "read pg_stat_ssl",
                "SELECT ssl, COALESCE(version, ''), COALESCE(cipher, '') \
                 FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
        })?;
        let ssl: bool = row.get(0)?;
        Ok(if ssl {
            Some((row.get(1)?, row.get(2)?))
        } else {
            None
        })
    }

    /// A pooled connection (made on the store's runtime, which runs its I/O).
    fn client(&self) -> Result<Object, StoreError> {
        let pool = self.pool.clone();
        self.call(async move { connect(&pool).await })
    }

    /// The number of PostgreSQL migrations this program knows (equal to SQLite's).
    pub fn known_version() -> u32 {
        schema::MIGRATIONS.len() as u32
    }
}

pub(super) async fn connect(pool: &Pool) -> Result<Object, StoreError> {
    let start = std::time::Instant::now();
    let got = pool.get().await;
    metrics::histogram!(POOL_WAIT).record(start.elapsed().as_secs_f64());
    got.map_err(|e| {
        let m = match &e {
            deadpool_postgres::PoolError::Backend(e) => pg_message(e),
            other => with_causes(other),
        };
        StoreError::Database(format!("connect: {m}"))
    })
}

/// Applies the migrations the database lacks, each in its own transaction under an
/// advisory lock (so that nodes starting at once do not both apply one).
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = connect(pool).await?;
    let known = schema::MIGRATIONS.len();
    for (index, sql) in schema::MIGRATIONS.iter().enumerate() {
        let version = (index + 1) as i64;
        let tx = client.transaction().await.map_err(pg("migrate: begin"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("migrate: lock"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version    BIGINT PRIMARY KEY,
                 applied_at BIGINT NOT NULL
             );",
        )
        .await
        .map_err(pg("migrate: create schema_version"))?;
        let current: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await
            .map_err(pg("migrate: read schema version"))?
            .get(0);
        if current as usize > known {
            return Err(StoreError::Database(format!(
                "database schema version {current} is newer than this program's ({known})"
            )));
        }
        if current >= version {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(pg(&format!("migrate: apply version {version}")))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at)
             VALUES ($1, extract(epoch FROM now())::bigint)",
            &[&version],
        )
        .await
        .map_err(pg(&format!("migrate: record version {version}")))?;
        tx.commit()
            .await
            .map_err(pg(&format!("migrate: commit version {version}")))?;
    }
    Ok(())
}

impl Backend for PgStore {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn read<T>(&self, f: impl FnOnce(&dyn Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&Pg(&self.client()?))
    }

    /// One transaction at READ COMMITTED; the shared layer's writes take their row locks.
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client()?;
        let tx = block_on(client.transaction()).map_err(pg(&format!("{what}: begin")))?;
        let value = f(&Pg(&tx))?;
        block_on(tx.commit()).map_err(pg(&format!("{what}: commit")))?;
        Ok(value)
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

/// Waits for `fut` on the calling thread. The store's futures only exchange messages with
/// the connection tasks, which run on the store's runtime: they need no runtime of their
/// own, and the caller blocks as it would on any store call.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(value) = fut.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

/// A pooled connection or a transaction on one, as a [`Conn`].
struct Pg<'a, C>(&'a C);

fn pg_error(e: tokio_postgres::Error) -> DbError {
    DbError {
        conflict: e.code() == Some(&SqlState::UNIQUE_VIOLATION),
        message: pg_message(&e),
    }
}

fn pg_params<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            Arg::Int(v) => v as &(dyn ToSql + Sync),
            Arg::Text(v) => v as &(dyn ToSql + Sync),
            Arg::Blob(v) => v as &(dyn ToSql + Sync),
        })
        .collect()
}

/// Column `i` of `row` as a [`Cell`], by its PostgreSQL type.
fn pg_cell(row: &tokio_postgres::Row, i: usize) -> Result<Cell, DbError> {
    let ty = row.columns()[i].type_();
    let value = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|v| Cell::Int(v.into())))
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i).map(|v| v.map(Cell::Bool))
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)
            .map(|v| v.map(Cell::Blob))
    } else {
        row.try_get::<_, Option<String>>(i)
            .map(|v| v.map(Cell::Text))
    };
    value.map(|v| v.unwrap_or(Cell::Null)).map_err(pg_error)
}

impl<C: GenericClient> Conn for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        block_on(async {
            let stmt = self.0.prepare_cached(sql).await?;
            self.0.execute(&stmt, &pg_params(args)).await
        })
        .map_err(pg_error)
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError> {
        let rows = block_on(async {
            let stmt = self.0.prepare_cached(sql).await?;
            self.0.query(&stmt, &pg_params(args)).await
        })
        .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| pg_cell(r, i))
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect()
    }

    fn insert_blob(&self, table: &str, _key: &str, _data: &[u8]) -> Result<(), DbError> {
        Err(DbError {
            message: format!("insert into {table}: no blob interface on PostgreSQL"),
            conflict: false,
        })
    }
}
