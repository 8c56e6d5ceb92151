// SPDX-License-Identifier: GPL-3.0-or-later
//! The attachment checks of the access point (src/access/attachments.rs) and the bounded
//! zip reader (src/access/zip.rs) on arbitrary bytes, as a message and as an archive:
//! never a panic, and with small bounds the walk stays within them.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pec::access::attachments::inspect;
use pec::access::zip::Archive;
use pec::access::{AttachmentPolicy, Bounds};

fuzz_target!(|data: &[u8]| {
    let policy = AttachmentPolicy {
        bounds: Bounds {
            max_depth: 8,
            max_entries: 64,
            max_bytes: 1 << 20,
            max_time: Duration::from_secs(2),
        },
        ..AttachmentPolicy::default()
    };
    let _ = inspect(data, &policy);
    if let Ok(archive) = Archive::open(data) {
        let deadline = Instant::now() + Duration::from_secs(1);
        for entry in archive.entries().take(64).flatten() {
            if let Ok((read, _)) = archive.read(&entry, 1 << 16, deadline) {
                assert!(read.len() <= 1 << 16);
            }
        }
    }
});
