// SPDX-License-Identifier: GPL-3.0-or-later
//! One MIME entity (a message or a body part) read for walking: header fields, body, and
//! the first `Content-Type` and `Content-Disposition`.

use super::params::{file_name, ContentType};
use super::scan::{first, first_value, scan_fields, split_header_body, RawField};

/// A message or body part split at its header.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    /// The whole entity.
    pub raw: &'a [u8],
    /// Every line of the header block (see [`scan_fields`]), so that fields can be copied
    /// exactly.
    pub fields: Vec<RawField<'a>>,
    /// Everything after the empty line ending the header (empty without one).
    pub body: &'a [u8],
    /// The first `Content-Type`; `None` when absent or malformed (RFC 2045 §5.2: then
    /// `text/plain`).
    pub content_type: Option<ContentType>,
    /// The first `Content-Disposition`, when present and readable.
    pub disposition: Option<ContentType>,
}

impl<'a> Entity<'a> {
    pub fn parse(raw: &'a [u8]) -> Entity<'a> {
        let (header, body) = split_header_body(raw);
        let fields = scan_fields(header);
        let parsed = |name: &str| first(&fields, name).and_then(|f| ContentType::parse(f.value));
        let content_type = parsed("content-type");
        let disposition = parsed("content-disposition");
        Entity {
            raw,
            fields,
            body,
            content_type,
            disposition,
        }
    }

    /// Header block and empty line: everything before the body.
    pub fn head(&self) -> &'a [u8] {
        &self.raw[..self.raw.len() - self.body.len()]
    }

    /// Lower-case `type/subtype`, `text/plain` by default (RFC 2045 §5.2).
    pub fn mime_type(&self) -> &str {
        self.content_type
            .as_ref()
            .map_or("text/plain", |c| c.mime.as_str())
    }

    pub fn is_multipart(&self) -> bool {
        self.content_type
            .as_ref()
            .is_some_and(ContentType::is_multipart)
    }

    /// See [`ContentType::boundary`].
    pub fn boundary(&self) -> Option<Vec<u8>> {
        self.content_type.as_ref().and_then(ContentType::boundary)
    }

    /// See [`file_name`].
    pub fn file_name(&self) -> Option<String> {
        file_name(self.content_type.as_ref(), self.disposition.as_ref())
    }

    /// The unfolded value of the first field called `name`.
    pub fn value(&self, name: &str) -> Option<String> {
        first_value(&self.fields, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_view() {
        let raw = b"Content-Type: Application/PDF; name=a.pdf\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename*=utf-8''b%C3%A8.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBE\r\n";
        let e = Entity::parse(raw);
        assert_eq!(e.mime_type(), "application/pdf");
        assert_eq!(e.file_name().as_deref(), Some("bè.pdf"));
        assert_eq!(
            e.value("content-transfer-encoding").as_deref(),
            Some("base64")
        );
        assert_eq!(e.body, b"JVBE\r\n");
        assert_eq!(e.head().len() + e.body.len(), raw.len());
        assert!(!e.is_multipart());

        let e = Entity::parse(b"Content-Type: /\r\n\r\nx");
        assert_eq!(e.mime_type(), "text/plain");
        assert_eq!(e.content_type, None);
        let e = Entity::parse(b"Content-Type: multipart/mixed; boundary=b");
        assert!(e.is_multipart());
        assert_eq!(e.boundary().as_deref(), Some(&b"b"[..]));
        assert_eq!(e.body, b"");
        assert_eq!(e.head(), e.raw);
    }
}
