// SPDX-License-Identifier: GPL-3.0-or-later
//! REM trust data: Trusted Lists (the kit's and signed ones of our own), the REM peers
//! view, CSI documents, and the stored copies with their history on both store backends.
//!
//! One test binary per group (link time): each file is a module.

#[macro_use]
#[path = "../common/backends.rs"]
mod backends;
#[path = "../common/samples.rs"]
mod samples;
#[path = "../common/tsa.rs"]
mod tsa;

mod cli;
mod csi;
mod csi_fetch;
mod https;
mod lists;
mod store;
