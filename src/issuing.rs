// SPDX-License-Identifier: GPL-3.0-or-later
//! The issuing kit: what every role (access point, after-queue filter and reception point,
//! delivery point, timers) uses to issue a signed message, and the one path every generated
//! message takes exactly once (see [`crate::store::outbox`] for the protocol and the tables):
//!
//! 1. [`Issuing::build`]: build and sign it on the blocking pool (signing may block on the
//!    PKCS#11 token);
//! 2. [`Issuing::emit`]: stage it in the outbox together with its [`Effect`] (the claim that
//!    says the event happened and its legal-log records), in one store transaction; a
//!    message already staged under that key is never built into a second one;
//! 3. inject it into Postfix, and mark it injected. A crash or a failed injection after
//!    step 2 leaves it to the outbox sweep ([`crate::outbox`]), which injects the same bytes.
//!
//! Store reads and writes outside the outbox go through [`Issuing::store`], and any other
//! blocking work through [`blocking`]: one helper, one error type ([`IssueError`]).

use std::sync::Arc;

use thiserror::Error;
use tracing::warn;

use crate::crypto::Signer;
use crate::message::build::{BuildError, Builder, Generated, Issuer};
use crate::message::ids::MsgIdSource;
use crate::message::time::{Clock, Instant, SystemClock};
use crate::smtp::{InjectError, Injector};
use crate::store::{Effect, Outbound, Staged, Store, StoreError};

/// Why a role could not issue (or record) something: each is a temporary failure for the
/// role's client (design §3).
#[derive(Debug, Error)]
pub enum IssueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building a generated message: {0}")]
    Build(#[from] BuildError),
    /// Staged with its records, but not injected: the outbox sweep injects it later.
    #[error("injecting the generated message (staged; it will be sent again): {0}")]
    Staged(InjectError),
    #[error("worker task: {0}")]
    Task(String),
}

/// What [`Issuing::emit`] did.
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

/// The parts a role issues with: the store, Postfix's reinjection listener, our provider
/// identity, the signer, the message ids and the clock (the instant of every event).
#[derive(Clone)]
pub struct Issuing {
    pub store: Arc<dyn Store>,
    pub injector: Arc<dyn Injector>,
    pub issuer: Issuer,
    pub signer: Arc<dyn Signer>,
    pub ids: Arc<dyn MsgIdSource>,
    pub clock: Arc<dyn Clock>,
}

impl Issuing {
    /// The kit on the system clock (roles replace it with their `with_clock`).
    pub fn new(
        store: Arc<dyn Store>,
        injector: Arc<dyn Injector>,
        issuer: Issuer,
        signer: Arc<dyn Signer>,
        ids: Arc<dyn MsgIdSource>,
    ) -> Self {
        Issuing {
            store,
            injector,
            issuer,
            signer,
            ids,
            clock: Arc::new(SystemClock),
        }
    }

    /// Builds and signs one message off the async workers.
    pub async fn build<F>(&self, f: F) -> Result<Generated, IssueError>
    where
        F: FnOnce(&Builder<'_>) -> Result<Generated, BuildError> + Send + 'static,
    {
        let (issuer, signer, ids) = (self.issuer.clone(), self.signer.clone(), self.ids.clone());
        Ok(blocking(move || {
            f(&Builder {
                issuer: &issuer,
                signer: &*signer,
                ids: &*ids,
            })
        })
        .await??)
    }

    /// Stages `message` under `key` with `effect` at `at` (one transaction), then injects
    /// it and marks it injected; the message moves into its outbox row (a completa delivery
    /// receipt or an anomaly envelope carries a whole original). A row already staged under
    /// that key is not injected here (the sweep does, unless it was injected already): a
    /// retry never builds or sends a second, different message.
    pub async fn emit(
        &self,
        key: String,
        message: Generated,
        effect: Effect,
        at: Instant,
    ) -> Result<Emitted, IssueError> {
        self.emit_outbound(outbound(key, message, at), effect).await
    }

    /// [`Issuing::emit`] for a message that is not a signed [`Generated`] one (an arrival
    /// notice), already in its outbox row.
    pub async fn emit_outbound(
        &self,
        out: Outbound,
        effect: Effect,
    ) -> Result<Emitted, IssueError> {
        // Shared with the store's worker, not cloned: the data may be a whole message.
        let out = Arc::new(out);
        let effect = Arc::new(effect);
        let (o, e) = (out.clone(), effect.clone());
        match self.store(move |s| s.stage_outbound(&o, &e)).await? {
            Staged::New => {}
            Staged::Existing(o) => return Ok(Emitted::Existing(o.message_id)),
            Staged::Claimed => return Ok(Emitted::Claimed),
        }
        let injected = self
            .injector
            .inject(&out.mail_from, &out.rcpt_to, &out.data)
            .await;
        // The messages staged with it ([`Effect::Also`]), each marked on its own; one not
        // injected now is sent by the outbox sweep.
        for (other, _) in effect.also_staged() {
            if let Err(e) = self
                .injector
                .inject(&other.mail_from, &other.rcpt_to, &other.data)
                .await
            {
                warn!(key = %other.key, message_id = %other.message_id, "outbox: staged, not injected (the sweep sends it): {e}");
                continue;
            }
            let (k, at) = (other.key.clone(), self.clock.now());
            if let Err(e) = self.store(move |s| s.outbound_injected(&k, at)).await {
                warn!(key = %other.key, message_id = %other.message_id, "outbox: injected but not marked: {e}");
            }
        }
        drop(effect);
        injected.map_err(IssueError::Staged)?;
        let (key, message_id) = (out.key.clone(), out.message_id.clone());
        // In Postfix's queue now: the bytes are not needed any more (the message may come
        // straight back to this process, e.g. a delivery receipt to a local sender).
        drop(out);
        let (k, at) = (key.clone(), self.clock.now());
        if let Err(e) = self.store(move |s| s.outbound_injected(&k, at)).await {
            // Injected and recorded: the sweep will inject the same bytes once more (same
            // Message-ID; the delivery point stores it once).
            warn!(key = %key, message_id = %message_id, "outbox: injected but not marked: {e}");
        }
        Ok(Emitted::New(message_id))
    }

    /// Runs `f` on the store off the async workers.
    pub async fn store<T, F>(&self, f: F) -> Result<T, IssueError>
    where
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        Ok(blocking(move || f(&*store)).await??)
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

/// Runs blocking work (store, signing) off the async workers: the one blocking helper of
/// the roles and the outbox sweep.
pub async fn blocking<T, F>(f: F) -> Result<T, IssueError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IssueError::Task(e.to_string()))
}

/// Runs blocking work on data the caller only lends (a received message: verification,
/// classification) without copying it into a task: on a multi-threaded runtime the worker
/// hands its other tasks over while `f` runs; on a current-thread runtime (tests) `f`
/// runs in place.
pub fn blocking_borrowed<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
