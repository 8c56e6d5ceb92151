// SPDX-License-Identifier: GPL-3.0-or-later
//! The operator's commands: `pec check-config --live`, `pec status`, `pec keys` and
//! `pec domain add|list|remove`. Each prints one line per check and returns the exit code.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use openssl::x509::X509;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use crate::config::{Config, Endpoint, Settings};
use crate::crypto::Signer;
use crate::message::time::{Clock, Instant, SystemClock};
use crate::smtp::client::{ClientTimeouts, SmtpInjector};
use crate::smtp::lmtp::{LmtpClient, LmtpTimeouts};
use crate::store::LogStore;

/// How long each network check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The name the `--live` probes greet with (`EHLO pec-check`, `LHLO pec-check`).
const HELLO_NAME: &str = "pec-check";

/// Days before the signing certificate's expiry from which `pec keys` and `pec status`
/// warn.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok(String),
    /// Works, but needs attention soon (does not fail the command).
    Warn(String),
    Failed(String),
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self {
            Verdict::Ok(_) => "ok",
            Verdict::Warn(_) => "WARNING",
            Verdict::Failed(_) => "FAILED",
        }
    }
    fn text(&self) -> &str {
        match self {
            Verdict::Ok(t) | Verdict::Warn(t) | Verdict::Failed(t) => t,
        }
    }
    pub fn failed(&self) -> bool {
        matches!(self, Verdict::Failed(_))
    }
}

/// Prints the checks as `name: ok|WARNING|FAILED: detail`; 1 when any failed, else 0.
pub fn report(checks: &[(String, Verdict)]) -> i32 {
    for (name, v) in checks {
        println!("{name}: {}: {}", v.word(), v.text());
    }
    i32::from(checks.iter().any(|(_, v)| v.failed()))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// A TCP connection with the check timeout, to `host:port`.
fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    use std::net::ToSocketAddrs;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("no address for {host}");
    for a in addrs {
        match TcpStream::connect_timeout(&a, CHECK_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(CHECK_TIMEOUT));
                let _ = s.set_write_timeout(Some(CHECK_TIMEOUT));
                return Ok(s);
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

/// Greeting, `EHLO` and `QUIT` with the SMTP client that reinjects: Postfix's listener
/// speaks SMTP.
fn smtp_hello(endpoint: &Endpoint, helo: &str) -> Verdict {
    let addr = match crate::wiring::tcp(endpoint, "reinject") {
        Ok(a) => a,
        Err(e) => return Verdict::Failed(e.to_string()),
    };
    let client = SmtpInjector::new(addr, helo.to_string()).with_timeouts(ClientTimeouts {
        connect: CHECK_TIMEOUT,
        command: CHECK_TIMEOUT,
        ..ClientTimeouts::default()
    });
    match runtime().and_then(|rt| rt.block_on(client.probe())) {
        Ok(()) => Verdict::Ok(format!("{endpoint}: answers EHLO")),
        Err(e) => Verdict::Failed(format!("{endpoint}: {e}")),
    }
}

/// Greeting, `LHLO` and `QUIT` with the delivery point's LMTP client: Dovecot speaks LMTP.
fn lmtp_hello(endpoint: &Endpoint, lhlo: &str) -> Verdict {
    let addr = match crate::wiring::lmtp_addr(endpoint, "delivery.dovecot") {
        Ok(a) => a,
        Err(e) => return Verdict::Failed(e.to_string()),
    };
    let client = LmtpClient::new(addr, lhlo.to_string()).with_timeouts(LmtpTimeouts {
        connect: CHECK_TIMEOUT,
        command: CHECK_TIMEOUT,
        ..LmtpTimeouts::default()
    });
    match runtime().and_then(|rt| rt.block_on(client.probe())) {
        Ok(()) => Verdict::Ok(format!("{endpoint}: answers LHLO")),
        Err(e) => Verdict::Failed(format!("{endpoint}: {e}")),
    }
}

/// The usage bits a key's certificate must have: the PEC message key's digitalSignature
/// (and emailProtection when it lists extended usages, spec §2.2); the seal key's
/// digitalSignature or nonRepudiation.
fn usage_problem(der: &[u8], seal: bool) -> Option<String> {
    use openssl::x509::{X509ExtendedKeyUsage, X509KeyUsage};
    let cert = match X509::from_der(der) {
        Ok(c) => c,
        Err(e) => return Some(format!("not a certificate: {e}")),
    };
    let ku = cert.key_usage().unwrap_or(X509KeyUsage::empty());
    if seal {
        if !ku.intersects(X509KeyUsage::DIGITAL_SIGNATURE | X509KeyUsage::NON_REPUDIATION) {
            return Some("key usage has neither digitalSignature nor nonRepudiation".into());
        }
    } else {
        if !ku.contains(X509KeyUsage::DIGITAL_SIGNATURE) {
            return Some("key usage lacks digitalSignature".into());
        }
        if cert
            .extended_key_usage()
            .is_some_and(|e| !e.contains(X509ExtendedKeyUsage::SMIME))
        {
            return Some("extended key usage lacks emailProtection".into());
        }
    }
    None
}

/// One key, without signing anything: opened (PKCS#11 login), found with its certificate
/// and checked to pair with it (the signer does both when it opens), its certificate's
/// usage bits checked ([`usage_problem`]).
fn check_key(
    opened: Result<Arc<dyn Signer>, crate::wiring::WiringError>,
    seal: bool,
) -> (Option<Arc<dyn Signer>>, Verdict) {
    let signer = match opened {
        Ok(s) => s,
        Err(e) => return (None, Verdict::Failed(e.to_string())),
    };
    let der = signer.certificate_der();
    let subject = certificate(der).map(|c| c.subject).unwrap_or_default();
    let verdict = match usage_problem(der, seal) {
        Some(p) => Verdict::Failed(format!("certificate of {subject}: {p}")),
        None => Verdict::Ok(format!(
            "key found, paired with its certificate ({subject}), usage bits right"
        )),
    };
    (Some(signer), verdict)
}

/// The PEC message key and the seal key ([`check_key`]), and that they are two keys.
fn check_keys(config: &Config) -> Vec<(String, Verdict)> {
    let (pec, v) = check_key(crate::wiring::open_signer(config), false);
    let mut checks = vec![("signing key".to_string(), v)];
    let (seal, v) = check_key(crate::wiring::open_seal_signer(config), true);
    checks.push(("seal key".to_string(), v));
    if let (Some(pec), Some(seal)) = (pec, seal) {
        let public = |der: &[u8]| {
            X509::from_der(der)
                .and_then(|c| c.public_key())
                .and_then(|k| k.public_key_to_der())
                .ok()
        };
        if public(pec.certificate_der()) == public(seal.certificate_der()) {
            checks.push((
                "seal key".to_string(),
                Verdict::Failed(
                    "the seal key is the PEC message key: give it a key of its own".into(),
                ),
            ));
        }
    }
    checks
}

fn check_store(config: &Config) -> (Option<Arc<dyn LogStore>>, Verdict) {
    if config.store.backend == crate::config::StoreBackend::Postgres {
        return check_postgres(config);
    }
    match crate::wiring::open_store(config).and_then(|s| s.health().map(|h| (s, h))) {
        Ok((s, h)) => {
            let text = format!("{}: {} legal log records", s.describe(), h.log_records);
            (Some(s), Verdict::Ok(text))
        }
        Err(e) => (None, Verdict::Failed(e.to_string())),
    }
}

/// The PostgreSQL store: reached with the configured TLS, and what the server says of it.
fn check_postgres(config: &Config) -> (Option<Arc<dyn LogStore>>, Verdict) {
    use crate::store::postgres::PgStore;
    let opened = PgStore::open_config(&config.store).and_then(|s| {
        let h = s.health()?;
        let tls = s.session_tls()?;
        Ok((s, h, tls))
    });
    match opened {
        Ok((s, h, tls)) => {
            let session = match tls {
                Some((version, cipher)) => format!("TLS {version} {cipher}"),
                None => "no TLS".to_string(),
            };
            let text = format!(
                "{}: {} legal log records; {session} ({})",
                s.describe(),
                h.log_records,
                s.tls().describe()
            );
            (Some(Arc::new(s)), Verdict::Ok(text))
        }
        Err(e) => (None, Verdict::Failed(e.to_string())),
    }
}

fn check_clamd(settings: &Settings) -> Verdict {
    let addr = crate::wiring::clamd_addr(settings);
    let clamd = match crate::antivirus::Clamd::new(&addr, CHECK_TIMEOUT) {
        Ok(c) => c,
        Err(e) => return Verdict::Failed(e.to_string()),
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return Verdict::Failed(e),
    };
    match rt.block_on(clamd.ping()) {
        Ok(()) => Verdict::Ok(format!("{addr}: PONG")),
        Err(e) => Verdict::Failed(format!("{addr}: {e}")),
    }
}

fn check_index(config: &Config, settings: &Settings) -> Verdict {
    match &settings.index_source {
        Some(source) => {
            let rt = match runtime() {
                Ok(r) => r,
                Err(e) => return Verdict::Failed(e),
            };
            let name = source.name();
            let fetched = rt.block_on(async {
                tokio::time::timeout(CHECK_TIMEOUT * 6, source.fetch())
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())
            });
            match fetched.and_then(|ldif| {
                crate::index::sync::check(ldif, &name, None, config.index.force, SystemClock.now())
                    .map_err(|e| e.to_string())
            }) {
                Ok(c) => Verdict::Ok(format!(
                    "{name}: {} providers (not stored: `pec index sync` stores)",
                    c.stored.providers
                )),
                Err(e) => Verdict::Failed(format!("{name}: {e}")),
            }
        }
        None => match crate::index::ProviderIndex::load_ldif(&config.index.ldif) {
            Ok(i) => Verdict::Ok(format!(
                "{}: {} providers (no ldap_url or signed_ldif: the file is the index)",
                config.index.ldif.display(),
                i.providers().len()
            )),
            Err(e) => Verdict::Failed(e.to_string()),
        },
    }
}

/// `pec check-config --live`: the offline checks passed; reaches each outside system.
pub fn check_live(config: &Config) -> Vec<(String, Verdict)> {
    let settings = match config.settings() {
        Ok(s) => s,
        Err(e) => return vec![("configuration".into(), Verdict::Failed(e.to_string()))],
    };
    let mut checks = check_keys(config);
    checks.extend([
        ("store".to_string(), check_store(config).1),
        ("clamd".to_string(), check_clamd(&settings)),
        (
            "dovecot lmtp".to_string(),
            lmtp_hello(&settings.delivery.dovecot, HELLO_NAME),
        ),
    ]);
    let mut reinject = vec![
        settings.access.reinject.clone(),
        settings.filter.reinject.clone(),
        settings.delivery.reinject.clone(),
    ];
    reinject.dedup();
    for r in reinject {
        checks.push((
            "postfix reinjection".to_string(),
            smtp_hello(&r, HELLO_NAME),
        ));
    }
    checks.push(("provider index".to_string(), check_index(config, &settings)));
    if let Some(path) = &config.index.tls_policy_map {
        checks.push(("tls policy map".to_string(), check_tls_policy_map(path)));
    }
    checks
}

/// `index.tls_policy_map` exists and is a map (Postfix's SMTP client stops on a missing
/// one): how many domains it lists.
fn check_tls_policy_map(path: &std::path::Path) -> Verdict {
    match std::fs::read_to_string(path) {
        Ok(text) => Verdict::Ok(format!(
            "{}: {} certified domains",
            path.display(),
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .count()
        )),
        Err(e) => Verdict::Failed(format!(
            "{}: {e} (Postfix's SMTP client stops without it: run `pec index tls-policy`)",
            path.display()
        )),
    }
}

/// What `pec keys` shows of a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub sha256: String,
    pub sha1: String,
}

fn name(n: &openssl::x509::X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn asn1_time(t: &openssl::asn1::Asn1TimeRef) -> Option<DateTime<Utc>> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    DateTime::from_timestamp(i64::from(d.days) * 86_400 + i64::from(d.secs), 0)
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a DER certificate.
pub fn certificate(der: &[u8]) -> Result<CertInfo, String> {
    let c = X509::from_der(der).map_err(|e| format!("not a certificate: {e}"))?;
    let digest = |md| {
        c.digest(md)
            .map(|d| colon_hex(&d))
            .map_err(|e| e.to_string())
    };
    Ok(CertInfo {
        subject: name(c.subject_name()),
        issuer: name(c.issuer_name()),
        serial: c
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .map_err(|e| e.to_string())?,
        not_before: asn1_time(c.not_before()).ok_or("unreadable notBefore")?,
        not_after: asn1_time(c.not_after()).ok_or("unreadable notAfter")?,
        sha256: digest(openssl::hash::MessageDigest::sha256())?,
        sha1: digest(openssl::hash::MessageDigest::sha1())?,
    })
}

/// The validity of the signing certificate at `now`.
fn expiry(info: &CertInfo, now: DateTime<Utc>, warn_days: i64) -> Verdict {
    let left = info.not_after - now;
    let until = info.not_after.to_rfc3339();
    if now < info.not_before {
        Verdict::Failed(format!(
            "not valid yet (from {})",
            info.not_before.to_rfc3339()
        ))
    } else if left.num_seconds() <= 0 {
        Verdict::Failed(format!("expired on {until}"))
    } else if left.num_days() < warn_days {
        Verdict::Warn(format!(
            "expires in {} days ({until}): renew it and publish the new certificate",
            left.num_days()
        ))
    } else {
        Verdict::Ok(format!("valid until {until} ({} days)", left.num_days()))
    }
}

/// The first day on which ETSI TS 119 312 wants RSA keys of at least 3072 bits in newly
/// issued certificates (2027-01-01T00:00:00Z).
pub const RSA_3072_FROM: i64 = 1_798_761_600;

/// The key of the signing certificate against ETSI TS 119 312: RSA below 3072 bits is
/// acceptable in a certificate issued before 2027 (until it expires), not in one issued
/// after 2026-12-31; below 2048 bits it is not acceptable at all. ECDSA P-256/P-384 pass.
pub fn key_strength(kind: &crate::crypto::KeyKind, not_before: DateTime<Utc>) -> Verdict {
    use crate::crypto::KeyKind;
    let name = kind.describe();
    match kind {
        KeyKind::Rsa { bits } if *bits < 2048 => Verdict::Failed(format!(
            "{name}: too weak for any signature; use RSA-3072 or ECDSA P-256"
        )),
        KeyKind::Rsa { bits } if *bits < 3072 && not_before.timestamp() >= RSA_3072_FROM => {
            Verdict::Warn(format!(
                "{name} in a certificate issued on {}, after 2026-12-31: ETSI TS 119 312 wants at least 3072 bits; replace it with an RSA-3072 or ECDSA P-256 key",
                not_before.to_rfc3339()
            ))
        }
        KeyKind::Rsa { bits } if *bits < 3072 => Verdict::Ok(format!(
            "{name} (certificate issued before 2027: acceptable until it expires; make the next key RSA-3072)"
        )),
        _ => Verdict::Ok(name),
    }
}

/// What `pec status` makes of the clock's synchronisation under `[clock]`.
pub fn clock_verdict(
    state: &crate::timesync::SyncState,
    policy: &crate::config::ClockPolicy,
) -> Verdict {
    use crate::timesync::SyncState;
    let unsynchronised = |text: String| {
        if policy.fail_unsynchronised {
            Verdict::Failed(text)
        } else {
            Verdict::Warn(format!("{text} (clock.unsynchronised = \"warn\")"))
        }
    };
    match state {
        SyncState::Synchronised {
            source,
            max_error,
            est_error,
        } => {
            let errors = match (max_error, est_error) {
                (Some(m), Some(e)) => format!(
                    ", maximum error {:.3} s, estimated error {:.6} s",
                    m.as_secs_f64(),
                    e.as_secs_f64()
                ),
                _ => String::new(),
            };
            match max_error {
                Some(m) if *m > policy.max_error => unsynchronised(format!(
                    "synchronised ({source}){errors}: the maximum error exceeds clock.max_error {} s",
                    policy.max_error.as_secs_f64()
                )),
                _ => Verdict::Ok(format!("synchronised ({source}){errors}")),
            }
        }
        SyncState::Unsynchronised { source, detail } => unsynchronised(format!(
            "NOT synchronised ({source}: {detail}): the time reference must be within 1 s of UTC; run chrony, ntpd or systemd-timesyncd"
        )),
        SyncState::Unknown(why) => {
            let text = format!("synchronisation UNKNOWN ({why}): check the time daemon yourself");
            if policy.fail_unknown {
                Verdict::Failed(text)
            } else {
                Verdict::Warn(text)
            }
        }
    }
}

/// The signing certificate against the provider index: it must be listed, for our
/// provider name.
fn in_index(config: &Config, store: Option<&dyn LogStore>, der: &[u8]) -> Verdict {
    let loaded = match store {
        Some(s) => {
            crate::index::sync::load_current(s, &config.index.ldif).map_err(|e| e.to_string())
        }
        None => crate::index::ProviderIndex::load_ldif(&config.index.ldif)
            .map(|i| (i, config.index.ldif.display().to_string()))
            .map_err(|e| e.to_string()),
    };
    let (index, from) = match loaded {
        Ok(v) => v,
        Err(e) => return Verdict::Failed(format!("cannot load the index: {e}")),
    };
    match index.trust().find(der) {
        None => Verdict::Failed(format!(
            "not in the provider index ({from}): publish it (`pec index publish`) before using it"
        )),
        Some(t) => match &t.provider {
            Some(p) if p.name == config.provider.name => {
                Verdict::Ok(format!("listed for \"{}\" ({from})", p.name))
            }
            Some(p) => Verdict::Failed(format!(
                "listed for \"{}\", not for provider.name \"{}\" ({from})",
                p.name, config.provider.name
            )),
            None => Verdict::Failed(format!("listed without a provider record ({from})")),
        },
    }
}

fn print_certificate(info: &CertInfo) {
    println!("  subject: {}", info.subject);
    println!("  issuer: {}", info.issuer);
    println!("  serial: {}", info.serial);
    println!("  not before: {}", info.not_before.to_rfc3339());
    println!("  not after: {}", info.not_after.to_rfc3339());
    println!("  SHA-256 fingerprint: {}", info.sha256);
    println!("  SHA-1 fingerprint: {}", info.sha1);
}

/// `pec keys`: the PEC message key's certificate (validity, index entry) and the seal
/// key's (validity).
pub fn keys(config: &Config, warn_days: i64) -> Result<i32, CliError> {
    let signer = crate::wiring::open_signer(config).map_err(CliError::usage)?;
    let der = signer.certificate_der().to_vec();
    let info =
        certificate(&der).map_err(|e| CliError::usage(format!("signing certificate: {e}")))?;
    println!("PEC message key (signs PEC messages only):");
    print_certificate(&info);
    let kind = signer.key_kind().map_err(CliError::usage)?;
    println!("  key: {}", kind.describe());
    println!("  digest: {}", signer.digest().micalg());
    let store = crate::wiring::open_store(config).ok();
    let mut checks = vec![
        ("validity".to_string(), expiry(&info, Utc::now(), warn_days)),
        (
            "key strength".to_string(),
            key_strength(&kind, info.not_before),
        ),
        (
            "provider index".to_string(),
            in_index(config, store.as_deref(), &der),
        ),
    ];
    match crate::wiring::open_seal_signer(config) {
        Ok(seal) => {
            let info = certificate(seal.certificate_der())
                .map_err(|e| CliError::usage(format!("seal certificate: {e}")))?;
            println!("seal key (signs the daily seals of the legal log):");
            print_certificate(&info);
            checks.push((
                "seal key validity".to_string(),
                expiry(&info, Utc::now(), warn_days),
            ));
        }
        Err(e) => checks.push(("seal key".to_string(), Verdict::Failed(e.to_string()))),
    }
    Ok(report(&checks))
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} days", s / 86_400),
    }
}

/// Whether something listens on a role's TCP endpoint.
fn listening(endpoint: &Endpoint) -> bool {
    match endpoint {
        Endpoint::Inet { host, port } => connect(host, *port).is_ok(),
        Endpoint::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
    }
}

/// `GET /metrics` on the endpoint: the body, when it answers 200.
pub fn scrape(endpoint: &Endpoint) -> Result<String, String> {
    let Endpoint::Inet { host, port } = endpoint else {
        return Err("not a TCP endpoint".into());
    };
    let mut s = connect(host, *port)?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    if !status.contains(" 200") {
        return Err(format!("answered \"{status}\""));
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// `pec status`: the health of the installation, from the store, the signing key and the
/// running service.
pub fn status(config: &Config, now: Instant) -> Vec<(String, Verdict)> {
    let settings = match config.settings() {
        Ok(s) => s,
        Err(e) => return vec![("configuration".into(), Verdict::Failed(e.to_string()))],
    };
    let mut checks = Vec::new();
    let (store, v) = check_store(config);
    checks.push(("store".to_string(), v));
    let health = store.as_ref().and_then(|s| s.health().ok());

    // Seals: the day before yesterday at the latest (yesterday is sealed during the
    // first hour of today), once the log has records that old.
    if let Some(h) = &health {
        let today = crate::log::legal_day(now);
        let due = today - chrono::Days::new(2);
        let (due_start, _) = crate::log::day_bounds(due);
        let verdict = match &h.last_seal {
            Some(s) => {
                let text = format!(
                    "last sealed day {} (sealed {} ago{})",
                    s.day,
                    age(now.unix() - s.sealed_at),
                    if s.timestamped {
                        ", time-stamped"
                    } else {
                        ", no time stamp"
                    }
                );
                let behind = crate::log::parse_day(&s.day).is_some_and(|d| d < due);
                if behind && h.oldest_record_at.is_some_and(|o| o < due_start + 86_400) {
                    Verdict::Failed(format!("{text}: days up to {due} are not sealed"))
                } else {
                    Verdict::Ok(text)
                }
            }
            None if h.oldest_record_at.is_some_and(|o| o < due_start + 86_400) => {
                Verdict::Failed(format!("no day sealed, records since {due} or before"))
            }
            None => Verdict::Ok("no day to seal yet".into()),
        };
        checks.push(("legal log seals".to_string(), verdict));
        if let Some(store) = &store {
            checks.push((
                "legal log time stamps".to_string(),
                stamps(&**store, &settings, now),
            ));
        }

        let verdict = match &h.index {
            Some((fetched_at, source, providers)) => {
                let a = now.unix() - fetched_at;
                let text = format!(
                    "{providers} providers from {source}, fetched {} ago",
                    age(a)
                );
                let limit = 2 * settings.index_refresh.as_secs() as i64 + 3_600;
                if settings.index_source.is_some() && a > limit {
                    Verdict::Failed(format!(
                        "{text}: older than twice index.refresh, the refresh is failing"
                    ))
                } else {
                    Verdict::Ok(text)
                }
            }
            None if settings.index_source.is_some() => Verdict::Failed(format!(
                "never synchronised: the file {} is in use (run `pec index sync`)",
                config.index.ldif.display()
            )),
            None => Verdict::Ok(format!("from the file {}", config.index.ldif.display())),
        };
        checks.push(("provider index".to_string(), verdict));
        checks.push((
            "timers".to_string(),
            Verdict::Ok(format!(
                "{} certified recipients waiting for a receipt",
                h.pending_timers
            )),
        ));
        checks.push((
            "quarantine".to_string(),
            Verdict::Ok(format!("{} messages", h.quarantined)),
        ));
    }

    // Read without the PIN: monitoring need not hold it.
    let mut strength = None;
    let v = match crate::wiring::signing_certificate(config) {
        Ok(der) => match certificate(&der) {
            Ok(info) => {
                let at = DateTime::from_timestamp(now.unix(), 0).unwrap_or_else(Utc::now);
                strength = Some(match crate::crypto::KeyKind::of_certificate(&der) {
                    Ok(kind) => key_strength(&kind, info.not_before),
                    Err(e) => Verdict::Failed(e.to_string()),
                });
                expiry(&info, at, EXPIRY_WARNING_DAYS)
            }
            Err(e) => Verdict::Failed(e),
        },
        Err(e) => Verdict::Failed(e.to_string()),
    };
    checks.push(("signing certificate".to_string(), v));
    match crate::wiring::seal_certificate(config) {
        Ok(Some(der)) => {
            let v = match certificate(&der) {
                Ok(info) => {
                    let at = DateTime::from_timestamp(now.unix(), 0).unwrap_or_else(Utc::now);
                    expiry(&info, at, EXPIRY_WARNING_DAYS)
                }
                Err(e) => Verdict::Failed(e),
            };
            checks.push(("seal certificate".to_string(), v));
        }
        Ok(None) => checks.push((
            "seal certificate".to_string(),
            Verdict::Failed("no seal key configured (signing.seal_*)".into()),
        )),
        Err(e) => checks.push((
            "seal certificate".to_string(),
            Verdict::Failed(e.to_string()),
        )),
    }
    if let Some(v) = strength {
        checks.push(("signing key strength".to_string(), v));
    }
    use crate::timesync::SyncSource;
    checks.push((
        "clock".to_string(),
        clock_verdict(&crate::timesync::SystemSync.state(), &settings.clock),
    ));

    let roles = [
        ("access.listen", &settings.access.listen),
        ("filter.listen", &settings.filter.listen),
        ("delivery.listen", &settings.delivery.listen),
    ];
    let down: Vec<String> = roles
        .iter()
        .filter(|(_, e)| !listening(e))
        .map(|(k, e)| format!("{k} {e}"))
        .collect();
    let serving = down.len() < roles.len();
    checks.push((
        "pec serve".to_string(),
        if down.is_empty() {
            Verdict::Ok("milter, filter and LMTP listeners answer".into())
        } else if serving {
            Verdict::Failed(format!("not listening: {}", down.join(", ")))
        } else {
            Verdict::Failed("not running (no listener answers)".into())
        },
    ));
    if let Some(m) = &settings.metrics {
        let v = match scrape(m) {
            Ok(body) if body.lines().any(|l| l == "pec_up 1") => Verdict::Ok(format!("{m}: up")),
            Ok(_) => Verdict::Failed(format!("{m}: answers, but without pec_up 1")),
            Err(e) if serving => Verdict::Failed(format!("{m}: {e}")),
            Err(e) => Verdict::Warn(format!("{m}: {e} (pec serve is not running)")),
        };
        checks.push(("metrics endpoint".to_string(), v));
    }
    checks
}

/// The Postfix lines for the served domains.
fn postfix_lines(domains: &[String]) -> String {
    format!(
        "postconf -e 'virtual_mailbox_domains = {}'\npostfix reload",
        domains.join(", ")
    )
}

/// `pec domain add DOMAIN`.
pub fn domain_add(config: &Config, domain: &str) -> Result<i32, CliError> {
    let domain = domain.trim().to_ascii_lowercase();
    if !crate::config::valid_domain(&domain) {
        return Err(CliError::usage(format!("invalid domain \"{domain}\"")));
    }
    if config.provider.domains.contains(&domain) {
        return Err(CliError::failed(format!(
            "{domain} is already in provider.domains of the configuration"
        )));
    }
    let store = crate::wiring::open_store(config).map_err(CliError::usage)?;
    if !store
        .add_domain(&domain, SystemClock.now().unix())
        .map_err(CliError::usage)?
    {
        return Err(CliError::failed(format!("{domain} is already served")));
    }
    println!("added {domain}");
    Ok(domain_next_steps(config, &*store))
}

/// `pec domain remove DOMAIN`.
pub fn domain_remove(config: &Config, domain: &str) -> Result<i32, CliError> {
    let domain = domain.trim().to_ascii_lowercase();
    if config.provider.domains.contains(&domain) {
        return Err(CliError::failed(format!(
            "{domain} is in provider.domains of the configuration: remove it there"
        )));
    }
    let store = crate::wiring::open_store(config).map_err(CliError::usage)?;
    if !store.remove_domain(&domain).map_err(CliError::usage)? {
        return Err(CliError::failed(format!(
            "{domain} was not added with pec domain add"
        )));
    }
    println!("removed {domain}");
    Ok(domain_next_steps(config, &*store))
}

/// What to do after `pec domain add|remove`; its own errors are printed as `pec domain: …`.
fn domain_next_steps(config: &Config, store: &dyn LogStore) -> i32 {
    let domains = match crate::wiring::served_domains(config, store) {
        Ok(d) => d,
        Err(e) => return exit("pec domain", Err(CliError::usage(e))),
    };
    println!("PEC domains served now: {}", domains.join(", "));
    println!("Apply on the Postfix host:");
    println!("{}", postfix_lines(&domains));
    println!("then reload pec serve (systemctl reload pec, i.e. SIGHUP) and publish the");
    println!("provider record with the new managedDomains (pec index publish).");
    0
}

/// `pec domain list`.
pub fn domain_list(config: &Config) -> Result<i32, CliError> {
    let store = crate::wiring::open_store(config).map_err(CliError::usage)?;
    let extra = store.extra_domains().map_err(CliError::usage)?;
    for d in &config.provider.domains {
        println!("{d}\t(configuration)");
    }
    for d in extra
        .iter()
        .filter(|d| !config.provider.domains.contains(d))
    {
        println!("{d}\t(pec domain add)");
    }
    Ok(0)
}

/// Runs one `pec domain` command; returns the exit status.
pub fn domain(command: &DomainCommand) -> i32 {
    let (name, result) = match command {
        DomainCommand::Add { config, domain } => (
            "pec domain add",
            config.load().and_then(|c| domain_add(&c, domain)),
        ),
        DomainCommand::Remove { config, domain } => (
            "pec domain remove",
            config.load().and_then(|c| domain_remove(&c, domain)),
        ),
        DomainCommand::List(config) => (
            "pec domain list",
            config.load().and_then(|c| domain_list(&c)),
        ),
    };
    exit(name, result)
}

/// The seals still without their time stamp: a failure once `log.tsa_grace` has passed
/// since the end of their day (the TSA has been failing all that time), a warning before.
fn stamps(store: &dyn LogStore, settings: &Settings, now: Instant) -> Verdict {
    let pending = match crate::log::unstamped(store, i64::MIN, i64::MAX) {
        Ok(p) => p,
        Err(e) => return Verdict::Failed(e.to_string()),
    };
    let overdue = match crate::log::overdue_stamps(store, settings.tsa_grace, now) {
        Ok(o) => o,
        Err(e) => return Verdict::Failed(e.to_string()),
    };
    let days = |v: &[String]| v.join(", ");
    if !overdue.is_empty() {
        return Verdict::Failed(format!(
            "days sealed without a time stamp past log.tsa_grace ({}): {} (check the tsa; \
             pec serve retries, or run pec log stamp)",
            age(settings.tsa_grace.as_secs() as i64),
            days(&overdue)
        ));
    }
    if !pending.is_empty() {
        let list: Vec<String> = pending.iter().map(|s| s.day.clone()).collect();
        return Verdict::Warn(format!(
            "days waiting for their time stamp (within log.tsa_grace): {}",
            days(&list)
        ));
    }
    match &settings.tsa {
        Some(t) => Verdict::Ok(format!("every seal time-stamped (tsa {})", t.url)),
        None => Verdict::Warn(
            "no log.tsa_url (log.dev_insecure_no_tsa): seals are not time-stamped".into(),
        ),
    }
}

/// Runs `pec check-config`; returns the exit status.
pub fn check_config(args: &CheckConfigArgs) -> i32 {
    let path = &args.config.config;
    let checked = crate::config::load(path)
        .map_err(CliError::Invalid)
        .and_then(|config| {
            config.check_serve().map_err(|e| {
                CliError::Invalid(crate::config::ConfigError {
                    file: path.display().to_string(),
                    line: None,
                    key: Some(e.key),
                    message: e.message,
                })
            })?;
            Ok(config)
        })
        .map(|config| {
            println!("{}: ok", path.display());
            if args.live {
                let mut checks = check_live(&config);
                if let Ok(settings) = config.settings() {
                    checks.extend(super::install::checks(&config, Some(path), &settings));
                }
                report(&checks)
            } else {
                0
            }
        });
    exit("pec check-config", checked)
}

/// Runs `pec status`; returns the exit status.
pub fn status_command(args: &ConfigArgs) -> i32 {
    let checked = args.load().map(|config| {
        let mut checks = status(&config, SystemClock.now());
        if let Ok(settings) = config.settings() {
            checks.extend(super::install::checks(
                &config,
                Some(&args.config),
                &settings,
            ));
        }
        report(&checks)
    });
    exit("pec status", checked)
}

/// Runs `pec keys`; returns the exit status.
pub fn keys_command(args: &KeysArgs) -> i32 {
    let shown = args
        .config
        .load()
        .and_then(|config| keys(&config, args.warn_days));
    exit("pec keys", shown)
}

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Also reach the HSM, the store, clamd, Dovecot, Postfix and the index source.
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Warn when the certificate expires within this many days.
    #[arg(long, default_value_t = EXPIRY_WARNING_DAYS)]
    pub warn_days: i64,
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Serve DOMAIN as a PEC domain too (reload pec serve and apply the Postfix lines).
    Add {
        #[command(flatten)]
        config: ConfigArgs,
        domain: String,
    },
    /// List the PEC domains served, and where each comes from.
    List(ConfigArgs),
    /// Stop serving a domain added with `pec domain add`.
    Remove {
        #[command(flatten)]
        config: ConfigArgs,
        domain: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_policy_map_check_counts_domains_and_fails_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls_policy");
        let v = check_tls_policy_map(&path);
        assert!(v.failed(), "{}", v.text());
        assert!(v.text().contains("pec index tls-policy"), "{}", v.text());
        std::fs::write(&path, "# comment\na.example verify\nb.example verify\n").unwrap();
        let v = check_tls_policy_map(&path);
        assert!(!v.failed());
        assert!(v.text().ends_with(": 2 certified domains"), "{}", v.text());
    }

    use crate::config::ClockPolicy;
    use crate::crypto::{Curve, KeyKind};
    use crate::timesync::SyncState;
    use std::time::Duration;

    fn day(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn rsa_below_3072_warns_only_in_certificates_issued_from_2027() {
        assert_eq!(
            day("2027-01-01T00:00:00Z").timestamp(),
            RSA_3072_FROM,
            "the constant is 2027-01-01"
        );
        let rsa2048 = KeyKind::Rsa { bits: 2048 };
        let before = key_strength(&rsa2048, day("2026-12-31T23:59:59Z"));
        assert!(
            matches!(before, Verdict::Ok(ref t) if t.contains("before 2027")),
            "{before:?}"
        );
        let after = key_strength(&rsa2048, day("2027-01-01T00:00:00Z"));
        assert!(
            matches!(after, Verdict::Warn(ref t) if t.contains("ETSI TS 119 312") && t.contains("RSA-2048")),
            "{after:?}"
        );
        for kind in [
            KeyKind::Rsa { bits: 3072 },
            KeyKind::Rsa { bits: 4096 },
            KeyKind::Ecdsa(Curve::P256),
            KeyKind::Ecdsa(Curve::P384),
        ] {
            let v = key_strength(&kind, day("2027-06-01T00:00:00Z"));
            assert_eq!(v, Verdict::Ok(kind.describe()));
        }
        assert!(key_strength(&KeyKind::Rsa { bits: 1024 }, day("2020-01-01T00:00:00Z")).failed());
    }

    #[test]
    fn clock_policy_decides_on_each_state() {
        let default = ClockPolicy::default();
        let lenient = ClockPolicy {
            fail_unsynchronised: false,
            ..default
        };
        let strict = ClockPolicy {
            fail_unknown: true,
            ..default
        };
        let synced = |ms| SyncState::Synchronised {
            source: "kernel",
            max_error: Some(Duration::from_millis(ms)),
            est_error: Some(Duration::from_micros(50)),
        };
        let unsynced = SyncState::Unsynchronised {
            source: "kernel",
            detail: "adjtimex: STA_UNSYNC set".into(),
        };
        let unknown = SyncState::Unknown("systemd is not running; adjtimex: EPERM".into());

        let v = clock_verdict(&synced(20), &default);
        assert!(
            matches!(v, Verdict::Ok(ref t) if t.contains("maximum error 0.020 s")),
            "{v:?}"
        );
        // Synchronised, but the error bound is beyond clock.max_error: as unsynchronised.
        let v = clock_verdict(&synced(1_500), &default);
        assert!(
            v.failed() && v.text().contains("exceeds clock.max_error"),
            "{v:?}"
        );
        assert!(matches!(
            clock_verdict(&synced(1_500), &lenient),
            Verdict::Warn(_)
        ));
        // timedatectl says yes without the kernel's figures: ok.
        let v = clock_verdict(
            &SyncState::Synchronised {
                source: "timedatectl",
                max_error: None,
                est_error: None,
            },
            &default,
        );
        assert_eq!(v, Verdict::Ok("synchronised (timedatectl)".into()));

        let v = clock_verdict(&unsynced, &default);
        assert!(v.failed() && v.text().contains("NOT synchronised"), "{v:?}");
        let v = clock_verdict(&unsynced, &lenient);
        assert!(
            matches!(v, Verdict::Warn(ref t) if t.contains("NOT synchronised")),
            "{v:?}"
        );

        let v = clock_verdict(&unknown, &default);
        assert!(
            matches!(v, Verdict::Warn(ref t) if t.contains("UNKNOWN")),
            "{v:?}"
        );
        assert!(clock_verdict(&unknown, &strict).failed());
    }
}
