// SPDX-License-Identifier: GPL-3.0-or-later
//! Making a message 7-bit safe before it travels inside a signed PEC message (spec §2.1:
//! relays must never re-encode signed content). A leaf part whose body has 8-bit octets or
//! lines over 998 octets is re-encoded as quoted-printable, the same downgrade Postfix
//! itself performs for 8BITMIME mail; every other byte is kept.

use std::borrow::Cow;

use super::mime::{self, MAX_DEPTH};

/// Returns `raw` (CRLF) unchanged when it is already 7-bit safe, otherwise a copy with the
/// offending leaf bodies quoted-printable encoded. Header fields are never changed, except
/// `Content-Transfer-Encoding` of a re-encoded part: 8-bit header bytes are a formal error
/// that the access point refuses, and a received message keeps them (it is then carried
/// as 8bit inside the anomaly envelope, for local delivery only).
pub fn make_seven_bit(raw: &[u8]) -> Cow<'_, [u8]> {
    if mime::is_seven_bit_safe(raw) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 4);
    entity(raw, &mut out, 0);
    Cow::Owned(out)
}

/// Rewrites one entity (header + body) into `out`.
fn entity(raw: &[u8], out: &mut Vec<u8>, depth: usize) {
    let (header, body) = mime::split_header_body(raw);
    let has_separator = header.len() < raw.len();
    if depth > MAX_DEPTH || mime::is_seven_bit_safe(body) || !has_separator {
        out.extend_from_slice(raw);
        return;
    }
    // The last Content-Type and the last Content-Transfer-Encoding count, as for
    // mail-parser, which read this header before.
    let scanned = mime::scan_fields(header);
    let ct = scanned
        .iter()
        .rev()
        .find(|f| f.is("Content-Type"))
        .and_then(|f| mime::ContentType::parse(f.value));
    let (ctype, csub) = ct
        .as_ref()
        .map_or(("text", "plain"), mime::ContentType::type_subtype);
    let cte = mime::fields(header)
        .ok()
        .and_then(|f| {
            f.iter()
                .rev()
                .find(|f| f.is("Content-Transfer-Encoding"))
                .map(|f| f.unfolded().to_ascii_lowercase())
        })
        .unwrap_or_else(|| "7bit".into());

    if ctype == "multipart" {
        if let Some(b) = ct.as_ref().and_then(mime::ContentType::boundary) {
            if let Some(mp) = mime::split_multipart(body, &b) {
                out.extend_from_slice(header);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(mp.preamble);
                for (i, part) in mp.parts.iter().enumerate() {
                    if i > 0 || !mp.preamble.is_empty() {
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(mp.delimiters[i]);
                    out.extend_from_slice(b"\r\n");
                    entity(part, out, depth + 1);
                }
                if let Some(epi) = mp.epilogue {
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(mp.delimiters[mp.delimiters.len() - 1]);
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(epi);
                }
                return;
            }
        }
        out.extend_from_slice(raw);
        return;
    }
    if ctype == "message" && (csub == "rfc822" || csub == "global") {
        let mut inner = Vec::new();
        entity(body, &mut inner, depth + 1);
        write_header_with_cte(
            header,
            if mime::is_seven_bit_safe(&inner) {
                "7bit"
            } else {
                "8bit"
            },
            out,
        );
        out.extend_from_slice(&inner);
        return;
    }
    if matches!(cte.as_str(), "7bit" | "8bit" | "binary") {
        write_header_with_cte(header, "quoted-printable", out);
        out.extend_from_slice(&mime::quoted_printable(body));
        if body.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        return;
    }
    // Already base64 or quoted-printable but not 7-bit safe: malformed; keep as is.
    out.extend_from_slice(raw);
}

fn write_header_with_cte(header: &[u8], cte: &str, out: &mut Vec<u8>) {
    match mime::fields(header) {
        Ok(fields) => {
            for f in fields.iter().filter(|f| !f.is("Content-Transfer-Encoding")) {
                out.extend_from_slice(f.raw);
            }
        }
        Err(_) => out.extend_from_slice(header),
    }
    out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n\r\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_bit_input_is_untouched() {
        let m = b"Subject: x\r\n\r\nhello\r\n";
        assert!(matches!(make_seven_bit(m), Cow::Borrowed(_)));
    }

    #[test]
    fn eight_bit_leaf_becomes_quoted_printable() {
        let m = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nperché\r\n".as_bytes();
        let out = make_seven_bit(m);
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            s.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nperch=C3=A9\r\n"),
            "{s}"
        );
        assert!(!s.contains("8bit"));
        assert!(mime::is_seven_bit_safe(s.as_bytes()));
    }

    #[test]
    fn only_the_offending_part_of_a_multipart_changes() {
        let m = "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n--b\r\nContent-Type: text/plain\r\n\r\nascii\r\n--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n\u{e8}\r\n--b--\r\nepi\r\n".as_bytes();
        let out = make_seven_bit(m);
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(s.starts_with("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n--b\r\nContent-Type: text/plain\r\n\r\nascii\r\n--b\r\n"), "{s}");
        assert!(s.contains("=C3=A8"));
        assert!(s.ends_with("\r\n--b--\r\nepi\r\n"), "{s}");
        assert!(mime::is_seven_bit_safe(s.as_bytes()));
    }

    #[test]
    fn long_lines_are_folded_by_quoted_printable() {
        let m = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(2000));
        let out = make_seven_bit(m.as_bytes());
        assert!(mime::is_seven_bit_safe(&out));
    }

    #[test]
    fn nesting_beyond_the_depth_limit_is_kept_as_is() {
        let mut m = String::new();
        for i in 0..=MAX_DEPTH + 2 {
            m.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
            ));
        }
        m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\nperché\r\n");
        let out = make_seven_bit(m.as_bytes());
        // Every level up to the limit is walked; the deeper ones are copied unchanged.
        assert_eq!(&*out, m.as_bytes());
        let mut shallow = String::new();
        for i in 0..MAX_DEPTH {
            shallow.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
            ));
        }
        shallow.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\nperché\r\n");
        assert!(mime::is_seven_bit_safe(&make_seven_bit(shallow.as_bytes())));
    }
}
