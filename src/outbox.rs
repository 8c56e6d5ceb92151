//! Emitting generated messages exactly once across crashes, and the outbox sweep (see
//! [`crate::store::outbox`] for the protocol and the tables).
//!
//! Every role emits a receipt, notice or anomaly envelope the same way ([`emit`]): the
//! message is built and signed by the caller; [`emit`] stages it with its [`Effect`] in
//! one store transaction, injects it, and marks it injected. The sweep ([`sweep_once`],
//! run by `pec serve` every [`SWEEP_EVERY`], first at start-up) injects the rows staged
//! but never marked injected: those of a process that died (or failed to inject) between
//! the two steps, whoever staged them (the after-queue acceptance, the access point's
//! non-acceptance, the timers, where nobody would retry).

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::{error, info, warn};

use crate::message::build::Generated;
use crate::message::time::{Clock, Instant};
use crate::smtp::{InjectError, Injector};
use crate::store::{Effect, Outbound, Staged, Store, StoreError};

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A staged row is taken over by the sweep when its last injection attempt is older than
/// this (an emitter normally marks it within milliseconds).
pub const SWEEP_GRACE_SECONDS: i64 = 30;
/// Rows swept per pass.
pub const SWEEP_BATCH: usize = 100;
/// Injected outbox rows and delivery records are kept this long: longer than Postfix keeps
/// retrying a message (`maximal_queue_lifetime`, 5 days by default).
pub const KEEP_DAYS: i64 = 30;

#[derive(Debug, Error)]
pub enum EmitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Staged, but not injected: the sweep injects it later.
    #[error("injecting the generated message (staged; it will be sent again): {0}")]
    Inject(InjectError),
    #[error("worker task: {0}")]
    Task(String),
}

/// What [`emit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emitted {
    /// Staged, recorded and injected now: its Message-ID.
    New(String),
    /// Staged before (a retry): nothing built anew; the Message-ID of the staged message
    /// (injected already, or by the sweep).
    Existing(String),
    /// The event was recorded earlier without an outbox row: nothing sent.
    Claimed,
}

impl Emitted {
    /// The Message-ID of the message that stands for the event, if one does.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Emitted::New(id) | Emitted::Existing(id) => Some(id),
            Emitted::Claimed => None,
        }
    }
}

/// The outbox row of `message` under `key`, taking the message: its header is written in
/// front of its body in the body's own buffer, so the row's data is never a second copy of
/// the message (a completa delivery receipt carries the whole original).
pub fn outbound(key: String, message: Generated, at: Instant) -> Outbound {
    let head = message.head();
    let mut data = message.body;
    data.splice(0..0, head);
    Outbound {
        key,
        message_id: message.message_id,
        mail_from: message.mail_from,
        rcpt_to: message.rcpt_to,
        data,
        created_at: at,
        injected_at: None,
    }
}

/// Stages `out` with `effect` (one transaction), then injects it and marks it injected.
/// A row already staged under that key is not injected here (the sweep does, unless it was
/// injected already): a retry never builds or sends a second, different message.
pub async fn emit(
    store: &Arc<dyn Store>,
    injector: &dyn Injector,
    clock: &dyn Clock,
    out: Outbound,
    effect: Effect,
) -> Result<Emitted, EmitError> {
    // Shared with the store's worker, not cloned: the data may be a whole message.
    let out = Arc::new(out);
    let (s, o) = (store.clone(), out.clone());
    let staged = blocking(move || s.stage_outbound(&o, &effect)).await??;
    match staged {
        Staged::New => {}
        Staged::Existing(o) => return Ok(Emitted::Existing(o.message_id)),
        Staged::Claimed => return Ok(Emitted::Claimed),
    }
    injector
        .inject(&out.mail_from, &out.rcpt_to, &out.data)
        .await
        .map_err(EmitError::Inject)?;
    let (key, message_id) = (out.key.clone(), out.message_id.clone());
    // In Postfix's queue now: the bytes are not needed any more (the message may come
    // straight back to this process, e.g. a delivery receipt to a local sender).
    drop(out);
    let (s, k, at) = (store.clone(), key.clone(), clock.now());
    if let Err(e) = blocking(move || s.outbound_injected(&k, at)).await? {
        // Injected and recorded: the sweep will inject the same bytes once more (same
        // Message-ID; the delivery point stores it once).
        warn!(key = %key, message_id = %message_id, "outbox: injected but not marked: {e}");
    }
    Ok(Emitted::New(message_id))
}

/// One sweep pass: injects the staged rows left unsent (see the module documentation).
/// Returns how many were injected.
pub async fn sweep_once(
    store: &Arc<dyn Store>,
    injector: &dyn Injector,
    clock: &dyn Clock,
) -> Result<usize, StoreError> {
    let now = clock.now();
    let before = Instant::from_unix(now.unix() - SWEEP_GRACE_SECONDS);
    let s = store.clone();
    let rows = blocking(move || s.claim_unsent(before, now, SWEEP_BATCH))
        .await
        .map_err(|e| StoreError::Database(e.to_string()))??;
    let mut sent = 0;
    for row in rows {
        match injector
            .inject(&row.mail_from, &row.rcpt_to, &row.data)
            .await
        {
            Ok(()) => {
                let (s, key, at) = (store.clone(), row.key.clone(), clock.now());
                blocking(move || s.outbound_injected(&key, at))
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))??;
                info!(key = %row.key, message_id = %row.message_id, "outbox: staged message injected by the sweep");
                sent += 1;
            }
            Err(e) => {
                error!(key = %row.key, message_id = %row.message_id, "outbox: sweep could not inject, tries again later: {e}");
            }
        }
    }
    Ok(sent)
}

/// The sweep task of `pec serve`: a pass at start-up and every [`SWEEP_EVERY`], and once an
/// hour the purge of rows older than [`KEEP_DAYS`], until `stop` resolves.
pub async fn run(
    store: Arc<dyn Store>,
    injector: Arc<dyn Injector>,
    clock: Arc<dyn Clock>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    let mut last_purge: Option<i64> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep_once(&store, &*injector, &*clock).await {
            error!("outbox: sweep failed: {e}");
        }
        let now = clock.now().unix();
        if last_purge.is_none_or(|t| now - t >= 3600) {
            last_purge = Some(now);
            let s = store.clone();
            let before = Instant::from_unix(now - KEEP_DAYS * 86_400);
            match blocking(move || s.purge_outbox(before)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => info!(rows = n, "outbox: old outbox and delivery records purged"),
                Ok(Err(e)) => error!("outbox: purge failed: {e}"),
                Err(e) => error!("outbox: purge failed: {e}"),
            }
        }
    }
}

async fn blocking<T, F>(f: F) -> Result<T, EmitError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EmitError::Task(e.to_string()))
}
