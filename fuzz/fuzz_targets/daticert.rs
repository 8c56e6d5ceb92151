// SPDX-License-Identifier: GPL-3.0-or-later
//! daticert.xml parsing (src/message/daticert.rs) on arbitrary bytes; what parses also
//! goes through the per-`tipo` checks and the writer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec::message::daticert::Daticert;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Daticert::parse(data) {
        let _ = d.check_for_tipo();
        let _ = Daticert::parse(d.to_xml().as_bytes());
    }
});
