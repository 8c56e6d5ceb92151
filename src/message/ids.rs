//! PEC message identifiers (spec §6).
//!
//! Format, after the Aruba / Namirial engine family:
//! `opec<node>.<yyyymmddHHMMSS>.<pid>.<counter>.<random>@<service domain>`.
//! Unique across processes (pid + random) and within one (an atomic counter); the node
//! number distinguishes hosts that share a domain (scale-out).

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use super::time::Instant;

/// Where builders get new message identifiers (a trait so tests can make them predictable).
pub trait MsgIdSource: Send + Sync {
    /// A new unique identifier, without angle brackets.
    fn next_id(&self, at: Instant) -> String;
}

impl MsgIdSource for IdGenerator {
    fn next_id(&self, at: Instant) -> String {
        self.next(at)
    }
}

/// Predictable identifiers `<prefix>.<n>@<domain>`, for golden tests and examples.
#[derive(Debug)]
pub struct SequentialIds {
    prefix: String,
    domain: String,
    counter: AtomicU64,
}

impl SequentialIds {
    pub fn new(prefix: &str, domain: &str) -> Self {
        SequentialIds {
            prefix: prefix.to_string(),
            domain: domain.to_string(),
            counter: AtomicU64::new(1),
        }
    }
}

impl MsgIdSource for SequentialIds {
    fn next_id(&self, _at: Instant) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}@{}", self.prefix, self.domain)
    }
}

/// Generates PEC msgids for one service domain.
#[derive(Debug)]
pub struct IdGenerator {
    domain: String,
    node: u32,
    pid: u32,
    counter: AtomicU64,
}

impl IdGenerator {
    pub fn new(domain: impl Into<String>, node: u32) -> Self {
        IdGenerator {
            domain: domain.into().to_ascii_lowercase(),
            node,
            pid: std::process::id(),
            counter: AtomicU64::new(0),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// A new identifier without angle brackets, e.g.
    /// `opec1.20250603101112.4242.7.k3j9x0@pec.example.it`.
    pub fn next(&self, at: Instant) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let r: u64 = rand::thread_rng().gen();
        format!(
            "opec{}.{}.{}.{}.{}@{}",
            self.node,
            at.legal().compact(),
            self.pid,
            n,
            base36(r),
            self.domain
        )
    }
}

fn base36(mut v: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Puts angle brackets around a msgid if it has none (`Message-ID:` form).
pub fn bracketed(id: &str) -> String {
    let t = id.trim();
    if t.starts_with('<') && t.ends_with('>') {
        t.to_string()
    } else {
        format!("<{t}>")
    }
}

/// Strips surrounding white space and angle brackets.
pub fn unbracketed(id: &str) -> &str {
    let t = id.trim();
    t.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let g = IdGenerator::new("PEC.Example.IT", 3);
        let at = Instant::parse_cli("2025-06-03T08:11:12Z").unwrap();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = g.next(at);
            assert!(id.starts_with("opec3.20250603101112."), "{id}");
            assert!(id.ends_with("@pec.example.it"));
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"@.".contains(&b)));
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn brackets() {
        assert_eq!(bracketed("a@b"), "<a@b>");
        assert_eq!(bracketed(" <a@b> "), "<a@b>");
        assert_eq!(unbracketed(" <a@b>"), "a@b");
        assert_eq!(unbracketed("a@b"), "a@b");
    }
}
