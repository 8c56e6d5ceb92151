// SPDX-License-Identifier: GPL-3.0-or-later
//! A small, tolerant BER/DER reader for the parts of CMS SignedData that the `openssl`
//! crate does not expose (signer identifier, signed attributes, certificates), used by
//! [`super::verify`]. Depth-limited; never panics. And [`tlv`], the one DER writer of a
//! type-length-value (time-stamp requests, XAdES `IssuerSerialV2`).

use openssl::x509::X509;

use super::error::VerifyError;
use crate::message::time::Instant;

const MAX_DEPTH: usize = 48;

/// DER type-length-value: `tag`, the definite length (short or long form), `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
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

#[derive(Debug, Clone, Copy)]
pub(super) struct Tlv<'a> {
    /// Identifier octet (low tag numbers only; high-tag-number form is read and
    /// reported as 0x1f with its class/constructed bits).
    pub tag: u8,
    /// Content octets (for indefinite length: the children, without the end marker).
    pub value: &'a [u8],
}

impl Tlv<'_> {
    fn constructed(&self) -> bool {
        self.tag & 0x20 != 0
    }
}

fn err(what: &str) -> VerifyError {
    VerifyError::Malformed(format!("cms structure: {what}"))
}

/// Reads one TLV; returns it and the rest of the input.
pub(super) fn read(input: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8]), VerifyError> {
    if depth > MAX_DEPTH {
        return Err(err("nested too deeply"));
    }
    let (&tag, mut rest) = input.split_first().ok_or_else(|| err("truncated"))?;
    if tag & 0x1f == 0x1f {
        // High tag number: base-128 digits, last one without the top bit.
        let n = rest
            .iter()
            .take(5)
            .position(|&b| b & 0x80 == 0)
            .ok_or_else(|| err("bad tag"))?;
        rest = &rest[n + 1..];
    }
    let (&l0, after_len) = rest.split_first().ok_or_else(|| err("truncated"))?;
    rest = after_len;
    if l0 == 0x80 {
        if tag & 0x20 == 0 {
            return Err(err("indefinite length on a primitive"));
        }
        // Children until the end-of-contents marker.
        let start = rest;
        let mut cur = rest;
        loop {
            if cur.len() >= 2 && cur[0] == 0 && cur[1] == 0 {
                let used = start.len() - cur.len();
                return Ok((
                    Tlv {
                        tag,
                        value: &start[..used],
                    },
                    &cur[2..],
                ));
            }
            let (_, next) = read(cur, depth + 1)?;
            cur = next;
        }
    }
    let len = if l0 & 0x80 == 0 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(err("bad length"));
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(err("truncated"));
    }
    Ok((
        Tlv {
            tag,
            value: &rest[..len],
        },
        &rest[len..],
    ))
}

/// The whole encoding of the first TLV of `input` (for certificates and names).
fn read_raw(input: &[u8], depth: usize) -> Result<(&[u8], Tlv<'_>, &[u8]), VerifyError> {
    let (tlv, rest) = read(input, depth)?;
    let used = input.len() - rest.len();
    Ok((&input[..used], tlv, rest))
}

pub(super) fn children(value: &[u8], depth: usize) -> Result<Vec<Tlv<'_>>, VerifyError> {
    let mut out = Vec::new();
    let mut cur = value;
    while !cur.is_empty() {
        let (t, next) = read(cur, depth)?;
        out.push(t);
        cur = next;
    }
    Ok(out)
}

fn expect(t: &Tlv<'_>, tag: u8, what: &str) -> Result<(), VerifyError> {
    if t.tag == tag {
        Ok(())
    } else {
        Err(err(&format!("{what}: unexpected tag 0x{:02x}", t.tag)))
    }
}

/// Dotted form of OID content octets.
pub(super) fn oid(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in content {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
        if acc > u64::MAX >> 8 {
            return "invalid-oid".into();
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// OCTET STRING content, primitive or constructed (BER).
fn octets(t: &Tlv<'_>, depth: usize) -> Result<Vec<u8>, VerifyError> {
    if !t.constructed() {
        return Ok(t.value.to_vec());
    }
    let mut out = Vec::new();
    for c in children(t.value, depth + 1)? {
        out.extend(octets(&c, depth + 1)?);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub(super) enum SignerId {
    IssuerSerial { issuer: Vec<u8>, serial: Vec<u8> },
    KeyId(Vec<u8>),
}

#[derive(Debug, Clone)]
pub(super) struct SignerInfo {
    pub sid: SignerId,
    pub digest_oid: String,
    pub has_signed_attrs: bool,
    pub message_digest: Option<Vec<u8>>,
    pub signing_time: Option<Instant>,
}

pub(super) struct SignedData {
    pub econtent: Option<Vec<u8>>,
    pub certificates: Vec<X509>,
    pub signers: Vec<SignerInfo>,
}

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_SIGNING_TIME: &str = "1.2.840.113549.1.9.5";

pub(super) fn signed_data(der: &[u8]) -> Result<SignedData, VerifyError> {
    let (ci, _) = read(der, 0)?;
    expect(&ci, 0x30, "contentinfo")?;
    let ci = children(ci.value, 1)?;
    let [ctype, content, ..] = ci.as_slice() else {
        return Err(err("contentinfo too short"));
    };
    expect(ctype, 0x06, "contenttype")?;
    let ct = oid(ctype.value);
    if ct != OID_SIGNED_DATA {
        return Err(VerifyError::NotSigned(format!(
            "cms content type \"{ct}\" is not signed-data"
        )));
    }
    expect(content, 0xa0, "content")?;
    let (sd, _) = read(content.value, 2)?;
    expect(&sd, 0x30, "signeddata")?;
    let items = children(sd.value, 3)?;
    let mut it = items.iter();
    let version = it.next().ok_or_else(|| err("signeddata empty"))?;
    expect(version, 0x02, "version")?;
    let _digest_algs = it.next().ok_or_else(|| err("no digestalgorithms"))?;
    let eci = it.next().ok_or_else(|| err("no encapcontentinfo"))?;
    expect(eci, 0x30, "encapcontentinfo")?;
    let eci_items = children(eci.value, 4)?;
    let econtent = match eci_items.get(1) {
        Some(t) if t.tag == 0xa0 => {
            let (os, _) = read(t.value, 5)?;
            Some(octets(&os, 5)?)
        }
        _ => None,
    };
    let mut certificates = Vec::new();
    let mut signers_set = None;
    for t in it {
        match t.tag {
            0xa0 => {
                let mut cur = t.value;
                while !cur.is_empty() {
                    let (raw, tlv, next) = read_raw(cur, 4)?;
                    if tlv.tag == 0x30 {
                        // Unreadable certificates are skipped: they cannot be the
                        // signer's, and OpenSSL already accepted the structure.
                        if let Ok(c) = X509::from_der(raw) {
                            certificates.push(c);
                        }
                    }
                    cur = next;
                }
            }
            0xa1 => {}
            0x31 => signers_set = Some(*t),
            other => return Err(err(&format!("signeddata: unexpected tag 0x{other:02x}"))),
        }
    }
    let signers_set = signers_set.ok_or_else(|| err("no signerinfos"))?;
    let mut signers = Vec::new();
    for si in children(signers_set.value, 4)? {
        signers.push(signer_info(&si)?);
    }
    Ok(SignedData {
        econtent,
        certificates,
        signers,
    })
}

fn signer_info(si: &Tlv<'_>) -> Result<SignerInfo, VerifyError> {
    expect(si, 0x30, "signerinfo")?;
    let mut cur = si.value;
    let (version, next) = read(cur, 5)?;
    expect(&version, 0x02, "signerinfo version")?;
    cur = next;
    let (sid, next) = read(cur, 5)?;
    cur = next;
    let sid = match sid.tag {
        0x30 => {
            let mut c = sid.value;
            let (issuer_raw, issuer, n) = read_raw(c, 6)?;
            expect(&issuer, 0x30, "issuer")?;
            c = n;
            let (serial, _) = read(c, 6)?;
            expect(&serial, 0x02, "serialnumber")?;
            SignerId::IssuerSerial {
                issuer: issuer_raw.to_vec(),
                serial: serial.value.to_vec(),
            }
        }
        0x80 => SignerId::KeyId(sid.value.to_vec()),
        0xa0 => {
            let (os, _) = read(sid.value, 6)?;
            SignerId::KeyId(os.value.to_vec())
        }
        _ => {
            return Err(err(&format!(
                "signer identifier: unexpected tag 0x{:02x}",
                sid.tag
            )))
        }
    };
    let (dalg, next) = read(cur, 5)?;
    expect(&dalg, 0x30, "digestalgorithm")?;
    cur = next;
    let dalg_items = children(dalg.value, 6)?;
    let digest_oid = match dalg_items.first() {
        Some(t) if t.tag == 0x06 => oid(t.value),
        _ => return Err(err("digestalgorithm without oid")),
    };
    let mut has_signed_attrs = false;
    let mut message_digest = None;
    let mut signing_time = None;
    let (maybe_attrs, _) = read(cur, 5)?;
    if maybe_attrs.tag == 0xa0 {
        has_signed_attrs = true;
        for attr in children(maybe_attrs.value, 6)? {
            expect(&attr, 0x30, "attribute")?;
            let parts = children(attr.value, 7)?;
            let (Some(t), Some(vals)) = (parts.first(), parts.get(1)) else {
                return Err(err("attribute too short"));
            };
            let values = children(vals.value, 8)?;
            match oid(t.value).as_str() {
                OID_MESSAGE_DIGEST => {
                    if values.len() != 1 || message_digest.is_some() {
                        return Err(err("messagedigest must have exactly one value"));
                    }
                    message_digest = Some(octets(&values[0], 8)?);
                }
                OID_SIGNING_TIME => {
                    let v = values.first().ok_or_else(|| err("empty signingtime"))?;
                    signing_time = Some(
                        parse_time(v.tag, v.value).ok_or_else(|| err("unreadable signingtime"))?,
                    );
                }
                _ => {}
            }
        }
    }
    Ok(SignerInfo {
        sid,
        digest_oid,
        has_signed_attrs,
        message_digest,
        signing_time,
    })
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// UTCTime (0x17, RFC 5280 century rule) or GeneralizedTime (0x18); `Z`, an offset, or
/// nothing (taken as UTC); seconds optional; fractions ignored.
pub(super) fn parse_time(tag: u8, s: &[u8]) -> Option<Instant> {
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(s.get(0..2)?)? as i32;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (digits(s.get(0..4)?)? as i32, s.get(4..)?),
        _ => return None,
    };
    let month = digits(rest.get(0..2)?)?;
    let day = digits(rest.get(2..4)?)?;
    let hour = digits(rest.get(4..6)?)?;
    let minute = digits(rest.get(6..8)?)?;
    let mut i = 8;
    let mut second = 0;
    if let Some(sec) = rest.get(8..10).and_then(digits) {
        second = sec;
        i = 10;
    }
    if rest.get(i) == Some(&b'.') || rest.get(i) == Some(&b',') {
        i += 1;
        while rest.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset: i64 = match rest.get(i) {
        None | Some(b'Z') => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let hh = i64::from(digits(rest.get(i + 1..i + 3)?)?);
            let mm = i64::from(digits(rest.get(i + 3..i + 5)?)?);
            let off = hh * 3600 + mm * 60;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let naive =
        chrono::NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second)?;
    Some(Instant::from_unix(naive.and_utc().timestamp() - offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_time(0x17, b"141114172632Z").map(|i| i.rfc3339()),
            Some("2014-11-14T17:26:32Z".into())
        );
        assert_eq!(
            parse_time(0x18, b"20241204230210.5+0100").map(|i| i.rfc3339()),
            Some("2024-12-04T22:02:10Z".into())
        );
        assert_eq!(
            parse_time(0x17, b"991231235959Z").map(|i| i.rfc3339()),
            Some("1999-12-31T23:59:59Z".into())
        );
        assert!(parse_time(0x17, b"14+114172632Z").is_none());
        assert!(parse_time(0x17, b"").is_none());
    }

    #[test]
    fn oids() {
        assert_eq!(oid(&[0x2b, 0x0e, 0x03, 0x02, 0x1a]), "1.3.14.3.2.26");
    }
}
