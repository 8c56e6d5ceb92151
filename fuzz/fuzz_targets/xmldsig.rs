// SPDX-License-Identifier: GPL-3.0-or-later
//! The XML signature and XAdES readers (src/crypto/xmldsig.rs, src/rem/xades.rs) on
//! arbitrary bytes, the way a foreign ERDS evidence, Trusted List or CSI file arrives:
//! never a panic, never a hang (references and transforms are bounded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec::crypto::xmldsig::{self, C14n};
use pec::rem::xades;

fuzz_target!(|data: &[u8]| {
    let _ = xmldsig::canonicalize(data, &C14n::EXCLUSIVE);
    let _ = xmldsig::pre_digest(data);
    let _ = xmldsig::verify(data);
    // The anchors are read only once a signature verified, which random bytes never do.
    let _ = xades::verify(data, std::path::Path::new("/nonexistent/tsa-anchors.pem"));
});
