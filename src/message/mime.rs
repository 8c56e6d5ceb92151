//! Small MIME helpers shared by the builders and the classifier: raw header scanning that
//! keeps bytes exact, and the 7-bit-safe encoders used for generated parts.

use std::borrow::Cow;

use base64::Engine;

/// Converts bare LF (and lone CR) line ends to CRLF. Returns the input unchanged when it is
/// already canonical, which is the common case.
pub fn normalize_crlf(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut canonical = true;
    for (i, &b) in raw.iter().enumerate() {
        match b {
            b'\n' if i == 0 || raw[i - 1] != b'\r' => {
                canonical = false;
                break;
            }
            b'\r' if raw.get(i + 1) != Some(&b'\n') => {
                canonical = false;
                break;
            }
            _ => {}
        }
    }
    if canonical {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Splits a CRLF message into its header block (every field with its CRLF, without the
/// empty line) and its body (after the empty line). A message without an empty line is all
/// header.
pub fn split_header_body(raw: &[u8]) -> (&[u8], &[u8]) {
    if raw.starts_with(b"\r\n") {
        return (&raw[..0], &raw[2..]);
    }
    match find(raw, b"\r\n\r\n") {
        Some(p) => (&raw[..p + 2], &raw[p + 4..]),
        None => (raw, &raw[raw.len()..]),
    }
}

/// One header field exactly as it stands in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField<'a> {
    /// Field name as written (case preserved).
    pub name: &'a str,
    /// The whole field: name, colon, value and continuation lines, with the final CRLF.
    pub raw: &'a [u8],
    /// The value: after the colon, up to (not including) the final CRLF.
    pub value: &'a [u8],
}

impl RawField<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value unfolded and trimmed (lossy for non-UTF-8 bytes).
    pub fn unfolded(&self) -> String {
        unfold(self.value)
    }
}

/// Scans a CRLF header block into fields. Lines that are neither a field nor a continuation
/// (no colon, or a name with invalid characters) are returned as an error with their line
/// number (1-based), since such a message is not valid RFC 5322.
pub fn fields(header: &[u8]) -> Result<Vec<RawField<'_>>, String> {
    let mut out: Vec<RawField<'_>> = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < header.len() {
        line_no += 1;
        let end = find(&header[pos..], b"\r\n")
            .map(|e| pos + e + 2)
            .unwrap_or(header.len());
        let line = &header[pos..end];
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            let Some(last) = out.last_mut() else {
                return Err(format!(
                    "line {line_no}: continuation line before any field"
                ));
            };
            // Extend the previous field to cover this continuation line.
            let start = last.raw.as_ptr() as usize - header.as_ptr() as usize;
            let value_start = last.value.as_ptr() as usize - header.as_ptr() as usize;
            last.raw = &header[start..end];
            last.value = &header[value_start..trim_crlf_end(header, end)];
        } else {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                return Err(format!("line {line_no}: not a header field (no colon)"));
            };
            let name = &line[..colon];
            if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b) && *b != b':') {
                return Err(format!("line {line_no}: invalid header field name"));
            }
            let name =
                std::str::from_utf8(name).map_err(|_| format!("line {line_no}: bad name"))?;
            out.push(RawField {
                name,
                raw: line,
                value: &header[pos + colon + 1..trim_crlf_end(header, end)],
            });
        }
        pos = end;
    }
    Ok(out)
}

fn trim_crlf_end(buf: &[u8], end: usize) -> usize {
    if end >= 2 && &buf[end - 2..end] == b"\r\n" {
        end - 2
    } else {
        end
    }
}

/// Unfolds a header value (removes CRLF before white space) and trims it.
pub fn unfold(value: &[u8]) -> String {
    let s = String::from_utf8_lossy(value);
    let mut out = String::with_capacity(s.len());
    for part in s.split("\r\n") {
        out.push_str(part);
    }
    out.trim().to_string()
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|b| *b == first)
        {
            None => return None,
            Some(off) => {
                i += off;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

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
    let mut col = 0usize;
    for &b in data {
        if b >= 0x80 || b == 0 {
            return false;
        }
        if b == b'\n' {
            col = 0;
        } else {
            col += 1;
            if col > 999 {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_normalisation() {
        assert!(matches!(normalize_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*normalize_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
    }

    #[test]
    fn raw_fields_keep_bytes_and_folds() {
        let h = b"Subject: a\r\n b\r\nTo: x@y\r\n";
        let f = fields(h).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].raw, b"Subject: a\r\n b\r\n");
        assert_eq!(f[0].value, b" a\r\n b");
        assert_eq!(f[0].unfolded(), "a b");
        assert!(f[1].is("to"));
        assert!(fields(b" x\r\n").is_err());
        assert!(fields(b"no colon\r\n").is_err());
    }

    #[test]
    fn split_message() {
        let (h, b) = split_header_body(b"A: 1\r\n\r\nbody\r\n");
        assert_eq!((h, b), (&b"A: 1\r\n"[..], &b"body\r\n"[..]));
        let (h, b) = split_header_body(b"A: 1\r\n");
        assert_eq!((h, b), (&b"A: 1\r\n"[..], &b""[..]));
    }

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
}

/// A `multipart/*` body split at its delimiter lines (RFC 2046 §5.1.1). Delimiters count
/// only at the start of a line (mail-parser #156 treats a mid-line `--boundary` as one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart<'a> {
    /// Bytes before the first delimiter line (without the CRLF that precedes it).
    pub preamble: &'a [u8],
    /// Each part: from after the CRLF ending its delimiter line to before the CRLF that
    /// precedes the next delimiter.
    pub parts: Vec<&'a [u8]>,
    /// Bytes after the closing delimiter line (`None` when the closing delimiter is missing).
    pub epilogue: Option<&'a [u8]>,
    /// The exact delimiter line texts (without CRLF), one per part plus the closing one, so
    /// that a rewriter can keep transport padding byte-exact.
    pub delimiters: Vec<&'a [u8]>,
}

/// Splits `body` (CRLF) at the delimiters of `boundary`. `None` when no delimiter line is
/// found at all.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Multipart<'a>> {
    let dash = format!("--{boundary}");
    let dash = dash.as_bytes();
    // (line start, line end without CRLF, next line start, closing?)
    let mut lines = Vec::new();
    let mut pos = 0;
    while pos <= body.len() {
        let end = find(&body[pos..], b"\r\n")
            .map(|e| pos + e)
            .unwrap_or(body.len());
        let line = &body[pos..end];
        if let Some(rest) = line.strip_prefix(dash) {
            let closing = rest.starts_with(b"--");
            let tail = if closing { &rest[2..] } else { rest };
            if tail.iter().all(|b| *b == b' ' || *b == b'\t') {
                lines.push((pos, end, (end + 2).min(body.len()), closing));
                if closing {
                    break;
                }
            }
        }
        if end >= body.len() {
            break;
        }
        pos = end + 2;
    }
    if lines.is_empty() {
        return None;
    }
    let before = |start: usize| start.saturating_sub(2);
    let preamble = &body[..before(lines[0].0)];
    let mut parts = Vec::new();
    let mut delimiters = Vec::new();
    for w in lines.windows(2) {
        let (s0, e0, next0, closing0) = w[0];
        if closing0 {
            break;
        }
        delimiters.push(&body[s0..e0]);
        let stop = before(w[1].0).max(next0);
        parts.push(&body[next0.min(stop)..stop]);
    }
    let last = lines[lines.len() - 1];
    let epilogue = if last.3 {
        delimiters.push(&body[last.0..last.1]);
        Some(&body[last.2.min(body.len())..])
    } else {
        // Unterminated: the last part runs to the end of the body.
        delimiters.push(&body[last.0..last.1]);
        parts.push(&body[last.2.min(body.len())..]);
        None
    };
    Some(Multipart {
        preamble,
        parts,
        epilogue,
        delimiters,
    })
}

#[cfg(test)]
mod multipart_tests {
    use super::*;

    #[test]
    fn splits_at_line_start_only() {
        let body = b"pre\r\n--B\r\nA: 1\r\n\r\nx --B y\r\n--B \r\n\r\ntwo\r\n--B--\r\nepi";
        let m = split_multipart(body, "B").unwrap();
        assert_eq!(m.preamble, b"pre");
        assert_eq!(m.parts, vec![&b"A: 1\r\n\r\nx --B y"[..], &b"\r\ntwo"[..]]);
        assert_eq!(m.epilogue, Some(&b"epi"[..]));
        assert_eq!(m.delimiters, vec![&b"--B"[..], &b"--B "[..], &b"--B--"[..]]);
    }

    #[test]
    fn unterminated_and_absent() {
        let m = split_multipart(b"--B\r\nonly", "B").unwrap();
        assert_eq!(m.parts, vec![&b"only"[..]]);
        assert_eq!(m.epilogue, None);
        assert!(split_multipart(b"nothing here", "B").is_none());
    }
}
