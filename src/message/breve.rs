//! Ricevuta breve: the original with every named part replaced by its SHA-1 (spec §3.6).
//!
//! [`breve_original`] takes the original message as carried inside the transport envelope
//! (`postacert.eml`) and returns the body of the *breve* delivery receipt's `postacert.eml`
//! plus the list of hashed parts. The MIME tree is walked on the raw bytes (RFC 2046
//! delimiters are recognised only at the start of a line, unlike mail-parser bug #156), and
//! everything that is not replaced is copied byte for byte: top-level headers, preambles,
//! epilogues, delimiter lines, unnamed parts.
//!
//! Rules (spec §3.6, "Breve"):
//! * every part whose `Content-Type` has a `name` parameter or whose `Content-Disposition`
//!   has a `filename` parameter (RFC 2231 `name*` / `filename*` forms included) becomes a
//!   `text/plain; charset=us-ascii` part with the same disposition type (`attachment` when
//!   the original had none), named `<name>.hash` in both `name` and `filename`, whose body is
//!   the SHA-1 of the original part. The part's other headers (`Content-ID`,
//!   `Content-Description`, …) are kept; `Content-Type`, `Content-Transfer-Encoding`,
//!   `Content-Disposition` and `Content-MD5` describe the replaced body and are rewritten or
//!   dropped. A named `message/rfc822` is replaced whole; a named multipart too;
//! * top-level `multipart/signed`: only its first part is walked, the signature is left
//!   untouched (the user signature no longer verifies, which the rules accept). Nested
//!   `multipart/signed` parts are treated the same way;
//! * top-level `application/pkcs7-mime` / `application/x-pkcs7-mime` (opaque CMS): nothing is
//!   replaced, the breve equals the completa;
//! * a single-part message that is itself a named attachment has its body replaced and its
//!   `Content-*` headers rewritten as above; every other top-level header is kept;
//! * an unnamed `message/rfc822` is kept byte for byte (not descended into): only parts of
//!   the original's own MIME tree are replaced.
//!
//! [UNVERIFIED] choices (spec §3.6 item 4, §16 item 2: no real *breve* receipt was found),
//! summed up in [`BREVE_HASH_CONVENTION`] so that they can later be made configurable:
//! * hex digits are lower case;
//! * the hash covers the part body exactly as transmitted, i.e. still transfer-encoded
//!   (base64 / quoted-printable text), not the decoded content;
//! * the part headers are excluded: the body starts after the empty line ending them;
//! * the CRLF that precedes the next boundary delimiter belongs to the delimiter (RFC 2046)
//!   and is excluded; for a single-part message the final line break is excluded likewise;
//! * line ends are hashed as CRLF, the wire form: a bare LF in the input (a message stored
//!   with Unix line ends) is hashed as CRLF, so both forms give the same hash.

use sha1::{Digest, Sha1};

/// How the hash of a replaced part is computed ([UNVERIFIED] points of spec §3.6).
pub const BREVE_HASH_CONVENTION: &str = "sha1; lower-case hex (40 characters); \
    over the part body as transmitted (transfer-encoded), part headers excluded, \
    the line break before the next boundary delimiter excluded, line ends as CRLF";

/// Deepest MIME nesting walked; deeper input is refused rather than risking the stack.
pub const MAX_MIME_DEPTH: usize = 32;

/// The rewritten original and what was hashed (spec §3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breve {
    /// The original with named parts replaced: the receipt's `postacert.eml`.
    pub message: Vec<u8>,
    /// One entry per replaced part, in message order.
    pub hashes: Vec<HashedPart>,
}

/// One replaced part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedPart {
    /// The original file name (RFC 2231 / RFC 2047 decoded), without `.hash`.
    pub file_name: String,
    /// SHA-1 of the part body as transmitted: 40 lower-case hex digits.
    pub sha1_hex: String,
}

/// Why a breve could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreveError {
    #[error("breve: mime nesting deeper than {max} levels")]
    TooDeep { max: usize },
}

/// Builds the *breve* form of `original` (spec §3.6). Malformed MIME is handled leniently
/// (a multipart without boundary or without delimiters is kept as is; a multipart without
/// closing delimiter ends at the end of its body); only excessive nesting is an error.
pub fn breve_original(original: &[u8]) -> Result<Breve, BreveError> {
    let mut w = Walker {
        eol: detect_eol(original),
        out: Vec::with_capacity(original.len().min(1 << 20)),
        hashes: Vec::new(),
    };
    w.top(original)?;
    Ok(Breve {
        message: w.out,
        hashes: w.hashes,
    })
}

// ---------------------------------------------------------------------------------------
// Lines and headers
// ---------------------------------------------------------------------------------------

/// The line-end style of generated lines: that of the first line of the input.
fn detect_eol(input: &[u8]) -> &'static [u8] {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && input.get(i - 1) == Some(&b'\r') => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    }
}

/// One line of `buf` starting at `start`: (end of content, start of the next line).
/// The content excludes the line break (`\n` or `\r\n`).
fn line_at(buf: &[u8], start: usize) -> (usize, usize) {
    let rest = buf.get(start..).unwrap_or(&[]);
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let nl = start + i;
            let end = if nl > start && buf.get(nl - 1) == Some(&b'\r') {
                nl - 1
            } else {
                nl
            };
            (end, nl + 1)
        }
        None => (buf.len(), buf.len()),
    }
}

/// One header field: its name and the byte range of the whole field (folded lines and the
/// final line break included) inside the entity.
struct Field {
    name_end: usize,
    start: usize,
    end: usize,
}

struct Head {
    fields: Vec<Field>,
    /// Start of the body: just after the empty line, or the end when there is none.
    body_start: usize,
}

fn split_head(entity: &[u8]) -> Head {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < entity.len() {
        let (end, next) = line_at(entity, pos);
        if end == pos {
            return Head {
                fields,
                body_start: next,
            };
        }
        let first = entity.get(pos).copied().unwrap_or(b' ');
        match fields.last_mut() {
            Some(f) if first == b' ' || first == b'\t' => f.end = next,
            _ => {
                let line = entity.get(pos..end).unwrap_or(&[]);
                let name_len = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                fields.push(Field {
                    name_end: pos + name_len,
                    start: pos,
                    end: next,
                });
            }
        }
        pos = next;
    }
    Head {
        fields,
        body_start: entity.len(),
    }
}

impl Field {
    fn name<'a>(&self, entity: &'a [u8]) -> &'a [u8] {
        trim_ws(entity.get(self.start..self.name_end).unwrap_or(&[]))
    }

    fn is(&self, entity: &[u8], name: &str) -> bool {
        self.name(entity).eq_ignore_ascii_case(name.as_bytes())
    }

    /// The unfolded value (line breaks removed).
    fn value(&self, entity: &[u8]) -> Vec<u8> {
        entity
            .get(self.name_end + 1..self.end)
            .unwrap_or(&[])
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect()
    }
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let is_ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let start = b.iter().position(|c| !is_ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_ws(c)).map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or(&[])
}

// ---------------------------------------------------------------------------------------
// Structured header values: `Content-Type` / `Content-Disposition` (RFC 2045, 2183, 2231)
// ---------------------------------------------------------------------------------------

/// `type/subtype` (or disposition type) lower-cased, and the parameters as written
/// (names lower-cased, quoted strings unquoted).
struct Structured {
    value: String,
    params: Vec<(String, Vec<u8>)>,
}

/// Skips white space and RFC 5322 comments (nested, with quoted pairs).
fn skip_cfws(v: &[u8], mut i: usize) -> usize {
    loop {
        match v.get(i) {
            Some(b' ' | b'\t') => i += 1,
            Some(b'(') => {
                let mut depth = 0usize;
                while let Some(&c) = v.get(i) {
                    i += 1;
                    match c {
                        b'\\' => i += 1,
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
            _ => return i,
        }
    }
}

fn parse_structured(v: &[u8]) -> Structured {
    let mut i = skip_cfws(v, 0);
    let start = i;
    while let Some(&c) = v.get(i) {
        if c == b';' || c == b'(' {
            break;
        }
        i += 1;
    }
    let value = String::from_utf8_lossy(trim_ws(v.get(start..i).unwrap_or(&[])))
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut params = Vec::new();
    while i < v.len() {
        // At a ';' or junk: move past the next ';'.
        while let Some(&c) = v.get(i) {
            i += 1;
            if c == b';' {
                break;
            }
        }
        i = skip_cfws(v, i);
        let name_start = i;
        while let Some(&c) = v.get(i) {
            if matches!(c, b'=' | b';' | b' ' | b'\t' | b'(') {
                break;
            }
            i += 1;
        }
        let name =
            String::from_utf8_lossy(v.get(name_start..i).unwrap_or(&[])).to_ascii_lowercase();
        i = skip_cfws(v, i);
        if v.get(i) != Some(&b'=') {
            continue;
        }
        i = skip_cfws(v, i + 1);
        let mut value = Vec::new();
        if v.get(i) == Some(&b'"') {
            i += 1;
            while let Some(&c) = v.get(i) {
                i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        if let Some(&n) = v.get(i) {
                            value.push(n);
                            i += 1;
                        }
                    }
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = v.get(i) {
                if matches!(c, b';' | b' ' | b'\t' | b'(') {
                    break;
                }
                value.push(c);
                i += 1;
            }
        }
        if !name.is_empty() {
            params.push((name, value));
        }
    }
    Structured { value, params }
}

fn pct_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(&c) = v.get(i) {
        if c == b'%' {
            let hex = v
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

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

/// Decodes RFC 2047 encoded words in a legacy (non-RFC 2231) parameter value, as many
/// mailers write `name="=?UTF-8?B?…?="`.
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

impl Structured {
    fn is(&self, value: &str) -> bool {
        self.value == value
    }

    fn raw_param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A parameter value in any of its forms: RFC 2231 extended (`name*`), RFC 2231
    /// continuations (`name*0`, `name*0*`, …), or plain (`name`, RFC 2047 decoded).
    /// The extended forms win when both are present (RFC 2231 §4).
    fn param(&self, name: &str) -> Option<String> {
        if let Some(ext) = self.raw_param(&format!("{name}*")) {
            let mut it = ext.splitn(3, |&b| b == b'\'');
            let (a, b, c) = (it.next(), it.next(), it.next());
            return Some(match (a, b, c) {
                (Some(charset), Some(_lang), Some(text)) => {
                    decode_charset(&String::from_utf8_lossy(charset), &pct_decode(text))
                }
                _ => String::from_utf8_lossy(&pct_decode(ext)).into_owned(),
            });
        }
        let prefix = format!("{name}*");
        let mut segments: Vec<(u32, bool, &[u8])> = self
            .params
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&prefix)?;
                let (num, encoded) = match rest.strip_suffix('*') {
                    Some(n) => (n, true),
                    None => (rest, false),
                };
                Some((num.parse::<u32>().ok()?, encoded, v.as_slice()))
            })
            .collect();
        if !segments.is_empty() {
            segments.sort_by_key(|s| s.0);
            let mut charset = String::new();
            let mut bytes = Vec::new();
            for (n, encoded, v) in segments {
                if encoded {
                    let mut text = v;
                    if n == 0 {
                        let mut it = v.splitn(3, |&b| b == b'\'');
                        if let (Some(cs), Some(_), Some(t)) = (it.next(), it.next(), it.next()) {
                            charset = String::from_utf8_lossy(cs).into_owned();
                            text = t;
                        }
                    }
                    bytes.extend(pct_decode(text));
                } else {
                    bytes.extend_from_slice(v);
                }
            }
            return Some(decode_charset(&charset, &bytes));
        }
        self.raw_param(name).map(decode_words)
    }
}

/// The `Content-Type` and `Content-Disposition` of one entity.
struct Content {
    ctype: Structured,
    disposition: Option<Structured>,
}

impl Content {
    fn of(entity: &[u8], head: &Head) -> Content {
        let field = |name: &str| {
            head.fields
                .iter()
                .find(|f| f.is(entity, name))
                .map(|f| parse_structured(&f.value(entity)))
        };
        Content {
            // RFC 2045 default.
            ctype: field("content-type").unwrap_or(Structured {
                value: "text/plain".to_owned(),
                params: Vec::new(),
            }),
            disposition: field("content-disposition"),
        }
    }

    /// The file name when the part is "named" (spec §3.6 item 3): the disposition
    /// `filename` first (RFC 2183), else the content-type `name`.
    fn file_name(&self) -> Option<String> {
        self.disposition
            .as_ref()
            .and_then(|d| d.param("filename"))
            .or_else(|| self.ctype.param("name"))
    }

    fn is_multipart(&self) -> bool {
        self.ctype.value.starts_with("multipart/")
    }

    fn boundary(&self) -> Option<Vec<u8>> {
        self.ctype
            .raw_param("boundary")
            .filter(|b| !b.is_empty())
            .map(<[u8]>::to_vec)
    }
}

// ---------------------------------------------------------------------------------------
// Hashing and the replacement part
// ---------------------------------------------------------------------------------------

/// SHA-1 of `body` with every bare LF hashed as CRLF (the wire form).
fn sha1_hex_crlf(body: &[u8]) -> String {
    let mut h = Sha1::new();
    let mut from = 0;
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' && (i == 0 || body.get(i - 1) != Some(&b'\r')) {
            h.update(body.get(from..i).unwrap_or(&[]));
            h.update(b"\r\n");
            from = i + 1;
        }
    }
    h.update(body.get(from..).unwrap_or(&[]));
    hex::encode(h.finalize())
}

/// RFC 2231 `attr-char`.
fn is_attr_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&c)
}

/// `attr="value"` for printable ASCII, else RFC 2231 `attr*=utf-8''%XX…`.
fn format_param(attr: &str, value: &str) -> String {
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

/// Headers dropped from a replaced part: they describe the old body.
const REPLACED_HEADERS: [&str; 4] = [
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-md5",
];

struct Walker {
    eol: &'static [u8],
    out: Vec<u8>,
    hashes: Vec<HashedPart>,
}

impl Walker {
    /// Appends `name: value` with `params`, folding before a parameter that would make
    /// the line longer than 78 characters.
    fn header(&mut self, name_value: &str, params: &[String]) {
        let mut line_len = name_value.len();
        self.out.extend_from_slice(name_value.as_bytes());
        for p in params {
            self.out.push(b';');
            if line_len + 2 + p.len() > 78 {
                self.out.extend_from_slice(self.eol);
                self.out.push(b'\t');
                line_len = 1;
            } else {
                self.out.push(b' ');
                line_len += 2;
            }
            self.out.extend_from_slice(p.as_bytes());
            line_len += p.len();
        }
        self.out.extend_from_slice(self.eol);
    }

    /// Writes the replacement for a named entity: kept headers, new `Content-*`
    /// headers, empty line, hash. `body` is exactly what is hashed.
    fn replace(
        &mut self,
        entity: &[u8],
        head: &Head,
        content: &Content,
        name: String,
        body: &[u8],
    ) {
        for f in &head.fields {
            if !REPLACED_HEADERS.iter().any(|n| f.is(entity, n)) {
                self.out
                    .extend_from_slice(entity.get(f.start..f.end).unwrap_or(&[]));
            }
        }
        if !self.out.is_empty() && !self.out.ends_with(b"\n") {
            self.out.extend_from_slice(self.eol);
        }
        let new_name = format!("{name}.hash");
        let disposition = content
            .disposition
            .as_ref()
            .map(|d| d.value.clone())
            .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_graphic()))
            .unwrap_or_else(|| "attachment".to_owned());
        self.header(
            "Content-Type: text/plain",
            &[
                "charset=us-ascii".to_owned(),
                format_param("name", &new_name),
            ],
        );
        self.header(
            &format!("Content-Disposition: {disposition}"),
            &[format_param("filename", &new_name)],
        );
        self.header("Content-Transfer-Encoding: 7bit", &[]);
        self.out.extend_from_slice(self.eol);
        let sha1_hex = sha1_hex_crlf(body);
        self.out.extend_from_slice(sha1_hex.as_bytes());
        self.hashes.push(HashedPart {
            file_name: name,
            sha1_hex,
        });
    }

    fn top(&mut self, message: &[u8]) -> Result<(), BreveError> {
        let head = split_head(message);
        let content = Content::of(message, &head);
        let ct = &content.ctype;
        if ct.is("application/pkcs7-mime") || ct.is("application/x-pkcs7-mime") {
            self.out.extend_from_slice(message);
            return Ok(());
        }
        if content.is_multipart() {
            return self.multipart_entity(message, &head, &content, 0);
        }
        match content.file_name() {
            Some(name) => {
                let body = message.get(head.body_start..).unwrap_or(&[]);
                // The final line break ends the message, like the one before a delimiter.
                let body = body
                    .strip_suffix(b"\r\n")
                    .or_else(|| body.strip_suffix(b"\n"))
                    .unwrap_or(body);
                self.replace(message, &head, &content, name, body);
                self.out.extend_from_slice(self.eol);
            }
            None => self.out.extend_from_slice(message),
        }
        Ok(())
    }

    /// Copies the head of a multipart entity and walks its body; without a usable
    /// boundary the entity is copied as is.
    fn multipart_entity(
        &mut self,
        entity: &[u8],
        head: &Head,
        content: &Content,
        depth: usize,
    ) -> Result<(), BreveError> {
        let Some(boundary) = content.boundary() else {
            self.out.extend_from_slice(entity);
            return Ok(());
        };
        let body_start = head.body_start.min(entity.len());
        self.out
            .extend_from_slice(entity.get(..body_start).unwrap_or(&[]));
        let signed = content.ctype.is("multipart/signed");
        self.multipart_body(
            entity.get(body_start..).unwrap_or(&[]),
            &boundary,
            signed,
            depth + 1,
        )
    }

    /// Walks the parts of a multipart body (RFC 2046 §5.1.1). Delimiter lines are
    /// recognised only at the start of a line; preamble, delimiters, line breaks and
    /// epilogue are copied unchanged.
    fn multipart_body(
        &mut self,
        body: &[u8],
        boundary: &[u8],
        signed: bool,
        depth: usize,
    ) -> Result<(), BreveError> {
        if depth > MAX_MIME_DEPTH {
            return Err(BreveError::TooDeep {
                max: MAX_MIME_DEPTH,
            });
        }
        let spans = part_spans(body, boundary);
        let mut cursor = 0;
        for (index, (start, end)) in spans.into_iter().enumerate() {
            if signed && index > 0 {
                // The signature part of multipart/signed stays untouched.
                break;
            }
            self.out
                .extend_from_slice(body.get(cursor..start).unwrap_or(&[]));
            self.part(body.get(start..end).unwrap_or(&[]), depth)?;
            cursor = end;
        }
        self.out
            .extend_from_slice(body.get(cursor..).unwrap_or(&[]));
        Ok(())
    }

    fn part(&mut self, entity: &[u8], depth: usize) -> Result<(), BreveError> {
        let head = split_head(entity);
        let content = Content::of(entity, &head);
        if let Some(name) = content.file_name() {
            let body = entity.get(head.body_start..).unwrap_or(&[]);
            self.replace(entity, &head, &content, name, body);
            return Ok(());
        }
        if content.is_multipart() {
            return self.multipart_entity(entity, &head, &content, depth);
        }
        self.out.extend_from_slice(entity);
        Ok(())
    }
}

/// Byte ranges of the parts of a multipart body: each from after its delimiter line to
/// before the line break that precedes the next delimiter. Parts after the closing
/// delimiter (epilogue) are ignored; a missing closing delimiter ends the last part at the
/// end of the body (minus a final line break). Empty parts are skipped.
fn part_spans(body: &[u8], boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let (end, next) = line_at(body, pos);
        if let Some(closing) = delimiter(body.get(pos..end).unwrap_or(&[]), boundary) {
            if let Some(start) = open.take() {
                let before = preceding_break(body, pos);
                if before > start {
                    spans.push((start, before));
                }
            }
            if closing {
                return spans;
            }
            open = Some(next);
        }
        pos = next;
    }
    if let Some(start) = open {
        let rest = body.get(start..).unwrap_or(&[]);
        let trimmed = rest
            .strip_suffix(b"\r\n")
            .or_else(|| rest.strip_suffix(b"\n"))
            .unwrap_or(rest);
        if !trimmed.is_empty() {
            spans.push((start, start + trimmed.len()));
        }
    }
    spans
}

/// Start of the line break ending the line before `line_start`.
fn preceding_break(body: &[u8], line_start: usize) -> usize {
    if line_start >= 2 && body.get(line_start - 2..line_start) == Some(b"\r\n") {
        line_start - 2
    } else {
        line_start.saturating_sub(1)
    }
}

/// `Some(closing)` when `line` is a delimiter line for `boundary`: `--boundary` or
/// `--boundary--`, optionally followed by white space (RFC 2046 transport padding).
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (closing, pad) = match rest.strip_prefix(b"--") {
        Some(p) => (true, p),
        None => (false, rest),
    };
    pad.iter()
        .all(|&c| c == b' ' || c == b'\t')
        .then_some(closing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> Structured {
        parse_structured(v.as_bytes())
    }

    #[test]
    fn parameters_plain_quoted_and_commented() {
        let s =
            ct(" Multipart/Mixed (comment; x=y) ; Boundary=\"a \\\"b\\\";c\" ; charset = utf-8");
        assert_eq!(s.value, "multipart/mixed");
        assert_eq!(s.raw_param("boundary"), Some(&b"a \"b\";c"[..]));
        assert_eq!(s.param("charset").as_deref(), Some("utf-8"));
    }

    #[test]
    fn parameters_rfc2231_and_rfc2047() {
        let s = ct("attachment; filename*=UTF-8''fattura%20n%C2%B01.pdf");
        assert_eq!(s.param("filename").as_deref(), Some("fattura n°1.pdf"));
        let s = ct(
            "attachment; filename*0*=utf-8''caf%C3%A9; filename*2=\".pdf\"; filename*1=\"-menu\"",
        );
        assert_eq!(s.param("filename").as_deref(), Some("café-menu.pdf"));
        let s = ct("attachment; filename*=iso-8859-1'it'perch%E9.txt; filename=\"fallback.txt\"");
        assert_eq!(s.param("filename").as_deref(), Some("perché.txt"));
        let s = ct("application/pdf; name=\"=?UTF-8?B?cGVyY2jDqS5wZGY=?=\"");
        assert_eq!(s.param("name").as_deref(), Some("perché.pdf"));
    }

    #[test]
    fn delimiters_only_whole_lines() {
        assert_eq!(delimiter(b"--abc", b"abc"), Some(false));
        assert_eq!(delimiter(b"--abc-- \t", b"abc"), Some(true));
        assert_eq!(delimiter(b"--abcd", b"abc"), None);
        assert_eq!(delimiter(b"x--abc", b"abc"), None);
        assert_eq!(delimiter(b"--abc--x", b"abc"), None);
    }

    #[test]
    fn spans_exclude_the_break_before_the_delimiter() {
        let body = b"pre\r\n--b\r\nA: 1\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\nepi";
        let spans = part_spans(body, b"b");
        let parts: Vec<&[u8]> = spans.iter().map(|&(s, e)| &body[s..e]).collect();
        assert_eq!(parts, [&b"A: 1\r\n\r\nx"[..], &b"\r\ny"[..]]);
    }

    #[test]
    fn hash_is_lower_hex_and_lf_counts_as_crlf() {
        let a = sha1_hex_crlf(b"line one\r\nline two");
        assert_eq!(a, sha1_hex_crlf(b"line one\nline two"));
        assert_eq!(a.len(), 40);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(
            sha1_hex_crlf(b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn param_formatting() {
        assert_eq!(
            format_param("name", "a \"b\".pdf.hash"),
            "name=\"a \\\"b\\\".pdf.hash\""
        );
        assert_eq!(
            format_param("filename", "né.hash"),
            "filename*=utf-8''n%C3%A9.hash"
        );
    }
}
