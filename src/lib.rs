// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec`: a PEC (Posta Elettronica Certificata) provider that plugs into stock Postfix and
//! Dovecot. See `README.md` for the operator's view and `shared/spec/pec-spec.md` for the
//! protocol.
// `deny`, not `forbid`: one function reads the kernel's NTP state with adjtimex(2), which
// has no safe wrapper (`timesync::kernel_state`); nothing else may use `unsafe`.
#![deny(unsafe_code)]

pub mod access;
pub mod antivirus;
pub mod bounce;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod dns;
pub mod doubles;
pub mod index;
pub mod issuing;
pub mod log;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod preflight;
pub mod reception;
pub mod reload;
pub mod rem;
pub mod rem_sync;
pub mod serve;
pub mod setup;
pub mod smtp;
pub mod store;
pub mod timers;
pub mod timesync;
pub mod wiring;
pub mod xml;

/// A boxed, sendable future: the return type of the async methods of the traits that stand
/// for outside systems (antivirus, SMTP injection), so that they can be used as trait objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
