// SPDX-License-Identifier: GPL-3.0-or-later
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

use super::mime::{self, Entity};

/// How the hash of a replaced part is computed ([UNVERIFIED] points of spec §3.6).
pub const BREVE_HASH_CONVENTION: &str = "sha1; lower-case hex (40 characters); \
    over the part body as transmitted (transfer-encoded), part headers excluded, \
    the line break before the next boundary delimiter excluded, line ends as CRLF";

/// Deepest MIME nesting walked; deeper input is refused rather than risking the stack.
pub const MAX_MIME_DEPTH: usize = mime::MAX_DEPTH;

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

/// The line-end style of generated lines: that of the first line of the input.
fn detect_eol(input: &[u8]) -> &'static [u8] {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && input.get(i - 1) == Some(&b'\r') => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    }
}

fn is_opaque_smime(entity: &Entity<'_>) -> bool {
    matches!(
        entity.mime_type(),
        "application/pkcs7-mime" | "application/x-pkcs7-mime"
    )
}

// ---------------------------------------------------------------------------------------
// Hashing and the replacement part
// ---------------------------------------------------------------------------------------

/// SHA-1 of `body` with every bare LF hashed as CRLF (the wire form), in lower-case hex.
fn sha1_hex_crlf(body: &[u8]) -> String {
    hex::encode(Sha1::digest(mime::canonical_crlf(body)))
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
    fn replace(&mut self, entity: &Entity<'_>, name: String, body: &[u8]) {
        for f in &entity.fields {
            if !REPLACED_HEADERS.iter().any(|n| f.is(n)) {
                self.out.extend_from_slice(f.raw);
            }
        }
        if !self.out.is_empty() && !self.out.ends_with(b"\n") {
            self.out.extend_from_slice(self.eol);
        }
        let new_name = format!("{name}.hash");
        let disposition = entity
            .disposition
            .as_ref()
            .map(|d| d.mime.clone())
            .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_graphic()))
            .unwrap_or_else(|| "attachment".to_owned());
        self.header(
            "Content-Type: text/plain",
            &[
                "charset=us-ascii".to_owned(),
                mime::encode_param("name", &new_name),
            ],
        );
        self.header(
            &format!("Content-Disposition: {disposition}"),
            &[mime::encode_param("filename", &new_name)],
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
        let entity = Entity::parse(message);
        if is_opaque_smime(&entity) {
            self.out.extend_from_slice(message);
            return Ok(());
        }
        if entity.is_multipart() {
            return self.multipart_entity(&entity, 0);
        }
        match entity.file_name() {
            Some(name) => {
                // The final line break ends the message, like the one before a delimiter.
                let body = strip_line_break(entity.body);
                self.replace(&entity, name, body);
                self.out.extend_from_slice(self.eol);
            }
            None => self.out.extend_from_slice(message),
        }
        Ok(())
    }

    /// Copies the head of a multipart entity and walks its body; without a usable
    /// boundary the entity is copied as is.
    fn multipart_entity(&mut self, entity: &Entity<'_>, depth: usize) -> Result<(), BreveError> {
        let Some(boundary) = entity.boundary() else {
            self.out.extend_from_slice(entity.raw);
            return Ok(());
        };
        self.out.extend_from_slice(entity.head());
        let signed = entity.mime_type() == "multipart/signed";
        self.multipart_body(entity.body, &boundary, signed, depth + 1)
    }

    /// Walks the parts of a multipart body (RFC 2046 §5.1.1, delimiters only at the start
    /// of a line); preamble, delimiter lines, line breaks and epilogue are copied
    /// unchanged. Without a closing delimiter the last part ends at the end of the body,
    /// minus a final line break.
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
        let Some(mp) = mime::split_multipart(body, boundary) else {
            self.out.extend_from_slice(body);
            return Ok(());
        };
        let count = mp.ranges.len();
        let mut cursor = 0;
        for (index, range) in mp.ranges.iter().enumerate() {
            if signed && index > 0 {
                // The signature part of multipart/signed stays untouched.
                break;
            }
            let mut part = &body[range.clone()];
            if !mp.is_closed() && index + 1 == count {
                part = strip_line_break(part);
            }
            self.out.extend_from_slice(&body[cursor..range.start]);
            self.part(part, depth)?;
            cursor = range.start + part.len();
        }
        self.out.extend_from_slice(&body[cursor..]);
        Ok(())
    }

    fn part(&mut self, raw: &[u8], depth: usize) -> Result<(), BreveError> {
        let entity = Entity::parse(raw);
        if let Some(name) = entity.file_name() {
            self.replace(&entity, name, entity.body);
            return Ok(());
        }
        if entity.is_multipart() {
            return self.multipart_entity(&entity, depth);
        }
        self.out.extend_from_slice(raw);
        Ok(())
    }
}

/// `b` without one final line break (CRLF or LF).
fn strip_line_break(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r\n")
        .or_else(|| b.strip_suffix(b"\n"))
        .unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn signed_with_an_empty_first_part_keeps_the_signature() {
        let msg = b"Content-Type: multipart/signed; boundary=s\r\n\r\n--s\r\n\r\n--s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\r\nMIIB\r\n--s--\r\n";
        let b = breve_original(msg).unwrap();
        assert_eq!(b.message, msg);
        assert!(b.hashes.is_empty());
    }
}
