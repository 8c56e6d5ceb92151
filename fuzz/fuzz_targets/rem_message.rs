// SPDX-License-Identifier: GPL-3.0-or-later
//! REM message reading (src/rem/message.rs) on arbitrary messages: the structure parser,
//! which needs no signature (so the fuzzer reaches every section rule, the transfer
//! decodings and the digest check), and the verifying path, which must refuse anything
//! it cannot verify with a defined error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec::crypto::verify::VerifyOptions;
use pec::message::time::Instant;
use pec::rem::message::{self, is_rem, MessageType, RemError};

fuzz_target!(|data: &[u8]| {
    match message::parse(data) {
        Ok(m) => {
            assert!(is_rem(data));
            // A parsed message always has the parts its type requires.
            assert!(!m.evidences.is_empty());
            assert_eq!(
                m.original.is_some(),
                m.message_type == MessageType::Dispatch
            );
            let c = m.classify();
            assert_eq!(c.with_original, m.original.is_some());
            let _ = m.check_digest();
        }
        // "Not REM" exactly when the top-level header announces no REM message.
        Err(RemError::NotRem(_)) => assert!(!is_rem(data)),
        Err(RemError::TooLarge { .. }) => {}
        Err(_) => assert!(is_rem(data)),
    }
    let at = Instant::from_unix(1_750_000_000);
    // Seeds from the kit verify (no chain asked); everything else is a defined error.
    if let Ok(v) = message::verify(data, &VerifyOptions::without_index(at)) {
        assert!(v.message.check_digest().is_ok());
    }
});
