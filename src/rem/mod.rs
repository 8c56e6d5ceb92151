// SPDX-License-Identifier: GPL-3.0-or-later
//! REM: Registered Electronic Mail as ETSI EN 319 532-4 ("REM baseline") and the AgID
//! REM-Policy-IT profile define it, spoken beside PEC.
//!
//! The pure core lives here (no sockets, no store, no HSM): the ERDS evidence model, its
//! XAdES signature, the REM message layout, the trust data of the peers. The three roles use
//! it the way they use `message` for PEC.

pub mod codes;
pub mod compose;
pub mod csi;
pub mod dns;
pub mod evidence;
pub mod issue;
pub mod judge;
pub mod message;
pub mod outcome;
pub mod trust;
pub mod xades;
