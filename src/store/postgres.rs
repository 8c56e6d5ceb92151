// SPDX-License-Identifier: GPL-3.0-or-later
//! PostgreSQL implementation of [`super::Store`]: several `pec` nodes share one database.
//!
//! The trait is synchronous and its callers run inside tokio tasks (or in
//! `spawn_blocking`), where blocking on another future of the caller's runtime is not
//! allowed. So the store owns a small runtime of its own: each call sends its future to it
//! and waits for the answer on a channel. The connections (a deadpool pool of
//! tokio-postgres clients) live on that runtime.
//!
//! Once across nodes:
//! - every transaction that appends to the legal log first locks the chain-head row
//!   (`SELECT … FOR UPDATE`), so the appends of all nodes form one chain, each record
//!   chained to the one committed before it;
//! - the exactly-once claims are decided by a key or a row lock inside the transaction
//!   (delivery notices: `INSERT … ON CONFLICT DO NOTHING`; acceptance receipts and seals: a
//!   conditional `UPDATE`/`INSERT`; timer notices: `SELECT … FOR UPDATE SKIP LOCKED`);
//! - the purge locks the chain head too; the index refresh runs under a lease
//!   ([`LogStore::try_lease`]).
//!
//! Transactions run at READ COMMITTED: every conditional write re-checks its condition on
//! the row it locked.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::chain::{self, ChainRecord, Verifier, COLUMNS};
use super::codec::{
    decode_cert, decode_period, decode_policy, forward_from, parse_state, period_columns,
    policy_columns, quarantine_expiry, state_str, timeout_columns, timeout_state,
};
use super::ledger::LogStore;
use super::report::{Export, Health, LastSeal, PurgeReport, SealRecord, VerifyReport};
use super::{
    Accepted, ArrivalNotice, DueNotice, LogEvent, LogQuery, LogRequest, LoggedEvent, MailboxPolicy,
    Refused, Store, StoreError, StoredIndex, TimeoutClaim, Tracking, TrackingState,
};
use crate::message::build::Certification;
use crate::message::kind::RecipientType;
use crate::message::time::Instant;

mod outbox;
mod schema;
mod tls;

pub use tls::PgTls;

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

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
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
    pub fn open_config(config: &crate::config::StoreConfig) -> Result<Self, StoreError> {
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

    /// Runs `f` in one transaction on a pooled connection, committed when `f` returns
    /// `Ok` (rolled back otherwise).
    fn write<T, F>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a Transaction<'a>,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>,
            > + Send
            + 'static,
    {
        let pool = self.pool.clone();
        self.call(async move {
            let mut client = connect(&pool).await?;
            let tx = client
                .transaction()
                .await
                .map_err(pg(&format!("{what}: begin")))?;
            let value = f(&tx).await?;
            tx.commit().await.map_err(pg(&format!("{what}: commit")))?;
            Ok(value)
        })
    }

    /// Runs a read on a pooled connection.
    fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a Object,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>,
            > + Send
            + 'static,
    {
        let pool = self.pool.clone();
        self.call(async move {
            let client = connect(&pool).await?;
            f(&client).await
        })
    }

    /// The schema version of the database (the number of migrations applied).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.read(|c| {
            Box::pin(async move {
                let v: i64 = c
                    .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
                    .await
                    .map_err(pg("read schema version"))?
                    .get(0);
                Ok(u32::try_from(v).unwrap_or(0))
            })
        })
    }

    /// The TLS settings the store connects with.
    pub fn tls(&self) -> &PgTls {
        &self.tls
    }

    /// What the server says of this connection's TLS (`pg_stat_ssl`): the protocol
    /// version and cipher, or `None` for a connection in clear.
    pub fn session_tls(&self) -> Result<Option<(String, String)>, StoreError> {
        self.read(|c| {
            Box::pin(async move {
                let row = c
                    .query_one(
                        "SELECT ssl, COALESCE(version, ''), COALESCE(cipher, '') \
                         FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )
                    .await
                    .map_err(pg("read pg_stat_ssl"))?;
                let ssl: bool = row.get(0);
                Ok(ssl.then(|| (row.get(1), row.get(2))))
            })
        })
    }

    /// The number of PostgreSQL migrations this program knows (equal to SQLite's).
    pub fn known_version() -> u32 {
        schema::MIGRATIONS.len() as u32
    }
}

pub(super) async fn connect(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| {
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

/// One `events` row (selected with [`COLUMNS`]) as a chain record and its stored hash.
fn chain_row(r: &Row) -> (ChainRecord, Option<Vec<u8>>) {
    (
        ChainRecord {
            id: r.get(0),
            pec_id: r.get(1),
            at: r.get(2),
            kind: r.get(3),
            receipt_type: r.get(4),
            sender: r.get(5),
            recipients: r.get(6),
            subject: r.get(7),
            related_ids: r.get(8),
            provider: r.get(9),
            queue_id: r.get(10),
            outcome: r.get(11),
            reason: r.get(12),
            prev_hash: r.get::<_, Option<Vec<u8>>>(13).unwrap_or_default(),
        },
        r.get(14),
    )
}

/// Locks the chain head and returns it: `(id, hash)` of the last record appended.
async fn lock_head(tx: &Transaction<'_>) -> Result<(i64, Vec<u8>), StoreError> {
    let row = tx
        .query_one(
            "SELECT last_id, last_hash FROM chain_head WHERE \"only\" = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(pg("lock the chain head"))?;
    Ok((row.get(0), row.get(1)))
}

async fn set_head(tx: &Transaction<'_>, (id, hash): &(i64, Vec<u8>)) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE chain_head SET last_id = $1, last_hash = $2 WHERE \"only\" = 1",
        &[id, hash],
    )
    .await
    .map_err(pg("move the chain head"))?;
    Ok(())
}

/// Appends `event` after `tail`, returns the new tail. The caller holds the chain head.
async fn append_after(
    tx: &Transaction<'_>,
    event: &LogEvent,
    tail: (i64, Vec<u8>),
) -> Result<(i64, Vec<u8>), StoreError> {
    let record = ChainRecord::next(event, tail)?;
    let hash = record.hash().to_vec();
    let what = format!("log {} event for \"{}\"", record.kind, event.pec_id);
    let insert = tx
        .prepare_cached(
            "INSERT INTO events (id, pec_id, at, kind, receipt_type, sender, recipients, subject,
                                 related_ids, provider, queue_id, outcome, reason, prev_hash,
                                 hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .await
        .map_err(pg(&what))?;
    tx.execute(
        &insert,
        &[
            &record.id,
            &record.pec_id,
            &record.at,
            &record.kind,
            &record.receipt_type,
            &record.sender,
            &record.recipients,
            &record.subject,
            &record.related_ids,
            &record.provider,
            &record.queue_id,
            &record.outcome,
            &record.reason,
            &record.prev_hash,
            &hash,
        ],
    )
    .await
    .map_err(pg(&what))?;
    let side = tx
        .prepare_cached(
            "INSERT INTO event_recipients (address, at, event_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg(&what))?;
    for (address, _) in &event.recipients {
        tx.execute(&side, &[&address.to_lowercase(), &record.at, &record.id])
            .await
            .map_err(pg(&what))?;
    }
    Ok((record.id, hash))
}

/// Moves the tracking row of `recipient` of `pec_id` forward to `state` (see
/// [`Store::update_tracking`]), in the caller's transaction.
async fn tracking_forward(
    tx: &Transaction<'_>,
    pec_id: &str,
    recipient: &str,
    state: TrackingState,
) -> Result<bool, StoreError> {
    let Some(from) = forward_from(state) else {
        return Ok(false);
    };
    let sql = format!(
        "UPDATE tracking SET state = $3
         WHERE pec_id = $1 AND lower(recipient) = lower($2) AND state IN {from}"
    );
    let n = tx
        .execute(&sql, &[&pec_id, &recipient, &state_str(state)])
        .await
        .map_err(pg(&format!(
            "update tracking of \"{recipient}\" for \"{pec_id}\""
        )))?;
    Ok(n > 0)
}

/// Appends one event: locks the chain head, chains, moves the head. In the caller's
/// transaction.
async fn append_event(tx: &Transaction<'_>, event: &LogEvent) -> Result<i64, StoreError> {
    let head = lock_head(tx).await?;
    let tail = append_after(tx, event, head).await?;
    set_head(tx, &tail).await?;
    Ok(tail.0)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store for PgStore {
    fn sender_allowed(&self, login: &str, address: &str) -> Result<bool, StoreError> {
        let (login, address) = (login.to_string(), address.to_ascii_lowercase());
        self.read(move |c| {
            Box::pin(async move {
                let row = c
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM senders WHERE login = $1 AND address = $2),
                                EXISTS (SELECT 1 FROM senders WHERE login = $1)",
                        &[&login, &address],
                    )
                    .await
                    .map_err(pg(&format!("sender check for login \"{login}\"")))?;
                let (mapped, any): (bool, bool) = (row.get(0), row.get(1));
                Ok(mapped || (!any && login.eq_ignore_ascii_case(&address)))
            })
        })
    }

    fn allow_sender(&self, login: &str, address: &str) -> Result<(), StoreError> {
        let (login, address) = (login.to_string(), address.to_ascii_lowercase());
        self.write("allow sender", move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO senders (login, address) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&login, &address],
                )
                .await
                .map_err(pg(&format!(
                    "allow login \"{login}\" to send as \"{address}\""
                )))?;
                Ok(())
            })
        })
    }

    fn record_accepted(&self, accepted: &Accepted) -> Result<(), StoreError> {
        let cert = serde_json::to_string(&accepted.cert)
            .map_err(|e| StoreError::Database(format!("encode certification: {e}")))?;
        let accepted = accepted.clone();
        self.write("record accepted", move |tx| {
            Box::pin(async move {
                let pec_id = &accepted.pec_id;
                // The transport envelope is logged with the acceptance, after queue.
                for d in &accepted.cert.destinatari {
                    if d.tipo != RecipientType::Certificato {
                        continue;
                    }
                    tx.execute(
                        "INSERT INTO tracking (pec_id, recipient, sent_at, state)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[
                            pec_id,
                            &d.address,
                            &accepted.at.unix(),
                            &state_str(TrackingState::Sent),
                        ],
                    )
                    .await
                    .map_err(pg(&format!(
                        "track recipient \"{}\" of \"{pec_id}\"",
                        d.address
                    )))?;
                }
                tx.execute(
                    "INSERT INTO pending_acceptance (pec_id, queue_id, at, login, provider, cert)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        pec_id,
                        &accepted.queue_id,
                        &accepted.at.unix(),
                        &accepted.login,
                        &accepted.provider,
                        &cert,
                    ],
                )
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Database(format!("pec_id \"{pec_id}\" is already recorded"))
                    } else {
                        pg(&format!("record pending acceptance \"{pec_id}\""))(e)
                    }
                })?;
                Ok(())
            })
        })
    }

    fn pending_acceptance(&self, pec_id: &str) -> Result<Option<Accepted>, StoreError> {
        let pec_id = pec_id.to_string();
        self.read(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT seq, queue_id, at, login, provider, cert FROM pending_acceptance
                         WHERE pec_id = $1 AND state = 'pending'",
                        &[&pec_id],
                    )
                    .await
                    .map_err(pg(&format!("read pending acceptance \"{pec_id}\"")))?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let cert = decode_cert(row.get(0), row.get(5))?;
                Ok(Some(Accepted {
                    pec_id,
                    queue_id: row.get(1),
                    at: Instant::from_unix(row.get(2)),
                    cert,
                    login: row.get(3),
                    provider: row.get(4),
                }))
            })
        })
    }

    fn acceptance_emitted(
        &self,
        pec_id: &str,
        receipt_id: &str,
        at: Instant,
    ) -> Result<bool, StoreError> {
        let (pec_id, receipt_id) = (pec_id.to_string(), receipt_id.to_string());
        self.write("acceptance emitted", move |tx| {
            Box::pin(async move {
                // The chain head first, as every appending transaction (one lock order).
                let mut head = lock_head(tx).await?;
                let closed =
                    outbox::close_acceptance(tx, &mut head, &pec_id, &receipt_id, at).await?;
                if closed {
                    set_head(tx, &head).await?;
                }
                Ok(closed)
            })
        })
    }

    fn record_refused(&self, refused: &Refused) -> Result<(), StoreError> {
        let refused = refused.clone();
        self.write("record refused", move |tx| {
            Box::pin(async move {
                let mut head = lock_head(tx).await?;
                outbox::refused(tx, &mut head, &refused).await?;
                set_head(tx, &head).await
            })
        })
    }

    fn record_receipt_received(
        &self,
        event: &LogEvent,
        updates: &[(String, TrackingState)],
    ) -> Result<usize, StoreError> {
        let (event, updates) = (event.clone(), updates.to_vec());
        self.write("record a received receipt", move |tx| {
            Box::pin(async move {
                let mut moved = 0;
                for (recipient, state) in &updates {
                    moved +=
                        usize::from(tracking_forward(tx, &event.pec_id, recipient, *state).await?);
                }
                append_event(tx, &super::outbox::received_record(&event, &updates, moved)).await?;
                Ok(moved)
            })
        })
    }

    fn claim_log_request(
        &self,
        request: &LogRequest,
        limit: u32,
        since: Instant,
        event: &LogEvent,
    ) -> Result<bool, StoreError> {
        let (request, event) = (request.clone(), event.clone());
        self.write("claim a log request", move |tx| {
            Box::pin(async move {
                let owner = request.owner.to_lowercase();
                // Two nodes claiming for one owner at once take turns, so that both cannot
                // pass the count.
                tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&owner])
                    .await
                    .map_err(pg("lock the owner's log requests"))?;
                let recent: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM log_requests WHERE owner = $1 AND at >= $2",
                        &[&owner, &since.unix()],
                    )
                    .await
                    .map_err(pg("count recent log requests"))?
                    .get(0);
                if recent >= i64::from(limit) {
                    append_event(
                        tx,
                        &super::outbox::rate_limited(&event, recent, limit, since),
                    )
                    .await?;
                    return Ok(false);
                }
                let (from_at, to_at, problem) = period_columns(&request.period);
                tx.execute(
                    "INSERT INTO log_requests (id, owner, address, at, from_at, to_at, problem,
                                               subject, queue_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &request.id,
                        &owner,
                        &request.address,
                        &request.at.unix(),
                        &from_at,
                        &to_at,
                        &problem,
                        &request.subject,
                        &request.queue_id,
                    ],
                )
                .await
                .map_err(pg(&format!("record log request \"{}\"", request.id)))?;
                let mut accepted = event.clone();
                accepted.outcome = "accepted".into();
                append_event(tx, &accepted).await?;
                Ok(true)
            })
        })
    }

    fn log_request(&self, id: &str) -> Result<Option<(LogRequest, bool)>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            Box::pin(async move {
                let Some(r) = c
                    .query_opt(
                        "SELECT owner, address, at, from_at, to_at, problem, subject, queue_id,
                                reply_id
                         FROM log_requests WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .map_err(pg(&format!("read log request \"{id}\"")))?
                else {
                    return Ok(None);
                };
                let period = decode_period(&id, (r.get(3), r.get(4), r.get(5)))?;
                let reply_id: Option<String> = r.get(8);
                Ok(Some((
                    LogRequest {
                        id: id.clone(),
                        owner: r.get(0),
                        address: r.get(1),
                        at: Instant::from_unix(r.get(2)),
                        period,
                        subject: r.get(6),
                        queue_id: r.get(7),
                    },
                    reply_id.is_some(),
                )))
            })
        })
    }

    fn log_request_answered(&self, event: &LogEvent) -> Result<bool, StoreError> {
        let event = event.clone();
        self.write("close a log request", move |tx| {
            Box::pin(async move {
                if !outbox::close_log_request(tx, &event).await? {
                    return Ok(false);
                }
                append_event(tx, &event).await?;
                Ok(true)
            })
        })
    }

    fn log(&self, event: &LogEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.write("log", move |tx| {
            Box::pin(async move { append_event(tx, &event).await.map(|_| ()) })
        })
    }

    fn events_for(&self, pec_id: &str) -> Result<Vec<LogEvent>, StoreError> {
        let pec_id = pec_id.to_string();
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!("SELECT {COLUMNS} FROM events WHERE pec_id = $1 ORDER BY at, id"),
                        &[&pec_id],
                    )
                    .await
                    .map_err(pg(&format!("read events of \"{pec_id}\"")))?;
                rows.iter()
                    .map(|r| {
                        let (record, _) = chain_row(r);
                        record.event()
                    })
                    .collect()
            })
        })
    }

    fn tracking_for(&self, pec_id: &str) -> Result<Vec<Tracking>, StoreError> {
        let pec_id = pec_id.to_string();
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT seq, recipient, sent_at, state FROM tracking
                         WHERE pec_id = $1 ORDER BY seq",
                        &[&pec_id],
                    )
                    .await
                    .map_err(pg(&format!("read tracking of \"{pec_id}\"")))?;
                rows.iter()
                    .map(|r| {
                        let state: String = r.get(3);
                        let state = parse_state(&state).ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "tracking row {}: unknown state \"{state}\"",
                                r.get::<_, i64>(0)
                            ))
                        })?;
                        Ok(Tracking {
                            pec_id: pec_id.clone(),
                            recipient: r.get(1),
                            sent_at: Instant::from_unix(r.get(2)),
                            state,
                        })
                    })
                    .collect()
            })
        })
    }

    fn quarantined(&self, pec_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let pec_id = pec_id.to_string();
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT message FROM quarantine WHERE pec_id = $1 ORDER BY id",
                        &[&pec_id],
                    )
                    .await
                    .map_err(pg(&format!("read quarantine of \"{pec_id}\"")))?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })
    }

    fn record_verified(
        &self,
        pec_id: &str,
        recipients: &[String],
        event: &LogEvent,
    ) -> Result<(), StoreError> {
        let (pec_id, recipients, event) = (pec_id.to_string(), recipients.to_vec(), event.clone());
        self.write("record verified", move |tx| {
            Box::pin(async move {
                append_event(tx, &event).await?;
                for r in &recipients {
                    tx.execute(
                        "INSERT INTO verified (pec_id, recipient, at) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&pec_id, &r.to_ascii_lowercase(), &event.at.unix()],
                    )
                    .await
                    .map_err(pg(&format!("record \"{r}\" verified for \"{pec_id}\"")))?;
                }
                Ok(())
            })
        })
    }

    fn is_verified(&self, pec_id: &str, recipient: &str) -> Result<bool, StoreError> {
        let (pec_id, recipient) = (pec_id.to_string(), recipient.to_ascii_lowercase());
        self.read(move |c| {
            Box::pin(async move {
                Ok(c.query_one(
                    "SELECT EXISTS (SELECT 1 FROM verified WHERE pec_id = $1 AND recipient = $2)",
                    &[&pec_id, &recipient],
                )
                .await
                .map_err(pg(&format!("read verified \"{pec_id}\"")))?
                .get(0))
            })
        })
    }

    fn update_tracking(
        &self,
        pec_id: &str,
        recipient: &str,
        state: TrackingState,
    ) -> Result<bool, StoreError> {
        let (pec_id, recipient) = (pec_id.to_string(), recipient.to_string());
        self.write("update tracking", move |tx| {
            Box::pin(async move { tracking_forward(tx, &pec_id, &recipient, state).await })
        })
    }

    fn record_quarantine(&self, event: &LogEvent, message: &[u8]) -> Result<(), StoreError> {
        let pec_id = event.pec_id.clone();
        let (event, message) = (event.clone(), message.to_vec());
        self.write("record quarantine", move |tx| {
            Box::pin(async move {
                // Every writer of the log holds the head: no other one between look and insert.
                let head = lock_head(tx).await?;
                let held: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM quarantine WHERE pec_id = $1 AND message = $2)",
                        &[&pec_id, &message],
                    )
                    .await
                    .map_err(pg(&format!("read quarantine of \"{pec_id}\"")))?
                    .get(0);
                if held {
                    return Ok(());
                }
                let reason = event.reason.as_deref().unwrap_or_default();
                outbox::quarantine(tx, &pec_id, event.at, reason, &message).await?;
                let tail = append_after(tx, &event, head).await?;
                set_head(tx, &tail).await
            })
        })
    }

    fn mailbox_policy(&self, mailbox: &str) -> Result<Option<MailboxPolicy>, StoreError> {
        let mailbox = mailbox.to_string();
        self.read(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT policy, forward_to FROM mailbox_policy WHERE mailbox = $1",
                        &[&mailbox.to_ascii_lowercase()],
                    )
                    .await
                    .map_err(pg(&format!("read policy of \"{mailbox}\"")))?;
                row.map(|r| decode_policy(&mailbox, r.get(0), r.get(1)))
                    .transpose()
            })
        })
    }

    fn set_mailbox_policy(&self, mailbox: &str, policy: &MailboxPolicy) -> Result<(), StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let (label, forward_to) = policy_columns(policy);
        self.write("set mailbox policy", move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO mailbox_policy (mailbox, policy, forward_to) VALUES ($1, $2, $3)
                     ON CONFLICT (mailbox) DO UPDATE
                     SET policy = excluded.policy, forward_to = excluded.forward_to",
                    &[&mailbox, &label, &forward_to],
                )
                .await
                .map_err(pg(&format!("set policy of \"{mailbox}\"")))?;
                Ok(())
            })
        })
    }

    fn envelope_certification(&self, pec_id: &str) -> Result<Option<Certification>, StoreError> {
        let pec_id = pec_id.to_string();
        self.read(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT seq, cert FROM pending_acceptance WHERE pec_id = $1",
                        &[&pec_id],
                    )
                    .await
                    .map_err(pg(&format!("read certification of \"{pec_id}\"")))?;
                row.map(|r| decode_cert(r.get(0), r.get(1))).transpose()
            })
        })
    }

    fn delivery_notice(&self, pec_id: &str, recipient: &str) -> Result<Option<String>, StoreError> {
        let (pec_id, recipient) = (pec_id.to_string(), recipient.to_ascii_lowercase());
        self.read(move |c| {
            Box::pin(async move {
                Ok(c.query_opt(
                    "SELECT notice_id FROM delivery_notices WHERE pec_id = $1 AND recipient = $2",
                    &[&pec_id, &recipient],
                )
                .await
                .map_err(pg(&format!("read delivery notice of \"{pec_id}\"")))?
                .map(|r| r.get(0)))
            })
        })
    }

    fn claim_delivery_notice(&self, recipient: &str, event: &LogEvent) -> Result<bool, StoreError> {
        let (recipient, event) = (recipient.to_string(), event.clone());
        self.write("claim delivery notice", move |tx| {
            Box::pin(async move {
                let mut head = lock_head(tx).await?;
                let claimed = outbox::claim_notice(tx, &mut head, &recipient, &event).await?;
                if claimed {
                    set_head(tx, &head).await?;
                }
                Ok(claimed)
            })
        })
    }

    fn set_arrival_notice(
        &self,
        mailbox: &str,
        notice: Option<&ArrivalNotice>,
    ) -> Result<(), StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let notice = match notice {
            Some(n) => {
                let senders: Vec<String> =
                    n.senders.iter().map(|s| s.to_ascii_lowercase()).collect();
                let senders = serde_json::to_string(&senders)
                    .map_err(|e| StoreError::Database(format!("encode senders: {e}")))?;
                Some((n.notify.clone(), senders))
            }
            None => None,
        };
        self.write("set arrival notice", move |tx| {
            Box::pin(async move {
                tx.execute(
                    "DELETE FROM arrival_notices WHERE mailbox = $1",
                    &[&mailbox],
                )
                .await
                .map_err(pg(&format!("remove arrival notice of \"{mailbox}\"")))?;
                if let Some((notify, senders)) = notice {
                    tx.execute(
                        "INSERT INTO arrival_notices (mailbox, notify, senders)
                         VALUES ($1, $2, $3)",
                        &[&mailbox, &notify, &senders],
                    )
                    .await
                    .map_err(pg(&format!("set arrival notice of \"{mailbox}\"")))?;
                }
                Ok(())
            })
        })
    }

    fn arrival_notice(&self, mailbox: &str) -> Result<Option<ArrivalNotice>, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        self.read(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT notify, senders FROM arrival_notices WHERE mailbox = $1",
                        &[&mailbox],
                    )
                    .await
                    .map_err(pg(&format!("read arrival notice of \"{mailbox}\"")))?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let senders: String = row.get(1);
                let senders: Vec<String> = serde_json::from_str(&senders).map_err(|e| {
                    StoreError::Corrupt(format!("arrival_notices row \"{mailbox}\": senders: {e}"))
                })?;
                Ok(Some(ArrivalNotice {
                    notify: row.get(0),
                    senders,
                }))
            })
        })
    }

    /// The due rows are locked `FOR UPDATE SKIP LOCKED`: two nodes claiming at once get
    /// disjoint rows, and the conditional update re-checks each.
    fn claim_timeouts(&self, claim: &TimeoutClaim) -> Result<Vec<DueNotice>, StoreError> {
        let (claimed, id, states) = timeout_columns(claim.which);
        let select = format!(
            "SELECT t.seq, t.pec_id, t.recipient, t.sent_at, p.seq, p.queue_id, p.provider,
                    p.cert
             FROM tracking t JOIN pending_acceptance p ON p.pec_id = t.pec_id
             WHERE p.state = 'emitted' AND t.state IN ({states}) AND t.sent_at <= $1
               AND t.{id} IS NULL AND (t.{claimed} IS NULL OR t.{claimed} < $2)
             ORDER BY t.sent_at, t.seq LIMIT $3
             FOR UPDATE OF t SKIP LOCKED"
        );
        let update = format!(
            "UPDATE tracking SET {claimed} = $2
             WHERE seq = $1 AND {id} IS NULL AND ({claimed} IS NULL OR {claimed} < $3)"
        );
        let claim = *claim;
        self.write("claim timer notices", move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        &select,
                        &[
                            &claim.sent_up_to.unix(),
                            &claim.stale_before.unix(),
                            &to_i64(claim.limit),
                        ],
                    )
                    .await
                    .map_err(pg("read due notices"))?;
                let mut due = Vec::with_capacity(rows.len());
                for r in rows {
                    let (seq, pec_id, recipient): (i64, String, String) =
                        (r.get(0), r.get(1), r.get(2));
                    let cert = decode_cert(r.get(4), r.get(7))?;
                    let n = tx
                        .execute(
                            &update,
                            &[&seq, &claim.now.unix(), &claim.stale_before.unix()],
                        )
                        .await
                        .map_err(pg(&format!(
                            "claim notice for \"{recipient}\" of \"{pec_id}\""
                        )))?;
                    if n == 1 {
                        due.push(DueNotice {
                            which: claim.which,
                            pec_id,
                            recipient,
                            sent_at: Instant::from_unix(r.get(3)),
                            claimed_at: claim.now,
                            cert,
                            queue_id: r.get(5),
                            provider: r.get(6),
                        });
                    }
                }
                Ok(due)
            })
        })
    }

    fn release_timeout(&self, due: &DueNotice) -> Result<(), StoreError> {
        let (claimed, id, _) = timeout_columns(due.which);
        let sql = format!(
            "UPDATE tracking SET {claimed} = NULL
             WHERE pec_id = $1 AND recipient = $2 AND {claimed} = $3 AND {id} IS NULL"
        );
        let due = due.clone();
        self.write("release timer notice", move |tx| {
            Box::pin(async move {
                tx.execute(&sql, &[&due.pec_id, &due.recipient, &due.claimed_at.unix()])
                    .await
                    .map_err(pg(&format!(
                        "release notice for \"{}\" of \"{}\"",
                        due.recipient, due.pec_id
                    )))?;
                Ok(())
            })
        })
    }

    fn stored_index(&self) -> Result<Option<StoredIndex>, StoreError> {
        self.read(|c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT ldif, providers, fetched_at, source FROM provider_index
                         WHERE id = 1",
                        &[],
                    )
                    .await
                    .map_err(pg("read the provider index"))?;
                Ok(row.map(|r| StoredIndex {
                    ldif: r.get(0),
                    providers: usize::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                    fetched_at: Instant::from_unix(r.get(2)),
                    source: r.get(3),
                }))
            })
        })
    }

    fn replace_index(&self, index: &StoredIndex) -> Result<(), StoreError> {
        let index = index.clone();
        self.write("replace the provider index", move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO provider_index (id, ldif, providers, fetched_at, source)
                     VALUES (1, $1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET ldif = excluded.ldif,
                         providers = excluded.providers, fetched_at = excluded.fetched_at,
                         source = excluded.source",
                    &[
                        &index.ldif,
                        &to_i64(index.providers),
                        &index.fetched_at.unix(),
                        &index.source,
                    ],
                )
                .await
                .map_err(pg("replace the provider index"))?;
                Ok(())
            })
        })
    }

    fn search_events(&self, query: &LogQuery) -> Result<Vec<LoggedEvent>, StoreError> {
        let q = query.clone();
        self.read(move |c| Box::pin(async move { search(c, &q).await }))
    }

    fn stage_outbound(
        &self,
        out: &super::Outbound,
        effect: &super::Effect,
    ) -> Result<super::Staged, StoreError> {
        let (out, effect) = (out.clone(), effect.clone());
        self.write("stage a generated message", move |tx| {
            Box::pin(async move { outbox::stage(tx, &out, &effect).await })
        })
    }

    fn outbound(&self, key: &str) -> Result<Option<super::Outbound>, StoreError> {
        let key = key.to_string();
        self.read(move |c| Box::pin(async move { outbox::get(c, &key).await }))
    }

    fn outbound_injected(&self, key: &str, at: Instant) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write("mark a generated message injected", move |tx| {
            Box::pin(async move { outbox::injected(tx, &key, at).await })
        })
    }

    fn claim_unsent(
        &self,
        attempted_before: Instant,
        now: Instant,
        limit: usize,
    ) -> Result<Vec<super::Outbound>, StoreError> {
        self.write("claim unsent generated messages", move |tx| {
            Box::pin(async move { outbox::claim_unsent(tx, attempted_before, now, limit).await })
        })
    }

    fn begin_deliveries(
        &self,
        message_id: &str,
        recipients: &[String],
        owner: &str,
        at: Instant,
    ) -> Result<Vec<Option<super::DeliveryMark>>, StoreError> {
        let (id, rcpts, owner) = (
            message_id.to_string(),
            recipients.to_vec(),
            owner.to_string(),
        );
        self.write("record delivery intents", move |tx| {
            Box::pin(async move { outbox::begin_deliveries(tx, &id, &rcpts, &owner, at).await })
        })
    }

    fn deliveries_done(
        &self,
        message_id: &str,
        recipients: &[String],
        at: Instant,
    ) -> Result<(), StoreError> {
        let (id, rcpts) = (message_id.to_string(), recipients.to_vec());
        self.write("record deliveries", move |tx| {
            Box::pin(async move { outbox::deliveries_done(tx, &id, &rcpts, at).await })
        })
    }

    fn purge_outbox(&self, before: Instant) -> Result<u64, StoreError> {
        self.write("purge the outbox", move |tx| {
            Box::pin(async move { outbox::purge(tx, before).await })
        })
    }
}

/// `pec log search` on PostgreSQL: the same criteria and indexes as on SQLite.
async fn search(c: &Object, q: &LogQuery) -> Result<Vec<LoggedEvent>, StoreError> {
    type Arg = Box<dyn ToSql + Sync + Send>;
    fn arg(args: &mut Vec<Arg>, v: impl ToSql + Sync + Send + 'static) -> String {
        args.push(Box::new(v));
        format!("${}", args.len())
    }
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let f = arg(&mut args, q.from.map_or(i64::MIN, Instant::unix));
    let t = arg(&mut args, q.to.map_or(i64::MAX, Instant::unix));
    let limit = arg(&mut args, q.limit.map_or(i64::MAX, to_i64));
    clauses.push(format!("at >= {f} AND at < {t}"));
    if let Some(m) = &q.mailbox {
        let a = arg(&mut args, m.to_lowercase());
        clauses.push(format!(
            "id IN (SELECT id FROM events WHERE lower(sender) = {a} AND at >= {f} AND at < {t} \
             UNION ALL SELECT event_id FROM event_recipients WHERE address = {a} \
             AND at >= {f} AND at < {t})"
        ));
    }
    if let Some(s) = &q.sender {
        let a = arg(&mut args, s.to_lowercase());
        clauses.push(format!("lower(sender) = {a}"));
    }
    if let Some(r) = &q.recipient {
        let a = arg(&mut args, r.to_lowercase());
        clauses.push(format!(
            "id IN (SELECT event_id FROM event_recipients WHERE address = {a} \
             AND at >= {f} AND at < {t})"
        ));
    }
    if let Some(k) = &q.kind {
        let a = arg(&mut args, k.clone());
        clauses.push(format!("kind = {a}"));
    }
    if let Some(s) = &q.subject {
        let a = arg(&mut args, s.clone());
        clauses.push(format!("strpos(lower(subject), lower({a})) > 0"));
    }
    if let Some(p) = &q.pec_id {
        let a = arg(&mut args, p.clone());
        clauses.push(format!("pec_id = {a}"));
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE {} ORDER BY id LIMIT {limit}",
        clauses.join(" AND ")
    );
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = c.query(&sql, &params).await.map_err(pg("log search"))?;
    let events = rows
        .iter()
        .map(|r| {
            let (record, hash) = chain_row(r);
            record.logged(hash)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(events.into_iter().filter(|e| q.matches(&e.event)).collect())
}

impl LogStore for PgStore {
    fn verify_chain(
        &self,
        from: Option<Instant>,
        to: Option<Instant>,
    ) -> Result<VerifyReport, StoreError> {
        let (from, to) = (
            from.map_or(i64::MIN, Instant::unix),
            to.map_or(i64::MAX, Instant::unix),
        );
        self.read(move |c| {
            Box::pin(async move {
                let row = c
                    .query_one(
                        "SELECT MIN(id), MAX(id) FROM events WHERE at >= $1 AND at < $2",
                        &[&from, &to],
                    )
                    .await
                    .map_err(pg("verify: range"))?;
                let (Some(first), Some(last)) =
                    (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
                else {
                    return Ok(VerifyReport::default());
                };
                let before = c
                    .query_opt(
                        "SELECT id, hash FROM events WHERE id < $1 ORDER BY id DESC LIMIT 1",
                        &[&first],
                    )
                    .await
                    .map_err(pg("verify: previous record"))?
                    .map(|r| (r.get(0), r.get(1)));
                let mut verifier = Verifier::after(before, anchor(c).await?);
                // In slices, so that a long log is not read into memory at once.
                let mut from_id = first;
                while from_id <= last {
                    let to_id = from_id.saturating_add(10_000).min(last);
                    let rows = c
                        .query(
                            &format!(
                                "SELECT {COLUMNS} FROM events WHERE id >= $1 AND id <= $2 \
                                 ORDER BY id"
                            ),
                            &[&from_id, &to_id],
                        )
                        .await
                        .map_err(pg("verify: read records"))?;
                    for r in &rows {
                        let (record, stored) = chain_row(r);
                        verifier.check(&record, stored);
                    }
                    if to_id == i64::MAX {
                        break;
                    }
                    from_id = to_id + 1;
                }
                Ok(verifier.report())
            })
        })
    }

    fn export_range(&self, from_at: i64, to_at: i64) -> Result<Export, StoreError> {
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM events WHERE at >= $1 AND at < $2 ORDER BY id"
                        ),
                        &[&from_at, &to_at],
                    )
                    .await
                    .map_err(pg("export: read records"))?;
                let mut export = Export::default();
                for r in &rows {
                    let (record, hash) = chain_row(r);
                    chain::export(&mut export, &record, hash.as_deref());
                }
                Ok(export)
            })
        })
    }

    fn claim_seal(&self, day: &str, owner: &str, now: Instant) -> Result<bool, StoreError> {
        let (day, owner) = (day.to_string(), owner.to_string());
        self.write("claim seal", move |tx| {
            Box::pin(async move {
                let sealed: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM seals WHERE day = $1)",
                        &[&day],
                    )
                    .await
                    .map_err(pg("claim seal"))?
                    .get(0);
                if sealed {
                    return Ok(false);
                }
                let n = tx
                    .execute(
                        "INSERT INTO seal_claims (day, owner, claimed_at) VALUES ($1, $2, $3)
                         ON CONFLICT (day) DO UPDATE SET owner = $2, claimed_at = $3
                         WHERE seal_claims.claimed_at < $3 - 3600",
                        &[&day, &owner, &now.unix()],
                    )
                    .await
                    .map_err(pg("claim seal"))?;
                Ok(n == 1)
            })
        })
    }

    fn release_seal_claim(&self, day: &str) -> Result<(), StoreError> {
        let day = day.to_string();
        self.write("release seal claim", move |tx| {
            Box::pin(async move {
                tx.execute("DELETE FROM seal_claims WHERE day = $1", &[&day])
                    .await
                    .map_err(pg("release seal claim"))?;
                Ok(())
            })
        })
    }

    fn insert_seal(&self, seal: &SealRecord) -> Result<(), StoreError> {
        let seal = seal.clone();
        self.write("store seal", move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO seals (day, from_at, to_at, count, first_id, last_id,
                                        export_sha256, signature, tst, tsa_url, sealed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[
                        &seal.day,
                        &seal.from_at,
                        &seal.to_at,
                        &seal.count,
                        &seal.first_id,
                        &seal.last_id,
                        &seal.export_sha256,
                        &seal.signature,
                        &seal.tst,
                        &seal.tsa_url,
                        &seal.sealed_at,
                    ],
                )
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Database(format!("day {} is already sealed", seal.day))
                    } else {
                        pg(&format!("store seal of {}", seal.day))(e)
                    }
                })?;
                tx.execute("DELETE FROM seal_claims WHERE day = $1", &[&seal.day])
                    .await
                    .map_err(pg("store seal"))?;
                Ok(())
            })
        })
    }

    fn add_seal_stamp(&self, day: &str, tst: &[u8], tsa_url: &str) -> Result<bool, StoreError> {
        let (day, tst, tsa_url) = (day.to_string(), tst.to_vec(), tsa_url.to_string());
        self.write("add seal stamp", move |tx| {
            Box::pin(async move {
                let n = tx
                    .execute(
                        "UPDATE seals SET tst = $2, tsa_url = $3 WHERE day = $1 AND tst IS NULL",
                        &[&day, &tst, &tsa_url],
                    )
                    .await
                    .map_err(pg("add seal stamp"))?;
                Ok(n == 1)
            })
        })
    }

    fn seals(&self, from_at: i64, to_at: i64) -> Result<Vec<SealRecord>, StoreError> {
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT day, from_at, to_at, count, first_id, last_id, export_sha256,
                                signature, tst, tsa_url, sealed_at
                         FROM seals WHERE to_at > $1 AND from_at < $2 ORDER BY from_at",
                        &[&from_at, &to_at],
                    )
                    .await
                    .map_err(pg("read seals"))?;
                Ok(rows
                    .iter()
                    .map(|r| SealRecord {
                        day: r.get(0),
                        from_at: r.get(1),
                        to_at: r.get(2),
                        count: r.get(3),
                        first_id: r.get(4),
                        last_id: r.get(5),
                        export_sha256: r.get(6),
                        signature: r.get(7),
                        tst: r.get(8),
                        tsa_url: r.get(9),
                        sealed_at: r.get(10),
                    })
                    .collect())
            })
        })
    }

    fn log_batch(&self, events: &[LogEvent]) -> Result<(), StoreError> {
        let events = events.to_vec();
        self.write("log batch", move |tx| {
            Box::pin(async move {
                let mut tail = lock_head(tx).await?;
                for e in &events {
                    tail = append_after(tx, e, tail).await?;
                }
                set_head(tx, &tail).await
            })
        })
    }

    /// As [`crate::store::SqliteStore::purge`]; the chain head is locked first, so purges
    /// and appends of every node are serialised.
    fn purge(
        &self,
        log_cutoff: Instant,
        quarantine_cutoff: Instant,
        now: Instant,
        provider: &str,
    ) -> Result<PurgeReport, StoreError> {
        let provider = provider.to_string();
        self.write("purge", move |tx| {
            Box::pin(async move {
                let head = lock_head(tx).await?;
                let mut report = PurgeReport::default();
                let unsealed = tx
                    .query_opt(
                        "SELECT e.at, e.id FROM events e
                         WHERE e.at < $1 AND NOT EXISTS
                            (SELECT 1 FROM seals s WHERE s.from_at <= e.at AND e.at < s.to_at)
                         ORDER BY e.at LIMIT 1",
                        &[&log_cutoff.unix()],
                    )
                    .await
                    .map_err(pg("purge: find unsealed records"))?;
                let boundary = match unsealed {
                    Some(r) => {
                        let (at, id): (i64, i64) = (r.get(0), r.get(1));
                        report.stopped_at = Some(chain::unsealed(id, at));
                        at
                    }
                    None => log_cutoff.unix(),
                };
                let keep_from: Option<i64> = tx
                    .query_one("SELECT MIN(id) FROM events WHERE at >= $1", &[&boundary])
                    .await
                    .map_err(pg("purge: find boundary"))?
                    .get(0);
                let last = tx
                    .query_opt(
                        "SELECT id, hash FROM events WHERE id < $1 ORDER BY id DESC LIMIT 1",
                        &[&keep_from.unwrap_or(i64::MAX)],
                    )
                    .await
                    .map_err(pg("purge: find last record"))?;
                if let Some(r) = last {
                    let (last_id, last_hash): (i64, Vec<u8>) = (r.get(0), r.get(1));
                    tx.execute(
                        "DELETE FROM event_recipients WHERE event_id <= $1",
                        &[&last_id],
                    )
                    .await
                    .map_err(pg("purge: delete recipients"))?;
                    report.events = tx
                        .execute("DELETE FROM events WHERE id <= $1", &[&last_id])
                        .await
                        .map_err(pg("purge: delete records"))?;
                    tx.execute(
                        "INSERT INTO chain_anchor (\"only\", last_id, last_hash, purged_at)
                         VALUES (1, $1, $2, $3)
                         ON CONFLICT (\"only\") DO UPDATE SET last_id = $1, last_hash = $2,
                                                          purged_at = $3",
                        &[&last_id, &last_hash, &now.unix()],
                    )
                    .await
                    .map_err(pg("purge: store anchor"))?;
                    report.anchor_id = Some(last_id);
                }
                report.seals = tx
                    .execute(
                        "DELETE FROM seals WHERE to_at <= $1
                         AND NOT EXISTS (SELECT 1 FROM events e
                                         WHERE e.at >= seals.from_at AND e.at < seals.to_at)",
                        &[&boundary],
                    )
                    .await
                    .map_err(pg("purge: delete seals"))?;
                report.quarantined = tx
                    .execute(
                        "DELETE FROM quarantine WHERE at < $1",
                        &[&quarantine_cutoff.unix()],
                    )
                    .await
                    .map_err(pg("purge: delete quarantine"))?;
                if let Some(event) =
                    chain::purge_event(&report, boundary, quarantine_cutoff, now, &provider)
                {
                    let tail = append_after(tx, &event, head).await?;
                    set_head(tx, &tail).await?;
                }
                Ok(report)
            })
        })
    }

    fn try_lease(
        &self,
        name: &str,
        owner: &str,
        now: Instant,
        seconds: i64,
    ) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write("lease", move |tx| {
            Box::pin(async move {
                let until = now.unix().saturating_add(seconds);
                let n = tx
                    .execute(
                        "INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)
                         ON CONFLICT (name) DO UPDATE SET owner = $2, until = $3
                         WHERE leases.owner = $2 OR leases.until <= $4",
                        &[&name, &owner, &until, &now.unix()],
                    )
                    .await
                    .map_err(pg(&format!("take lease \"{name}\"")))?;
                Ok(n == 1)
            })
        })
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn health(&self) -> Result<Health, StoreError> {
        self.read(|c| {
            Box::pin(async move {
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                let row = c
                    .query_one(
                        "SELECT
                           (SELECT COUNT(*) FROM tracking
                             WHERE state IN ('sent', 'taken-in-charge') AND notice24_id IS NULL),
                           (SELECT COUNT(*) FROM quarantine),
                           (SELECT COUNT(*) FROM events),
                           (SELECT MIN(at) FROM events)",
                        &[],
                    )
                    .await
                    .map_err(pg("health"))?;
                let last_seal = c
                    .query_opt(
                        "SELECT day, from_at, sealed_at, tst IS NOT NULL FROM seals
                         ORDER BY day DESC LIMIT 1",
                        &[],
                    )
                    .await
                    .map_err(pg("health: last seal"))?
                    .map(|r| LastSeal {
                        day: r.get(0),
                        from_at: r.get(1),
                        sealed_at: r.get(2),
                        timestamped: r.get(3),
                    });
                let index = c
                    .query_opt(
                        "SELECT fetched_at, source, providers FROM provider_index WHERE id = 1",
                        &[],
                    )
                    .await
                    .map_err(pg("health: index"))?
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1), count(r.get(2))));
                Ok(Health {
                    pending_timers: count(row.get(0)),
                    quarantined: count(row.get(1)),
                    log_records: count(row.get(2)),
                    oldest_record_at: row.get(3),
                    last_seal,
                    index,
                })
            })
        })
    }

    fn extra_domains(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            Box::pin(async move {
                Ok(c.query("SELECT domain FROM domains ORDER BY domain", &[])
                    .await
                    .map_err(pg("domains"))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect())
            })
        })
    }

    fn add_domain(&self, domain: &str, at: i64) -> Result<bool, StoreError> {
        let domain = domain.to_ascii_lowercase();
        self.write("add domain", move |tx| {
            Box::pin(async move {
                let n = tx
                    .execute(
                        "INSERT INTO domains (domain, added_at) VALUES ($1, $2)
                         ON CONFLICT (domain) DO NOTHING",
                        &[&domain, &at],
                    )
                    .await
                    .map_err(pg("add domain"))?;
                Ok(n == 1)
            })
        })
    }

    fn remove_domain(&self, domain: &str) -> Result<bool, StoreError> {
        let domain = domain.to_ascii_lowercase();
        self.write("remove domain", move |tx| {
            Box::pin(async move {
                let n = tx
                    .execute("DELETE FROM domains WHERE domain = $1", &[&domain])
                    .await
                    .map_err(pg("remove domain"))?;
                Ok(n == 1)
            })
        })
    }
}

/// The purge anchor: id and hash of the last purged record.
async fn anchor(c: &Object) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    Ok(c.query_opt(
        "SELECT last_id, last_hash FROM chain_anchor WHERE \"only\" = 1",
        &[],
    )
    .await
    .map_err(pg("read the chain anchor"))?
    .map(|r| (r.get(0), r.get(1))))
}
