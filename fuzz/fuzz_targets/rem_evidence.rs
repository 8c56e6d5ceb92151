// SPDX-License-Identifier: GPL-3.0-or-later
//! ERDS evidence reading (src/rem/evidence.rs) on arbitrary bytes; what parses is written
//! back and must read again the same (the signature flag aside).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec::rem::evidence::Evidence;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Evidence::parse(data) {
        let again = Evidence::parse(&e.to_xml()).expect("our own output reads back");
        assert_eq!(
            again,
            Evidence {
                has_signature: false,
                ..e
            }
        );
    }
});
