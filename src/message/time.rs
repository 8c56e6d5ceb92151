// SPDX-License-Identifier: GPL-3.0-or-later
//! The transaction instant and Italian legal time (spec §2.4, §6).
//!
//! Every processing step takes one [`Instant`] and uses it for `Date:`, the readable text,
//! `daticert.xml` and the legal log. All formatting of Italian legal time lives here.

use chrono::{DateTime, Datelike, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Europe::Rome;

/// One point in time, with second precision (the precision of every PEC artefact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(DateTime<Utc>);

/// Source of the current time; tests drive it.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The system clock (expected to be NTP-disciplined: DM art. 9 wants drift ≤ 1 s).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::from_utc(Utc::now())
    }
}

/// A clock that returns a fixed, settable instant.
#[derive(Debug)]
pub struct FixedClock(std::sync::Mutex<Instant>);

impl FixedClock {
    pub fn new(at: Instant) -> Self {
        FixedClock(std::sync::Mutex::new(at))
    }

    pub fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn advance(&self, seconds: i64) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g = Instant::from_unix(g.unix() + seconds);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Instant {
    /// Truncates to whole seconds.
    pub fn from_utc(t: DateTime<Utc>) -> Self {
        Instant::from_unix(t.timestamp())
    }

    pub fn from_unix(seconds: i64) -> Self {
        Instant(
            Utc.timestamp_opt(seconds, 0)
                .single()
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        )
    }

    pub fn unix(self) -> i64 {
        self.0.timestamp()
    }

    pub fn utc(self) -> DateTime<Utc> {
        self.0
    }

    /// Parses `YYYY-MM-DD` (midnight Italian time) or an RFC 3339 instant.
    pub fn parse_cli(s: &str) -> Option<Self> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(Instant::from_utc(t.with_timezone(&Utc)));
        }
        let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        let local = Rome
            .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
            .earliest()?;
        Some(Instant::from_utc(local.with_timezone(&Utc)))
    }

    /// Italian legal time (CET/CEST) of this instant.
    pub fn legal(self) -> LegalTime {
        let local = self.0.with_timezone(&Rome);
        let offset = local.offset().fix().local_minus_utc();
        LegalTime {
            year: local.year(),
            month: local.month(),
            day: local.day(),
            hour: local.hour(),
            minute: local.minute(),
            second: local.second(),
            offset_seconds: offset,
        }
    }

    /// RFC 5322 `Date:` value in Italian legal time, e.g. `Fri, 14 Nov 2014 18:26:32 +0100`.
    pub fn rfc5322(self) -> String {
        self.0
            .with_timezone(&Rome)
            .format("%a, %-d %b %Y %H:%M:%S %z")
            .to_string()
    }

    /// RFC 3339 in UTC, for logs and JSON.
    pub fn rfc3339(self) -> String {
        self.0.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// A broken-down Italian legal time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub offset_seconds: i32,
}

impl LegalTime {
    /// `dd/mm/yyyy` (daticert `<giorno>` and readable texts).
    pub fn giorno(&self) -> String {
        format!("{:02}/{:02}/{:04}", self.day, self.month, self.year)
    }

    /// `hh:mm:ss` (daticert `<ora>` and readable texts).
    pub fn ora(&self) -> String {
        format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }

    /// `+0100` / `+0200` (daticert `data@zona`; readable texts put it in parentheses).
    pub fn zona(&self) -> String {
        let sign = if self.offset_seconds < 0 { '-' } else { '+' };
        let m = self.offset_seconds.unsigned_abs() / 60;
        format!("{sign}{:02}{:02}", m / 60, m % 60)
    }

    /// Compact `yyyymmddHHMMSS`, used inside PEC message identifiers.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Instant {
        Instant::parse_cli(s).unwrap()
    }

    #[test]
    fn winter_and_summer_offsets() {
        // Aruba 2014 acceptance: 17:26:32Z is 18:26:32 +0100.
        let w = at("2014-11-14T17:26:32Z").legal();
        assert_eq!(
            (w.giorno(), w.ora(), w.zona()),
            ("14/11/2014".into(), "18:26:32".into(), "+0100".into())
        );
        let s = at("2025-06-03T08:11:12Z").legal();
        assert_eq!(
            (s.giorno(), s.ora(), s.zona()),
            ("03/06/2025".into(), "10:11:12".into(), "+0200".into())
        );
    }

    #[test]
    fn dst_switches_on_the_last_sundays() {
        // 2026: summer time starts Sun 29 March 01:00Z and ends Sun 25 October 01:00Z.
        assert_eq!(at("2026-03-29T00:59:59Z").legal().zona(), "+0100");
        assert_eq!(at("2026-03-29T01:00:00Z").legal().zona(), "+0200");
        assert_eq!(at("2026-03-29T01:00:00Z").legal().ora(), "03:00:00");
        assert_eq!(at("2026-10-25T00:59:59Z").legal().ora(), "02:59:59");
        assert_eq!(at("2026-10-25T00:59:59Z").legal().zona(), "+0200");
        assert_eq!(at("2026-10-25T01:00:00Z").legal().ora(), "02:00:00");
        assert_eq!(at("2026-10-25T01:00:00Z").legal().zona(), "+0100");
    }

    #[test]
    fn date_header_and_cli_forms() {
        assert_eq!(
            at("2014-11-14T17:26:32Z").rfc5322(),
            "Fri, 14 Nov 2014 18:26:32 +0100"
        );
        assert_eq!(at("2024-12-05").rfc3339(), "2024-12-04T23:00:00Z");
        assert_eq!(at("2024-07-05").rfc3339(), "2024-07-04T22:00:00Z");
        assert!(Instant::parse_cli("05/12/2024").is_none());
        assert_eq!(
            at("2014-11-14T17:26:32Z").legal().compact(),
            "20141114182632"
        );
    }

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let c = FixedClock::new(at("2025-01-01T00:00:00Z"));
        assert_eq!(c.now(), c.now());
        c.advance(12 * 3600);
        assert_eq!(c.now().rfc3339(), "2025-01-01T12:00:00Z");
    }
}
