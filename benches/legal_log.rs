// SPDX-License-Identifier: GPL-3.0-or-later
//! Legal-log benchmark (issue 7): fills a store with synthetic records through the chained
//! insert, then times a one-month search by mailbox, sealing one day, and verifying that day
//! (chain and seal). Prints the figures; not a criterion bench (each step runs once on a
//! large data set).
//!
//! Parameters (environment):
//! * `PEC_BENCH_RECORDS`: total records (default 2 000 000; the issue's figure is 10 M);
//! * `PEC_BENCH_DAY_RECORDS`: records of the sealed day (default min(1 000 000, total/2));
//! * `PEC_BENCH_DB`: database file to reuse (kept); default a temporary one.
//!
//! Records are spread over 60 days (the sealed day gets its share on top), 100 000
//! mailboxes, one or two recipients each. Sealing is timed without a TSA (one HTTP round
//! trip more with one).
//!
//! Measured 2026-11-23, 2 shared cores under load (load average 7–9), release build,
//! `PEC_BENCH_RECORDS=2000000 PEC_BENCH_DAY_RECORDS=1000000` (10 M did not fit the time
//! box at the insert rate seen under that load):
//!
//! ```text
//! insert: 2000000 records in 207.6 s (9634 records/s, chained)   [50 k/s at 200 k, idle]
//! database: 1.23 GB
//! search by mailbox, one month: median 0.6 ms, max 1.2 ms (187 records found in 5 searches)
//! seal 2026-02-04: 1000000 records in 8.54 s
//!   of which chain: 1000000 records in 3.23 s
//!   of which export: 1000000 records, 604 MB in 4.45 s
//! verify one day: 1000000 records, 1 seals in 11.01 s, 1 problems   [= "not time-stamped"]
//! ```

use std::time::Instant as Clock;

use pec::crypto::{testing, DigestAlg, PemSigner};
use pec::log;
use pec::message::kind::{MessageKind, ReceiptType, RecipientType};
use pec::message::time::Instant;
use pec::store::{EventKind, LogEvent, LogQuery, LogStore, SqliteStore, Store};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

const MAILBOXES: u64 = 100_000;
const DAYS: i64 = 60;

fn mailbox(n: u64) -> String {
    let n = n % MAILBOXES;
    format!("utente{n}@pec{}.example.it", n % 7)
}

/// A cheap deterministic pseudo-random sequence (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const KINDS: [EventKind; 5] = [
    EventKind::Issued(MessageKind::TransportEnvelope),
    EventKind::Issued(MessageKind::Acceptance),
    EventKind::Issued(MessageKind::TakeCharge),
    EventKind::Issued(MessageKind::Delivery(ReceiptType::Completa)),
    EventKind::Issued(MessageKind::Delivery(ReceiptType::Breve)),
];

fn event(rng: &mut Rng, at: i64, i: u64) -> LogEvent {
    let sender = mailbox(rng.next());
    let mut recipients = vec![(mailbox(rng.next()), RecipientType::Certificato)];
    if rng.next().is_multiple_of(3) {
        recipients.push((mailbox(rng.next()), RecipientType::Esterno));
    }
    LogEvent {
        pec_id: format!("opec2100.{i}.1@pec.example.it"),
        at: Instant::from_unix(at),
        kind: KINDS[(rng.next() % KINDS.len() as u64) as usize],
        sender,
        recipients,
        subject: format!("Pratica n. {} del fornitore", rng.next() % 100_000),
        related_ids: vec![format!("rcpt.{i}@pec.example.it")],
        provider: "PEC Example IT S.p.A.".into(),
        queue_id: Some(format!("{:X}", rng.next() % 0xFFFF_FFFF)),
        outcome: "ok".into(),
        reason: None,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let total = env("PEC_BENCH_RECORDS", 2_000_000);
    let day_records = env("PEC_BENCH_DAY_RECORDS", (total / 2).min(1_000_000));
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = std::env::var_os("PEC_BENCH_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("pec.db"));
    let store = SqliteStore::open(&path).expect("store");

    // The sealed day is the 30th of 60, Rome time.
    let first_day = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).expect("date");
    let sealed_day = first_day + chrono::Days::new(30);
    let (day_from, day_to) = log::day_bounds(sealed_day);
    let (start, _) = log::day_bounds(first_day);
    let span = DAYS * 86_400;

    let existing = store
        .search_events(&LogQuery {
            limit: Some(1),
            ..LogQuery::default()
        })
        .expect("probe")
        .len();
    if existing == 0 {
        let other = total.saturating_sub(day_records);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let t = Clock::now();
        let batch = 50_000u64;
        let mut i = 0u64;
        while i < total {
            let n = batch.min(total - i);
            let events: Vec<LogEvent> = (i..i + n)
                .map(|k| {
                    // In time order: 30 days before the sealed day, the day, 29 days after.
                    let before = other / 2;
                    let after = other - before;
                    let at = if k < before {
                        start + (k as i64) * (day_from - start) / before.max(1) as i64
                    } else if k < before + day_records {
                        day_from + ((k - before) as i64) * (day_to - day_from) / day_records as i64
                    } else {
                        let j = (k - before - day_records) as i64;
                        day_to + j * (start + span - day_to) / after.max(1) as i64
                    };
                    event(&mut rng, at, k)
                })
                .collect();
            store.log_batch(&events).expect("insert");
            i += n;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "insert: {total} records in {secs:.1} s ({:.0} records/s, chained)",
            total as f64 / secs
        );
    } else {
        println!("reusing {}", path.display());
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("database: {:.2} GB", size as f64 / 1e9);

    // Search by mailbox over one month (the month containing the sealed day).
    let month_from = Instant::from_unix(day_from - 15 * 86_400);
    let month_to = Instant::from_unix(day_from + 15 * 86_400);
    let mut times = Vec::new();
    let mut found = 0;
    for m in [17u64, 4242, 77_777, 99_999, 12_345] {
        let q = LogQuery {
            mailbox: Some(mailbox(m)),
            from: Some(month_from),
            to: Some(month_to),
            ..LogQuery::default()
        };
        let t = Clock::now();
        found += store.search_events(&q).expect("search").len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "search by mailbox, one month: median {:.1} ms, max {:.1} ms ({} records found in 5 searches)",
        times[2], times[4], found
    );

    // Seal the day.
    let pki_dir = tmp.path().join("pki");
    let pki = testing::make_test_pki(&pki_dir).expect("test pki");
    let signer =
        PemSigner::from_files(&pki.it_key, &pki.it_cert, None, DigestAlg::Sha256).expect("signer");
    let now = Instant::from_unix(day_to + 600);
    let t = Clock::now();
    match log::seal_day(&store, &signer, None, sealed_day, now) {
        Ok(log::Sealed { seal, .. }) => println!(
            "seal {}: {} records in {:.2} s",
            seal.day,
            seal.count,
            t.elapsed().as_secs_f64()
        ),
        Err(e) => println!("seal {sealed_day}: {e} (sealed by an earlier run?)"),
    }

    // The parts of a verification: the chain, and the day's export recomputed.
    let t = Clock::now();
    let chain = store
        .verify_chain(
            Some(Instant::from_unix(day_from)),
            Some(Instant::from_unix(day_to)),
        )
        .expect("chain");
    println!(
        "  of which chain: {} records in {:.2} s",
        chain.records,
        t.elapsed().as_secs_f64()
    );
    let t = Clock::now();
    let export = store.export_range(day_from, day_to).expect("export");
    println!(
        "  of which export: {} records, {:.0} MB in {:.2} s",
        export.count,
        export.bytes.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    // Verify the day: chain and seal (without a time stamp, which verify reports).
    let t = Clock::now();
    let report = log::verify(
        &store,
        Some(Instant::from_unix(day_from)),
        Some(Instant::from_unix(day_to)),
        &log::VerifyOptions::default(),
    )
    .expect("verify");
    println!(
        "verify one day: {} records, {} seals in {:.2} s, {} problems",
        report.records,
        report.seals,
        t.elapsed().as_secs_f64(),
        report.problems.len()
    );
}
