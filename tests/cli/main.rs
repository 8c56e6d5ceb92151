// SPDX-License-Identifier: GPL-3.0-or-later
//! The command line: administration, configuration, man pages, `pec verify`; the shipped
//! Grafana dashboard against the metrics.
//!
//! One test binary per group (link time): each former test file is a module.

#[path = "../common/samples.rs"]
mod samples;

mod admin;
mod capacity;
mod config;
mod grafana;
mod man_pages;
mod rem;
mod verify;
mod verify_rem;
