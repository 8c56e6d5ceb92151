// SPDX-License-Identifier: GPL-3.0-or-later
//! Content-Transfer-Encoding decoding (RFC 2045 §6): base64, quoted-printable, identity.

use base64::Engine;

/// Lenient base64: white space ignored, padding optional, anything else is an error.
pub fn decode_base64(body: &[u8]) -> Result<Vec<u8>, String> {
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(&clean).map_err(|e| e.to_string())
}

/// Quoted-printable (RFC 2045 §6.7), tolerant of bad escapes (kept literally). A soft line
/// break is `=`, optional white space, then CRLF or a bare LF.
pub fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c != b'=' {
            out.push(c);
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < body.len() && matches!(body[j], b' ' | b'\t') {
            j += 1;
        }
        if body.get(j) == Some(&b'\n') {
            i = j + 1;
            continue;
        }
        if body.get(j) == Some(&b'\r') && body.get(j + 1) == Some(&b'\n') {
            i = j + 2;
            continue;
        }
        match (
            body.get(i + 1).copied().and_then(hex_value),
            body.get(i + 2).copied().and_then(hex_value),
        ) {
            (Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Decodes a part body per its Content-Transfer-Encoding (absent: identity).
pub fn decode_transfer(body: &[u8], cte: Option<&str>) -> Result<Vec<u8>, String> {
    match cte.map(|c| c.trim().to_ascii_lowercase()).as_deref() {
        None | Some("7bit") | Some("8bit") | Some("binary") => Ok(body.to_vec()),
        Some("base64") => decode_base64(body),
        Some("quoted-printable") => Ok(decode_qp(body)),
        Some(other) => Err(format!(
            "unknown content-transfer-encoding \"{}\"",
            super::clip(other)
        )),
    }
}

/// Value of one hex digit (either case).
pub(super) fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp_and_base64() {
        assert_eq!(decode_qp(b"=E8 stato=\r\n ok=3D"), b"\xe8 stato ok=");
        assert_eq!(decode_qp(b"soft= \t\nbreak=e8"), b"softbreak\xe8");
        assert_eq!(decode_qp(b"bad =ZZ end="), b"bad =ZZ end=");
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\n").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8").unwrap(), b"hello");
        assert!(decode_base64(b"not base64 !").is_err());
    }

    #[test]
    fn transfer_encodings() {
        assert_eq!(decode_transfer(b"x=41", None).unwrap(), b"x=41");
        assert_eq!(decode_transfer(b"x=41", Some(" 8BIT ")).unwrap(), b"x=41");
        assert_eq!(
            decode_transfer(b"x=41", Some("Quoted-Printable")).unwrap(),
            b"xA"
        );
        assert_eq!(decode_transfer(b"eA==", Some("base64")).unwrap(), b"x");
        assert_eq!(
            decode_transfer(b"", Some("x-uuencode")).unwrap_err(),
            "unknown content-transfer-encoding \"x-uuencode\""
        );
    }
}
