// SPDX-License-Identifier: GPL-3.0-or-later
//! The PEC message model: daticert.xml, breve hashing, real providers' samples, built messages.
//!
//! One test binary per group (link time): each former test file is a module.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/samples.rs"]
mod samples;
#[path = "../common/tsa.rs"]
mod tsa;

mod breve;
mod daticert;
mod messages;
mod rem_evidence;
mod rem_judge;
mod rem_messages;
mod revocation;
mod verify_samples;
mod xades;
