// SPDX-License-Identifier: GPL-3.0-or-later
//! Prometheus metrics: every metric name and label of `pec`, the recording helpers the roles
//! call at their decision points, and the endpoint of `pec serve` (`[metrics] listen`,
//! `GET /metrics`, crate `metrics-exporter-prometheus`).
//!
//! Recording is always cheap: without an endpoint no recorder is installed and the calls do
//! nothing. Gauges that describe the store (pending timers, quarantine, index age, seal
//! status) are sampled by [`sample_store`] every [`SAMPLE_EVERY`].
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pec_messages_total` | counter | `role`, `kind`, `outcome` |
//! | `pec_latency_seconds` | histogram | `role` |
//! | `pec_tempfails_total` | counter | `role`, `cause` |
//! | `pec_timer_notices_total` | counter | `which` (12h, 24h), `outcome` (sent, failed) |
//! | `pec_timers_pending` | gauge | |
//! | `pec_quarantine_messages` | gauge | |
//! | `pec_log_records` | gauge | |
//! | `pec_index_age_seconds` | gauge | |
//! | `pec_index_providers` | gauge | |
//! | `pec_index_syncs_total` | counter | `outcome` (ok, failed) |
//! | `pec_seal_last_day_timestamp_seconds` | gauge | |
//! | `pec_seal_age_seconds` | gauge | |
//! | `pec_seals_total` | counter | `outcome` (ok, failed) |
//! | `pec_config_reloads_total` | counter | `outcome` (ok, failed) |
//! | `pec_revocation_unknown_accepted_total` | counter | |
//! | `pec_up` | gauge | |
//! | `pec_store_pool_wait_seconds` | histogram | | (PostgreSQL store: the wait for a pooled connection, recorded by [`crate::store::postgres`])
//!
//! Roles (`role` label): `access` (milter end of message), `filter` (after-queue content
//! filter, the reception point), `delivery` (LMTP proxy), `timers`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::message::time::{Clock, SystemClock};
use crate::store::{Health, LogStore};

pub const MESSAGES: &str = "pec_messages_total";
pub const LATENCY: &str = "pec_latency_seconds";
pub const TEMPFAILS: &str = "pec_tempfails_total";
pub const TIMER_NOTICES: &str = "pec_timer_notices_total";
pub const TIMERS_PENDING: &str = "pec_timers_pending";
pub const QUARANTINE: &str = "pec_quarantine_messages";
pub const LOG_RECORDS: &str = "pec_log_records";
pub const INDEX_AGE: &str = "pec_index_age_seconds";
pub const INDEX_PROVIDERS: &str = "pec_index_providers";
pub const INDEX_SYNCS: &str = "pec_index_syncs_total";
pub const SEAL_LAST_DAY: &str = "pec_seal_last_day_timestamp_seconds";
pub const SEAL_AGE: &str = "pec_seal_age_seconds";
pub const SEALS: &str = "pec_seals_total";
/// Time-stamp attempts for the daily seals, by outcome.
pub const SEAL_STAMPS: &str = "pec_seal_stamps_total";
/// Seals that wait for their time stamp (the TSA failed when they were made).
pub const SEAL_STAMPS_PENDING: &str = "pec_seal_stamps_pending";
pub const RELOADS: &str = "pec_config_reloads_total";
pub const UP: &str = "pec_up";
pub const REVOCATION_UNKNOWN: &str = "pec_revocation_unknown_accepted_total";

/// How often [`sample_store`] refreshes the store gauges.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Latency buckets, seconds: from a fast milter decision to a slow Dovecot.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of the store's pool wait, seconds: from no wait at all to a pool exhausted for
/// its whole 30 s wait timeout.
const POOL_WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
];

/// The PEC role of a measurement (`role` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Access point: the milter's end of message.
    Access,
    /// Reception point: the after-queue content filter.
    Filter,
    /// Delivery point: the LMTP proxy, one transaction.
    Delivery,
    /// The 12 h / 24 h timers.
    Timers,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Access => "access",
            Role::Filter => "filter",
            Role::Delivery => "delivery",
            Role::Timers => "timers",
        }
    }
}

/// One message handled by `role`: `kind` is what it was (or what was generated for it),
/// `outcome` what happened.
pub fn message(role: Role, kind: &'static str, outcome: &'static str) {
    counter!(MESSAGES, "role" => role.label(), "kind" => kind, "outcome" => outcome).increment(1);
}

/// Time `role` spent on one message (one milter end of message, one filter transaction,
/// one LMTP transaction).
pub fn latency(role: Role, elapsed: Duration) {
    histogram!(LATENCY, "role" => role.label()).record(elapsed.as_secs_f64());
}

/// A temporary failure answered by `role`, by cause (`store`, `signer`, `antivirus`,
/// `reinjection`, `dovecot`, `internal`, …).
pub fn tempfail(role: Role, cause: &'static str) {
    counter!(TEMPFAILS, "role" => role.label(), "cause" => cause).increment(1);
}

/// A 12 h / 24 h notice sent or failed.
pub fn timer_notice(which: &'static str, sent: bool) {
    let outcome = if sent { "sent" } else { "failed" };
    counter!(TIMER_NOTICES, "which" => which, "outcome" => outcome).increment(1);
}

/// An index synchronisation inside `pec serve`.
pub fn index_sync(ok: bool) {
    counter!(INDEX_SYNCS, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

/// A daily seal written, or a failed attempt.
pub fn seal(ok: bool) {
    counter!(SEALS, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

/// A time stamp for a seal obtained or failed.
pub fn seal_stamp(ok: bool) {
    counter!(SEAL_STAMPS, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

/// How many seals wait for their time stamp.
pub fn seal_stamps_pending(n: usize) {
    gauge!(SEAL_STAMPS_PENDING).set(n as f64);
}

/// A signature accepted although the revocation status of its chain could not be had
/// (`verify.revocation = "grace"`, within the grace window).
pub fn revocation_unknown_accepted() {
    counter!(REVOCATION_UNKNOWN).increment(1);
}

/// A SIGHUP reload applied or refused.
pub fn reload(ok: bool) {
    counter!(RELOADS, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

/// The endpoint could not be started.
#[derive(Debug, thiserror::Error)]
#[error("metrics endpoint on {addr}: {message}")]
pub struct MetricsError {
    pub addr: String,
    pub message: String,
}

/// Installs the process-wide recorder and binds the endpoint on `addr`; returns the
/// exporter task to spawn (it serves until the runtime stops). Call it inside the tokio
/// runtime. One recorder per process: a second call fails.
pub fn install(
    addr: SocketAddr,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, MetricsError> {
    let fail = |message: String| MetricsError {
        addr: addr.to_string(),
        message,
    };
    let (recorder, exporter) = builder()
        .map_err(|e| fail(e.to_string()))?
        .with_http_listener(addr)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    metrics::set_global_recorder(recorder).map_err(|e| fail(e.to_string()))?;
    announce();
    Ok(async move {
        if let Err(e) = exporter.await {
            tracing::error!("metrics endpoint stopped: {e:?}");
        }
    })
}

/// The exporter's settings (the latency buckets), without the endpoint.
fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(LATENCY.to_string()), BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(crate::store::postgres::POOL_WAIT.to_string()),
            POOL_WAIT_BUCKETS,
        )
}

/// A recorder with the endpoint's settings that is installed nowhere and serves nothing:
/// record into it with `metrics::with_local_recorder` and `handle().render()` it to see
/// what the endpoint would show. The test of the Grafana dashboard
/// (docs/grafana-dashboard.json) checks every query against it.
pub fn recorder() -> Result<PrometheusRecorder, BuildError> {
    Ok(builder()?.build_recorder())
}

/// What the endpoint shows from the start: the help texts, and `pec_up` at 1. [`install`]
/// calls it once the recorder is in place.
pub fn announce() {
    describe();
    gauge!(UP).set(1.0);
}

/// The help texts shown on the endpoint.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(MESSAGES, "Messages handled, by role, kind and outcome");
    describe_histogram!(
        LATENCY,
        Unit::Seconds,
        "Time spent per message: milter end of message, filter transaction, LMTP transaction"
    );
    describe_counter!(TEMPFAILS, "Temporary failures answered, by role and cause");
    describe_counter!(TIMER_NOTICES, "12 h / 24 h notices, by outcome");
    describe_gauge!(
        TIMERS_PENDING,
        "Certified recipients still waiting for a receipt before their 24 h notice"
    );
    describe_gauge!(QUARANTINE, "Messages in quarantine");
    describe_gauge!(LOG_RECORDS, "Records in the legal log");
    describe_gauge!(
        INDEX_AGE,
        Unit::Seconds,
        "Age of the stored provider index copy (-1: none stored, the LDIF file is used)"
    );
    describe_gauge!(INDEX_PROVIDERS, "Providers in the stored index copy");
    describe_counter!(INDEX_SYNCS, "Provider index synchronisations, by outcome");
    describe_gauge!(
        SEAL_LAST_DAY,
        Unit::Seconds,
        "Start of the last sealed day of the legal log, unix seconds (0: none)"
    );
    describe_gauge!(
        SEAL_AGE,
        Unit::Seconds,
        "Time since the last seal was written (-1: none)"
    );
    describe_counter!(SEALS, "Daily seals, by outcome");
    describe_counter!(SEAL_STAMPS, "Time stamps of daily seals, by outcome");
    describe_gauge!(
        SEAL_STAMPS_PENDING,
        "Daily seals waiting for their time stamp (the TSA failed)"
    );
    describe_counter!(RELOADS, "Configuration reloads (SIGHUP), by outcome");
    describe_gauge!(UP, "1 while pec serve runs");
    describe_histogram!(
        crate::store::postgres::POOL_WAIT,
        Unit::Seconds,
        "Time a store call waited for a pooled PostgreSQL connection"
    );
}

/// Sets the store gauges once.
pub fn record_health(store: &dyn LogStore, now_unix: i64) -> Result<(), crate::store::StoreError> {
    record_health_of(&store.health()?, now_unix);
    Ok(())
}

/// Sets the store gauges from `h`, read at `now_unix`.
pub fn record_health_of(h: &Health, now_unix: i64) {
    gauge!(TIMERS_PENDING).set(h.pending_timers as f64);
    gauge!(QUARANTINE).set(h.quarantined as f64);
    gauge!(LOG_RECORDS).set(h.log_records as f64);
    match &h.index {
        Some((fetched_at, _, providers)) => {
            gauge!(INDEX_AGE).set((now_unix - fetched_at).max(0) as f64);
            gauge!(INDEX_PROVIDERS).set(*providers as f64);
        }
        None => gauge!(INDEX_AGE).set(-1.0),
    }
    match &h.last_seal {
        Some(s) => {
            gauge!(SEAL_LAST_DAY).set(s.from_at as f64);
            gauge!(SEAL_AGE).set((now_unix - s.sealed_at).max(0) as f64);
        }
        None => {
            gauge!(SEAL_LAST_DAY).set(0.0);
            gauge!(SEAL_AGE).set(-1.0);
        }
    }
}

/// Samples the store gauges every [`SAMPLE_EVERY`] until `stop`.
pub async fn sample_store(store: Arc<dyn LogStore>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let st = store.clone();
        let now = SystemClock.now().unix();
        match tokio::task::spawn_blocking(move || record_health(&*st, now)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("metrics: cannot read the store: {e}"),
            Err(e) => tracing::warn!("metrics: {e}"),
        }
    }
}

/// The Postfix queue id in the topmost `Received:` field that Postfix wrote
/// (`… by HOST (Postfix) with ESMTP id 4ABCDEF;`): the LMTP client does not send it
/// otherwise. `None` when there is none.
pub fn received_queue_id(data: &[u8]) -> Option<String> {
    let end = memchr::memmem::find(data, b"\r\n\r\n")
        .or_else(|| memchr::memmem::find(data, b"\n\n"))
        .unwrap_or(data.len());
    let header = std::str::from_utf8(&data[..end]).ok()?;
    let mut lines = header.lines().peekable();
    while let Some(line) = lines.next() {
        if !line
            .get(..9)
            .is_some_and(|h| h.eq_ignore_ascii_case("received:"))
        {
            continue;
        }
        let mut field = line.to_string();
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            field.push(' ');
            field.push_str(next.trim());
        }
        let field = field.split(';').next().unwrap_or_default();
        let mut words = field.split_whitespace();
        while let Some(w) = words.next() {
            if w == "id" {
                let id = words.next()?;
                let ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
                return ok.then(|| id.to_string());
            }
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_id_from_the_topmost_received_field() {
        let m = b"Return-Path: <a@b>\r\nReceived: from x (localhost [127.0.0.1])\r\n\tby mx.a.test (Postfix) with ESMTP id 4Fq2Lx0ZkKz1\r\n\tfor <b@c>; Mon, 23 Nov 2026 08:00:00 +0100\r\nReceived: by y with id OTHER;\r\n\r\nbody id NO\r\n";
        assert_eq!(received_queue_id(m).as_deref(), Some("4Fq2Lx0ZkKz1"));
        assert_eq!(
            received_queue_id(b"Subject: x\r\n\r\nReceived: id X;\r\n"),
            None
        );
        assert_eq!(received_queue_id(b"Received: by z; date\r\n\r\n"), None);
        assert_eq!(received_queue_id(b"\xff\xfe"), None);
    }
}
