// SPDX-License-Identifier: GPL-3.0-or-later
//! S/MIME assembly of generated messages (spec §2.1): the signed entity and its detached
//! CMS signature as `multipart/signed`, in the layout real providers use ([`Layout::Pec`]),
//! or in the one of ETSI EN 319 532-3 §6.2.1/§6.2.7 for REM messages ([`Layout::Rem`]).

use super::{cms_sign, SignError, Signer};
use crate::message::mime;
use crate::message::time::Instant;

/// Media type of the signature part. Aruba and Namirial write the `x-` form (spec §2.1).
pub const SIGNATURE_TYPE: &str = "application/x-pkcs7-signature";

/// Media type of the signature part of a REM message (EN 319 532-3 Table 3: the `protocol`
/// parameter "shall be" this one).
pub const REM_SIGNATURE_TYPE: &str = "application/pkcs7-signature";

/// How the `multipart/signed` framing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// PEC, as Aruba and Namirial write it (`application/x-pkcs7-signature`).
    #[default]
    Pec,
    /// REM (EN 319 532-3 Tables 3 and 12), as the ETSI and AgID examples write it:
    /// `application/pkcs7-signature`, the parameters folded on their own lines, a
    /// `Content-Description` on the signature part.
    Rem,
}

impl Layout {
    fn preamble(self) -> &'static str {
        match self {
            Layout::Pec => "This is an S/MIME signed message",
            Layout::Rem => "This is a multi-part message in MIME format.",
        }
    }

    fn signature_head(self) -> String {
        match self {
            Layout::Pec => format!(
                "Content-Type: {SIGNATURE_TYPE}; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
            ),
            Layout::Rem => format!(
                "Content-Type: {REM_SIGNATURE_TYPE}; name=smime.p7s;\r\n\tsmime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\nContent-Description: S/MIME Cryptographic Signature\r\n\r\n"
            ),
        }
    }

    fn content_type(self, micalg: &str, boundary: &str) -> String {
        match self {
            Layout::Pec => format!(
                "multipart/signed; protocol=\"{SIGNATURE_TYPE}\"; micalg={micalg};\r\n boundary=\"{boundary}\""
            ),
            Layout::Rem => format!(
                "multipart/signed; protocol=\"{REM_SIGNATURE_TYPE}\";\r\n\tmicalg={micalg};\r\n\tboundary=\"{boundary}\""
            ),
        }
    }
}

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
    seal_owned_as(signer, entity, at, Layout::Pec)
}

/// As [`seal_owned`], framed in `layout`.
pub fn seal_owned_as(
    signer: &dyn Signer,
    entity: Vec<u8>,
    at: Instant,
    layout: Layout,
) -> Result<Sealed, SignError> {
    let p7s = cms_sign::sign_detached(signer, &entity, at)?;
    let sig = mime::base64_lines(&p7s);
    let b = mime::boundary(&[&entity]);
    let before = format!("{}\r\n\r\n--{b}\r\n", layout.preamble());
    let after = format!("\r\n--{b}\r\n{}", layout.signature_head());
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
            layout.content_type(signer.digest().micalg(), &b),
        ),
    ];
    Ok(Sealed { headers, body })
}
