// SPDX-License-Identifier: GPL-3.0-or-later
//! Trusted Lists (ETSI TS 119 612) for REM: which peers are qualified REM services.
//!
//! A national supervisory body publishes a signed Trusted List; each REM provider appears
//! as a trust service provider with a service of type `EDS/REM/Q` (EN 319 532-4 Annex C),
//! whose digital identity is the certificate the provider signs its REM messages and
//! evidences with, and whose supply points are its boundary MX (`smtp:HOST:PORT`) and the
//! URL of its Capability and Security Information (`https://…`, see [`super::csi`]).
//!
//! A list is read only after [`crate::xml::check_plain`] and only when its enveloped
//! XML-DSig signature verifies with one of the configured Trusted List signer
//! certificates ([`accept`]); one whose `NextUpdate` is past, or older than the copy we
//! have, is refused too, and the last good copy stays. [`RemPeers`] answers, for an
//! instant, whether a certificate or a mail host belongs to a REM service granted then.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use openssl::x509::X509;
use thiserror::Error;

use crate::message::time::Instant;
use crate::xml::{check_plain, XmlGateError};

/// Namespace of the Trusted List (TS 119 612 v2).
pub const TSL_NS: &str = "http://uri.etsi.org/02231/v2#";
/// Namespace of XML-DSig.
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// Service type of a qualified REM service (EN 319 532-4 Annex C; the kit's lists).
pub const SERVICE_TYPE_REM_Q: &str = "http://uri.etsi.org/TrstSvc/Svctype/EDS/REM/Q";
/// Service type of a non-qualified REM service.
pub const SERVICE_TYPE_REM: &str = "http://uri.etsi.org/TrstSvc/Svctype/EDS/REM";
/// The status under which a service is trusted.
pub const STATUS_GRANTED: &str = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/granted";

/// `[rem.trust]`: where the Trusted Lists come from and who may sign them.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// URLs of the Trusted Lists listing REM services (`https://…`).
    #[serde(default)]
    pub tl_urls: Vec<String>,
    /// PEM files of the certificates allowed to sign them (required with `tl_urls`).
    #[serde(default)]
    pub tl_signer_files: Vec<std::path::PathBuf>,
    /// Refresh period inside `pec serve` (default `1d`).
    #[serde(default)]
    pub refresh: Option<String>,
    /// Connection and each read or write (default `30s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// CA file for the HTTPS servers; default the system store.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// Why a Trusted List was not read or not accepted.
#[derive(Debug, Error)]
pub enum TrustError {
    #[error("trusted list: {0}")]
    Gate(#[from] XmlGateError),
    #[error("trusted list: not well-formed xml: {0}")]
    Syntax(String),
    #[error("trusted list: {0}")]
    Invalid(String),
    #[error("trusted list: no signature (a trusted list must be signed)")]
    Unsigned,
    #[error("trusted list: signature: {0}")]
    Signature(String),
    #[error("trusted list: signed by \"{0}\", which is not a configured trusted list signer")]
    UnknownSigner(String),
    #[error(
        "trusted list of {territory} (sequence {sequence}) is closed (no next update): its \
         scheme has ceased"
    )]
    Closed { territory: String, sequence: u64 },
    #[error(
        "trusted list of {territory} (sequence {sequence}): next update {next_update} is past"
    )]
    Expired {
        territory: String,
        sequence: u64,
        next_update: String,
    },
    #[error("trusted list of {territory}: sequence {got} is older than the stored {have}")]
    Rollback {
        territory: String,
        got: u64,
        have: u64,
    },
}

/// A Trusted List as read (its scheme information and its REM-relevant content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedList {
    /// `SchemeTerritory` (a country code; `CCA` in the kit).
    pub territory: String,
    /// `TSLSequenceNumber`.
    pub sequence: u64,
    /// `SchemeOperatorName` (the English name when there is one).
    pub operator: String,
    /// `ListIssueDateTime`.
    pub issued_at: Instant,
    /// `NextUpdate`; `None` for a closed list (TS 119 612 §5.3.15: no further update).
    pub next_update: Option<Instant>,
    /// Whether the list carries an enveloped `ds:Signature`.
    pub signed: bool,
    pub providers: Vec<ServiceProvider>,
}

/// One trust service provider (`TrustServiceProvider`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProvider {
    /// `TSPName` (English when there is one).
    pub name: String,
    pub services: Vec<TrustService>,
}

/// One service of a provider (`TSPService`), current status and history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustService {
    /// `ServiceTypeIdentifier`.
    pub service_type: String,
    /// `ServiceName` (English when there is one).
    pub name: String,
    /// The current `ServiceStatus` and its `StatusStartingTime`.
    pub status: String,
    pub status_since: Instant,
    pub identity: DigitalIdentity,
    /// `ServiceSupplyPoint`s as written.
    pub supply_points: Vec<String>,
    /// `ServiceHistoryInstance`s, as listed (newest first in a well-made list).
    pub history: Vec<HistoryEntry>,
}

/// `ServiceDigitalIdentity`: the certificates (DER), subject names and key identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigitalIdentity {
    pub certificates: Vec<Vec<u8>>,
    pub subject_names: Vec<String>,
    pub skis: Vec<Vec<u8>>,
}

/// A past state of a service (`ServiceHistoryInstance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub service_type: String,
    pub status: String,
    pub status_since: Instant,
    pub identity: DigitalIdentity,
}

impl TrustService {
    /// Whether this is a REM service (qualified or not).
    pub fn is_rem(&self) -> bool {
        self.service_type == SERVICE_TYPE_REM_Q || self.service_type == SERVICE_TYPE_REM
    }

    /// The status (and service type) in force at `at`: the current one from its starting
    /// time, else the history entry that started last at or before `at`; `None` before
    /// the service's first known status.
    pub fn status_at(&self, at: Instant) -> Option<(&str, &str)> {
        if at >= self.status_since {
            return Some((&self.status, &self.service_type));
        }
        self.history
            .iter()
            .filter(|h| h.status_since <= at)
            .max_by_key(|h| h.status_since)
            .map(|h| (h.status.as_str(), h.service_type.as_str()))
    }

    /// Whether this is a REM service granted at `at`.
    pub fn granted_at(&self, at: Instant) -> bool {
        matches!(self.status_at(at), Some((status, kind))
            if status == STATUS_GRANTED && (kind == SERVICE_TYPE_REM_Q || kind == SERVICE_TYPE_REM))
    }

    /// The mail hosts of its `smtp:` supply points (lower case, without port).
    pub fn smtp_hosts(&self) -> Vec<String> {
        self.supply_points
            .iter()
            .filter_map(|p| smtp_host(p))
            .collect()
    }

    /// The `https://` supply point: where its CSI document is published.
    pub fn csi_url(&self) -> Option<&str> {
        self.supply_points
            .iter()
            .map(String::as_str)
            .find(|p| p.starts_with("https://"))
    }
}

/// The host of an `smtp:HOST[:PORT]` or `smtp://HOST[:PORT][/]` supply point, lower case,
/// without a trailing dot.
pub fn smtp_host(point: &str) -> Option<String> {
    let rest = point
        .strip_prefix("smtp://")
        .or_else(|| point.strip_prefix("smtp:"))?;
    let rest = rest.trim_end_matches('/');
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => rest,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty() && !host.contains(['/', '@', ' '])).then_some(host)
}

/// Reads a Trusted List (after the XML gate) without checking its signature or its
/// dates: for display and tests. [`accept`] is the way in for trust decisions.
pub fn parse(raw: &[u8]) -> Result<TrustedList, TrustError> {
    let text = check_plain(raw)?;
    let root = Element::parse(text).map_err(TrustError::Syntax)?;
    read_list(&root)
}

/// The enveloped signature's verifier: checks the `ds:Signature` child of the document's
/// root and returns the certificate (DER) whose key made it. A seam so that the list logic
/// is tested apart from XML-DSig; [`XmlDsig`] is the real one.
pub trait SignatureCheck: Send + Sync {
    fn verify(&self, xml: &str) -> Result<Vec<u8>, String>;
}

/// The real [`SignatureCheck`]: [`crate::crypto::xmldsig::verify`], and one of the
/// signature's references must cover the whole list (less the signature itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct XmlDsig;

impl SignatureCheck for XmlDsig {
    fn verify(&self, xml: &str) -> Result<Vec<u8>, String> {
        let v = crate::crypto::xmldsig::verify(xml.as_bytes()).map_err(|e| e.to_string())?;
        if !v.covers_document() {
            return Err("no reference covers the whole document".into());
        }
        Ok(v.signer_certificate().to_vec())
    }
}

/// Accepts a fetched Trusted List for trust decisions: the XML gate, a well-formed list,
/// an enveloped signature that verifies and was made by one of `signers` (DER,
/// byte-compared), `NextUpdate` after `now` (a closed list, without one, is refused), and
/// a sequence number not below `have` (the
/// stored copy's, for the same source). Returns the list.
pub fn accept(
    raw: &[u8],
    check: &dyn SignatureCheck,
    signers: &[Vec<u8>],
    now: Instant,
    have: Option<u64>,
) -> Result<TrustedList, TrustError> {
    let text = check_plain(raw)?;
    let root = Element::parse(text).map_err(TrustError::Syntax)?;
    let list = read_list(&root)?;
    if !list.signed {
        return Err(TrustError::Unsigned);
    }
    let signer = check.verify(text).map_err(TrustError::Signature)?;
    if !signers.contains(&signer) {
        let name = X509::from_der(&signer)
            .map(|c| subject(&c))
            .unwrap_or_else(|_| "an unreadable certificate".into());
        return Err(TrustError::UnknownSigner(name));
    }
    match list.next_update {
        None => {
            return Err(TrustError::Closed {
                territory: list.territory,
                sequence: list.sequence,
            })
        }
        Some(next) if next <= now => {
            return Err(TrustError::Expired {
                territory: list.territory,
                sequence: list.sequence,
                next_update: next.rfc3339(),
            });
        }
        Some(_) => {}
    }
    if let Some(have) = have {
        if list.sequence < have {
            return Err(TrustError::Rollback {
                territory: list.territory,
                got: list.sequence,
                have,
            });
        }
    }
    Ok(list)
}

fn read_list(root: &Element) -> Result<TrustedList, TrustError> {
    let bad = |m: String| TrustError::Invalid(m);
    if !root.is(TSL_NS, "TrustServiceStatusList") {
        return Err(bad(format!(
            "root element is <{}>, not a TrustServiceStatusList of {TSL_NS}",
            root.name
        )));
    }
    let scheme = root.need("SchemeInformation").map_err(bad)?;
    let sequence = scheme
        .need_text("TSLSequenceNumber")
        .map_err(bad)?
        .parse::<u64>()
        .map_err(|_| bad("TSLSequenceNumber is not a number".into()))?;
    let territory = scheme
        .need_text("SchemeTerritory")
        .map_err(bad)?
        .to_string();
    let operator = scheme
        .child("SchemeOperatorName")
        .map(names)
        .unwrap_or_default();
    let issued_at = date(scheme.need_text("ListIssueDateTime").map_err(bad)?).map_err(bad)?;
    let next_update = match scheme.need("NextUpdate").map_err(bad)?.child("dateTime") {
        Some(d) => Some(date(d.text()).map_err(bad)?),
        None => None,
    };
    let mut providers = Vec::new();
    if let Some(list) = root.child("TrustServiceProviderList") {
        for tsp in list.children_named("TrustServiceProvider") {
            providers.push(read_provider(tsp).map_err(bad)?);
        }
    }
    let signed = root.children.iter().any(|c| c.is(DSIG_NS, "Signature"));
    Ok(TrustedList {
        territory,
        sequence,
        operator,
        issued_at,
        next_update,
        signed,
        providers,
    })
}

fn read_provider(tsp: &Element) -> Result<ServiceProvider, String> {
    let name = tsp
        .need("TSPInformation")?
        .child("TSPName")
        .map(names)
        .unwrap_or_default();
    let mut services = Vec::new();
    if let Some(list) = tsp.child("TSPServices") {
        for s in list.children_named("TSPService") {
            services.push(read_service(s).map_err(|e| format!("provider \"{name}\": {e}"))?);
        }
    }
    Ok(ServiceProvider { name, services })
}

fn read_service(s: &Element) -> Result<TrustService, String> {
    let info = s.need("ServiceInformation")?;
    let name = info.child("ServiceName").map(names).unwrap_or_default();
    let at = |m: String| format!("service \"{name}\": {m}");
    let service_type = info
        .need_text("ServiceTypeIdentifier")
        .map_err(at)?
        .to_string();
    let status = info.need_text("ServiceStatus").map_err(at)?.to_string();
    let status_since = date(info.need_text("StatusStartingTime").map_err(at)?).map_err(at)?;
    let identity = match info.child("ServiceDigitalIdentity") {
        Some(d) => read_identity(d).map_err(at)?,
        None => DigitalIdentity::default(),
    };
    let supply_points = info
        .child("ServiceSupplyPoints")
        .map(|p| {
            p.children_named("ServiceSupplyPoint")
                .map(|e| e.text().to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut history = Vec::new();
    if let Some(h) = s.child("ServiceHistory") {
        for i in h.children_named("ServiceHistoryInstance") {
            history.push(HistoryEntry {
                service_type: i
                    .need_text("ServiceTypeIdentifier")
                    .map_err(at)?
                    .to_string(),
                status: i.need_text("ServiceStatus").map_err(at)?.to_string(),
                status_since: date(i.need_text("StatusStartingTime").map_err(at)?).map_err(at)?,
                identity: match i.child("ServiceDigitalIdentity") {
                    Some(d) => read_identity(d).map_err(at)?,
                    None => DigitalIdentity::default(),
                },
            });
        }
    }
    Ok(TrustService {
        service_type,
        name,
        status,
        status_since,
        identity,
        supply_points,
        history,
    })
}

fn read_identity(d: &Element) -> Result<DigitalIdentity, String> {
    let mut id = DigitalIdentity::default();
    for digital in d.children_named("DigitalId") {
        if let Some(c) = digital.child("X509Certificate") {
            let der = base64_text(c.text()).map_err(|e| format!("X509Certificate: {e}"))?;
            X509::from_der(&der)
                .map_err(|e| format!("X509Certificate is not a certificate: {e}"))?;
            id.certificates.push(der);
        }
        if let Some(n) = digital.child("X509SubjectName") {
            id.subject_names.push(n.text().to_string());
        }
        if let Some(k) = digital.child("X509SKI") {
            id.skis
                .push(base64_text(k.text()).map_err(|e| format!("X509SKI: {e}"))?);
        }
    }
    Ok(id)
}

/// A certificate's subject, `CN=…, O=…`, for messages.
pub fn subject(cert: &openssl::x509::X509Ref) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Base64 content of an element (line breaks and spaces allowed, as XML-DSig writes it).
pub(super) fn base64_text(text: &str) -> Result<Vec<u8>, String> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| format!("not base64: {e}"))
}

/// The English `Name` of a multilingual name list (`tsl:Name` children, whatever the
/// list element's own namespace), else the first.
pub(super) fn names(e: &Element) -> String {
    let all: Vec<&Element> = e.children.iter().filter(|c| c.is(TSL_NS, "Name")).collect();
    all.iter()
        .find(|n| n.attr("lang") == Some("en"))
        .or(all.first())
        .map(|n| n.text().to_string())
        .unwrap_or_default()
}

/// An `xsd:dateTime` with a zone (TS 119 612 requires UTC), to the second.
pub(super) fn date(text: &str) -> Result<Instant, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| Instant::from_utc(t.with_timezone(&Utc)))
        .map_err(|_| format!("\"{}\" is not an xsd:dateTime with a zone", text.trim()))
}

// ---------------------------------------------------------------------------------------
// The REM peers view
// ---------------------------------------------------------------------------------------

/// One REM service of an accepted list, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemPeer {
    /// The list's territory and its `NextUpdate` (after which the list says nothing).
    pub territory: String,
    pub list_next_update: Option<Instant>,
    /// The provider's and the service's names.
    pub provider: String,
    pub service: TrustService,
}

impl RemPeer {
    /// Whether the service is a granted REM service at `at` and its list still in force
    /// (a closed list, without `NextUpdate`, is not).
    pub fn trusted_at(&self, at: Instant) -> bool {
        self.list_next_update.is_some_and(|n| at < n) && self.service.granted_at(at)
    }
}

/// The REM services of the accepted Trusted Lists, looked up by certificate or mail host.
#[derive(Debug, Clone, Default)]
pub struct RemPeers {
    peers: Vec<RemPeer>,
    /// SHA-256 of a certificate (current or historical identity) → positions in `peers`.
    by_cert: HashMap<[u8; 32], Vec<usize>>,
    /// Lower-case smtp supply-point host → positions in `peers`.
    by_host: HashMap<String, Vec<usize>>,
    /// What the verified CSI documents say, by the `https://` supply point they came from.
    csi: HashMap<String, PeerCsi>,
}

/// What a peer's Capability and Security Information says that routing needs, from the
/// stored copy verified against the peer's Trusted List identity (`crate::rem_sync` reads
/// it with [`super::csi`] and sets it with [`RemPeers::set_csi`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCsi {
    /// `CSISequenceNumber`.
    pub sequence: u64,
    /// `CSINextUpdate`; `None`: no further update announced (the document stands).
    pub next_update: Option<Instant>,
    /// Whether its `ERDSProfileSupported` is the REM baseline.
    pub rem_baseline: bool,
}

impl PeerCsi {
    /// Whether the document is in force at `at` (its `CSINextUpdate` not past).
    pub fn in_force_at(&self, at: Instant) -> bool {
        self.next_update.is_none_or(|n| at < n)
    }
}

impl RemPeers {
    /// The REM services of `lists` (services of other types are left out).
    pub fn new(lists: &[TrustedList]) -> Self {
        let mut view = RemPeers::default();
        for list in lists {
            for provider in &list.providers {
                for service in &provider.services {
                    let rem = service.is_rem()
                        || service.history.iter().any(|h| {
                            h.service_type == SERVICE_TYPE_REM_Q
                                || h.service_type == SERVICE_TYPE_REM
                        });
                    if !rem {
                        continue;
                    }
                    let pos = view.peers.len();
                    let certs = service.identity.certificates.iter().chain(
                        service
                            .history
                            .iter()
                            .flat_map(|h| &h.identity.certificates),
                    );
                    for der in certs {
                        let e = view.by_cert.entry(sha256(der)).or_default();
                        if !e.contains(&pos) {
                            e.push(pos);
                        }
                    }
                    for host in service.smtp_hosts() {
                        view.by_host.entry(host).or_default().push(pos);
                    }
                    view.peers.push(RemPeer {
                        territory: list.territory.clone(),
                        list_next_update: list.next_update,
                        provider: provider.name.clone(),
                        service: service.clone(),
                    });
                }
            }
        }
        view
    }

    /// Every REM service known, trusted or not.
    pub fn all(&self) -> &[RemPeer] {
        &self.peers
    }

    /// The services trusted at `at`.
    pub fn trusted_at(&self, at: Instant) -> impl Iterator<Item = &RemPeer> {
        self.peers.iter().filter(move |p| p.trusted_at(at))
    }

    /// The service whose digital identity is the certificate `der` (byte comparison) and
    /// that is trusted at `at`. The certificate must be the identity in force at `at`:
    /// the current one, or that of the history entry in force then.
    pub fn by_certificate(&self, der: &[u8], at: Instant) -> Option<&RemPeer> {
        self.by_cert
            .get(&sha256(der))?
            .iter()
            .map(|&i| &self.peers[i])
            .find(|p| {
                p.trusted_at(at)
                    && identity_at(&p.service, at)
                        .certificates
                        .iter()
                        .any(|c| c == der)
            })
    }

    /// Records what the verified CSI document fetched from `url` (a peer's `https://`
    /// supply point) says.
    pub fn set_csi(&mut self, url: &str, csi: PeerCsi) {
        self.csi.insert(url.to_string(), csi);
    }

    /// What `peer`'s CSI document says, if one was fetched and verified.
    pub fn csi_of(&self, peer: &RemPeer) -> Option<&PeerCsi> {
        self.csi.get(peer.service.csi_url()?)
    }

    /// The services trusted at `at` whose CSI, in force then, says they speak the REM
    /// baseline: those `rem.mode = "auto"` sends REM to (EN 319 532-4 Annex C: the
    /// capabilities are published at the supply point). A peer without a verified CSI is
    /// not among them.
    pub fn rem_baseline_at(&self, at: Instant) -> impl Iterator<Item = &RemPeer> {
        self.trusted_at(at).filter(move |p| {
            self.csi_of(p)
                .is_some_and(|c| c.rem_baseline && c.in_force_at(at))
        })
    }

    /// The service whose `smtp:` supply point is `host` (an MX name, any case, trailing dot
    /// allowed) and that is trusted at `at`.
    pub fn by_mail_host(&self, host: &str, at: Instant) -> Option<&RemPeer> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.by_host
            .get(&host)?
            .iter()
            .map(|&i| &self.peers[i])
            .find(|p| p.trusted_at(at))
    }
}

/// The digital identity of `service` in force at `at`.
fn identity_at(service: &TrustService, at: Instant) -> &DigitalIdentity {
    if at >= service.status_since {
        return &service.identity;
    }
    service
        .history
        .iter()
        .filter(|h| h.status_since <= at)
        .max_by_key(|h| h.status_since)
        .map(|h| &h.identity)
        .unwrap_or(&service.identity)
}

fn sha256(der: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(der).into()
}

/// The REM peers shared by the roles and replaced by the trust refresh: readers take the
/// current view and keep it for the message in progress. A handle made with `default()`
/// holds no view yet ([`PeersHandle::is_loaded`]) until the first [`PeersHandle::replace`]:
/// `pec serve` loads the stored last good lists before it serves, and the reception point
/// answers a REM message with a temporary failure while there is none (an empty view would
/// judge every peer untrusted).
#[derive(Debug, Default)]
pub struct PeersHandle {
    current: RwLock<Arc<RemPeers>>,
    loaded: std::sync::atomic::AtomicBool,
}

impl PeersHandle {
    pub fn new(peers: RemPeers) -> Self {
        PeersHandle {
            current: RwLock::new(Arc::new(peers)),
            loaded: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Whether a view was loaded (from the store or a refresh), empty or not.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<RemPeers> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace(&self, peers: RemPeers) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(peers);
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------
// A small namespace-aware element tree (Trusted Lists, CSI documents)
// ---------------------------------------------------------------------------------------

/// Deepest nesting read: a Trusted List is about ten levels deep.
const MAX_DEPTH: usize = 64;
/// Most elements read: a national Trusted List has some tens of thousands.
const MAX_ELEMENTS: usize = 250_000;

/// An element: its namespace URI, local name, attributes (local name → value), text
/// content (concatenated, entities resolved) and child elements. Comments and processing
/// instructions are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Element {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// Parses `text` (which passed [`check_plain`]) into its root element.
    pub fn parse(text: &str) -> Result<Element, String> {
        use quick_xml::events::Event;
        use quick_xml::name::ResolveResult;
        let mut reader = quick_xml::reader::NsReader::from_str(text);
        reader.config_mut().check_comments = true;
        let mut stack: Vec<Element> = Vec::new();
        let mut root = None;
        let mut count = 0usize;
        loop {
            let at = reader.buffer_position();
            let (ns, event) = reader
                .read_resolved_event()
                .map_err(|e| format!("after byte {at}: {e}"))?;
            let ns = match ns {
                ResolveResult::Bound(n) => n.as_ref().to_string(),
                ResolveResult::Unbound => String::new(),
                ResolveResult::Unknown(p) => {
                    return Err(format!("undeclared namespace prefix \"{p}\""))
                }
            };
            match event {
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let empty = matches!(event, Event::Empty(_));
                    if root.is_some() {
                        return Err("content after the root element".into());
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(format!("nested deeper than {MAX_DEPTH} elements"));
                    }
                    count += 1;
                    if count > MAX_ELEMENTS {
                        return Err(format!("more than {MAX_ELEMENTS} elements"));
                    }
                    let mut el = Element {
                        ns,
                        name: s.local_name().as_ref().to_string(),
                        ..Element::default()
                    };
                    for a in s.attributes() {
                        let a = a.map_err(|e| format!("attribute: {e}"))?;
                        if a.key.as_ref().starts_with("xmlns") {
                            continue;
                        }
                        let value = a
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|e| format!("attribute: {e}"))?;
                        el.attrs
                            .push((a.key.local_name().as_ref().to_string(), value.into_owned()));
                    }
                    if empty {
                        match stack.last_mut() {
                            Some(p) => p.children.push(el),
                            None => root = Some(el),
                        }
                    } else {
                        stack.push(el);
                    }
                }
                Event::End(_) => {
                    if let Some(el) = stack.pop() {
                        match stack.last_mut() {
                            Some(p) => p.children.push(el),
                            None => root = Some(el),
                        }
                    }
                }
                Event::Text(t) => {
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&t.xml10_content());
                    } else if !t.xml10_content().trim().is_empty() {
                        return Err("text outside the root element".into());
                    }
                }
                Event::CData(c) => {
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&c.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    let s = if r.is_char_ref() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => {
                                return Err(format!(
                                    "bad character reference \"&{};\"",
                                    &*r.xml10_content()
                                ))
                            }
                        }
                    } else {
                        match quick_xml::escape::resolve_xml_entity(&r.xml10_content()) {
                            Some(v) => v.to_string(),
                            None => return Err("undefined entity".into()),
                        }
                    };
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&s);
                    }
                }
                Event::DocType(_) => return Err("document type declaration".into()),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(open) = stack.last() {
            return Err(format!("end of input inside <{}>", open.name));
        }
        root.ok_or_else(|| "no root element".into())
    }

    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The first child named `name` in this element's namespace.
    pub fn child<'a>(&'a self, name: &'a str) -> Option<&'a Element> {
        self.children_named(name).next()
    }

    /// The first child `{ns}name`.
    pub fn child_ns(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// The children named `name` in this element's namespace.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children
            .iter()
            .filter(move |c| c.name == name && c.ns == self.ns)
    }

    pub fn need<'a>(&'a self, name: &'a str) -> Result<&'a Element, String> {
        self.child(name)
            .ok_or_else(|| format!("<{}> has no <{name}>", self.name))
    }

    /// The trimmed text of the child `name`, which must be there and not empty.
    pub fn need_text<'a>(&'a self, name: &'a str) -> Result<&'a str, String> {
        let t = self.need(name)?.text();
        if t.is_empty() {
            return Err(format!("<{name}> in <{}> is empty", self.name));
        }
        Ok(t)
    }

    /// Trimmed text content.
    pub fn text(&self) -> &str {
        self.text.trim()
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
