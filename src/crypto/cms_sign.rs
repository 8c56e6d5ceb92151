// SPDX-License-Identifier: GPL-3.0-or-later
//! Detached CMS `SignedData` for S/MIME `multipart/signed` (spec §2.1), and the attached
//! variant for `.p7m` files (the signed LDIF of the provider index, spec §7.2).
//!
//! The structure is assembled by hand with the `cms` and `der` types rather than with
//! `cms::builder`, so that every field is the one real PEC providers emit:
//!
//! * `SignedData` v1, `encapContentInfo` = id-data without `eContent` (detached);
//! * one `SignerInfo` v1, `sid` = issuerAndSerialNumber, `digestAlgorithm` SHA-1, SHA-256 or
//!   SHA-384 without parameters; `signatureAlgorithm` rsaEncryption with NULL parameters for
//!   RSA keys (PKCS#1 v1.5, RFC 3370 §3.2), ecdsa-with-SHA256/384 without parameters for
//!   ECDSA keys (RFC 5753 §7.2, RFC 5758 §3.2), the signature then a DER `ECDSA-Sig-Value`;
//! * signed attributes contentType, signingTime, messageDigest and smimeCapabilities
//!   (aes256-cbc, aes128-cbc, des-ede3-cbc, as Aruba does);
//! * certificates = the signer certificate plus [`Signer::chain_der`].
//!
//! The only private-key operation is one [`Signer::sign`] call over the DER of the signed
//! attributes (a `SET OF`, RFC 5652 §5.4), whatever the key type.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode, Tag};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::Certificate;

use super::{DigestAlg, KeyKind, SignError, Signer};
use crate::message::time::Instant;

/// Signs `content` (already canonicalised: the exact octets of the signed MIME part) and
/// returns the DER of a detached CMS `ContentInfo`/`SignedData`, ready to be base64-encoded
/// as `smime.p7s`. `at` becomes the signingTime attribute.
pub fn sign_detached(
    signer: &dyn Signer,
    content: &[u8],
    at: Instant,
) -> Result<Vec<u8>, SignError> {
    sign(signer, content, at, false)
}

/// As [`sign_detached`], but with `content` encapsulated (`eContent` present): the DER of a
/// `.p7m` (`application/pkcs7-mime; smime-type=signed-data`), e.g. our signed LDIF record
/// for the provider index (spec §7.2).
pub fn sign_attached(
    signer: &dyn Signer,
    content: &[u8],
    at: Instant,
) -> Result<Vec<u8>, SignError> {
    sign(signer, content, at, true)
}

fn sign(
    signer: &dyn Signer,
    content: &[u8],
    at: Instant,
    attached: bool,
) -> Result<Vec<u8>, SignError> {
    let digest = signer.digest();
    let signature_algorithm = signature_algorithm(signer.key_kind()?, digest);
    let cert = Certificate::from_der(signer.certificate_der())
        .map_err(|e| SignError::Certificate(format!("cannot parse signer certificate: {e}")))?;
    let certificates = certificate_set(&cert, signer.chain_der())?;

    let signed_attrs = signed_attributes(&digest.digest(content), at)?;
    let to_be_signed = signed_attrs
        .to_der()
        .map_err(cms_err("signed attributes"))?;
    let signature = signer.sign(digest, &to_be_signed)?;

    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: digest_algorithm(digest),
        signed_attrs: Some(signed_attrs),
        signature_algorithm,
        signature: OctetString::new(signature).map_err(cms_err("signature"))?,
        unsigned_attrs: None,
    };
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![digest_algorithm(digest)])
            .map_err(cms_err("digest algorithms"))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: if attached {
                Some(Any::new(Tag::OctetString, content).map_err(cms_err("content"))?)
            } else {
                None
            },
        },
        certificates: Some(certificates),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer_info]).map_err(cms_err("signer infos"))?,
    };
    let content_info = ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: Any::encode_from(&signed_data).map_err(cms_err("signed data"))?,
    };
    content_info.to_der().map_err(cms_err("content info"))
}

fn cms_err(what: &'static str) -> impl Fn(der::Error) -> SignError {
    move |e| SignError::Cms(format!("cannot encode {what}: {e}"))
}

/// The SignerInfo `signatureAlgorithm` of a key type and digest.
fn signature_algorithm(kind: KeyKind, digest: DigestAlg) -> AlgorithmIdentifierOwned {
    match kind {
        KeyKind::Rsa { .. } => AlgorithmIdentifierOwned {
            oid: rfc5912::RSA_ENCRYPTION,
            parameters: Some(Any::from(der::asn1::Null)),
        },
        KeyKind::Ecdsa(_) => AlgorithmIdentifierOwned {
            oid: match digest {
                // ecdsa-with-SHA1 (RFC 3279 §2.2.3); refused by KeyKind::check_digest before.
                DigestAlg::Sha1 => const_oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.1"),
                DigestAlg::Sha256 => rfc5912::ECDSA_WITH_SHA_256,
                DigestAlg::Sha384 => rfc5912::ECDSA_WITH_SHA_384,
            },
            parameters: None,
        },
    }
}

fn digest_algorithm(digest: DigestAlg) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: digest.oid(),
        parameters: None,
    }
}

/// The signer certificate and the chain, without duplicates (a DER `SET OF` cannot hold
/// two equal elements).
fn certificate_set(leaf: &Certificate, chain: &[Vec<u8>]) -> Result<CertificateSet, SignError> {
    let mut certs = vec![leaf.clone()];
    for (i, der) in chain.iter().enumerate() {
        let cert = Certificate::from_der(der).map_err(|e| {
            SignError::Certificate(format!("cannot parse chain certificate #{}: {e}", i + 1))
        })?;
        if !certs.contains(&cert) {
            certs.push(cert);
        }
    }
    let choices: Vec<CertificateChoices> = certs
        .into_iter()
        .map(CertificateChoices::Certificate)
        .collect();
    CertificateSet::try_from(choices).map_err(cms_err("certificates"))
}

/// contentType, signingTime, messageDigest, smimeCapabilities; `SetOfVec` keeps them in
/// DER order.
fn signed_attributes(message_digest: &[u8], at: Instant) -> Result<SignedAttributes, SignError> {
    let content_type = Any::encode_from(&rfc5911::ID_DATA).map_err(cms_err("content type"))?;
    let digest = Any::new(Tag::OctetString, message_digest).map_err(cms_err("message digest"))?;
    let capabilities: Vec<AlgorithmIdentifierOwned> = [
        rfc5911::ID_AES_256_CBC,
        rfc5911::ID_AES_128_CBC,
        rfc5911::DES_EDE_3_CBC,
    ]
    .into_iter()
    .map(|oid| AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    })
    .collect();
    let capabilities = Any::encode_from(&capabilities).map_err(cms_err("smime capabilities"))?;

    let attrs = vec![
        attribute(rfc5911::ID_CONTENT_TYPE, content_type)?,
        attribute(rfc5911::ID_SIGNING_TIME, signing_time(at)?)?,
        attribute(rfc5911::ID_MESSAGE_DIGEST, digest)?,
        attribute(rfc5911::SMIME_CAPABILITIES, capabilities)?,
    ];
    SetOfVec::try_from(attrs).map_err(cms_err("signed attributes"))
}

fn attribute(oid: const_oid::ObjectIdentifier, value: Any) -> Result<Attribute, SignError> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).map_err(cms_err("attribute"))?,
    })
}

/// RFC 5652 §11.3: UTCTime for 1950–2049, GeneralizedTime otherwise. Encoded from the
/// formatted string because `der::asn1::UtcTime` starts at 1970.
fn signing_time(at: Instant) -> Result<Any, SignError> {
    use chrono::Datelike;
    let t = at.utc();
    let (tag, text) = if (1950..=2049).contains(&t.year()) {
        (Tag::UtcTime, t.format("%y%m%d%H%M%SZ").to_string())
    } else if (0..=9999).contains(&t.year()) {
        (Tag::GeneralizedTime, t.format("%Y%m%d%H%M%SZ").to_string())
    } else {
        return Err(SignError::Cms(format!(
            "signing time \"{}\" out of range",
            t.to_rfc3339()
        )));
    };
    Any::new(tag, text.into_bytes()).map_err(cms_err("signing time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Tagged;

    #[test]
    fn signing_time_encodings() {
        let utc = signing_time(Instant::from_unix(1_748_945_472)).unwrap();
        assert_eq!(utc.tag(), Tag::UtcTime);
        assert_eq!(utc.value(), b"250603101112Z");
        // 2050-01-01T00:00:00Z
        let gen = signing_time(Instant::from_unix(2_524_608_000)).unwrap();
        assert_eq!(gen.tag(), Tag::GeneralizedTime);
        assert_eq!(gen.value(), b"20500101000000Z");
        // 1960-01-01T00:00:00Z is still UTCTime
        let old = signing_time(Instant::from_unix(-315_619_200)).unwrap();
        assert_eq!(old.value(), b"600101000000Z");
    }

    #[test]
    fn attributes_are_der_sorted() {
        let attrs = signed_attributes(&[0u8; 32], Instant::from_unix(0)).unwrap();
        let encoded: Vec<Vec<u8>> = attrs.iter().map(|a| a.to_der().unwrap()).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        assert_eq!(attrs.len(), 4);
    }
}
