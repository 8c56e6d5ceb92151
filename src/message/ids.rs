// SPDX-License-Identifier: GPL-3.0-or-later
//! PEC message identifiers (spec §6).
//!
//! Format, after the Aruba / Namirial engine family:
//! `opec<node>.<yyyymmddHHMMSS>.<pid>.<counter>.<random>@<service domain>`.
//! Unique across processes (pid + random) and within one (an atomic counter); the node
//! number distinguishes hosts that share a domain (scale-out).

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use super::mime::{fields, normalize_crlf, split_header_body};
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

/// Counter of [`rem_id`] in this process.
static REM_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new REM identifier (an evidence's `EvidenceIdentifier`, `REM-Evidence-ID`) in the
/// style of the REM kits: four groups of 8 upper-case hex digits (time, process, counter,
/// random) then the service address, e.g.
/// `16A0CF65.00566CE0.242DDC3F.03B4A2C1.rem-service@rem.example.it`. Unique across
/// processes (pid + random) and within one (the counter).
pub fn rem_id(at: Instant, service_address: &str) -> String {
    let n = REM_COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::thread_rng().gen();
    format!(
        "{:08X}.{:08X}.{:08X}.{:08X}.{}",
        at.unix() as u32,
        std::process::id(),
        n as u32,
        r,
        service_address.trim().to_ascii_lowercase()
    )
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

/// `REM-MessageType` of a REM dispatch (`crate::rem::message::MESSAGE_TYPE_DISPATCH`,
/// written here because `rem` builds on this module).
const REM_DISPATCH: &str = "http://uri.etsi.org/19522/v1#/ERDMessageType/dispatch";

/// The PEC msgid of `data` if it looks like a transport envelope: the top-level
/// `Message-ID` (without angle brackets) when the top-level header also carries
/// `X-Trasporto: posta-certificata`, or, for a REM dispatch (issue 20), `REM-MessageType`
/// dispatch (the REM message identifier of our dispatches is the PEC msgid).
pub fn envelope_id(data: &[u8]) -> Option<String> {
    let raw = normalize_crlf(data);
    let (header, _) = split_header_body(&raw);
    let fields = fields(header).ok()?;
    let is_envelope = fields.iter().any(|f| {
        (f.is("X-Trasporto") && f.unfolded().eq_ignore_ascii_case("posta-certificata"))
            || (f.is("REM-MessageType") && f.unfolded().trim() == REM_DISPATCH)
    });
    if !is_envelope {
        return None;
    }
    let id = fields.iter().find(|f| f.is("Message-ID"))?.unfolded();
    let id = unbracketed(&id);
    (!id.is_empty()).then(|| id.to_string())
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

    #[test]
    fn rem_ids_are_unique_and_in_the_kit_style() {
        let at = Instant::parse_cli("2025-06-03T08:11:12Z").unwrap();
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let id = rem_id(at, "rem-service@REM.example.it");
            let (local, domain) = id.split_once('@').unwrap();
            assert_eq!(domain, "rem.example.it");
            let groups: Vec<&str> = local.split('.').collect();
            assert_eq!(groups.len(), 5, "{id}");
            assert_eq!(groups[4], "rem-service");
            assert!(groups[..4].iter().all(|g| g.len() == 8
                && g.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn envelope_id_needs_the_transport_header() {
        let env = b"Message-ID: <opec1.x@pec.example.it>\r\nX-Trasporto: posta-certificata\r\n\r\nbody\r\n";
        assert_eq!(envelope_id(env).as_deref(), Some("opec1.x@pec.example.it"));
        let lf = b"X-Trasporto:  Posta-Certificata\nMessage-ID:\n <a@b>\n\nbody\n";
        assert_eq!(envelope_id(lf).as_deref(), Some("a@b"));
        let plain = b"Message-ID: <a@b>\r\nSubject: hi\r\n\r\nX-Trasporto: posta-certificata\r\n";
        assert_eq!(envelope_id(plain), None);
        let receipt = b"Message-ID: <a@b>\r\nX-Ricevuta: accettazione\r\n\r\n";
        assert_eq!(envelope_id(receipt), None);
        assert_eq!(envelope_id(b"garbage"), None);
        let dispatch = b"Message-ID: <a@b>\r\nREM-MessageType: http://uri.etsi.org/19522/v1#/ERDMessageType/dispatch\r\n\r\n";
        assert_eq!(envelope_id(dispatch).as_deref(), Some("a@b"));
        let receipt = b"Message-ID: <a@b>\r\nREM-MessageType: http://uri.etsi.org/19522/v1#/ERDMessageType/receipt\r\n\r\n";
        assert_eq!(envelope_id(receipt), None);
    }
}
