// SPDX-License-Identifier: GPL-3.0-or-later
//! Revocation status of provider certificates (issue 19 point 3): CRLs from the
//! certificate's distribution points, fetched over HTTP, checked against the issuer and
//! cached in memory and on disk; OCSP when the certificate names a responder; and the
//! policy that decides what happens when no status can be had.
//!
//! Sources, in order: every `http://` CRL distribution point of the certificate (a
//! definite answer ends the search), then every `http://` OCSP responder of its
//! authorityInfoAccess. `ldap://` and `https://` locations are skipped (noted in the
//! reason). A CRL is used only when its issuer name is the certificate's issuer and its
//! signature verifies with the issuer's key; a CRL older than the one held is refused
//! (no rollback). An OCSP response is used only when its signature verifies (the issuer,
//! or a responder the issuer delegated) and it speaks of the certificate asked about.
//!
//! "As of" an instant (`pec verify --at`): a certificate listed with a revocation date
//! after that instant was still good then; a CRL issued after the instant answers for it
//! (unless the certificate had expired before the CRL was issued: a CA may drop expired
//! certificates from its CRLs, so absence then proves nothing); a CRL issued before it
//! answers only up to its `nextUpdate`.
//!
//! Fetching is bounded: each fetch has a total deadline (`fetch_timeout`, name resolution
//! included), a cached CRL is refetched only when it is within `refresh_before` of its
//! `nextUpdate`, and after a failed fetch the same location is not tried again for
//! `retry_after` (so a CRL server that is down costs one timeout, not one per message).
//!
//! What the answer becomes is [`RevocationMode`]'s business (applied by the chain check
//! in [`super::verify`]): `grace` accepts an unknown status while the last information is
//! less than `grace` old — a stale CRL until `nextUpdate + grace`; no information at all
//! until `grace` after the first failure to get it (remembered on disk) — and reports it
//! ([`RevocationStatus::Unknown`], which the reception point logs and counts); `strict`
//! refuses it.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse};
use openssl::ocsp::{OcspResponseStatus, OcspRevokedStatus};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{CrlStatus, X509Crl, X509Ref, X509};

use crate::message::time::Instant;

/// Largest CRL or OCSP response read (real AgID and Actalis CRLs are a few KB to a few
/// hundred KB).
pub const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// What to do when the revocation status cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationMode {
    /// No revocation checking.
    Off,
    /// Accept within the grace window, report (log and count) it.
    #[default]
    Grace,
    /// Treat as not verified.
    Strict,
}

impl RevocationMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(RevocationMode::Off),
            "grace" => Some(RevocationMode::Grace),
            "strict" => Some(RevocationMode::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationMode::Off => "off",
            RevocationMode::Grace => "grace",
            RevocationMode::Strict => "strict",
        }
    }
}

/// The settings of the checker (`[verify]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    pub mode: RevocationMode,
    /// How long an unknown status is accepted in [`RevocationMode::Grace`].
    pub grace: Duration,
    /// Where fetched CRLs (and the first failure of each location) are kept; `None`: in
    /// memory only.
    pub cache_dir: Option<PathBuf>,
    /// Total deadline of one fetch (resolution, connection, request, response).
    pub fetch_timeout: Duration,
    /// After a failed fetch, do not try the same location again for this long.
    pub retry_after: Duration,
    /// Refetch a cached CRL this long before its `nextUpdate`.
    pub refresh_before: Duration,
    /// Ask the OCSP responder the certificate names when the CRLs give no answer.
    pub ocsp: bool,
}

impl Default for RevocationSettings {
    fn default() -> Self {
        RevocationSettings {
            mode: RevocationMode::Grace,
            grace: Duration::from_secs(3 * 86_400),
            cache_dir: None,
            fetch_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(60),
            refresh_before: Duration::from_secs(3600),
            ocsp: true,
        }
    }
}

/// The revocation status reported with a verified signature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RevocationStatus {
    /// Not checked (no chain policy, revocation off, or the chain itself did not verify).
    #[default]
    NotChecked,
    /// Not revoked at the verification instant, according to `source` (`crl URL`,
    /// `ocsp URL`), for every certificate of the chain below the anchor.
    Good { source: String },
    /// No status could be had and the policy accepted it (grace window): the caller logs
    /// and counts it.
    Unknown { reason: String },
}

/// What the sources say about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Good {
        source: String,
    },
    Revoked {
        at: Instant,
        reason: String,
        source: String,
    },
    /// No definite answer. `since`: when the information held stopped being current (a
    /// stale CRL's `nextUpdate`, or the first failure to get any), unix seconds.
    Unknown {
        reason: String,
        since: Option<i64>,
    },
    /// The certificate names no usable CRL distribution point or OCSP responder.
    NoSource,
}

struct CachedCrl {
    crl: X509Crl,
    this_update: i64,
    next_update: Option<i64>,
    /// SHA-256 of the issuer certificates whose key verified this CRL.
    verified_for: Mutex<HashSet<Vec<u8>>>,
}

struct Failure {
    /// Unix seconds of the first failure since the last success.
    first: i64,
    /// Unix seconds of the last attempt.
    last: i64,
    error: String,
}

struct CachedOcsp {
    answer: Answer,
    /// Unix seconds until which the answer is reused.
    until: i64,
}

/// CRL and OCSP client with its caches. One per process, shared by the roles.
pub struct RevocationChecker {
    settings: RevocationSettings,
    crls: Mutex<HashMap<String, Arc<CachedCrl>>>,
    failures: Mutex<HashMap<String, Failure>>,
    /// Unix seconds of the last fetch attempt of each CRL location.
    attempts: Mutex<HashMap<String, i64>>,
    ocsp: Mutex<HashMap<(String, Vec<u8>), CachedOcsp>>,
    /// The current time, unix seconds (a parameter so that tests can move it).
    now: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for RevocationChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationChecker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl RevocationChecker {
    pub fn new(settings: RevocationSettings) -> Self {
        Self::with_clock(settings, Box::new(unix_now))
    }

    /// As [`RevocationChecker::new`] with another clock (unix seconds).
    pub fn with_clock(
        settings: RevocationSettings,
        now: Box<dyn Fn() -> i64 + Send + Sync>,
    ) -> Self {
        RevocationChecker {
            settings,
            crls: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            ocsp: Mutex::new(HashMap::new()),
            now,
        }
    }

    pub fn settings(&self) -> &RevocationSettings {
        &self.settings
    }

    /// The current time of the checker's clock.
    pub fn now(&self) -> Instant {
        Instant::from_unix((self.now)())
    }

    /// The status of `cert` (issued by `issuer`) as of `at`.
    pub fn check(&self, cert: &X509Ref, issuer: &X509Ref, at: Instant) -> Answer {
        let (crl_urls, mut skipped) = crl_locations(cert);
        let (ocsp_urls, skipped_ocsp) = if self.settings.ocsp {
            ocsp_locations(cert)
        } else {
            (Vec::new(), Vec::new())
        };
        skipped.extend(skipped_ocsp);
        if crl_urls.is_empty() && ocsp_urls.is_empty() {
            return if skipped.is_empty() {
                Answer::NoSource
            } else {
                Answer::Unknown {
                    reason: format!("no supported location ({})", skipped.join(", ")),
                    since: None,
                }
            };
        }
        let mut reasons = Vec::new();
        let mut since: Option<i64> = None;
        let mut note = |reason: String, s: Option<i64>, since: &mut Option<i64>| {
            reasons.push(reason);
            if let Some(s) = s {
                *since = Some(since.map_or(s, |x: i64| x.max(s)));
            }
        };
        for url in &crl_urls {
            match self.crl(url, issuer) {
                Ok(crl) => match crl_answer(&crl, cert, at, url) {
                    Answer::Unknown { reason, since: s } => note(reason, s, &mut since),
                    definite => return definite,
                },
                Err((reason, first)) => note(format!("crl {url}: {reason}"), first, &mut since),
            }
        }
        for url in &ocsp_urls {
            match self.ocsp(url, cert, issuer, at) {
                Answer::Unknown { reason, since: s } => note(reason, s, &mut since),
                definite => return definite,
            }
        }
        Answer::Unknown {
            reason: reasons.join("; "),
            since,
        }
    }

    /// The CRL of `url` for `issuer`: the cached one when current, else fetched (bounded).
    /// A stale cached CRL is returned when a refetch fails. Errors carry the first failure
    /// time of the location.
    fn crl(&self, url: &str, issuer: &X509Ref) -> Result<Arc<CachedCrl>, (String, Option<i64>)> {
        let now = (self.now)();
        let issuer_id = issuer
            .digest(MessageDigest::sha256())
            .map(|d| d.to_vec())
            .unwrap_or_default();
        let mut cached = self
            .crls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .cloned();
        if cached.is_none() {
            if let Some(c) = self.load_from_disk(url) {
                cached = Some(c.clone());
                self.crls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(url.to_string(), c);
            }
        }
        // A cached CRL is used only for the issuer that signed it.
        let cached = cached.filter(|c| check_crl_for(c, issuer, &issuer_id).is_ok());
        let due = |c: &CachedCrl| match c.next_update {
            Some(n) => now >= n.saturating_sub(secs(self.settings.refresh_before)),
            None => now >= c.this_update + 86_400,
        };
        if let Some(c) = &cached {
            if !due(c) {
                return Ok(c.clone());
            }
            // Due, but refetched lately (the CA has not published a newer one yet): at most
            // one fetch per retry_after, not one per message.
            let last = self
                .attempts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(url)
                .copied();
            if last.is_some_and(|t| now - t < secs(self.settings.retry_after)) {
                return Ok(c.clone());
            }
        }
        // Back off after a recent failure.
        {
            let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = failures.get(url) {
                if now - f.last < secs(self.settings.retry_after) {
                    return cached.ok_or_else(|| (f.error.clone(), Some(f.first)));
                }
            }
        }
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(url.to_string(), now);
        match self.fetch_crl(url, issuer, &issuer_id, cached.as_deref()) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                self.crls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(url.to_string(), fresh.clone());
                self.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(url);
                self.forget_failure_on_disk(url);
                Ok(fresh)
            }
            Err(error) => {
                tracing::warn!(url, "revocation: cannot refresh the crl: {error}");
                let first = self.record_failure(url, &error, now);
                cached.ok_or((error, Some(first)))
            }
        }
    }

    fn fetch_crl(
        &self,
        url: &str,
        issuer: &X509Ref,
        issuer_id: &[u8],
        held: Option<&CachedCrl>,
    ) -> Result<CachedCrl, String> {
        let body = http(url, None, self.settings.fetch_timeout).map_err(|e| e.to_string())?;
        let fresh = parse_crl(&body)?;
        check_crl_for(&fresh, issuer, issuer_id)?;
        let now = (self.now)();
        if fresh.this_update > now + 300 {
            return Err("crl thisUpdate is in the future".into());
        }
        if let Some(h) = held {
            if fresh.this_update < h.this_update {
                return Err("crl is older than the one held (rollback refused)".into());
            }
        }
        if let Some(dir) = &self.settings.cache_dir {
            if let Err(e) = write_atomic(&cache_file(dir, url, "crl"), &body) {
                tracing::warn!(url, "revocation: cannot write the crl cache: {e}");
            }
        }
        Ok(fresh)
    }

    fn load_from_disk(&self, url: &str) -> Option<Arc<CachedCrl>> {
        let dir = self.settings.cache_dir.as_ref()?;
        let der = std::fs::read(cache_file(dir, url, "crl")).ok()?;
        match parse_crl(&der) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(url, "revocation: cached crl unreadable, ignored: {e}");
                None
            }
        }
    }

    /// Records a failure; returns the first failure time of the location (kept on disk,
    /// so that the grace window survives restarts and is shared with `pec verify`).
    fn record_failure(&self, url: &str, error: &str, now: i64) -> i64 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let first = match failures.get(url) {
            Some(f) => f.first,
            None => self.first_failure_on_disk(url, now),
        };
        failures.insert(
            url.to_string(),
            Failure {
                first,
                last: now,
                error: error.to_string(),
            },
        );
        first
    }

    fn first_failure_on_disk(&self, url: &str, now: i64) -> i64 {
        let Some(dir) = &self.settings.cache_dir else {
            return now;
        };
        let path = cache_file(dir, url, "fail");
        if let Some(t) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            return t;
        }
        let _ = write_atomic(&path, now.to_string().as_bytes());
        now
    }

    fn forget_failure_on_disk(&self, url: &str) {
        if let Some(dir) = &self.settings.cache_dir {
            let _ = std::fs::remove_file(cache_file(dir, url, "fail"));
        }
    }

    fn ocsp(&self, url: &str, cert: &X509Ref, issuer: &X509Ref, at: Instant) -> Answer {
        let now = (self.now)();
        let key = (
            url.to_string(),
            cert.digest(MessageDigest::sha256())
                .map(|d| d.to_vec())
                .unwrap_or_default(),
        );
        if let Some(c) = self
            .ocsp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            if now < c.until {
                return as_of(c.answer.clone(), at);
            }
        }
        {
            let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = failures.get(url) {
                if now - f.last < secs(self.settings.retry_after) {
                    return Answer::Unknown {
                        reason: format!("ocsp {url}: {}", f.error),
                        since: Some(f.first),
                    };
                }
            }
        }
        match self.ask_ocsp(url, cert, issuer) {
            Ok((answer, until)) => {
                self.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(url);
                self.forget_failure_on_disk(url);
                self.ocsp.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    key,
                    CachedOcsp {
                        answer: answer.clone(),
                        until: until.min(now + 3600).max(now),
                    },
                );
                as_of(answer, at)
            }
            Err(error) => {
                tracing::warn!(url, "revocation: ocsp: {error}");
                let first = self.record_failure(url, &error, now);
                Answer::Unknown {
                    reason: format!("ocsp {url}: {error}"),
                    since: Some(first),
                }
            }
        }
    }

    /// One OCSP exchange: the answer as of now and until when it may be reused.
    fn ask_ocsp(
        &self,
        url: &str,
        cert: &X509Ref,
        issuer: &X509Ref,
    ) -> Result<(Answer, i64), String> {
        let e = |x: openssl::error::ErrorStack| x.to_string();
        let id = || OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer).map_err(e);
        let mut req = OcspRequest::new().map_err(e)?;
        req.add_id(id()?).map_err(e)?;
        let body = req.to_der().map_err(e)?;
        let resp =
            http(url, Some(&body), self.settings.fetch_timeout).map_err(|x| x.to_string())?;
        let resp =
            OcspResponse::from_der(&resp).map_err(|_| "malformed ocsp response".to_string())?;
        if resp.status() != OcspResponseStatus::SUCCESSFUL {
            return Err(format!("responder status {}", resp.status().as_raw()));
        }
        let basic = resp.basic().map_err(e)?;
        let mut certs = Stack::new().map_err(e)?;
        certs.push(issuer.to_owned()).map_err(e)?;
        let mut store = X509StoreBuilder::new().map_err(e)?;
        store.add_cert(issuer.to_owned()).map_err(e)?;
        // The issuer may be an intermediate (AgID CA1): it is the anchor here.
        store.set_flags(X509VerifyFlags::PARTIAL_CHAIN).map_err(e)?;
        let store = store.build();
        basic
            .verify(&certs, &store, OcspFlag::empty())
            .map_err(|x| format!("response signature does not verify: {x}"))?;
        let id = id()?;
        let status = basic
            .find_status(&id)
            .ok_or_else(|| "response does not speak of the certificate".to_string())?;
        status
            .check_validity(300, None)
            .map_err(|_| "response is not current (thisUpdate/nextUpdate)".to_string())?;
        let now = (self.now)();
        let until = status
            .next_update()
            .and_then(|t| gtime(&t.to_string()))
            .unwrap_or(now + 3600);
        let source = format!("ocsp {url}");
        let answer = if status.status == OcspCertStatus::GOOD {
            Answer::Good { source }
        } else if status.status == OcspCertStatus::REVOKED {
            let at = status
                .revocation_time
                .and_then(|t| gtime(&t.to_string()))
                .map(Instant::from_unix)
                .ok_or_else(|| "revoked without a readable revocation time".to_string())?;
            Answer::Revoked {
                at,
                reason: ocsp_reason(status.reason).into(),
                source,
            }
        } else {
            Answer::Unknown {
                reason: format!("ocsp {url}: the responder does not know the certificate"),
                since: None,
            }
        };
        Ok((answer, until))
    }
}

/// An answer obtained now, as of `at`: a revocation after `at` did not apply then.
fn as_of(answer: Answer, at: Instant) -> Answer {
    match answer {
        Answer::Revoked {
            at: when, source, ..
        } if when > at => Answer::Good {
            source: format!(
                "{source} (revoked {} after the instant checked)",
                when.rfc3339()
            ),
        },
        other => other,
    }
}

fn ocsp_reason(r: OcspRevokedStatus) -> &'static str {
    match r {
        OcspRevokedStatus::KEY_COMPROMISE => "keyCompromise",
        OcspRevokedStatus::CA_COMPROMISE => "cACompromise",
        OcspRevokedStatus::AFFILIATION_CHANGED => "affiliationChanged",
        OcspRevokedStatus::STATUS_SUPERSEDED => "superseded",
        OcspRevokedStatus::STATUS_CESSATION_OF_OPERATION => "cessationOfOperation",
        OcspRevokedStatus::STATUS_CERTIFICATE_HOLD => "certificateHold",
        _ => "unspecified",
    }
}

/// `Dec  6 09:18:00 2026 GMT` (OpenSSL's print form) → unix seconds.
fn gtime(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches("GMT").trim();
    let t = chrono::NaiveDateTime::parse_from_str(s, "%b %e %H:%M:%S%.f %Y").ok()?;
    Some(t.and_utc().timestamp())
}

fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

fn parse_crl(der: &[u8]) -> Result<CachedCrl, String> {
    let crl = X509Crl::from_der(der)
        .or_else(|_| X509Crl::from_pem(der))
        .map_err(|_| "not a crl (der or pem)".to_string())?;
    let this_update =
        asn1_unix(crl.last_update()).ok_or_else(|| "unreadable crl thisUpdate".to_string())?;
    let next_update = crl.next_update().and_then(asn1_unix);
    Ok(CachedCrl {
        crl,
        this_update,
        next_update,
        verified_for: Mutex::new(HashSet::new()),
    })
}

/// The CRL must be the issuer's: same name, signature by its key.
fn check_crl_for(c: &CachedCrl, issuer: &X509Ref, issuer_id: &[u8]) -> Result<(), String> {
    if c.verified_for
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(issuer_id)
    {
        return Ok(());
    }
    let same_name = matches!(
        c.crl.issuer_name().try_cmp(issuer.subject_name()),
        Ok(std::cmp::Ordering::Equal)
    );
    if !same_name {
        return Err("crl issuer is not the certificate's issuer".into());
    }
    let key = issuer.public_key().map_err(|e| e.to_string())?;
    match c.crl.verify(&key) {
        Ok(true) => {
            c.verified_for
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(issuer_id.to_vec());
            Ok(())
        }
        _ => Err("crl signature does not verify with the issuer's key (wrong ca?)".into()),
    }
}

/// What a CRL (checked already) says about `cert` as of `at`.
fn crl_answer(c: &CachedCrl, cert: &X509Ref, at: Instant, url: &str) -> Answer {
    let source = format!("crl {url}");
    let owned: X509 = cert.to_owned();
    let at_unix = at.unix();
    match c.crl.get_by_cert(&owned) {
        CrlStatus::Revoked(entry) => {
            let when = asn1_unix(entry.revocation_date()).unwrap_or(i64::MIN);
            let reason = entry
                .extension::<openssl::x509::ReasonCode>()
                .ok()
                .flatten()
                .map(|(_, r)| crl_reason(r.get_i64().unwrap_or(0)))
                .unwrap_or("unspecified");
            if when <= at_unix {
                return Answer::Revoked {
                    at: Instant::from_unix(when),
                    reason: reason.into(),
                    source,
                };
            }
            return Answer::Good {
                source: format!(
                    "{source} (revoked {} after the instant checked)",
                    Instant::from_unix(when).rfc3339()
                ),
            };
        }
        CrlStatus::RemoveFromCrl(_) | CrlStatus::NotRevoked => {}
    }
    let not_after = asn1_unix(cert.not_after()).unwrap_or(i64::MAX);
    if c.this_update >= at_unix {
        if not_after < c.this_update {
            return Answer::Unknown {
                reason: format!(
                    "{source}: issued after the certificate expired, so it need not list it"
                ),
                since: None,
            };
        }
        return Answer::Good { source };
    }
    let next = c.next_update.unwrap_or(c.this_update + 86_400);
    if at_unix <= next {
        Answer::Good { source }
    } else {
        Answer::Unknown {
            reason: format!(
                "{source}: stale (nextUpdate {})",
                Instant::from_unix(next).rfc3339()
            ),
            since: Some(next),
        }
    }
}

fn crl_reason(code: i64) -> &'static str {
    match code {
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unspecified",
    }
}

/// `http://` CRL distribution points, and the locations skipped.
pub fn crl_locations(cert: &X509Ref) -> (Vec<String>, Vec<String>) {
    let (mut use_, mut skip) = (Vec::new(), Vec::new());
    if let Some(points) = cert.crl_distribution_points() {
        for p in &points {
            let Some(names) = p.distpoint().and_then(|d| d.fullname()) else {
                continue;
            };
            for n in names {
                if let Some(uri) = n.uri() {
                    if uri.starts_with("http://") {
                        use_.push(uri.to_string());
                    } else {
                        skip.push(format!("crl {}", scheme(uri)));
                    }
                }
            }
        }
    }
    (use_, skip)
}

/// `http://` OCSP responders of the authorityInfoAccess, and the locations skipped.
pub fn ocsp_locations(cert: &X509Ref) -> (Vec<String>, Vec<String>) {
    let (mut use_, mut skip) = (Vec::new(), Vec::new());
    if let Ok(list) = cert.ocsp_responders() {
        for r in &list {
            let s: &str = r;
            if s.starts_with("http://") {
                use_.push(s.to_string());
            } else {
                skip.push(format!("ocsp {}", scheme(s)));
            }
        }
    }
    (use_, skip)
}

fn scheme(uri: &str) -> String {
    let s = uri.split(':').next().unwrap_or("");
    format!(
        "{}:// not supported",
        s.chars().take(16).collect::<String>()
    )
}

fn cache_file(dir: &Path, url: &str, ext: &str) -> PathBuf {
    use sha2::Digest;
    dir.join(format!(
        "{}.{ext}",
        hex::encode(sha2::Sha256::digest(url.as_bytes()))
    ))
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unsupported url (only http://HOST[:PORT]/PATH)")]
    Url,
    #[error("{0}")]
    Http(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// `(host, port, path)` of an `http://` URL.
fn parse_url(url: &str) -> Result<(String, u16, String), FetchError> {
    let rest = url.strip_prefix("http://").ok_or(FetchError::Url)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse().map_err(|_| FetchError::Url)?,
        ),
        _ => (authority, 80),
    };
    if host.is_empty() || authority.contains('@') {
        return Err(FetchError::Url);
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// Resolves `host:port` within `timeout` (the resolver itself has no deadline, so it runs
/// on its own thread and is abandoned when late).
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, FetchError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::spawn(move || {
        let r = (name.as_str(), port)
            .to_socket_addrs()
            .map(|mut a| a.next());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(Some(a))) => Ok(a),
        Ok(Ok(None)) => Err(FetchError::Http("no address".into())),
        Ok(Err(e)) => Err(FetchError::Http(format!("cannot resolve: {e}"))),
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

/// GET `url` (or POST `post` as `application/ocsp-request`) and return the body of a 200
/// answer, all within `timeout`.
pub fn http(url: &str, post: Option<&[u8]>, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let deadline = std::time::Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(FetchError::Timeout(timeout))
    };
    let (host, port, path) = parse_url(url)?;
    let addr = resolve(&host, port, timeout)?;
    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            FetchError::Timeout(timeout)
        }
        _ => FetchError::Http(format!("connect: {e}")),
    })?;
    let host_header = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let head = match post {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: pec/{}\r\n\
             Content-Type: application/ocsp-request\r\nAccept: application/ocsp-response\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            body.len()
        ),
        None => format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: pec/{}\r\n\
             Connection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        ),
    };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            FetchError::Timeout(timeout)
        }
        _ => FetchError::Http(e.to_string()),
    };
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    stream.write_all(head.as_bytes()).map_err(io)?;
    if let Some(body) = post {
        stream.write_all(body).map_err(io)?;
    }
    // Read until EOF, never past the deadline (a server trickling bytes is cut off).
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        // A server that keeps the connection open (HTTP/1.1 keep-alive, `openssl ocsp`)
        // has answered once Content-Length bytes of body are in.
        if let Some(end) = memchr::memmem::find(&response, b"\r\n\r\n") {
            if let Some(len) = super::http::content_length(&response[..end]) {
                if response.len() >= end + 4 + len {
                    break;
                }
            }
        }
        if response.len() as u64 > MAX_RESPONSE {
            return Err(FetchError::Http(format!(
                "response larger than {MAX_RESPONSE} bytes"
            )));
        }
    }
    super::http::response_body(&response).map_err(FetchError::Http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_times() {
        assert_eq!(
            parse_url("http://ca1.agid.gov.it/CRL").unwrap(),
            ("ca1.agid.gov.it".into(), 80, "/CRL".into())
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://u@x/").is_err());
        assert_eq!(gtime("Dec  6 09:18:00 2026 GMT"), Some(1_796_548_680));
    }

    #[test]
    fn a_silent_server_is_cut_off_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            // Read the request, answer nothing until the client gives up.
            let mut s = s;
            let mut b = [0u8; 1024];
            while let Ok(n) = s.read(&mut b) {
                if n == 0 {
                    break;
                }
            }
        });
        let r = http(
            &format!("http://{addr}/crl"),
            None,
            Duration::from_millis(300),
        );
        assert!(matches!(r, Err(FetchError::Timeout(_))), "{r:?}");
        hold.join().unwrap();
    }
}
