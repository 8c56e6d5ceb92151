// SPDX-License-Identifier: GPL-3.0-or-later
//! The REM routing interface: whether a recipient domain is served by a REM service, from
//! its DNS MX records and the service's `smtp` supply points.
//!
//! ETSI EN 319 532-4 clause C.2.3.2 (Routing interface, a.1–a.2): routing between REM
//! services uses the DNS, and a REM service publishes the host name of its receiving server
//! in the MX records of its domains; that host name "shall be the same as the one included
//! in the URI contained in Service Supply Point". Clause C.2.3.3.2 (b.2.4.2) writes that
//! supply point `smtp://<MX host>[:<port>]`; the EN's own informative Trusted Lists write
//! `smtp:mx.rb-rems.rem:25`, so both forms are read. Clause C.2.3.3.3, pre-relay steps 1 and 2:
//! verify that the recipient's domain has a valid MX record, and that this MX record is a
//! ServiceSupplyPoint of a REM service. The EN prescribes no other record type (no TXT, SRV
//! or A check): the MX host's address is the SMTP client's business.
//!
//! The DNS is an outside system: [`MxLookup`] has the real resolver
//! ([`crate::dns::DnsResolver`], `hickory-resolver`, on the system's `/etc/resolv.conf` or on
//! one configured server) and the test double ([`StaticMx`]). The decision itself
//! ([`decide`], [`decide_among`]) is pure: no socket here.
//!
//! Every MX host of the domain must be a supply point: mail goes to any of them (the most
//! preferred first, the others when it is down), so one host outside the REM service is a
//! way out of it. A domain without MX records is not served, even if it has an address
//! record (RFC 5321's implicit MX is no "valid DNS MX record" in the EN's sense), and neither
//! is one with the null MX of RFC 7505 (`MX 0 .`: it takes no mail at all).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::BoxFuture;

/// One MX record: a mail exchanger of the domain and its preference (lower first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    /// The exchange host name, lower case, in ASCII (A-labels), without the final dot; empty
    /// for the null MX (`.`).
    pub exchange: String,
}

/// What the DNS answered for a domain's MX records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// The MX records (at least one).
    Hosts(Vec<MxHost>),
    /// The domain exists but has no MX record (NOERROR with no answer).
    NoMx,
    /// The domain does not exist (NXDOMAIN).
    NxDomain,
}

/// Why the DNS gave no answer we can act on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    /// The name is no domain name (empty, a label over 63 octets, over 253 octets, a
    /// character a host name cannot have). Permanent.
    #[error("invalid domain \"{domain}\": {reason}")]
    InvalidDomain { domain: String, reason: String },
    /// No answer now: SERVFAIL, REFUSED, a time-out, the server unreachable, a malformed
    /// reply. The caller tries again later (a temporary failure upstream).
    #[error("dns lookup of \"{domain}\" failed, try again later: {reason}")]
    Temporary { domain: String, reason: String },
    /// The resolver cannot be set up (the system configuration unreadable): an internal
    /// failure, temporary on the mail path.
    #[error("cannot set up the dns resolver: {0}")]
    Setup(String),
}

impl DnsError {
    /// Whether trying again later may succeed (on the mail path: a temporary failure).
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary { .. } | DnsError::Setup(_))
    }
}

/// The MX records of a domain: the real DNS, or a test double.
pub trait MxLookup: Send + Sync {
    /// The MX records of `domain` (an ASCII or Unicode domain name, with or without the
    /// final dot; looked up as a fully qualified name, never through the search list).
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, DnsError>>;
}

/// An `smtp` service supply point of a Trusted List entry: the MX host of the REM service
/// and the optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSupplyPoint {
    /// Lower case, A-labels, no final dot.
    pub host: String,
    pub port: Option<u16>,
}

/// Why a supply point is no usable `smtp` one.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SupplyPointError {
    #[error("supply point \"{0}\" is not an smtp uri")]
    NotSmtp(String),
    #[error("supply point \"{point}\": {reason}")]
    Invalid { point: String, reason: String },
}

/// Reads `smtp://HOST[:PORT]` or `smtp:HOST[:PORT]` (the scheme in any case; a final `/`
/// allowed). Any other scheme is [`SupplyPointError::NotSmtp`] (a Trusted List entry also
/// carries its `https://` CSI supply point).
pub fn parse_smtp_supply_point(point: &str) -> Result<SmtpSupplyPoint, SupplyPointError> {
    let trimmed = point.trim();
    let rest = match trimmed.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("smtp") => rest,
        _ => return Err(SupplyPointError::NotSmtp(point.to_string())),
    };
    let invalid = |reason: &str| SupplyPointError::Invalid {
        point: point.to_string(),
        reason: reason.to_string(),
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#', '[', ']']) {
        return Err(invalid("expected smtp://host[:port] and nothing else"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| invalid("the port is not a number from 1 to 65535"))?;
            if port == 0 {
                return Err(invalid("the port is not a number from 1 to 65535"));
            }
            (host, Some(port))
        }
        None => (rest, None),
    };
    let host = normalize_host(host).map_err(|reason| invalid(&reason))?;
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    Ok(SmtpSupplyPoint { host, port })
}

/// A host or domain name as we compare them: IDNA to A-labels, lower case, no final dot;
/// the root (`.`) is the empty string. Refuses what is no host name.
pub fn normalize_host(name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Ok(String::new());
    }
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        hickory_resolver::proto::rr::Name::from_utf8(name)
            .map_err(|e| format!("not a domain name: {e}"))?
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase()
    };
    if ascii.len() > 253 {
        return Err("longer than 253 octets".into());
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label \"{label}\" longer than 63 octets"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "label \"{label}\" has a character a host name cannot have"
            ));
        }
    }
    Ok(ascii)
}

/// Where the MX check leaves a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Every MX host of the domain is an `smtp` supply point of the given list.
    Served {
        /// The MX hosts, most preferred first.
        exchanges: Vec<String>,
        /// The supply points they matched, as written in the list, in the list's order.
        supply_points: Vec<String>,
    },
    /// The domain exists but is not served by the REM service(s) of the list.
    NotServed(NotServed),
    /// The domain does not exist.
    NxDomain,
}

/// Why an existing domain is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotServed {
    /// No MX record.
    NoMx,
    /// The null MX of RFC 7505: the domain takes no mail.
    NullMx,
    /// MX hosts that are no supply point of the list (most preferred first).
    Unlisted {
        unmatched: Vec<String>,
        exchanges: Vec<String>,
    },
    /// Every MX host is a supply point, but of different services: no one service takes
    /// all the domain's mail ([`decide_among`] only).
    Split { exchanges: Vec<String> },
}

impl std::fmt::Display for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Routing::Served {
                exchanges,
                supply_points,
            } => write!(
                f,
                "served: mx {} (supply point {})",
                exchanges.join(", "),
                supply_points.join(", ")
            ),
            Routing::NotServed(NotServed::NoMx) => write!(f, "not served: no mx record"),
            Routing::NotServed(NotServed::NullMx) => {
                write!(f, "not served: null mx (the domain takes no mail)")
            }
            Routing::NotServed(NotServed::Unlisted {
                unmatched,
                exchanges,
            }) => write!(
                f,
                "not served: mx {} not among the supply points (mx: {})",
                unmatched.join(", "),
                exchanges.join(", ")
            ),
            Routing::NotServed(NotServed::Split { exchanges }) => write!(
                f,
                "not served: mx {} belong to different services",
                exchanges.join(", ")
            ),
            Routing::NxDomain => write!(f, "nxdomain: the domain does not exist"),
        }
    }
}

/// The decision from an MX answer and a list of supply points (those of one REM service, or
/// of all the services of a Trusted List: the matched ones tell which). Supply points that
/// are not `smtp` ones, or malformed, are skipped (the Trusted List reader reports them).
pub fn decide<S: AsRef<str>>(answer: &MxAnswer, supply_points: &[S]) -> Routing {
    let hosts = match answer {
        MxAnswer::NxDomain => return Routing::NxDomain,
        MxAnswer::NoMx => return Routing::NotServed(NotServed::NoMx),
        MxAnswer::Hosts(h) if h.is_empty() => return Routing::NotServed(NotServed::NoMx),
        MxAnswer::Hosts(h) => h,
    };
    // RFC 7505 §3: a null MX is a single record with the root as exchange; any root
    // exchange means no mail.
    if hosts.iter().any(|h| h.exchange.is_empty()) {
        return Routing::NotServed(NotServed::NullMx);
    }
    let mut sorted: Vec<&MxHost> = hosts.iter().collect();
    sorted.sort_by(|a, b| {
        a.preference
            .cmp(&b.preference)
            .then(a.exchange.cmp(&b.exchange))
    });
    let mut exchanges: Vec<String> = Vec::new();
    for h in sorted {
        if !exchanges.contains(&h.exchange) {
            exchanges.push(h.exchange.clone());
        }
    }
    let points: Vec<(&str, SmtpSupplyPoint)> = supply_points
        .iter()
        .filter_map(|p| {
            parse_smtp_supply_point(p.as_ref())
                .ok()
                .map(|sp| (p.as_ref(), sp))
        })
        .collect();
    let unmatched: Vec<String> = exchanges
        .iter()
        .filter(|x| !points.iter().any(|(_, sp)| &sp.host == *x))
        .cloned()
        .collect();
    if !unmatched.is_empty() {
        return Routing::NotServed(NotServed::Unlisted {
            unmatched,
            exchanges,
        });
    }
    let supply_points = points
        .iter()
        .filter(|(_, sp)| exchanges.contains(&sp.host))
        .map(|(raw, _)| raw.to_string())
        .collect();
    Routing::Served {
        exchanges,
        supply_points,
    }
}

/// The pre-relay routing check of EN 319 532-4 C.2.3.3.3 steps 1–2: looks `domain` up and
/// decides against `supply_points`. A DNS temporary failure is an error (the caller
/// tempfails); NXDOMAIN and an unserved domain are outcomes.
pub async fn check_domain<S: AsRef<str>>(
    lookup: &dyn MxLookup,
    domain: &str,
    supply_points: &[S],
) -> Result<Routing, DnsError> {
    let answer = lookup.mx(domain).await?;
    Ok(decide(&answer, supply_points))
}

/// Which of several REM services (the entries of a Trusted List) serves a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRouting<'s, T> {
    /// Every MX host of the domain is an `smtp` supply point of each of these services (one,
    /// or several entries sharing their supply points: a provider's REM and REM/Q services).
    Served {
        services: Vec<&'s T>,
        exchanges: Vec<String>,
    },
    NotServed(NotServed),
    NxDomain,
}

/// [`decide`] over several services at once: the services whose own supply points cover
/// every MX host of the domain. MX hosts covered only by the points of several services
/// together are [`NotServed::Split`].
pub fn decide_among<'s, T, S: AsRef<str> + 's>(
    answer: &MxAnswer,
    services: &'s [T],
    supply_points: impl Fn(&'s T) -> &'s [S],
) -> PeerRouting<'s, T> {
    let mut served = Vec::new();
    let mut exchanges = Vec::new();
    for service in services {
        match decide(answer, supply_points(service)) {
            Routing::NxDomain => return PeerRouting::NxDomain,
            Routing::NotServed(
                reason @ (NotServed::NoMx | NotServed::NullMx | NotServed::Split { .. }),
            ) => return PeerRouting::NotServed(reason),
            Routing::NotServed(NotServed::Unlisted { .. }) => {}
            Routing::Served { exchanges: x, .. } => {
                served.push(service);
                exchanges = x;
            }
        }
    }
    if !served.is_empty() {
        return PeerRouting::Served {
            services: served,
            exchanges,
        };
    }
    let all: Vec<&str> = services
        .iter()
        .flat_map(|s| supply_points(s).iter().map(AsRef::as_ref))
        .collect();
    match decide(answer, &all) {
        Routing::NxDomain => PeerRouting::NxDomain,
        Routing::NotServed(reason) => PeerRouting::NotServed(reason),
        Routing::Served { exchanges, .. } => PeerRouting::NotServed(NotServed::Split { exchanges }),
    }
}

/// The test double: fixed answers per domain (lower case, no final dot), and a record of
/// the names asked. A domain it does not know is NXDOMAIN.
#[derive(Debug, Default)]
pub struct StaticMx {
    answers: BTreeMap<String, Result<MxAnswer, DnsError>>,
    asked: Mutex<Vec<String>>,
}

impl StaticMx {
    pub fn new() -> Self {
        Self::default()
    }

    /// `domain` has these MX records (`(preference, exchange)`).
    pub fn with_mx(mut self, domain: &str, hosts: &[(u16, &str)]) -> Self {
        let hosts = hosts
            .iter()
            .map(|(p, x)| MxHost {
                preference: *p,
                exchange: x.trim_end_matches('.').to_ascii_lowercase(),
            })
            .collect();
        self.answers
            .insert(domain.to_ascii_lowercase(), Ok(MxAnswer::Hosts(hosts)));
        self
    }

    /// `domain` gets this answer or error.
    pub fn with(mut self, domain: &str, answer: Result<MxAnswer, DnsError>) -> Self {
        self.answers.insert(domain.to_ascii_lowercase(), answer);
        self
    }

    /// The domains asked so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl MxLookup for StaticMx {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.clone());
        let answer = self
            .answers
            .get(&key)
            .cloned()
            .unwrap_or(Ok(MxAnswer::NxDomain));
        Box::pin(async move { answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$PEC_REM_KIT` if set, else `<crate>/../shared/rem-kit`; None (and a loud SKIPPED)
    /// when absent.
    fn kit_dir() -> Option<std::path::PathBuf> {
        let dir = std::env::var_os("PEC_REM_KIT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/rem-kit").into());
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!("SKIPPED: ../shared/rem-kit absent ({})", dir.display());
            None
        }
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// The supply points of the EN's informative Trusted List TL_CCB.xml (service B), as
    /// written there.
    const B_POINTS: [&str; 2] = [
        "smtp:mx.rb-rems.rem:25",
        "https://rem-provider-b-service.ccb/CapabilityAndSecurityMetadata.xml",
    ];

    /// The zone of the EN's dns_cfg_R-REM-B.txt and dns_cfg_R-REM-C.txt.
    fn kit_dns() -> StaticMx {
        StaticMx::new()
            .with_mx("rb-rems.rem", &[(10, "mx.rb-rems.rem.")])
            .with_mx("rcp2domain.rem", &[(10, "mx.rb-rems.rem.")])
            .with_mx("rc-rems.rem", &[(10, "mx.rc-rems.rem.")])
    }

    #[test]
    fn supply_points_in_both_written_forms() {
        assert_eq!(
            parse_smtp_supply_point("smtp:mx.rb-rems.rem:25"),
            Ok(SmtpSupplyPoint {
                host: "mx.rb-rems.rem".into(),
                port: Some(25)
            })
        );
        assert_eq!(
            parse_smtp_supply_point("smtp://rem-provider-1-MX-record.cc:25"),
            Ok(SmtpSupplyPoint {
                host: "rem-provider-1-mx-record.cc".into(),
                port: Some(25)
            })
        );
        assert_eq!(
            parse_smtp_supply_point("SMTP://Mx.Example.REM./"),
            Ok(SmtpSupplyPoint {
                host: "mx.example.rem".into(),
                port: None
            })
        );
        assert_eq!(
            parse_smtp_supply_point("smtp:recipientdomain.rem"),
            Ok(SmtpSupplyPoint {
                host: "recipientdomain.rem".into(),
                port: None
            })
        );
    }

    #[test]
    fn other_schemes_and_malformed_supply_points_are_refused() {
        assert!(matches!(
            parse_smtp_supply_point(B_POINTS[1]),
            Err(SupplyPointError::NotSmtp(_))
        ));
        assert!(matches!(
            parse_smtp_supply_point("smtps://mx.x.rem"),
            Err(SupplyPointError::NotSmtp(_))
        ));
        for bad in [
            "smtp://",
            "smtp://mx.x.rem:0",
            "smtp://mx.x.rem:99999",
            "smtp://mx.x.rem:port",
            "smtp://user@mx.x.rem",
            "smtp://mx.x.rem/path",
            "smtp://mx..x.rem",
            "smtp://mx x.rem",
            "smtp://[::1]:25",
        ] {
            assert!(
                matches!(
                    parse_smtp_supply_point(bad),
                    Err(SupplyPointError::Invalid { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_domain_whose_mx_is_the_supply_point_is_served() {
        let dns = kit_dns();
        for domain in ["rb-rems.rem", "rcp2domain.rem", "RB-REMS.rem."] {
            let r = block(check_domain(&dns, domain, &B_POINTS)).expect("answer");
            assert_eq!(
                r,
                Routing::Served {
                    exchanges: vec!["mx.rb-rems.rem".into()],
                    supply_points: vec!["smtp:mx.rb-rems.rem:25".into()],
                },
                "{domain}"
            );
        }
    }

    #[test]
    fn a_domain_of_another_service_is_not_served_by_this_one() {
        let r = block(check_domain(&kit_dns(), "rc-rems.rem", &B_POINTS)).expect("answer");
        assert_eq!(
            r,
            Routing::NotServed(NotServed::Unlisted {
                unmatched: vec!["mx.rc-rems.rem".into()],
                exchanges: vec!["mx.rc-rems.rem".into()],
            })
        );
    }

    #[test]
    fn the_https_supply_point_host_does_not_count() {
        let dns = StaticMx::new().with_mx("x.rem", &[(10, "rem-provider-b-service.ccb")]);
        assert!(matches!(
            block(check_domain(&dns, "x.rem", &B_POINTS)),
            Ok(Routing::NotServed(NotServed::Unlisted { .. }))
        ));
    }

    #[test]
    fn every_mx_host_must_be_a_supply_point() {
        // A backup MX outside the service would carry REM mail out of it.
        let dns = StaticMx::new().with_mx(
            "mixed.rem",
            &[(20, "backup.elsewhere.example"), (10, "mx.rb-rems.rem")],
        );
        assert_eq!(
            block(check_domain(&dns, "mixed.rem", &B_POINTS)).expect("answer"),
            Routing::NotServed(NotServed::Unlisted {
                unmatched: vec!["backup.elsewhere.example".into()],
                exchanges: vec!["mx.rb-rems.rem".into(), "backup.elsewhere.example".into()],
            })
        );
        // Two hosts, both supply points (of two services of one list): served, both named.
        let dns = StaticMx::new().with_mx("two.rem", &[(10, "mx.b.rem"), (5, "mx.a.rem")]);
        let points = ["smtp://mx.a.rem:25", "https://a/csi.xml", "smtp://mx.b.rem"];
        assert_eq!(
            block(check_domain(&dns, "two.rem", &points)).expect("answer"),
            Routing::Served {
                exchanges: vec!["mx.a.rem".into(), "mx.b.rem".into()],
                supply_points: vec!["smtp://mx.a.rem:25".into(), "smtp://mx.b.rem".into()],
            }
        );
    }

    #[test]
    fn among_several_services_the_one_whose_points_cover_the_mx_serves() {
        #[derive(Debug, PartialEq, Eq)]
        struct Service {
            name: &'static str,
            points: Vec<String>,
        }
        let service = |name, points: &[&str]| Service {
            name,
            points: points.iter().map(|p| p.to_string()).collect(),
        };
        // The three services of the EN's Trusted Lists, and B's qualified service sharing
        // B's supply points.
        let services = [
            service("A", &["smtp:mx.sa-rems.rem:25", "https://a/csi.xml"]),
            service("B", &["smtp:mx.rb-rems.rem:25", "https://b/csi.xml"]),
            service("C", &["smtp:mx.rc-rems.rem:25", "https://c/csi.xml"]),
            service("B/Q", &["smtp:mx.rb-rems.rem:25", "https://b/csi.xml"]),
        ];
        fn points(s: &Service) -> &[String] {
            &s.points
        }
        let names = |r: PeerRouting<'_, Service>| -> Vec<&'static str> {
            match r {
                PeerRouting::Served { services, .. } => services.iter().map(|s| s.name).collect(),
                other => panic!("not served: {other:?}"),
            }
        };
        let mx = |hosts: &[&str]| {
            MxAnswer::Hosts(
                hosts
                    .iter()
                    .enumerate()
                    .map(|(i, h)| MxHost {
                        preference: 10 * (i as u16 + 1),
                        exchange: h.to_string(),
                    })
                    .collect(),
            )
        };
        assert_eq!(
            names(decide_among(&mx(&["mx.rc-rems.rem"]), &services, |s| {
                s.points.as_slice()
            })),
            vec!["C"]
        );
        assert_eq!(
            names(decide_among(&mx(&["mx.rb-rems.rem"]), &services, points)),
            vec!["B", "B/Q"]
        );
        assert_eq!(
            decide_among(
                &mx(&["mx.sa-rems.rem", "mx.rc-rems.rem"]),
                &services,
                points
            ),
            PeerRouting::NotServed(NotServed::Split {
                exchanges: vec!["mx.sa-rems.rem".into(), "mx.rc-rems.rem".into()]
            })
        );
        assert_eq!(
            decide_among(
                &mx(&["mx.sa-rems.rem", "mx.other.example"]),
                &services,
                points
            ),
            PeerRouting::NotServed(NotServed::Unlisted {
                unmatched: vec!["mx.other.example".into()],
                exchanges: vec!["mx.sa-rems.rem".into(), "mx.other.example".into()],
            })
        );
        assert_eq!(
            decide_among(&MxAnswer::NxDomain, &services, points),
            PeerRouting::NxDomain
        );
        assert_eq!(
            decide_among(&MxAnswer::NoMx, &services, points),
            PeerRouting::NotServed(NotServed::NoMx)
        );
        let none: [Service; 0] = [];
        assert!(matches!(
            decide_among(&mx(&["mx.rb-rems.rem"]), &none, points),
            PeerRouting::NotServed(NotServed::Unlisted { .. })
        ));
        assert_eq!(
            decide_among(&MxAnswer::NxDomain, &none, points),
            PeerRouting::NxDomain
        );
    }

    #[test]
    fn no_mx_null_mx_and_nxdomain_are_told_apart() {
        let dns = StaticMx::new()
            .with("a-only.rem", Ok(MxAnswer::NoMx))
            .with_mx("null.rem", &[(0, ".")]);
        assert_eq!(
            block(check_domain(&dns, "a-only.rem", &B_POINTS)),
            Ok(Routing::NotServed(NotServed::NoMx))
        );
        assert_eq!(
            block(check_domain(&dns, "null.rem", &B_POINTS)),
            Ok(Routing::NotServed(NotServed::NullMx))
        );
        assert_eq!(
            block(check_domain(&dns, "absent.rem", &B_POINTS)),
            Ok(Routing::NxDomain)
        );
        assert_eq!(
            decide(&MxAnswer::Hosts(vec![]), &B_POINTS),
            Routing::NotServed(NotServed::NoMx)
        );
    }

    #[test]
    fn a_temporary_dns_failure_is_an_error_not_an_outcome() {
        let dns = StaticMx::new().with(
            "flaky.rem",
            Err(DnsError::Temporary {
                domain: "flaky.rem".into(),
                reason: "servfail".into(),
            }),
        );
        let e = block(check_domain(&dns, "flaky.rem", &B_POINTS)).expect_err("tempfail");
        assert!(e.is_temporary());
        assert_eq!(dns.asked(), vec!["flaky.rem".to_string()]);
    }

    #[test]
    fn no_supply_point_at_all_serves_nothing() {
        let none: [&str; 0] = [];
        assert!(matches!(
            block(check_domain(&kit_dns(), "rb-rems.rem", &none)),
            Ok(Routing::NotServed(NotServed::Unlisted { .. }))
        ));
        // Malformed smtp points are skipped, not matched.
        assert!(matches!(
            block(check_domain(
                &kit_dns(),
                "rb-rems.rem",
                &["smtp://mx.rb-rems.rem:0"]
            )),
            Ok(Routing::NotServed(NotServed::Unlisted { .. }))
        ));
    }

    #[test]
    fn host_names_compare_in_ascii_lower_case() {
        assert_eq!(
            normalize_host("MX.Example.REM."),
            Ok("mx.example.rem".into())
        );
        assert_eq!(
            normalize_host("posta.città.it"),
            Ok("posta.xn--citt-3na.it".into())
        );
        assert_eq!(normalize_host("."), Ok(String::new()));
        assert!(normalize_host(&"a".repeat(64)).is_err());
        assert!(normalize_host(&["abc"; 70].join(".")).is_err());
        assert!(normalize_host("a..b").is_err());
        assert!(normalize_host("a b").is_err());
    }

    #[test]
    fn the_kit_dns_configuration_matches_the_kit_trusted_lists() {
        // The EN's informative examples: every registered domain of dns_cfg_*.txt has its
        // MX among the smtp supply points of the TL_*.xml entries, and of that one only.
        let Some(kit) = kit_dir() else {
            return;
        };
        let csi = kit.join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/COMMON_SERVICE_INTERFACE");
        let tl = std::fs::read_to_string(csi.join("TL_CCB.xml")).expect("TL_CCB.xml");
        let points: Vec<String> = tl
            .split("<ServiceSupplyPoint>")
            .skip(1)
            .filter_map(|s| {
                s.split_once("</ServiceSupplyPoint>")
                    .map(|(p, _)| p.to_string())
            })
            .collect();
        assert!(points.len() >= 6, "supply points of TL_CCB.xml: {points:?}");
        let mut dns = StaticMx::new();
        let mut domains = Vec::new();
        for f in [
            "dns_cfg_S-REM-A.txt",
            "dns_cfg_R-REM-B.txt",
            "dns_cfg_R-REM-C.txt",
        ] {
            let text = std::fs::read_to_string(csi.join(f)).expect("dns_cfg");
            for line in text.lines() {
                if let Some((name, mx)) = line.split_once("mail exchanger =") {
                    let domain = name.trim();
                    let (pref, host) = mx.trim().split_once(' ').expect("pref host");
                    dns = dns.with_mx(domain, &[(pref.parse().expect("pref"), host)]);
                    domains.push(domain.to_string());
                }
            }
        }
        assert!(domains.len() >= 5, "{domains:?}");
        for domain in &domains {
            let r = block(check_domain(&dns, domain, &points)).expect("answer");
            let Routing::Served { supply_points, .. } = &r else {
                panic!("{domain}: {r}");
            };
            assert_eq!(supply_points.len(), 1, "{domain}: {r}");
        }
        // Each provider's own supply point alone serves its domains and not the others'.
        let b_only = ["smtp:mx.rb-rems.rem:25"];
        assert!(matches!(
            block(check_domain(&dns, "sa-rems.rem", &b_only)),
            Ok(Routing::NotServed(_))
        ));
        assert!(matches!(
            block(check_domain(&dns, "rb-rems.rem", &b_only)),
            Ok(Routing::Served { .. })
        ));
    }
}
