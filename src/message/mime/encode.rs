// SPDX-License-Identifier: GPL-3.0-or-later
//! Encoders for generated parts and headers: 7-bit-safe bodies (quoted-printable, base64),
//! boundaries, RFC 2047 header text, quoted strings and RFC 2231 parameters.

use base64::Engine;

use super::find;
use super::normalize_crlf;

/// Converts text to ISO-8859-1; characters outside Latin-1 become `?` (the readable part is
/// informative only, spec §2.4; the exact data are in daticert.xml, in UTF-8).
pub fn to_latin1(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match c as u32 {
            0..=255 => out.push(c as u32 as u8),
            // Common typographic characters outside Latin-1, written the way a person would.
            _ => match c {
                '\u{2013}' | '\u{2014}' | '\u{2212}' => out.push(b'-'),
                '\u{2018}' | '\u{2019}' | '\u{201A}' => out.push(b'\''),
                '\u{201C}' | '\u{201D}' | '\u{201E}' => out.push(b'"'),
                '\u{2026}' => out.extend_from_slice(b"..."),
                '\u{20AC}' => out.extend_from_slice(b"EUR"),
                _ => out.push(b'?'),
            },
        }
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7) of CRLF text: hard line breaks kept, soft breaks at 76
/// columns, `=`, control and 8-bit octets encoded, trailing white space protected.
pub fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    let text = normalize_crlf(text);
    let mut lines = text.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut col = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal = (b == b'\t' || b == b' ') && !last
                || (33..=126).contains(&b) && b != b'=' && !(col == 0 && b == b'.');
            let width = if literal { 1 } else { 3 };
            if col + width > 75 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(format!("={b:02X}").as_bytes());
            }
            col += width;
        }
        if lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Base64 in lines of 76 characters, each ending with CRLF.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(enc.len() + enc.len() / 76 * 2 + 2);
    for chunk in enc.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A fresh MIME boundary that does not occur in any of `contents`.
pub fn boundary(contents: &[&[u8]]) -> String {
    loop {
        let r: u128 = rand::random();
        let b = format!("----------=_pec_{r:032X}");
        if contents.iter().all(|c| find(c, b.as_bytes()).is_none()) {
            return b;
        }
    }
}

/// Encodes an unstructured header value (RFC 2047 when needed, folded), returning the value
/// part only (no name, no final CRLF).
pub fn encode_text_header(name: &str, value: &str) -> String {
    encode_text_after(name.len() + 2, value)
}

/// Like [`encode_text_header`] for a value that starts at `column` of the first line.
fn encode_text_after(column: usize, value: &str) -> String {
    use mail_builder::headers::{text::Text, Header};
    let mut buf: Vec<u8> = Vec::new();
    Text::new(value).write_header(&mut buf, column);
    let s = String::from_utf8_lossy(&buf).into_owned();
    s.strip_suffix("\r\n").unwrap_or(&s).to_string()
}

/// A `Subject:` value made of an ASCII `prefix` written literally and a subject encoded
/// only when it needs to be, so that the PEC prefix stays readable on the wire
/// (`POSTA CERTIFICATA: =?utf-8?Q?...?=`).
pub fn encode_prefixed_subject(prefix: &str, subject: &str) -> String {
    if subject.is_ascii() {
        return encode_text_header("Subject", &format!("{prefix}{subject}"));
    }
    let column = "Subject: ".len() + prefix.len();
    format!("{prefix}{}", encode_text_after(column, subject))
}

/// A quoted-string (RFC 5322 §3.2.4), for display names such as `Per conto di: …`.
pub fn quoted_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if c != '\r' && c != '\n' {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Whether every byte is 7-bit and no line is longer than 998 octets (RFC 5322 §2.1.1):
/// the condition for relays never to re-encode, which would break signatures.
pub fn is_seven_bit_safe(data: &[u8]) -> bool {
    if !data.is_ascii() || memchr::memchr(0, data).is_some() {
        return false;
    }
    // Longest line, line break excluded (a CR before the LF counts as in the old loop:
    // 999 octets of line content at most, CR included).
    let mut start = 0;
    for lf in memchr::memchr_iter(b'\n', data) {
        if lf - start > 999 {
            return false;
        }
        start = lf + 1;
    }
    data.len() - start <= 999
}

/// RFC 2231 `attr-char`.
fn is_attr_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&c)
}

/// A parameter `attr="value"` for printable ASCII (quoted-string, RFC 2045), else the
/// RFC 2231 extended form `attr*=utf-8''%XX…`.
pub fn encode_param(attr: &str, value: &str) -> String {
    if value.bytes().all(|c| (0x20..0x7F).contains(&c)) {
        let mut s = format!("{attr}=\"");
        for c in value.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    } else {
        let mut s = format!("{attr}*=utf-8''");
        for b in value.bytes() {
            if is_attr_char(b) {
                s.push(char::from(b));
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp_round_trip_and_limits() {
        let text = to_latin1("Il messaggio è stato accettato = sì \r\n.riga\r\n");
        let qp = quoted_printable(&text);
        let s = String::from_utf8(qp.clone()).unwrap();
        assert!(s.contains("=E8"));
        assert!(s.contains("=3D"));
        assert!(s.contains("s=EC=20\r\n"), "{s}");
        assert!(s.contains("\r\n=2Eriga"));
        let long = "x".repeat(300);
        for line in String::from_utf8(quoted_printable(long.as_bytes()))
            .unwrap()
            .split("\r\n")
        {
            assert!(line.len() <= 76);
        }
        assert!(is_seven_bit_safe(&qp));
    }

    #[test]
    fn encoded_headers() {
        assert_eq!(
            encode_text_header("Subject", "ACCETTAZIONE: prova"),
            "ACCETTAZIONE: prova"
        );
        let e = encode_text_header("Subject", "CONSEGNA: perché");
        assert!(
            e.starts_with("=?utf-8?") || e.starts_with("=?UTF-8?"),
            "{e}"
        );
        assert_eq!(
            quoted_string("Per conto di: a\"b@x"),
            "\"Per conto di: a\\\"b@x\""
        );
        let s = encode_prefixed_subject("CONSEGNA: ", "perché");
        assert!(s.starts_with("CONSEGNA: =?utf-8?"), "{s}");
        assert_eq!(to_latin1("a — b € “c”"), b"a - b EUR \"c\"");
    }

    #[test]
    fn param_encoding() {
        assert_eq!(
            encode_param("name", "a \"b\".pdf.hash"),
            "name=\"a \\\"b\\\".pdf.hash\""
        );
        assert_eq!(
            encode_param("filename", "né.hash"),
            "filename*=utf-8''n%C3%A9.hash"
        );
    }
}
