// SPDX-License-Identifier: GPL-3.0-or-later
//! RFC 3161 time stamps (*marca temporale*) for the daily seals of the legal log: the
//! `TimeStampReq` built by hand in DER (with the TSA policy when configured), a minimal
//! HTTP/1.1 client over `std::net::TcpStream`, plain or HTTPS (OpenSSL) with HTTP basic
//! authentication and/or a client certificate, as accredited Italian TSAs require (the TLS
//! context built once per CA file and client certificate and reused); the
//! `TimeStampResp` status, and the token's `TSTInfo` (message imprint, time, nonce, policy).
//! A fresh token is accepted only when everything holds: status granted, our imprint, our
//! nonce, our policy, a time close to ours, a signature by a certificate that chains to the
//! configured CA at the token's time and whose extended key usage is timeStamping only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509ExtendedKeyUsage, X509};
use thiserror::Error;

use super::asn1::{self, tlv};
use super::http::{TlsTrust, Url};
use crate::message::time::Instant;

/// id-sha256.
const OID_SHA256_DER: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
/// Largest response read from a TSA.
const MAX_RESPONSE: u64 = 1024 * 1024;
/// Largest difference between a fresh token's time and ours: a TSA whose clock (or whose
/// answer) is further off is not believed.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 600;

#[derive(Debug, Error)]
pub enum TsaError {
    #[error("tsa url \"{0}\": expected http[s]://HOST[:PORT]/PATH")]
    Url(String),
    #[error("tsa {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("tsa refused the request: status {status}{text}")]
    Refused { status: i64, text: String },
    #[error("time-stamp token: {0}")]
    Token(String),
}

/// How the TSA is reached and what its answers are checked against (`[log] tsa_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsaSettings {
    /// `http[s]://HOST[:PORT]/PATH` of the RFC 3161 service.
    pub url: String,
    /// Time allowed for one request (connect, send, receive, each).
    pub timeout: Duration,
    /// PEM trust anchors of the TSA certificate: the token's signer must chain to them.
    /// `None` only checks the token's signature with the certificate it carries
    /// (`pec log seal` outside `pec serve`, tests).
    pub ca_file: Option<PathBuf>,
    /// Policy OID (dotted) named in the request; the token must carry it.
    pub policy: Option<String>,
    /// HTTP basic authentication: user name and the file holding the password.
    pub basic_auth: Option<(String, PathBuf)>,
    /// TLS client certificate and its key (PEM files).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// PEM CA file for the HTTPS server certificate, trusted alone (the system trust store
    /// is then not loaded); `None`: the system trust store.
    pub tls_ca_file: Option<PathBuf>,
}

impl TsaSettings {
    /// A TSA at `url` with nothing else configured.
    pub fn new(url: &str, timeout: Duration) -> Self {
        TsaSettings {
            url: url.to_string(),
            timeout,
            ca_file: None,
            policy: None,
            basic_auth: None,
            client_cert: None,
            tls_ca_file: None,
        }
    }
}

/// DER of a dotted OID (`None` when it is not one).
pub fn oid_der(dotted: &str) -> Option<Vec<u8>> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| a.parse().ok())
        .collect::<Option<_>>()?;
    let [first, second, rest @ ..] = arcs.as_slice() else {
        return None;
    };
    if *first > 2 || (*first < 2 && *second >= 40) {
        return None;
    }
    let mut out = Vec::new();
    let mut push = |mut v: u64| {
        let mut bytes = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            bytes.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        bytes.reverse();
        out.extend(bytes);
    };
    push(first.checked_mul(40)?.checked_add(*second)?);
    for a in rest {
        push(*a);
    }
    Some(out)
}

/// DER INTEGER content of a non-negative number given big-endian.
fn unsigned_integer(be: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    tlv(0x02, &v)
}

/// `TimeStampReq` (RFC 3161 §2.4.1): version 1, messageImprint SHA-256 of the data,
/// reqPolicy when given (DER content of the OID), `nonce`, certReq TRUE (so that the token
/// carries the TSA certificate).
pub fn request_der(sha256: &[u8; 32], nonce: &[u8], policy: Option<&[u8]>) -> Vec<u8> {
    let alg = tlv(
        0x30,
        &[tlv(0x06, OID_SHA256_DER), vec![0x05, 0x00]].concat(),
    );
    let imprint = tlv(0x30, &[alg, tlv(0x04, sha256)].concat());
    let body = [
        tlv(0x02, &[1]),
        imprint,
        policy.map(|p| tlv(0x06, p)).unwrap_or_default(),
        unsigned_integer(nonce),
        tlv(0x01, &[0xff]),
    ]
    .concat();
    tlv(0x30, &body)
}

fn token_err(what: impl std::fmt::Display) -> TsaError {
    TsaError::Token(what.to_string())
}

/// The token of a `TimeStampResp`, when the status is granted (0) or grantedWithMods (1).
pub fn parse_response(der: &[u8]) -> Result<Vec<u8>, TsaError> {
    let (resp, _) = asn1::read(der, 0).map_err(token_err)?;
    if resp.tag != 0x30 {
        return Err(token_err("response is not a sequence"));
    }
    let mut rest = resp.value;
    let (status_info, after) = asn1::read(rest, 1).map_err(token_err)?;
    rest = after;
    let items = asn1::children(status_info.value, 2).map_err(token_err)?;
    let status = items
        .first()
        .filter(|t| t.tag == 0x02)
        .map(|t| t.value.iter().fold(0i64, |a, b| (a << 8) | i64::from(*b)))
        .ok_or_else(|| token_err("no status"))?;
    if status != 0 && status != 1 {
        let text = items
            .get(1)
            .filter(|t| t.tag == 0x30)
            .and_then(|t| asn1::children(t.value, 3).ok())
            .map(|ss| {
                ss.iter()
                    .map(|s| String::from_utf8_lossy(s.value).into_owned())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        return Err(TsaError::Refused { status, text });
    }
    if rest.is_empty() {
        return Err(token_err("granted without a token"));
    }
    // The token is the whole next TLV: its length is what the read leaves behind.
    let (_, after) = asn1::read(rest, 1).map_err(token_err)?;
    Ok(rest[..rest.len() - after.len()].to_vec())
}

/// What a token says (`TSTInfo`, RFC 3161 §2.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TstInfo {
    /// The TSA policy under which the token was issued, dotted.
    pub policy: String,
    /// OID of the imprint's hash algorithm, dotted.
    pub hash_oid: String,
    pub imprint: Vec<u8>,
    pub serial: Vec<u8>,
    pub gen_time: Instant,
    /// Big-endian content octets of the nonce, when present.
    pub nonce: Option<Vec<u8>>,
}

/// Reads the `TSTInfo` of a token (a CMS SignedData whose content is id-ct-TSTInfo).
pub fn token_info(token: &[u8]) -> Result<TstInfo, TsaError> {
    let sd = asn1::signed_data(token).map_err(token_err)?;
    let content = sd
        .econtent
        .ok_or_else(|| token_err("no encapsulated TSTInfo"))?;
    let (info, _) = asn1::read(&content, 0).map_err(token_err)?;
    let items = asn1::children(info.value, 1).map_err(token_err)?;
    let [version, policy, imprint, serial, gen_time, rest @ ..] = items.as_slice() else {
        return Err(token_err("TSTInfo too short"));
    };
    if version.tag != 0x02 || version.value != [1] {
        return Err(token_err("TSTInfo version is not 1"));
    }
    if policy.tag != 0x06 {
        return Err(token_err("malformed policy"));
    }
    let imp = asn1::children(imprint.value, 2).map_err(token_err)?;
    let [alg, hashed] = imp.as_slice() else {
        return Err(token_err("malformed messageImprint"));
    };
    let alg_items = asn1::children(alg.value, 3).map_err(token_err)?;
    let hash_oid = alg_items
        .first()
        .filter(|t| t.tag == 0x06)
        .map(|t| asn1::oid(t.value))
        .ok_or_else(|| token_err("malformed hash algorithm"))?;
    let gen_time = asn1::parse_time(gen_time.tag, gen_time.value)
        .ok_or_else(|| token_err("malformed genTime"))?;
    // After genTime: accuracy (SEQUENCE), ordering (BOOLEAN), nonce (INTEGER), …
    let nonce = rest
        .iter()
        .find(|t| t.tag == 0x02)
        .map(|t| t.value.to_vec());
    Ok(TstInfo {
        policy: asn1::oid(policy.value),
        hash_oid,
        imprint: hashed.value.to_vec(),
        serial: serial.value.to_vec(),
        gen_time,
        nonce,
    })
}

/// Checks that `token` time-stamps `sha256` (SHA-256 imprint equal to it) and, with
/// `ca_file` (PEM, the TSA's trust anchors), that its signature is valid and its signer
/// chains to the CA with the timeStamping purpose, at the token's own time (genTime), and
/// has the timeStamping extended key usage only (RFC 3161 §2.3). Returns the token's
/// `TSTInfo`.
pub fn verify_token(
    token: &[u8],
    sha256: &[u8; 32],
    ca_file: Option<&Path>,
) -> Result<TstInfo, TsaError> {
    let info = token_info(token)?;
    if info.hash_oid != OID_SHA256 {
        return Err(token_err(format!(
            "imprint algorithm {} is not sha-256",
            info.hash_oid
        )));
    }
    if info.imprint != sha256 {
        return Err(token_err("message imprint does not match the data"));
    }
    let mut cms = CmsContentInfo::from_der(token).map_err(token_err)?;
    let mut store = X509StoreBuilder::new().map_err(token_err)?;
    let flags = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| token_err(format!("cannot read \"{}\": {e}", path.display())))?;
            for cert in X509::stack_from_pem(&pem).map_err(token_err)? {
                store.add_cert(cert).map_err(token_err)?;
            }
            // Certificates are checked at the time the token was made, so that a token
            // stays verifiable for the whole retention after the TSA certificate expires.
            let mut param = openssl::x509::verify::X509VerifyParam::new().map_err(token_err)?;
            param
                .set_purpose(openssl::x509::X509PurposeId::TIMESTAMP_SIGN)
                .map_err(token_err)?;
            param.set_time(info.gen_time.unix() as _);
            store.set_param(&param).map_err(token_err)?;
            CMSOptions::empty()
        }
        None => CMSOptions::NO_SIGNER_CERT_VERIFY,
    };
    let store = store.build();
    let certs = Stack::<X509>::new().map_err(token_err)?;
    let mut out = Vec::new();
    cms.verify(Some(&certs), Some(&store), None, Some(&mut out), flags)
        .map_err(|e| token_err(format!("signature: {e}")))?;
    // The signer's own usage: a time stamp from a certificate issued for something else
    // is not a time stamp, whoever issued it.
    let sd = asn1::signed_data(token).map_err(token_err)?;
    let signer = sd
        .signers
        .first()
        .ok_or_else(|| token_err("no signer"))
        .and_then(|si| super::verify::find_signer(&sd.certificates, &si.sid).map_err(token_err))?;
    if signer.extended_key_usage() != Some(X509ExtendedKeyUsage::TIMESTAMP) {
        return Err(token_err(
            "the tsa certificate's extended key usage is not timeStamping only",
        ));
    }
    Ok(info)
}

/// Checks a token just received for a request of ours: [`verify_token`] against the
/// configured CA, and the nonce, the policy when one was asked for, and a time within
/// [`MAX_CLOCK_SKEW_SECONDS`] of `now` (a token dated elsewhere, or signed by a
/// certificate expired by now, is refused).
pub fn verify_fresh(
    token: &[u8],
    sha256: &[u8; 32],
    nonce: &[u8],
    settings: &TsaSettings,
    now: Instant,
) -> Result<TstInfo, TsaError> {
    let info = token_info(token)?;
    if info.imprint != sha256 {
        return Err(token_err("the tsa time-stamped other data"));
    }
    let trim = |v: &[u8]| -> Vec<u8> { v.iter().copied().skip_while(|b| *b == 0).collect() };
    if info.nonce.as_deref().map(trim) != Some(trim(nonce)) {
        return Err(token_err("nonce does not match the request"));
    }
    if let Some(policy) = &settings.policy {
        if &info.policy != policy {
            return Err(token_err(format!(
                "policy {} is not the requested {policy}",
                info.policy
            )));
        }
    }
    let skew = (info.gen_time.unix() - now.unix()).abs();
    if skew > MAX_CLOCK_SKEW_SECONDS {
        return Err(token_err(format!(
            "time {} is {skew} s away from ours",
            info.gen_time.rfc3339()
        )));
    }
    verify_token(token, sha256, settings.ca_file.as_deref())
}

/// Parses `http[s]://HOST[:PORT]/PATH`.
fn parse_url(url: &str) -> Result<Url, TsaError> {
    super::http::parse_url(url).ok_or_else(|| TsaError::Url(url.to_string()))
}

/// Checks the syntax of a TSA URL (configuration).
pub fn check_url(url: &str) -> Result<(), TsaError> {
    parse_url(url).map(|_| ())
}

/// The `Authorization` header of `settings`, if any (the password file is read each time,
/// so that a rotated password needs no restart).
fn authorization(settings: &TsaSettings) -> Result<String, String> {
    let Some((user, file)) = &settings.basic_auth else {
        return Ok(String::new());
    };
    let password = std::fs::read_to_string(file)
        .map_err(|e| format!("password file \"{}\": {e}", file.display()))?;
    let password = password.trim_end_matches(['\r', '\n']);
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Ok(format!("Authorization: Basic {token}\r\n"))
}

/// What the TLS context of `settings` trusts and presents ([`super::http::tls_context`]).
fn tls_trust(settings: &TsaSettings) -> TlsTrust {
    TlsTrust {
        ca_file: settings.tls_ca_file.clone(),
        client_cert: settings.client_cert.clone(),
    }
}

/// How many times the TLS context of `settings` (its `tls_ca_file` and `client_cert`) was
/// built in this process: once, plus once per change of one of its files. For tests.
#[doc(hidden)]
pub fn tls_context_builds(settings: &TsaSettings) -> u64 {
    super::http::tls_context_builds(&tls_trust(settings))
}

/// POSTs `body` as `application/timestamp-query` and returns the response body, over a
/// connection to the TSA kept alive between stamps ([`super::http::request`]; a stamp
/// request may be sent again: a lost one only costs the TSA a token).
fn post(settings: &TsaSettings, body: &[u8]) -> Result<Vec<u8>, TsaError> {
    let url = &settings.url;
    let parsed = parse_url(url)?;
    let http = |reason: String| TsaError::Http {
        url: url.to_string(),
        reason,
    };
    let auth = authorization(settings).map_err(http)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pec/{}\r\n{auth}\
         Content-Type: application/timestamp-query\r\nAccept: application/timestamp-reply\r\n\
         Content-Length: {}\r\n\r\n",
        parsed.path,
        super::http::host_header(&parsed),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let response = super::http::request(
        &parsed,
        &tls_trust(settings),
        settings.timeout,
        head.as_bytes(),
        body,
        MAX_RESPONSE,
        true,
    )
    .map_err(http)?;
    super::http::response_body(&response).map_err(http)
}

/// Obtains a time-stamp token over `sha256` from the TSA of `settings` and checks it
/// ([`verify_fresh`], against this machine's clock: the token is dated by the TSA now);
/// returns the token's DER.
pub fn timestamp(settings: &TsaSettings, sha256: &[u8; 32]) -> Result<Vec<u8>, TsaError> {
    use crate::message::time::Clock as _;
    let now = crate::message::time::SystemClock.now();
    let nonce: [u8; 8] = rand::random();
    let policy = match &settings.policy {
        Some(p) => Some(oid_der(p).ok_or_else(|| token_err(format!("invalid policy {p}")))?),
        None => None,
    };
    let response = post(settings, &request_der(sha256, &nonce, policy.as_deref()))?;
    let token = parse_response(&response)?;
    verify_fresh(&token, sha256, &nonce, settings, now)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        let der = request_der(&[0xab; 32], &[0x80, 1], None);
        let mut want = vec![
            0x30, 0x3e, 0x02, 0x01, 0x01, 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09,
        ];
        want.extend_from_slice(OID_SHA256_DER);
        want.extend_from_slice(&[0x05, 0x00, 0x04, 0x20]);
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&[0x02, 0x03, 0x00, 0x80, 0x01, 0x01, 0x01, 0xff]);
        assert_eq!(der, want);
    }

    #[test]
    fn request_with_a_policy() {
        let policy = oid_der("1.3.6.1.4.1.99999.1.1").unwrap();
        assert_eq!(
            policy,
            [0x2b, 0x06, 0x01, 0x04, 0x01, 0x86, 0x8d, 0x1f, 0x01, 0x01]
        );
        let der = request_der(&[0xab; 32], &[1], Some(&policy));
        // version, imprint (0x33 bytes), then the policy before the nonce.
        assert_eq!(der[5 + 0x33..5 + 0x33 + 2], [0x06, 0x0a]);
        assert_eq!(der[5 + 0x33 + 2..5 + 0x33 + 12], policy[..]);
        assert!(oid_der("1.2.x").is_none());
        assert!(oid_der("3.1").is_none());
        assert!(oid_der("1").is_none());
    }

    #[test]
    fn urls() {
        let url = |tls, host: &str, port, path: &str| Url {
            tls,
            host: host.into(),
            port,
            path: path.into(),
        };
        assert_eq!(
            parse_url("http://tsa.example.it/tsa").unwrap(),
            url(false, "tsa.example.it", 80, "/tsa")
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap(),
            url(false, "127.0.0.1", 8080, "/")
        );
        assert_eq!(
            parse_url("https://tsa.example.it/ts").unwrap(),
            url(true, "tsa.example.it", 443, "/ts")
        );
        assert!(parse_url("ftp://tsa.example.it/").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("https://user:pw@tsa.example.it/").is_err());
    }

    #[test]
    fn a_refusal_is_reported_with_its_text() {
        // TimeStampResp { status { 2, { "bad" } } }
        let der = [
            0x30, 0x0c, 0x30, 0x0a, 0x02, 0x01, 0x02, 0x30, 0x05, 0x0c, 0x03, b'b', b'a', b'd',
        ];
        match parse_response(&der) {
            Err(TsaError::Refused { status: 2, text }) => assert_eq!(text, " (bad)"),
            other => panic!("{other:?}"),
        }
    }
}
