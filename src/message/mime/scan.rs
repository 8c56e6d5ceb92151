// SPDX-License-Identifier: GPL-3.0-or-later
//! Line-level scanning: line ends, the header/body split, header fields with their exact
//! byte spans, and multipart bodies split at their delimiter lines.
//!
//! Every function accepts CRLF and bare-LF line ends alike (a CR counts as part of the line
//! break only right before an LF) and returns slices of its input, so that callers can copy
//! untouched bytes exactly.

use std::borrow::Cow;
use std::ops::Range;

/// Converts bare LF and lone CR line ends to CRLF. Returns the input unchanged when it is
/// already canonical, which is the common case.
pub fn normalize_crlf(raw: &[u8]) -> Cow<'_, [u8]> {
    to_crlf(raw, true)
}

/// Converts bare LF to CRLF and leaves every other byte alone, a lone CR included: the
/// canonical form of signed content (RFC 5751 §3.1.1).
pub fn canonical_crlf(raw: &[u8]) -> Cow<'_, [u8]> {
    to_crlf(raw, false)
}

fn to_crlf(raw: &[u8], lone_cr: bool) -> Cow<'_, [u8]> {
    let is_bare = |i: usize| match raw[i] {
        b'\n' => i == 0 || raw[i - 1] != b'\r',
        b'\r' => lone_cr && raw.get(i + 1) != Some(&b'\n'),
        _ => false,
    };
    // Only line-break bytes can be bare: visit just those (memchr), the common case being
    // a canonical message that is returned as it is.
    if !memchr::memchr2_iter(b'\r', b'\n', raw).any(is_bare) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (i, &b) in raw.iter().enumerate() {
        if is_bare(i) {
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

/// One line of a buffer.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    /// End of the content: before the LF, or before the CR of a CRLF.
    end: usize,
    /// Start of the next line (the buffer length for the last line).
    next: usize,
}

/// The lines of `buf`. A final line without a line break is a line; an empty buffer has
/// none, and a buffer ending with a line break has no empty last line.
fn lines(buf: &[u8]) -> impl Iterator<Item = Line> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let start = pos;
        let line = match memchr::memchr(b'\n', &buf[start..]) {
            Some(i) => {
                let lf = start + i;
                let end = if lf > start && buf[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                Line {
                    start,
                    end,
                    next: lf + 1,
                }
            }
            None => Line {
                start,
                end: buf.len(),
                next: buf.len(),
            },
        };
        pos = line.next;
        Some(line)
    })
}

/// Start of the line break that ends the line before `line_start` (which must be 0 or the
/// start of a line): RFC 2046 makes that break part of the following delimiter.
fn break_before(buf: &[u8], line_start: usize) -> usize {
    if line_start >= 2 && &buf[line_start - 2..line_start] == b"\r\n" {
        line_start - 2
    } else {
        line_start.saturating_sub(1)
    }
}

/// Splits an entity at its first empty line into the header block (every field with its
/// line break, without the empty line) and the body (after the empty line). An entity
/// without an empty line is all header.
pub fn split_header_body(raw: &[u8]) -> (&[u8], &[u8]) {
    for line in lines(raw) {
        if line.start == line.end && line.next > line.end {
            return (&raw[..line.start], &raw[line.next..]);
        }
    }
    (raw, &raw[raw.len()..])
}

/// One header field exactly as it stands in the message, or one line that is not a field
/// (with the continuation lines that follow it), so that the fields cover the whole header
/// block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField<'a> {
    /// Field name as written (case preserved, white space before the colon removed); empty
    /// when the line is not a field.
    pub name: &'a str,
    /// The whole field: name, colon, value and continuation lines, with the final line
    /// break.
    pub raw: &'a [u8],
    /// The value: after the colon, up to (not including) the final line break.
    pub value: &'a [u8],
    /// Offsets of `raw` and `value` in the header block.
    start: usize,
    value_start: usize,
    /// 1-based number of the field's first line.
    line: usize,
    /// Why the line is not a field.
    problem: Option<&'static str>,
    /// White space between the name and the colon (obsolete syntax, RFC 5322 §4.5.3):
    /// read, but refused by the strict [`fields`].
    space_before_colon: bool,
}

impl RawField<'_> {
    /// Whether this is a field called `name` (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.problem.is_none() && self.name.eq_ignore_ascii_case(name)
    }

    /// The value unfolded and trimmed (lossy for non-UTF-8 bytes).
    pub fn unfolded(&self) -> String {
        unfold(self.value)
    }
}

/// Scans a header block into fields, never failing: lines that are not fields (no colon,
/// an invalid name, a continuation before any field) are kept as entries with an empty
/// name, which no lookup matches, so that a rewriter can still copy them.
pub fn scan_fields(header: &[u8]) -> Vec<RawField<'_>> {
    let mut out: Vec<RawField<'_>> = Vec::new();
    for (index, line) in lines(header).enumerate() {
        let text = &header[line.start..line.end];
        if matches!(text.first(), Some(b' ' | b'\t')) {
            if let Some(last) = out.last_mut() {
                last.raw = &header[last.start..line.next];
                last.value = &header[last.value_start..line.end];
                continue;
            }
        }
        let mut field = RawField {
            name: "",
            raw: &header[line.start..line.next],
            value: &header[line.end..line.end],
            start: line.start,
            value_start: line.end,
            line: index + 1,
            problem: None,
            space_before_colon: false,
        };
        if matches!(text.first(), Some(b' ' | b'\t')) {
            field.problem = Some("continuation line before any field");
        } else if let Some(colon) = text.iter().position(|&b| b == b':') {
            let written = &text[..colon];
            let name = trim_end_wsp(written);
            let valid = !name.is_empty() && name.iter().all(|b| (33..=126).contains(b));
            match std::str::from_utf8(name) {
                Ok(name) if valid => {
                    field.name = name;
                    field.value_start = line.start + colon + 1;
                    field.value = &header[field.value_start..line.end];
                    field.space_before_colon = name.len() != written.len();
                }
                _ => field.problem = Some("invalid header field name"),
            }
        } else {
            field.problem = Some("not a header field (no colon)");
        }
        out.push(field);
    }
    out
}

/// Scans a header block into fields, strictly: a line that is neither a field nor a
/// continuation, or a name followed by white space before its colon, is an error naming
/// its line (1-based), since such a message is not valid RFC 5322.
pub fn fields(header: &[u8]) -> Result<Vec<RawField<'_>>, String> {
    let all = scan_fields(header);
    if let Some(bad) = all
        .iter()
        .find(|f| f.problem.is_some() || f.space_before_colon)
    {
        let why = bad.problem.unwrap_or("invalid header field name");
        return Err(format!("line {}: {why}", bad.line));
    }
    Ok(all)
}

fn trim_end_wsp(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(0, |e| e + 1);
    &b[..end]
}

/// The first field called `name` (case-insensitive).
pub fn first<'f, 'a>(fields: &'f [RawField<'a>], name: &str) -> Option<&'f RawField<'a>> {
    fields.iter().find(|f| f.is(name))
}

/// The unfolded value of the first field called `name`.
pub fn first_value(fields: &[RawField<'_>], name: &str) -> Option<String> {
    first(fields, name).map(RawField::unfolded)
}

/// Every field called `name` (case-insensitive).
pub fn all<'f, 'a>(
    fields: &'f [RawField<'a>],
    name: &'f str,
) -> impl Iterator<Item = &'f RawField<'a>> + 'f {
    fields.iter().filter(move |f| f.is(name))
}

/// Unfolds a header value (removes the line breaks before continuation lines) and trims it.
pub fn unfold(value: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(value.len());
    for line in lines(value) {
        bytes.extend_from_slice(&value[line.start..line.end]);
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Position of `needle` in `hay` (none for an empty needle).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

/// RFC 2046 §5.1.1: a boundary has 1 to 70 characters.
pub fn valid_boundary(boundary: &[u8]) -> bool {
    !boundary.is_empty() && boundary.len() <= 70
}

/// A `multipart/*` body split at its delimiter lines (RFC 2046 §5.1.1). Delimiters count
/// only as whole lines: `--boundary` or `--boundary--`, then nothing but transport padding
/// (spaces and tabs). A `--boundary` in the middle of a line, or followed by other text,
/// is content (mail-parser #156 treats a mid-line `--boundary` as a delimiter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart<'a> {
    /// Bytes before the first delimiter line, without the line break that precedes it
    /// (empty both when the body starts with the delimiter and when a line break does).
    pub preamble: &'a [u8],
    /// Each part: from after the line break ending its delimiter line to before the line
    /// break that precedes the next delimiter (that break belongs to the delimiter). Empty
    /// parts are kept. Without a closing delimiter the last part runs to the end of the
    /// body, its final line break included.
    pub parts: Vec<&'a [u8]>,
    /// Where each of `parts` stands in the body, so that a rewriter can copy the bytes
    /// between parts (line breaks, delimiter lines, padding) unchanged.
    pub ranges: Vec<Range<usize>>,
    /// Bytes after the line break ending the closing delimiter line; `None` when the
    /// closing delimiter is missing.
    pub epilogue: Option<&'a [u8]>,
    /// The exact delimiter lines (without their line breaks), one per part plus the
    /// closing one when present.
    pub delimiters: Vec<&'a [u8]>,
}

impl Multipart<'_> {
    /// Whether the closing delimiter was found.
    pub fn is_closed(&self) -> bool {
        self.epilogue.is_some()
    }
}

/// Splits `body` at the delimiter lines of `boundary`. `None` when the boundary is empty or
/// no delimiter line is found at all. Scanning stops at the closing delimiter.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Option<Multipart<'a>> {
    if boundary.is_empty() {
        return None;
    }
    let mut found: Vec<(Line, bool)> = Vec::new();
    for line in lines(body) {
        if let Some(closing) = delimiter(&body[line.start..line.end], boundary) {
            found.push((line, closing));
            if closing {
                break;
            }
        }
    }
    let (first, _) = found.first()?;
    let mut m = Multipart {
        preamble: &body[..break_before(body, first.start)],
        parts: Vec::new(),
        ranges: Vec::new(),
        epilogue: None,
        delimiters: Vec::new(),
    };
    for (i, (line, closing)) in found.iter().enumerate() {
        m.delimiters.push(&body[line.start..line.end]);
        if *closing {
            m.epilogue = Some(&body[line.next..]);
            break;
        }
        let end = match found.get(i + 1) {
            Some((next, _)) => break_before(body, next.start).max(line.next),
            None => body.len(),
        };
        m.parts.push(&body[line.next..end]);
        m.ranges.push(line.next..end);
    }
    Some(m)
}

/// `Some(closing)` when `line` (without its line break) is a delimiter line of `boundary`.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (closing, padding) = match rest.strip_prefix(b"--") {
        Some(p) => (true, p),
        None => (false, rest),
    };
    padding
        .iter()
        .all(|&c| c == b' ' || c == b'\t')
        .then_some(closing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_normalisation() {
        assert!(matches!(normalize_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*normalize_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(&*normalize_crlf(b"\r\r\n\n"), b"\r\n\r\n\r\n");
        assert!(matches!(canonical_crlf(b"a\r\nb"), Cow::Borrowed(_)));
        assert_eq!(&*canonical_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        // A lone CR is content in the canonical form of signed data.
        assert_eq!(&*canonical_crlf(b"\na\rb\n"), b"\r\na\rb\r\n");
    }

    #[test]
    fn header_body_split_crlf_and_bare_lf() {
        let (h, b) = split_header_body(b"A: 1\r\n\r\nbody\r\n");
        assert_eq!((h, b), (&b"A: 1\r\n"[..], &b"body\r\n"[..]));
        let (h, b) = split_header_body(b"A: 1\r\n");
        assert_eq!((h, b), (&b"A: 1\r\n"[..], &b""[..]));
        let (h, b) = split_header_body(b"\r\nbody");
        assert_eq!((h, b), (&b""[..], &b"body"[..]));
        let (h, b) = split_header_body(b"A: 1\n folded\nB: 2\n\nbody\n");
        assert_eq!((h, b), (&b"A: 1\n folded\nB: 2\n"[..], &b"body\n"[..]));
        assert_eq!(split_header_body(b"only: header").1, b"");
        // A CR that does not end a line does not make an empty line.
        assert_eq!(split_header_body(b"A: 1\r\n\r").1, b"");
    }

    #[test]
    fn raw_fields_keep_bytes_and_folds() {
        let h = b"Subject: a\r\n b\r\nTo: x@y\r\n";
        let f = fields(h).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "Subject");
        assert_eq!(f[0].raw, b"Subject: a\r\n b\r\n");
        assert_eq!(f[0].value, b" a\r\n b");
        assert_eq!(f[0].unfolded(), "a b");
        assert!(f[1].is("to"));
        assert_eq!(f[1].raw, b"To: x@y\r\n");
        let lf = scan_fields(b"A: 1\n folded\nB: 2");
        assert_eq!(lf[0].unfolded(), "1 folded");
        assert_eq!(lf[1].raw, b"B: 2");
    }

    #[test]
    fn strict_fields_refuse_malformed_lines() {
        let cases: [(&[u8], &str); 5] = [
            (b" x\r\n", "line 1: continuation line before any field"),
            (
                b"A: 1\r\n b\r\nno colon\r\n",
                "line 3: not a header field (no colon)",
            ),
            (b"Subject : x\r\n", "line 1: invalid header field name"),
            (b": x\r\n", "line 1: invalid header field name"),
            (b"A\x80: x\r\n", "line 1: invalid header field name"),
        ];
        for (header, error) in cases {
            assert_eq!(fields(header).unwrap_err(), error);
        }
    }

    #[test]
    fn lenient_scan_covers_every_byte() {
        let h = b" orphan\r\nSubject : x\r\ngarbage\r\n cont\r\nA\tB: y\r\nTo: z\r\n";
        let f = scan_fields(h);
        let covered: Vec<u8> = f.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(covered, h);
        let names: Vec<&str> = f.iter().map(|f| f.name).collect();
        assert_eq!(names, ["", "Subject", "", "", "To"]);
        assert_eq!(f[2].raw, b"garbage\r\n cont\r\n");
        assert_eq!(first_value(&f, "subject").as_deref(), Some("x"));
        assert!(first(&f, "garbage").is_none());
        assert!(first(&f, "").is_none());
        let both = scan_fields(b"X-A: 1\r\nx-a: 2\r\n");
        let values: Vec<String> = all(&both, "X-A").map(RawField::unfolded).collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn unfolding_removes_crlf_and_bare_lf() {
        assert_eq!(unfold(b" a\r\n b\n\tc "), "a b\tc");
        assert_eq!(unfold(b"x\ry"), "x\ry");
    }

    #[test]
    fn splits_at_line_start_only() {
        let body = b"pre\r\n--B\r\nA: 1\r\n\r\nx --B y\r\n--B \r\n\r\ntwo\r\n--B--\r\nepi";
        let m = split_multipart(body, b"B").unwrap();
        assert_eq!(m.preamble, b"pre");
        assert_eq!(m.parts, vec![&b"A: 1\r\n\r\nx --B y"[..], &b"\r\ntwo"[..]]);
        assert_eq!(m.epilogue, Some(&b"epi"[..]));
        assert_eq!(m.delimiters, vec![&b"--B"[..], &b"--B "[..], &b"--B--"[..]]);
        for (part, range) in m.parts.iter().zip(&m.ranges) {
            assert_eq!(*part, &body[range.clone()]);
        }
    }

    #[test]
    fn delimiter_lines_are_whole_lines() {
        let body = b"preamble\r\n--b\r\npart one --b not a delimiter\r\n--bx\r\nstill one\r\n--b  \r\npart two\n--b--\r\nepilogue\r\n--b\r\n";
        let m = split_multipart(body, b"b").unwrap();
        assert!(m.is_closed());
        assert_eq!(
            m.parts,
            vec![
                &b"part one --b not a delimiter\r\n--bx\r\nstill one"[..],
                &b"part two"[..]
            ]
        );
        // Scanning stops at the closing delimiter.
        assert_eq!(m.epilogue, Some(&b"epilogue\r\n--b\r\n"[..]));
        for (line, expected) in [
            (&b"--abc"[..], Some(false)),
            (b"--abc-- \t", Some(true)),
            (b"--abcd", None),
            (b"x--abc", None),
            (b"--abc--x", None),
            (b"--abc\r", None),
            (b"-abc", None),
        ] {
            assert_eq!(delimiter(line, b"abc"), expected, "{line:?}");
        }
    }

    #[test]
    fn transport_padding_after_delimiters_is_kept() {
        let body = b"--b \t\r\none\r\n--b--\t \r\n";
        let m = split_multipart(body, b"b").unwrap();
        assert_eq!(m.parts, vec![&b"one"[..]]);
        assert_eq!(m.delimiters, vec![&b"--b \t"[..], &b"--b--\t "[..]]);
        assert_eq!(m.epilogue, Some(&b""[..]));
    }

    #[test]
    fn missing_closing_delimiter_and_absent_delimiters() {
        let m = split_multipart(b"--B\r\nonly", b"B").unwrap();
        assert_eq!(m.parts, vec![&b"only"[..]]);
        assert_eq!(m.epilogue, None);
        assert!(!m.is_closed());
        let m = split_multipart(b"--b\nonly\n", b"b").unwrap();
        assert_eq!(m.parts, vec![&b"only\n"[..]]);
        assert_eq!(m.delimiters, vec![&b"--b"[..]]);
        assert!(split_multipart(b"nothing here", b"B").is_none());
        assert!(split_multipart(b"--\r\n----\r\n", b"").is_none());
        // A delimiter on the last line, without a line break.
        let m = split_multipart(b"--b\r\nx\r\n--b", b"b").unwrap();
        assert_eq!(m.parts, vec![&b"x"[..], &b""[..]]);
        let m = split_multipart(b"--b\r\nx\r\n--b--", b"b").unwrap();
        assert_eq!(m.epilogue, Some(&b""[..]));
    }

    #[test]
    fn empty_preamble_and_empty_parts() {
        for body in [&b"--b\r\nx\r\n--b--\r\n"[..], b"\r\n--b\r\nx\r\n--b--\r\n"] {
            let m = split_multipart(body, b"b").unwrap();
            assert_eq!(m.preamble, b"");
            assert_eq!(m.parts, vec![&b"x"[..]]);
        }
        // The ranges tell the two apart.
        let m = split_multipart(b"\r\n--b\r\nx\r\n--b--\r\n", b"b").unwrap();
        assert_eq!(m.ranges, vec![7..8]);
        let m = split_multipart(b"--b\n--b\n--b--\n", b"b").unwrap();
        assert!(m.is_closed());
        assert_eq!(m.parts, vec![&b""[..], &b""[..]]);
        let m = split_multipart(b"--b--\r\nepi", b"b").unwrap();
        assert!(m.parts.is_empty());
        assert_eq!(m.epilogue, Some(&b"epi"[..]));
    }

    #[test]
    fn bare_lf_bodies() {
        let body = b"pre\n--b\nA: 1\n\nx\n--b\n\ny\n--b--\nepi";
        let m = split_multipart(body, b"b").unwrap();
        assert_eq!(m.preamble, b"pre");
        assert_eq!(m.parts, vec![&b"A: 1\n\nx"[..], &b"\ny"[..]]);
        assert_eq!(m.epilogue, Some(&b"epi"[..]));
    }

    #[test]
    fn boundaries() {
        assert!(valid_boundary(b"b"));
        assert!(valid_boundary(&[b'x'; 70]));
        assert!(!valid_boundary(&[b'x'; 71]));
        assert!(!valid_boundary(b""));
    }

    /// Deterministic inputs made of MIME-ish tokens (xorshift choice).
    fn token_soup(count: usize) -> Vec<Vec<u8>> {
        let tokens: [&[u8]; 12] = [
            b"--b",
            b"--b--",
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b"X: y",
            b":",
            b"\xff",
            b"x",
            b"\r\n\r\n",
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            tokens[(state % 12) as usize]
        };
        (0..count)
            .map(|_| (0..30).flat_map(|_| next().iter().copied()).collect())
            .collect()
    }

    #[test]
    fn hostile_inputs_keep_the_invariants() {
        for m in token_soup(2000) {
            let (h, b) = split_header_body(&m);
            assert!(h.len() + b.len() <= m.len());
            let covered: usize = scan_fields(h).iter().map(|f| f.raw.len()).sum();
            assert_eq!(covered, h.len());
            let _ = fields(h);
            if let Some(mp) = split_multipart(&m, b"b") {
                assert_eq!(mp.parts.len(), mp.ranges.len());
                assert_eq!(
                    mp.delimiters.len(),
                    mp.parts.len() + usize::from(mp.is_closed())
                );
                let mut last = mp.preamble.len();
                for (part, range) in mp.parts.iter().zip(&mp.ranges) {
                    assert!(range.start >= last && range.end <= m.len());
                    assert_eq!(*part, &m[range.clone()]);
                    last = range.end;
                }
            }
            let _ = (normalize_crlf(&m), canonical_crlf(&m), unfold(&m));
        }
    }
}
