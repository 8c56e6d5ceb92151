// SPDX-License-Identifier: GPL-3.0-or-later
//! The roles in process: access point (milter), reception point (after-queue filter), delivery point
//! (LMTP proxy), timers, the certified outcomes between two providers, and the protocol adapters.
//!
//! One test binary per group (link time): each former test file is a module.

#[macro_use]
#[path = "../common/backends.rs"]
mod backends;
#[path = "../common/milter_client.rs"]
mod milter_client;
#[path = "../common/pem.rs"]
mod pem;
#[path = "../common/samples.rs"]
mod samples;
#[path = "../common/tsa.rs"]
mod tsa;
#[path = "../common/two_providers.rs"]
mod two_providers;

mod access_milter;
mod after_queue;
mod antivirus;
mod attachments;
mod certified_outcomes;
mod delivery;
mod delivery_config;
mod hostile;
mod lmtp_server;
mod log_requests;
mod reception;
mod reinject_pool;
mod rem_access;
mod rem_delivery;
mod rem_reception;
mod rollover;
mod serve_ops;
mod smtp_client;
mod smtp_server;
mod timers;
