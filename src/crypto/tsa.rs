// SPDX-License-Identifier: GPL-3.0-or-later
//! RFC 3161 time stamps (*marca temporale*) for the daily seals of the legal log: the
//! `TimeStampReq` built by hand in DER, a minimal HTTP/1.1 client over
//! `std::net::TcpStream` (plain `http://` only; HTTPS is a follow-up), the `TimeStampResp`
//! status, and the token's `TSTInfo` (message imprint, time, nonce). The token's signature
//! is verified with OpenSSL's CMS verification against the TSA's CA.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use thiserror::Error;

use super::asn1;
use crate::message::time::Instant;

/// id-sha256.
const OID_SHA256_DER: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
/// Largest response read from a TSA.
const MAX_RESPONSE: u64 = 1024 * 1024;

#[derive(Debug, Error)]
pub enum TsaError {
    #[error("tsa url \"{0}\": only http://HOST[:PORT]/PATH is supported")]
    Url(String),
    #[error("tsa {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("tsa refused the request: status {status}{text}")]
    Refused { status: i64, text: String },
    #[error("time-stamp token: {0}")]
    Token(String),
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
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
/// `nonce`, certReq TRUE (so that the token carries the TSA certificate).
pub fn request_der(sha256: &[u8; 32], nonce: &[u8]) -> Vec<u8> {
    let alg = tlv(
        0x30,
        &[tlv(0x06, OID_SHA256_DER), vec![0x05, 0x00]].concat(),
    );
    let imprint = tlv(0x30, &[alg, tlv(0x04, sha256)].concat());
    let body = [
        tlv(0x02, &[1]),
        imprint,
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
    let [version, _policy, imprint, serial, gen_time, rest @ ..] = items.as_slice() else {
        return Err(token_err("TSTInfo too short"));
    };
    if version.tag != 0x02 || version.value != [1] {
        return Err(token_err("TSTInfo version is not 1"));
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
        hash_oid,
        imprint: hashed.value.to_vec(),
        serial: serial.value.to_vec(),
        gen_time,
        nonce,
    })
}

/// Checks that `token` time-stamps `sha256` (SHA-256 imprint equal to it) and, with
/// `ca_file` (PEM, the TSA's trust anchors), that its signature is valid and its signer
/// chains to the CA with the timeStamping purpose, at the token's own time (genTime).
/// Returns the token's `TSTInfo`.
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
    Ok(info)
}

/// `(host, port, path)` of an `http://` URL.
fn parse_url(url: &str) -> Result<(String, u16, String), TsaError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| TsaError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse().map_err(|_| TsaError::Url(url.to_string()))?,
        ),
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(TsaError::Url(url.to_string()));
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// POSTs `body` as `application/timestamp-query` and returns the response body.
fn post(url: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, TsaError> {
    let (host, port, path) = parse_url(url)?;
    let http = |reason: String| TsaError::Http {
        url: url.to_string(),
        reason,
    };
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| http(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| http("no address".into()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| http(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| http(e.to_string()))?;
    let host_header = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: pec/{}\r\n\
         Content-Type: application/timestamp-query\r\nAccept: application/timestamp-reply\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body))
        .map_err(|e| http(format!("send: {e}")))?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .map_err(|e| http(format!("receive: {e}")))?;
    let end = memchr::memmem::find(&response, b"\r\n\r\n")
        .ok_or_else(|| http("truncated response headers".into()))?;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut body = response[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(http(format!("status \"{status}\"")));
    }
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                let n: usize = value
                    .parse()
                    .map_err(|_| http(format!("bad content-length \"{value}\"")))?;
                if body.len() < n {
                    return Err(http("truncated body".into()));
                }
                body.truncate(n);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    if chunked {
        body = dechunk(&body).ok_or_else(|| http("malformed chunked body".into()))?;
    }
    Ok(body)
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = memchr::memmem::find(data, b"\r\n")?;
        let size = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Obtains a time-stamp token over `sha256` from the TSA at `url`: checks the status, the
/// imprint and the nonce, and returns the token's DER.
pub fn timestamp(url: &str, sha256: &[u8; 32], timeout: Duration) -> Result<Vec<u8>, TsaError> {
    let nonce: [u8; 8] = rand::random();
    let response = post(url, &request_der(sha256, &nonce), timeout)?;
    let token = parse_response(&response)?;
    let info = token_info(&token)?;
    if info.imprint != sha256 {
        return Err(token_err("the tsa time-stamped other data"));
    }
    let trim = |v: &[u8]| -> Vec<u8> { v.iter().copied().skip_while(|b| *b == 0).collect() };
    if info.nonce.as_deref().map(trim) != Some(trim(&nonce)) {
        return Err(token_err("nonce does not match the request"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        let der = request_der(&[0xab; 32], &[0x80, 1]);
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
    fn urls() {
        assert_eq!(
            parse_url("http://tsa.example.it/tsa").unwrap(),
            ("tsa.example.it".into(), 80, "/tsa".into())
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1".into(), 8080, "/".into())
        );
        assert!(parse_url("https://tsa.example.it/").is_err());
        assert!(parse_url("http://:80/").is_err());
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_none());
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
