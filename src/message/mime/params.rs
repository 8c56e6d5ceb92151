// SPDX-License-Identifier: GPL-3.0-or-later
//! Structured header values with parameters: `Content-Type` and `Content-Disposition`
//! (RFC 2045 §5.1, RFC 2183), with RFC 2231 extended values and continuations, and the
//! RFC 2047 encoded words that many mailers put in file names.

use super::transfer::hex_value;

/// `type/subtype; param=value; …`, or a `Content-Disposition` value (`inline;
/// filename=…`), whose disposition type then stands in [`ContentType::mime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// Lower-case `type/subtype` (or disposition type).
    pub mime: String,
    /// Lower-case names as written (RFC 2231 sections such as `name*0*` included), values
    /// unquoted but otherwise as written.
    params: Vec<(String, Vec<u8>)>,
}

/// A parameter value found by name: an RFC 2231 extended value (single or in sections),
/// or a plain one.
enum Found<'p> {
    Extended { charset: String, bytes: Vec<u8> },
    Plain(&'p [u8]),
}

impl ContentType {
    /// Parses a field value (folded or not). The type is an RFC 2045 token, optionally
    /// followed by `/` and a subtype token; `None` when it is missing or malformed, which
    /// RFC 2045 §5.2 says to treat like an absent field. Comments are skipped; text that
    /// is not a parameter is skipped up to the next `;`.
    ///
    /// A parameter value is a quoted string (backslash escapes, line breaks removed) or,
    /// leniently like common mailers, whatever stands up to the next `;`, white space or
    /// comment, RFC 2045 `tspecials` such as `=` and `/` included.
    pub fn parse(value: &[u8]) -> Option<ContentType> {
        let mut it = Tokens { s: value, pos: 0 };
        it.skip_cfws();
        let mut mime = lower(it.token()?);
        if it.peek() == Some(b'/') {
            it.pos += 1;
            let subtype = lower(it.token()?);
            mime = format!("{mime}/{subtype}");
        }
        let mut params = Vec::new();
        loop {
            it.skip_cfws();
            match it.peek() {
                None => break,
                Some(b';') => it.pos += 1,
                Some(_) => {
                    // Garbage between parameters: skip to the next ';'.
                    while it.peek().is_some_and(|b| b != b';') {
                        it.pos += 1;
                    }
                    continue;
                }
            }
            it.skip_cfws();
            let Some(name) = it.token() else {
                continue;
            };
            let name = lower(name);
            it.skip_cfws();
            if it.peek() != Some(b'=') {
                continue;
            }
            it.pos += 1;
            it.skip_cfws();
            let value = if it.peek() == Some(b'"') {
                it.quoted()
            } else {
                it.bare_value().to_vec()
            };
            params.push((name, value));
        }
        Some(ContentType { mime, params })
    }

    /// `(type, subtype)`; the subtype is empty when the value has none.
    pub fn type_subtype(&self) -> (&str, &str) {
        self.mime.split_once('/').unwrap_or((&self.mime, ""))
    }

    pub fn is_multipart(&self) -> bool {
        self.mime.starts_with("multipart/")
    }

    /// The multipart boundary (RFC 2231 forms joined, no charset decoding), when present
    /// and not empty. Its length is not checked: see [`super::valid_boundary`].
    pub fn boundary(&self) -> Option<Vec<u8>> {
        let b = match self.find("boundary")? {
            Found::Extended { bytes, .. } => bytes,
            Found::Plain(v) => v.to_vec(),
        };
        (!b.is_empty()).then_some(b)
    }

    /// A parameter value: RFC 2231 extended (`name*=charset'lang'%xx`) or in sections
    /// (`name*0`, `name*1*`, …, joined in numeric order, charset of section 0), decoded to
    /// text; else the plain value (lossy UTF-8). The extended forms win when both are
    /// present, as mail clients do.
    pub fn param(&self, name: &str) -> Option<String> {
        Some(match self.find(name)? {
            Found::Extended { charset, bytes } => decode_charset(&charset, &bytes),
            Found::Plain(v) => String::from_utf8_lossy(v).into_owned(),
        })
    }

    /// Like [`ContentType::param`], and a plain value also has its RFC 2047 encoded words
    /// decoded (`name="=?UTF-8?B?…?="`, against RFC 2047 §5 but common): for file names.
    pub fn text_param(&self, name: &str) -> Option<String> {
        Some(match self.find(name)? {
            Found::Extended { charset, bytes } => decode_charset(&charset, &bytes),
            Found::Plain(v) => decode_words(v),
        })
    }

    fn plain(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    fn find(&self, name: &str) -> Option<Found<'_>> {
        let name = name.to_ascii_lowercase();
        let star = format!("{name}*");
        if let Some(ext) = self.plain(&star) {
            let mut it = ext.splitn(3, |&b| b == b'\'');
            return Some(match (it.next(), it.next(), it.next()) {
                (Some(charset), Some(_lang), Some(text)) => Found::Extended {
                    charset: String::from_utf8_lossy(charset).into_owned(),
                    bytes: percent_decode(text),
                },
                _ => Found::Extended {
                    charset: String::new(),
                    bytes: percent_decode(ext),
                },
            });
        }
        let mut sections: Vec<(u32, bool, &[u8])> = self
            .params
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&star)?;
                let (number, encoded) = match rest.strip_suffix('*') {
                    Some(n) => (n, true),
                    None => (rest, false),
                };
                Some((number.parse::<u32>().ok()?, encoded, v.as_slice()))
            })
            .collect();
        if sections.is_empty() {
            return self.plain(&name).map(Found::Plain);
        }
        sections.sort_by_key(|s| s.0);
        let mut charset = String::new();
        let mut bytes = Vec::new();
        for (n, encoded, v) in sections {
            if encoded {
                let mut text = v;
                if n == 0 {
                    let mut it = v.splitn(3, |&b| b == b'\'');
                    if let (Some(cs), Some(_), Some(t)) = (it.next(), it.next(), it.next()) {
                        charset = String::from_utf8_lossy(cs).into_owned();
                        text = t;
                    }
                }
                bytes.extend(percent_decode(text));
            } else {
                bytes.extend_from_slice(v);
            }
        }
        Some(Found::Extended { charset, bytes })
    }
}

/// The file name of a part (spec §3.6 item 3): the `filename` of its Content-Disposition
/// (RFC 2183), else the `name` of its Content-Type, decoded by
/// [`ContentType::text_param`].
pub fn file_name(ct: Option<&ContentType>, cd: Option<&ContentType>) -> Option<String> {
    cd.and_then(|d| d.text_param("filename"))
        .or_else(|| ct.and_then(|c| c.text_param("name")))
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits is kept.
fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(&c) = v.get(i) {
        if c == b'%' {
            let hex = (
                v.get(i + 1).copied().and_then(hex_value),
                v.get(i + 2).copied().and_then(hex_value),
            );
            if let (Some(h), Some(l)) = hex {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Text of `bytes` in `charset` (UTF-8 when empty or unknown, lossy).
fn decode_charset(charset: &str, bytes: &[u8]) -> String {
    let cs = charset.trim().to_ascii_lowercase();
    if cs.is_empty() || cs == "utf-8" || cs == "utf8" || cs == "us-ascii" {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    match mail_parser::decoders::charsets::map::charset_decoder(cs.as_bytes()) {
        Some(decode) => decode(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Decodes RFC 2047 encoded words in a plain parameter value.
fn decode_words(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if !(text.contains("=?") && text.contains("?=")) {
        return text.into_owned();
    }
    let mut probe = b"Subject: ".to_vec();
    probe.extend(raw.iter().copied().filter(|&b| b != b'\r' && b != b'\n'));
    probe.extend_from_slice(b"\r\n\r\n");
    mail_parser::MessageParser::new()
        .parse(&probe)
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_else(|| text.into_owned())
}

struct Tokens<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// White space, line breaks and (nested) comments with quoted pairs.
    fn skip_cfws(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.pos += 1,
                Some(b'(') => {
                    let mut depth = 0usize;
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        match c {
                            b'\\' => self.pos = (self.pos + 1).min(self.s.len()),
                            b'(' => depth += 1,
                            b')' => {
                                depth = depth.saturating_sub(1);
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// RFC 2045 token: anything but `tspecials`, space and controls.
    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let tspecial = matches!(
                c,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b'@'
                    | b','
                    | b';'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'='
            );
            if tspecial || c <= b' ' || c == 0x7f {
                break;
            }
            self.pos += 1;
        }
        let s: &'a [u8] = self.s;
        (self.pos > start).then(|| &s[start..self.pos])
    }

    /// An unquoted value, read leniently: up to `;`, white space or a comment.
    fn bare_value(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'('))
        {
            self.pos += 1;
        }
        let s: &'a [u8] = self.s;
        &s[start..self.pos]
    }

    /// A quoted string (at its opening quote): escapes resolved, line breaks removed; an
    /// unterminated one runs to the end.
    fn quoted(&mut self) -> Vec<u8> {
        self.pos += 1;
        let mut v = Vec::new();
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        v.push(n);
                        self.pos += 1;
                    }
                }
                b'\r' | b'\n' => {}
                _ => v.push(c),
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> ContentType {
        ContentType::parse(v.as_bytes()).unwrap()
    }

    #[test]
    fn type_and_parameters() {
        let c = ct("Multipart/Signed; protocol=\"application/x-pkcs7-signature\"; micalg=sha1;\r\n boundary=\"----0E32\" (comment)");
        assert_eq!(c.mime, "multipart/signed");
        assert_eq!(c.type_subtype(), ("multipart", "signed"));
        assert!(c.is_multipart());
        assert_eq!(c.boundary().as_deref(), Some(&b"----0E32"[..]));
        assert_eq!(c.param("Boundary").as_deref(), Some("----0E32"));
        assert_eq!(c.param("micalg").as_deref(), Some("sha1"));
        assert_eq!(
            c.param("protocol").as_deref(),
            Some("application/x-pkcs7-signature")
        );
        assert_eq!(c.param("charset"), None);
        assert_eq!(ct("text").type_subtype(), ("text", ""));
        assert_eq!(
            ct("text/plain garbage; a=1").param("a").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn malformed_types_are_absent() {
        for v in [
            "",
            "   ",
            "(only a comment)",
            "/plain",
            "text/",
            "text/;a=1",
            "; name=x",
        ] {
            assert!(ContentType::parse(v.as_bytes()).is_none(), "{v:?}");
        }
    }

    #[test]
    fn quoted_params_with_escapes_and_comments() {
        let s =
            ct(" Multipart/Mixed (comment; x=y) ; Boundary=\"a \\\"b\\\";c\" ; charset = utf-8");
        assert_eq!(s.mime, "multipart/mixed");
        assert_eq!(s.boundary().as_deref(), Some(&b"a \"b\";c"[..]));
        assert_eq!(s.param("charset").as_deref(), Some("utf-8"));
        // Folded quoted string; unterminated quote runs to the end.
        assert_eq!(ct("a/b; n=\"x\r\n y\"").param("n").as_deref(), Some("x y"));
        assert_eq!(ct("a/b; n=\"open").param("n").as_deref(), Some("open"));
        // Nested comments with a quoted pair.
        assert_eq!(
            ct("a/b (x (y\\) z) w); n=1").param("n").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn bare_values_are_read_leniently() {
        let c = ct("multipart/mixed; boundary=----=_Part_1/2; name=a b; x=(c)1; z=1(c); y=");
        assert_eq!(c.boundary().as_deref(), Some(&b"----=_Part_1/2"[..]));
        assert_eq!(c.param("name").as_deref(), Some("a"));
        assert_eq!(c.param("x").as_deref(), Some("1"));
        assert_eq!(c.param("z").as_deref(), Some("1"));
        assert_eq!(c.param("y").as_deref(), Some(""));
        assert_eq!(ct("a/b; boundary=\"\"").boundary(), None);
        // Names without a value, and values without a name, are skipped.
        let c = ct("a/b; lone; =v; ok=1");
        assert_eq!(c.param("lone"), None);
        assert_eq!(c.param("ok").as_deref(), Some("1"));
        // The first of two equal names wins.
        assert_eq!(ct("a/b; n=1; n=2").param("n").as_deref(), Some("1"));
    }

    #[test]
    fn rfc2231_extended_values_and_continuations() {
        let s = ct("attachment; filename*=UTF-8''fattura%20n%C2%B01.pdf");
        assert_eq!(s.mime, "attachment");
        assert_eq!(s.param("filename").as_deref(), Some("fattura n°1.pdf"));
        let s = ct("inline;\n\tfilename*=UTF-8''daticert%2Exml");
        assert_eq!(s.param("filename").as_deref(), Some("daticert.xml"));
        let s = ct(
            "attachment; filename*0*=utf-8''caf%C3%A9; filename*2=\".pdf\"; filename*1=\"-menu\"",
        );
        assert_eq!(s.param("filename").as_deref(), Some("café-menu.pdf"));
        // Charsets other than UTF-8 are decoded; the extended form wins over the plain one.
        let s = ct("attachment; filename*=iso-8859-1'it'perch%E9.txt; filename=\"fallback.txt\"");
        assert_eq!(s.param("filename").as_deref(), Some("perché.txt"));
        let s = ct("attachment; filename=\"fallback.txt\"; filename*0*=iso-8859-1''perch%E9; filename*1=.txt");
        assert_eq!(s.param("filename").as_deref(), Some("perché.txt"));
        // Without charset'language', the value is only percent-decoded.
        assert_eq!(ct("a/b; n*=a%41").param("n").as_deref(), Some("aA"));
        // Bad escapes are kept; non-numeric and overflowing sections are ignored.
        let s = ct("a/b; n*0*=''%; n*1*=%zz; n*x=1; n*99999999999999999999=2");
        assert_eq!(s.param("n").as_deref(), Some("%%zz"));
        // Boundaries in sections are joined too, without charset decoding.
        let s = ct("multipart/mixed; boundary*0=\"ab\"; boundary*1=cd");
        assert_eq!(s.boundary().as_deref(), Some(&b"abcd"[..]));
    }

    #[test]
    fn rfc2047_words_in_file_names() {
        let s = ct("application/pdf; name=\"=?UTF-8?B?cGVyY2jDqS5wZGY=?=\"");
        assert_eq!(s.text_param("name").as_deref(), Some("perché.pdf"));
        assert_eq!(
            s.param("name").as_deref(),
            Some("=?UTF-8?B?cGVyY2jDqS5wZGY=?=")
        );
        let cd = ct("attachment; filename=\"a.pdf\"");
        assert_eq!(file_name(Some(&s), Some(&cd)).as_deref(), Some("a.pdf"));
        assert_eq!(file_name(Some(&s), None).as_deref(), Some("perché.pdf"));
        assert_eq!(
            file_name(Some(&ct("text/plain")), Some(&ct("inline"))),
            None
        );
        assert!(ct("a/b; name=\"=?x?q?=ZZ?=\"").text_param("name").is_some());
    }

    #[test]
    fn hostile_values_never_panic() {
        for v in [
            &b"(((; name*0*=''%; name*1*=%zz; name*x=1"[..],
            b"a/b; name*=''",
            b";;;=;\"",
            b"a/b; n=\"\\",
            b"a/b; n=\\",
            b"a/b (\\",
            b"\xff/\xfe; \xfd=\xfc",
            b"a/b; n*0*='''; n*0*=%",
            b"a/b; n=(\\",
            b"a/b; n=(",
            b"a/b; n*=\"%",
        ] {
            if let Some(c) = ContentType::parse(v) {
                let _ = (c.param("n"), c.text_param("name"), c.boundary());
            }
        }
        let pieces: [&[u8]; 16] = [
            b"a/b", b";", b"=", b"\"", b"\\", b"(", b")", b"n", b"*", b"0", b"'", b"%", b"%4",
            b" ", b"\r\n", b"\xc3",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            let value: Vec<u8> = (0..12)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    pieces[(state % 16) as usize].iter().copied()
                })
                .collect();
            if let Some(c) = ContentType::parse(&value) {
                let _ = (c.param("n"), c.param("n*"), c.boundary(), c.type_subtype());
            }
        }
    }
}
