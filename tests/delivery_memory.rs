// SPDX-License-Identifier: GPL-3.0-or-later
//! Memory of the delivery point's steps on a large transport envelope, counted by a global
//! allocator: the bytes allocated beyond the received data at the highest point of each
//! step (classification, the original, the completa delivery receipt, its outbox row),
//! over the size of the envelope. Deterministic: allocations, not time or RSS. Staging the
//! row in SQLite (C allocations, not counted) is reported from the resident peak.

#[path = "common/pem.rs"]
mod pem;

use pem::{issuer, pki, PROVIDER};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use pec::crypto::Signer;
use pec::index::{ProviderIndex, ProviderInfo, ProviderRecord};
use pec::issuing::outbound;
use pec::message::build::{Builder, Certification, OriginalInfo};
use pec::message::classify::{classify_shared, Classification};
use pec::message::ids::SequentialIds;
use pec::message::kind::RecipientType;
use pec::message::time::Instant;
use pec::store::{Effect, SqliteStore, Store};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn status_kb(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

const SENDER: &str = "alice@pec.example.it";
const BOB: &str = "bob@pec.example.net";
const PEC_ID: &str = "opec1.20250603101112.1.1.test@pec.example.it";

fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

/// An original with a base64 attachment of about `mb` MB.
fn big_original(mb: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {SENDER}\r\nTo: {BOB}\r\nSubject: grande\r\nDate: Tue, 03 Jun 2025 10:11:12 +0200\r\n\
         Message-ID: <big@test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
         allegato\r\n--b\r\nContent-Type: application/octet-stream; name=\"big.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    for _ in 0..(mb << 20) / line.len() {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b"--b--\r\n");
    m
}

/// Bytes allocated beyond `base` at the highest point of `f`, over `size`.
fn step<R>(base: usize, size: usize, f: impl FnOnce() -> R) -> (R, f64) {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let r = f();
    let extra = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (r, extra as f64 / size as f64)
}

#[test]
fn delivery_steps_stay_near_one_copy_of_the_envelope() {
    let iss = issuer();
    let index = ProviderIndex::from_records(vec![ProviderRecord {
        info: ProviderInfo {
            name: PROVIDER.into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        },
        certificates: vec![pki().signer.certificate_der().to_vec()],
    }]);
    let ids = SequentialIds::new("opec1.test", "pec.example.it");
    let builder = Builder {
        issuer: &iss,
        signer: &*pki().signer,
        ids: &ids,
    };
    let data = {
        let orig = big_original(16);
        let info = OriginalInfo::parse(&orig).unwrap();
        let rcpts = vec![(BOB.to_string(), RecipientType::Certificato)];
        let cert = Certification::for_submission(&info, SENDER, &rcpts, PEC_ID);
        let env = builder.transport_envelope(&orig, &cert, at()).unwrap();
        Bytes::from(env.to_bytes())
    };
    let size = data.len();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("pec.sqlite")).unwrap();
    // What is live with the received data only.
    let base = LIVE.load(Ordering::Relaxed);

    let (class, classify_x) = step(base, size, || classify_shared(&data, index.trust(), at()));
    let Classification::TransportEnvelope(m) = class else {
        panic!("not an envelope: {:?}", class.reason());
    };
    let ((cert, original), original_x) = step(base, size, || {
        Certification::from_verified_envelope(&m.daticert, &m.verified.content).unwrap()
    });
    drop(m);
    let (receipt, build_x) = step(base, size, || {
        builder.delivery(&cert, at(), BOB, &original).unwrap()
    });
    let receipt_len = receipt.body.len();
    let (out, row_x) = step(base, size, || {
        outbound(format!("delivery:{PEC_ID}:{BOB}"), receipt, at())
    });
    // SQLite allocates outside the Rust allocator: its share is read from the resident
    // peak (reset first; information only, the figure depends on the page cache).
    let sqlite_rss = std::fs::write("/proc/self/clear_refs", "5").ok().map(|()| {
        let before = status_kb("VmRSS");
        store
            .stage_outbound(&out, &Effect::Log(Vec::new()))
            .unwrap();
        status_kb("VmHWM").saturating_sub(before) as f64 / size as f64
    });
    println!(
        "envelope {size} bytes; extra allocation over the size: classify {classify_x:.2}, \
         original {original_x:.2}, completa receipt {build_x:.2}, outbox row {row_x:.2}; \
         resident peak while SQLite stages the row: {sqlite_rss:.2?}"
    );
    assert!(
        receipt_len > size / 2,
        "the completa receipt carries the original"
    );
    // The verified content and the original are slices of the received data.
    assert!(
        classify_x < 0.1,
        "classification copies the data: {classify_x:.2}"
    );
    assert!(original_x < 0.1, "the original is copied: {original_x:.2}");
    // One copy: the receipt's signed entity, sealed in place.
    assert!(build_x < 1.2, "building the receipt: {build_x:.2}");
    // The row takes the receipt's buffer.
    assert!(row_x < 1.2, "the outbox row: {row_x:.2}");
}

/// A row staged before the bytes had their own table (migration 11) is read back whole,
/// and new rows are read back byte for byte.
#[test]
fn outbox_rows_read_back_across_the_data_table_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pec.sqlite");
    let row = |key: &str, data: &[u8]| pec::store::Outbound {
        key: key.into(),
        message_id: format!("{key}@test"),
        mail_from: SENDER.into(),
        rcpt_to: vec![BOB.into()],
        data: data.to_vec(),
        created_at: at(),
        injected_at: None,
    };
    let new = row("new", b"Subject: new\r\n\r\nbody\r\n");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .stage_outbound(&new, &Effect::Log(Vec::new()))
            .unwrap();
    }
    // As a store before migration 11 left it: the bytes in outbox.data (the later
    // migrations apply again).
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "DROP TABLE outbox_data; DELETE FROM schema_version WHERE version >= 11;
             UPDATE outbox SET data = CAST('Subject: new\r\n\r\nbody\r\n' AS BLOB);
             INSERT INTO outbox (key, message_id, mail_from, rcpt_to, data, created_at,
                                 attempted_at)
             VALUES ('old', 'old@test', '{SENDER}', '{BOB}', X'4F4C44', 1, 1);"
        ))
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.outbound("new").unwrap().unwrap().data, new.data);
    assert_eq!(store.outbound("old").unwrap().unwrap().data, b"OLD");
    let later = row("later", &big_original(1));
    store
        .stage_outbound(&later, &Effect::Log(Vec::new()))
        .unwrap();
    assert_eq!(store.outbound("later").unwrap().unwrap(), later);
    let before = Instant::parse_cli("2030-01-01T00:00:00Z").unwrap();
    let swept = store.claim_unsent(before, at(), 10).unwrap();
    let mut keys: Vec<&str> = swept.iter().map(|o| o.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["later", "new", "old"]);
    assert!(swept
        .iter()
        .any(|o| o.key == "later" && o.data == later.data));
}
