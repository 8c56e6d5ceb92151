// SPDX-License-Identifier: GPL-3.0-or-later
//! S/MIME assembly of generated messages (spec §2.1): the signed entity and its detached
//! CMS signature as `multipart/signed`, in the layout real providers use.

use super::{cms_sign, SignError, Signer};
use crate::message::mime;
use crate::message::time::Instant;

/// Media type of the signature part. Aruba and Namirial write the `x-` form (spec §2.1).
pub const SIGNATURE_TYPE: &str = "application/x-pkcs7-signature";

/// Spare capacity an entity given to [`seal_owned`] needs for the `multipart/signed`
/// framing and the base64 signature (real signatures: 3–10 KB).
pub const SEAL_HEADROOM: usize = 32 * 1024;

/// A signed body with the top-level header fields that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// `MIME-Version` and `Content-Type` (name, value).
    pub headers: Vec<(String, String)>,
    /// The `multipart/signed` body.
    pub body: Vec<u8>,
}

/// Signs `entity` (the exact bytes of the `multipart/mixed` entity, CRLF) and returns the
/// two top-level content header fields and the `multipart/signed` body.
pub fn seal(signer: &dyn Signer, entity: &[u8], at: Instant) -> Result<Sealed, SignError> {
    seal_owned(signer, entity.to_vec(), at)
}

/// As [`seal`], taking the entity: the `multipart/signed` body is built around it in its
/// own buffer (the entity is moved towards the end once, never copied to a second one).
/// Reserve [`SEAL_HEADROOM`] bytes of spare capacity in `entity` to spare the reallocation.
pub fn seal_owned(signer: &dyn Signer, entity: Vec<u8>, at: Instant) -> Result<Sealed, SignError> {
    let p7s = cms_sign::sign_detached(signer, &entity, at)?;
    let sig = mime::base64_lines(&p7s);
    let b = mime::boundary(&[&entity]);
    let before = format!("This is an S/MIME signed message\r\n\r\n--{b}\r\n");
    let after = format!(
        "\r\n--{b}\r\nContent-Type: {SIGNATURE_TYPE}; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
    );
    let end = format!("\r\n--{b}--\r\n");
    let mut body = entity;
    let len = body.len();
    body.reserve(before.len() + after.len() + sig.len() + end.len());
    body.resize(len + before.len(), 0);
    body.copy_within(0..len, before.len());
    body[..before.len()].copy_from_slice(before.as_bytes());
    body.extend_from_slice(after.as_bytes());
    body.extend_from_slice(&sig);
    body.extend_from_slice(end.as_bytes());
    let headers = vec![
        ("MIME-Version".to_string(), "1.0".to_string()),
        (
            "Content-Type".to_string(),
            format!(
                "multipart/signed; protocol=\"{SIGNATURE_TYPE}\"; micalg={};\r\n boundary=\"{b}\"",
                signer.digest().micalg()
            ),
        ),
    ];
    Ok(Sealed { headers, body })
}
