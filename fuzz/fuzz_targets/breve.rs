// SPDX-License-Identifier: GPL-3.0-or-later
//! Breve hashing (src/message/breve.rs): the rewritten original of a breve delivery
//! receipt, on arbitrary messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec::message::breve::breve_original;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = breve_original(data) {
        for h in &b.hashes {
            assert_eq!(h.sha1_hex.len(), 40);
            assert!(h.sha1_hex.bytes().all(|c| c.is_ascii_hexdigit()));
        }
    }
});
