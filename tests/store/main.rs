// SPDX-License-Identifier: GPL-3.0-or-later
//! The store: the contract on SQLite and PostgreSQL, several nodes on one PostgreSQL, TLS to PostgreSQL,
//! the legal log, the delivery point's rows and the crash windows of the outbox.
//!
//! One test binary per group (link time): each former test file is a module.

#[macro_use]
#[path = "../common/backends.rs"]
mod backends;
#[path = "../common/pem.rs"]
mod pem;
#[path = "../common/tsa.rs"]
mod tsa;
#[path = "../common/two_providers.rs"]
mod two_providers;

mod contract;
mod crash_windows;
mod delivery_store;
mod kept;
mod legal_log;
mod mailbox_settings;
mod nodes;
mod rem;
mod tls;
