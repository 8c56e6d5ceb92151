// SPDX-License-Identifier: GPL-3.0-or-later
//! The raw MIME scanner (src/message/mime): header fields, parameters, multipart splitting
//! and transfer decodings on arbitrary bytes. Besides not panicking, every slice handed back
//! must lie inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec::message::mime::{self, ContentType, Entity};

fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

/// Walks `raw` as a MIME tree down to the depth limit, like the classifier and breve do.
fn walk(raw: &[u8], depth: usize) {
    let e = Entity::parse(raw);
    assert!(inside(raw, e.body));
    for f in &e.fields {
        assert!(inside(raw, f.value));
        let _ = f.unfolded();
    }
    let _ = (e.mime_type(), e.file_name(), e.head());
    let cte = e.value("content-transfer-encoding");
    let _ = mime::decode_transfer(e.body, cte.as_deref());
    if let Some(ct) = &e.content_type {
        let _ = (ct.type_subtype(), ct.param("name"), ct.text_param("name"));
    }
    if depth >= mime::MAX_DEPTH || !e.is_multipart() {
        return;
    }
    let Some(b) = e.boundary().filter(|b| mime::valid_boundary(b)) else {
        return;
    };
    if let Some(mp) = mime::split_multipart(e.body, &b) {
        let _ = mp.is_closed();
        for part in mp.parts {
            assert!(inside(e.body, part));
            walk(part, depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let crlf = mime::normalize_crlf(data);
    let _ = mime::canonical_crlf(data);
    walk(data, 0);
    walk(&crlf, 0);
    let _ = mime::fields(data);
    let _ = ContentType::parse(data);
    let _ = mime::decode_base64(data);
    let _ = mime::decode_qp(data);
    let text = String::from_utf8_lossy(data);
    let _ = mime::encode_text_header("Subject", &text);
    let _ = mime::encode_prefixed_subject("POSTA CERTIFICATA: ", &text);
    let _ = mime::quoted_string(&text);
    let _ = mime::encode_param("filename", &text);
    let _ = mime::unfold(data);
});
