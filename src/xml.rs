// SPDX-License-Identifier: GPL-3.0-or-later
//! The gate every XML document from outside passes before it is parsed: ERDS evidences,
//! Trusted Lists, CSI files.
//!
//! None of them needs a document type declaration, an entity or an inclusion, and each of
//! them is a known way to make a parser read files, fetch URLs or expand a few bytes into
//! gigabytes. So a document carrying one is refused before any parser sees it, whatever the
//! parser would have done with it.

/// The largest XML document we read (a national Trusted List is a few hundred kilobytes; an
/// evidence a few tens).
pub const MAX_XML: usize = 16 * 1024 * 1024;

/// Why a document was refused at the gate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlGateError {
    #[error("xml document of {0} bytes is over the {MAX_XML} byte bound")]
    TooLarge(usize),
    #[error("xml document is not utf-8")]
    NotUtf8,
    #[error("xml document carries a document type declaration")]
    Doctype,
    #[error("xml document declares an entity")]
    Entity,
    #[error("xml document uses xinclude")]
    XInclude,
    #[error("xml document uses an external entity reference")]
    ExternalReference,
}

/// Checks that `raw` is a plain XML document: UTF-8 (a BOM allowed), within [`MAX_XML`],
/// with no `<!DOCTYPE`, no `<!ENTITY`, no XInclude namespace and no entity references other
/// than the five predefined ones and character references. Returns the text.
pub fn check_plain(raw: &[u8]) -> Result<&str, XmlGateError> {
    if raw.len() > MAX_XML {
        return Err(XmlGateError::TooLarge(raw.len()));
    }
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let text = std::str::from_utf8(raw).map_err(|_| XmlGateError::NotUtf8)?;
    // Markup declarations are case-sensitive in XML, but a lenient parser may not be: look
    // for them in any case.
    let upper = text.to_ascii_uppercase();
    if upper.contains("<!DOCTYPE") {
        return Err(XmlGateError::Doctype);
    }
    if upper.contains("<!ENTITY") {
        return Err(XmlGateError::Entity);
    }
    if text.contains("http://www.w3.org/2001/XInclude")
        || text.contains("http://www.w3.org/2003/XInclude")
    {
        return Err(XmlGateError::XInclude);
    }
    // Outside CDATA sections, every `&` must start one of the predefined entities or a
    // character reference.
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<']) {
        let tail = &rest[at..];
        if let Some(cdata) = tail.strip_prefix("<![CDATA[") {
            match cdata.find("]]>") {
                Some(end) => {
                    rest = &cdata[end + 3..];
                    continue;
                }
                None => return Ok(text),
            }
        }
        if tail.starts_with('&') && !predefined_reference(tail) {
            return Err(XmlGateError::ExternalReference);
        }
        rest = &tail[1..];
    }
    Ok(text)
}

fn predefined_reference(tail: &str) -> bool {
    let Some(end) = tail.find(';') else {
        return false;
    };
    let name = &tail[1..end];
    if let Some(num) = name.strip_prefix('#') {
        let (digits, radix) = match num.strip_prefix('x') {
            Some(hex) => (hex, 16),
            None => (num, 10),
        };
        return !digits.is_empty() && u32::from_str_radix(digits, radix).is_ok();
    }
    matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_document_passes() {
        let doc =
            "<?xml version=\"1.0\"?><a x=\"&amp;&#233;&#xE9;\">&lt;b&gt; <![CDATA[&nope;]]></a>";
        assert_eq!(check_plain(doc.as_bytes()), Ok(doc));
        let bom = [b"\xEF\xBB\xBF".as_slice(), b"<a/>"].concat();
        assert_eq!(check_plain(&bom), Ok("<a/>"));
    }

    #[test]
    fn declarations_entities_and_inclusions_are_refused() {
        let cases: [(&str, XmlGateError); 7] = [
            ("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", XmlGateError::Doctype),
            ("<!doctype a SYSTEM \"file:///etc/passwd\"><a/>", XmlGateError::Doctype),
            ("<a><!ENTITY x SYSTEM \"http://x/\"></a>", XmlGateError::Entity),
            (
                "<a xmlns:xi=\"http://www.w3.org/2001/XInclude\"><xi:include href=\"/etc/passwd\"/></a>",
                XmlGateError::XInclude,
            ),
            ("<a>&lol9;</a>", XmlGateError::ExternalReference),
            ("<a>& amp;</a>", XmlGateError::ExternalReference),
            ("<a>&#xZZ;</a>", XmlGateError::ExternalReference),
        ];
        for (doc, want) in cases {
            assert_eq!(check_plain(doc.as_bytes()), Err(want), "{doc}");
        }
        assert_eq!(check_plain(b"<a>\xFF</a>"), Err(XmlGateError::NotUtf8));
        let big = vec![b' '; MAX_XML + 1];
        assert_eq!(check_plain(&big), Err(XmlGateError::TooLarge(MAX_XML + 1)));
    }
}
