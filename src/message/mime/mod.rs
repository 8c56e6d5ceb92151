// SPDX-License-Identifier: GPL-3.0-or-later
//! Raw MIME on bytes, the one implementation that every reader and writer of messages uses
//! (the builders, the 7-bit downgrade, the breve rewriter, S/MIME verification and the
//! classifier):
//!
//! * `scan`: line ends, the header/body split, header fields with their exact byte spans,
//!   and multipart bodies split at their delimiter lines, which keep the delimiter lines and
//!   part ranges so that a rewriter can copy every untouched byte;
//! * `params`: `Content-Type` / `Content-Disposition` values with their parameters
//!   (RFC 2045 quoted strings, RFC 2231 extended values and continuations with charsets,
//!   RFC 2047 words in file names);
//! * `entity`: a message or part read for walking (fields, body, content type, file name);
//! * `transfer`: base64, quoted-printable and identity transfer decodings;
//! * `encode`: the 7-bit-safe encoders used for generated parts and headers.
//!
//! These parsers read hostile input before any signature is checked, so they hold to a few
//! rules: a multipart delimiter counts only as a whole line (mail-parser #156 treats a
//! mid-line `--boundary` as one); nothing panics and nothing recurses (callers that walk
//! nested parts stop at [`MAX_DEPTH`]); every slice returned lies inside the input.

mod encode;
mod entity;
mod params;
mod scan;
mod transfer;

pub use encode::{
    base64_lines, boundary, encode_param, encode_prefixed_subject, encode_text_header,
    is_seven_bit_safe, quoted_printable, quoted_string, to_latin1,
};
pub use entity::Entity;
pub use params::{file_name, ContentType};
pub use scan::{
    all, canonical_crlf, fields, find, first, first_value, normalize_crlf, scan_fields,
    split_header_body, split_multipart, unfold, valid_boundary, Multipart, RawField,
};
pub use transfer::{decode_base64, decode_qp, decode_transfer};

/// Deepest MIME nesting that the part walkers descend to; deeper input is refused or kept
/// as is rather than risking the stack.
pub const MAX_DEPTH: usize = 32;

/// A header value shortened for error messages (80 characters at most).
pub fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping() {
        assert_eq!(clip("short"), "short");
        let long = "è".repeat(100);
        let c = clip(&long);
        assert_eq!(c.chars().count(), 81);
        assert!(c.ends_with('…'));
    }
}
