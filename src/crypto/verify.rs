// SPDX-License-Identifier: GPL-3.0-or-later
//! Verification of incoming S/MIME signatures (spec §2.1, §5.2 items 1–3, §10, §12.2).
//!
//! OpenSSL does the cryptography: it reads BER (the RustCrypto `cms` crate cannot) and
//! checks the signature over the signed attributes and the content digest. Everything
//! around it is done here, so that each decision is explicit:
//!
//! * the MIME split of `multipart/signed` is the crate's own line-based scan
//!   ([`crate::message::mime`], delimiters only at the start of a line), and the first body
//!   part is canonicalised to CRLF line ends exactly as RFC 5751 prescribes before it is
//!   hashed;
//! * the signer certificate is the one of the CMS certificates whose issuer and serial number
//!   (or subject key identifier) match the single `SignerInfo`; OpenSSL is then told to use
//!   that certificate and no other (`NOINTERN`), so what we check against the provider index
//!   is exactly the key that verified the signature;
//! * trust is the provider index ([`TrustSet`]: SHA-1 of the DER, then byte comparison), not
//!   a CA bundle, so the chain is not verified by default. [`ChainPolicy`] adds an X.509 path
//!   check (national PEC CA, name constraints) at the verification instant.
//!
//! Nothing here panics on hostile input; sizes are bounded ([`MAX_MESSAGE_BYTES`],
//! [`MAX_SIGNATURE_BYTES`]) and the ASN.1 walker (`super::asn1`) has a depth limit.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509NameRef, X509PurposeId, X509Ref, X509StoreContext, X509};

use super::asn1;
pub use super::error::VerifyError;
use super::revocation::{Answer, RevocationChecker, RevocationMode, RevocationStatus};
use crate::index::{sha1_hex_upper, ProviderInfo, TrustSet};
use crate::message::mime::{self, clip, Entity};
use crate::message::time::Instant;

/// Largest message we try to verify: above the seed providers' 100 MB submissions carried
/// in an envelope, and above `filter.max_size`'s default (160 MB), which bounds what the
/// reception and delivery points receive.
pub const MAX_MESSAGE_BYTES: usize = 192 * 1024 * 1024;

/// Largest detached signature (`smime.p7s`, decoded). Real ones are 3–10 KB.
pub const MAX_SIGNATURE_BYTES: usize = 1024 * 1024;

/// How the signature was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmimeForm {
    /// `multipart/signed` with a detached `application/(x-)pkcs7-signature` (what PEC uses).
    MultipartSigned,
    /// `application/(x-)pkcs7-mime; smime-type=signed-data` with the content inside the CMS.
    OpaqueSignedData,
}

/// Outcome of the optional X.509 path check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStatus {
    /// No anchors were given.
    NotChecked,
    /// The chain verifies at the verification instant.
    Valid,
    /// The chain does not verify (reason); reported, or an error when enforced.
    Invalid(String),
}

/// X.509 path validation of the signer certificate, on top of the provider index: the
/// chain to the configured anchors at the verification instant (OpenSSL also applies the
/// CAs' name constraints, so AgID CA1's list of provider domains binds the signer's
/// address), the emailProtection extended key usage, and the revocation status of every
/// certificate below the anchor ([`RevocationChecker`]).
#[derive(Debug, Clone, Default)]
pub struct ChainPolicy {
    /// DER of the trust anchors for today's providers (AgID CA1, or its root, Actalis
    /// Authentication Root CA). An anchor need not be self-signed: the chain may end at an
    /// intermediate given here. The intermediates come from the CMS.
    pub anchors: Vec<Vec<u8>>,
    /// DER of the anchors for archived mail (DigitPA CA1 and its root): the same checks,
    /// except that a signer certificate without an extendedKeyUsage extension is accepted
    /// (the DigitPA profile had none). One with the extension must still list
    /// emailProtection.
    pub archive_anchors: Vec<Vec<u8>>,
    /// Turn a failing chain into [`VerifyError::Chain`] (and a revoked certificate into
    /// [`VerifyError::Revoked`]); otherwise it is only reported in [`Verified::chain`].
    pub enforce: bool,
    /// Revocation checking; `None`: not checked.
    pub revocation: Option<Arc<RevocationChecker>>,
}

impl ChainPolicy {
    /// Anchors from a PEM bundle (e.g. `/etc/ssl/certs/ca-certificates.crt`).
    pub fn from_pem(pem: &[u8], enforce: bool) -> Result<Self, VerifyError> {
        Ok(ChainPolicy {
            anchors: pem_ders(pem)?,
            enforce,
            ..ChainPolicy::default()
        })
    }

    /// Adds the archive anchors of a PEM bundle.
    pub fn with_archive_pem(mut self, pem: &[u8]) -> Result<Self, VerifyError> {
        self.archive_anchors.extend(pem_ders(pem)?);
        Ok(self)
    }

    /// Checks revocation with `checker`.
    pub fn with_revocation(mut self, checker: Arc<RevocationChecker>) -> Self {
        self.revocation = Some(checker);
        self
    }
}

fn pem_ders(pem: &[u8]) -> Result<Vec<Vec<u8>>, VerifyError> {
    let certs = X509::stack_from_pem(pem)
        .map_err(|e| VerifyError::Chain(format!("anchors: {}", ossl(&e))))?;
    let mut ders = Vec::with_capacity(certs.len());
    for c in certs {
        ders.push(c.to_der().map_err(|e| internal(&e))?);
    }
    Ok(ders)
}

/// What to verify against.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The provider index. `None` verifies the signature and the validity period but does
    /// not decide whether the signer is a PEC provider ([`Verified::trusted`] is false);
    /// only `pec verify` without `--trust` uses that.
    pub trust: Option<&'a TrustSet>,
    /// Instant at which the signer certificate must be valid.
    pub at: Instant,
    /// Optional X.509 path check.
    pub chain: Option<&'a ChainPolicy>,
}

impl<'a> VerifyOptions<'a> {
    pub fn new(trust: &'a TrustSet, at: Instant) -> Self {
        VerifyOptions {
            trust: Some(trust),
            at,
            chain: None,
        }
    }

    /// Signature and validity only, no provider-index decision.
    pub fn without_index(at: Instant) -> Self {
        VerifyOptions {
            trust: None,
            at,
            chain: None,
        }
    }

    pub fn with_chain(mut self, chain: &'a ChainPolicy) -> Self {
        self.chain = Some(chain);
        self
    }
}

/// A verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// DER of the signer certificate, as carried in the CMS.
    pub signer_der: Vec<u8>,
    /// Upper-case hex SHA-1 of `signer_der` (`providerCertificateHash`).
    pub signer_sha1: String,
    /// Subject, one line, RFC 2253 order (`CN=…, O=…, C=IT`).
    pub signer_subject: String,
    /// First `rfc822Name` of the subjectAltName (the provider's service address).
    pub signer_email: Option<String>,
    pub not_before: Instant,
    pub not_after: Instant,
    /// The `signingTime` signed attribute, when present.
    pub signing_time: Option<Instant>,
    /// Digest of the SignerInfo: `sha1`, `sha224`, `sha256`, `sha384`, `sha512`.
    pub digest: String,
    /// The signed MIME entity: for `multipart/signed` the first body part with CRLF line
    /// ends, byte for byte what was hashed; for opaque signed-data the encapsulated content.
    /// Verified with [`verify_smime_shared`], a slice of the received data when that part
    /// is already CRLF (no copy); otherwise its own buffer.
    pub content: Bytes,
    /// Provider record of the signer, when the index knows it.
    pub provider: Option<ProviderInfo>,
    /// Whether the signer was found in the provider index (false only when verified with
    /// [`VerifyOptions::without_index`]).
    pub trusted: bool,
    pub chain: ChainStatus,
    /// Revocation status of the chain (checked with a [`ChainPolicy`] that has a
    /// [`RevocationChecker`], when the chain verifies).
    pub revocation: RevocationStatus,
    pub form: SmimeForm,
}

/// Verifies `raw` against the provider index at instant `at`, without X.509 path check.
pub fn verify_smime(raw: &[u8], trust: &TrustSet, at: Instant) -> Result<Verified, VerifyError> {
    verify_smime_with(raw, &VerifyOptions::new(trust, at))
}

/// As [`verify_smime`], plus the X.509 path check of `chain` at `at`.
pub fn verify_smime_with_chain(
    raw: &[u8],
    trust: &TrustSet,
    at: Instant,
    chain: &ChainPolicy,
) -> Result<Verified, VerifyError> {
    verify_smime_with(raw, &VerifyOptions::new(trust, at).with_chain(chain))
}

/// The general form. Order of the checks: structure, signature (content digest, then the
/// signature itself), provider index, validity at `at`, signing time, chain.
///
/// The `signingTime` attribute, when present, must lie within the signer certificate's
/// validity; it is reported but not compared with `at` (it is the signer's own claim, and
/// archived mail is verified at a chosen instant).
pub fn verify_smime_with(raw: &[u8], opts: &VerifyOptions<'_>) -> Result<Verified, VerifyError> {
    verify(raw, None, opts)
}

/// As [`verify_smime_with`] on data held in a [`Bytes`]: [`Verified::content`] shares it
/// (a slice, no copy) when the signed entity needs no CRLF conversion, which is the case
/// of every message a mail server relays (Postfix sends CRLF lines).
pub fn verify_smime_shared(raw: &Bytes, opts: &VerifyOptions<'_>) -> Result<Verified, VerifyError> {
    verify(raw, Some(raw), opts)
}

/// `part` of `whole` as a slice sharing its buffer, or a copy when `part` lies elsewhere.
pub fn share(whole: &Bytes, part: &[u8]) -> Bytes {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let (p, q) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
    if part.is_empty() {
        Bytes::new()
    } else if start <= p && q <= end {
        whole.slice(p - start..q - start)
    } else {
        Bytes::copy_from_slice(part)
    }
}

fn verify(
    raw: &[u8],
    shared: Option<&Bytes>,
    opts: &VerifyOptions<'_>,
) -> Result<Verified, VerifyError> {
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(VerifyError::TooLarge {
            size: raw.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let extracted = extract(raw)?;
    let mut cms = CmsContentInfo::from_der(&extracted.cms).map_err(|e| {
        VerifyError::Malformed(format!(
            "signature is not a cms/pkcs#7 structure: {}",
            ossl(&e)
        ))
    })?;
    // OpenSSL re-encodes what it parsed with definite lengths; we read the fields OpenSSL
    // does not expose (SignerInfo, attributes, certificates) from that encoding.
    let der = cms.to_der().map_err(|e| {
        VerifyError::Malformed(format!("cms structure cannot be re-encoded: {}", ossl(&e)))
    })?;
    let sd = asn1::signed_data(&der)?;

    let content = match extracted.form {
        SmimeForm::MultipartSigned => {
            if sd.econtent.is_some() {
                return Err(VerifyError::Malformed(
                    "multipart/signed whose cms also encapsulates content".into(),
                ));
            }
            extracted.content
        }
        SmimeForm::OpaqueSignedData => Cow::Owned(sd.econtent.clone().ok_or_else(|| {
            VerifyError::Malformed("signed-data without encapsulated content".into())
        })?),
    };

    let si = match sd.signers.as_slice() {
        [one] => one,
        [] => return Err(VerifyError::Malformed("no signerinfo in the cms".into())),
        many => return Err(VerifyError::MultipleSigners { count: many.len() }),
    };
    let (digest, md) = digest_for(&si.digest_oid)?;

    let signer = find_signer(&sd.certificates, &si.sid)?;

    // The content digest first, for a precise reason; OpenSSL checks it again below.
    if let Some(expected) = &si.message_digest {
        let actual = hash(md, &content).map_err(|e| internal(&e))?;
        if actual.as_ref() != expected.as_slice() {
            return Err(VerifyError::BadSignature(format!(
                "content altered: {digest} of the signed content \"{}\" does not match the messageDigest attribute \"{}\"",
                hex::encode(actual),
                hex::encode(expected)
            )));
        }
    } else if si.has_signed_attrs {
        return Err(VerifyError::Malformed(
            "signed attributes without messageDigest".into(),
        ));
    }

    let mut only_signer = Stack::new().map_err(|e| internal(&e))?;
    only_signer.push(signer.clone()).map_err(|e| internal(&e))?;
    let detached = match extracted.form {
        SmimeForm::MultipartSigned => Some(&*content),
        SmimeForm::OpaqueSignedData => None,
    };
    let flags = CMSOptions::BINARY
        | CMSOptions::NO_SIGNER_CERT_VERIFY
        | CMSOptions::NOINTERN
        | CMSOptions::NOCRL;
    cms.verify(Some(&only_signer), None, detached, None, flags)
        .map_err(|e| {
            VerifyError::BadSignature(format!(
                "signature does not verify with the signer certificate: {}",
                ossl(&e)
            ))
        })?;

    let signer_der = signer.to_der().map_err(|e| internal(&e))?;
    let signer_sha1 = sha1_hex_upper(&signer_der);
    let signer_subject = name_one_line(signer.subject_name());
    let not_before = asn1_time_instant(signer.not_before())?;
    let not_after = asn1_time_instant(signer.not_after())?;

    let (provider, trusted) = match opts.trust {
        Some(trust) => match trust.find(&signer_der) {
            Some(tc) => (tc.provider.clone(), true),
            None => {
                return Err(VerifyError::UnknownSigner {
                    sha1: signer_sha1,
                    subject: signer_subject,
                })
            }
        },
        None => (None, false),
    };

    if opts.at < not_before {
        return Err(VerifyError::NotYetValid {
            not_before,
            at: opts.at,
        });
    }
    if opts.at > not_after {
        return Err(VerifyError::Expired {
            not_after,
            at: opts.at,
        });
    }
    if let Some(st) = si.signing_time {
        if st < not_before || st > not_after {
            return Err(VerifyError::SigningTimeOutsideValidity {
                signing_time: st,
                not_before,
                not_after,
            });
        }
    }

    let (chain, revocation) = match opts.chain {
        None => (ChainStatus::NotChecked, RevocationStatus::NotChecked),
        Some(policy) => {
            let (status, revocation) = check_chain(&signer, &sd.certificates, policy, opts.at)?;
            if let (true, ChainStatus::Invalid(reason)) = (policy.enforce, &status) {
                return Err(VerifyError::Chain(reason.clone()));
            }
            (status, revocation)
        }
    };

    Ok(Verified {
        signer_email: first_email(&signer),
        signer_der,
        signer_sha1,
        signer_subject,
        not_before,
        not_after,
        signing_time: si.signing_time,
        digest: digest.to_string(),
        content: match (content, shared) {
            (Cow::Borrowed(part), Some(whole)) => share(whole, part),
            (Cow::Borrowed(part), None) => Bytes::copy_from_slice(part),
            (Cow::Owned(own), _) => Bytes::from(own),
        },
        provider,
        trusted,
        chain,
        revocation,
        form: extracted.form,
    })
}

struct Extracted<'a> {
    form: SmimeForm,
    /// Canonical signed content (multipart/signed only; empty for opaque): borrowed from
    /// the message when it is CRLF already.
    content: Cow<'a, [u8]>,
    /// The CMS bytes (DER or BER).
    cms: Vec<u8>,
}

fn is_pkcs7_signature(mime: &str) -> bool {
    mime.eq_ignore_ascii_case("application/pkcs7-signature")
        || mime.eq_ignore_ascii_case("application/x-pkcs7-signature")
}

fn extract(raw: &[u8]) -> Result<Extracted<'_>, VerifyError> {
    let top = Entity::parse(raw);
    let Some(ct_field) = mime::first(&top.fields, "content-type") else {
        return Err(VerifyError::NotSigned(
            "no content-type header at the top level".into(),
        ));
    };
    let Some(ct) = &top.content_type else {
        return Err(VerifyError::NotSigned(format!(
            "unreadable content-type \"{}\"",
            clip(&ct_field.unfolded())
        )));
    };
    match ct.mime.as_str() {
        "multipart/signed" => {
            if let Some(p) = ct.param("protocol") {
                if !is_pkcs7_signature(&p) {
                    return Err(VerifyError::NotSigned(format!(
                        "multipart/signed with protocol \"{}\" is not s/mime",
                        clip(&p)
                    )));
                }
            }
            let boundary = ct
                .boundary()
                .filter(|b| mime::valid_boundary(b))
                .ok_or_else(|| {
                    VerifyError::Malformed("multipart/signed without a valid boundary".into())
                })?;
            let mp = mime::split_multipart(top.body, &boundary).filter(|m| m.is_closed());
            let Some(mp) = mp else {
                return Err(VerifyError::Malformed(
                    "multipart/signed has no closing delimiter (truncated message?)".into(),
                ));
            };
            let [content, signature] = mp.parts.as_slice() else {
                return Err(VerifyError::Malformed(format!(
                    "multipart/signed has {} body parts, expected 2",
                    mp.parts.len()
                )));
            };
            let sig = Entity::parse(signature);
            if !is_pkcs7_signature(sig.mime_type()) {
                return Err(VerifyError::Malformed(format!(
                    "second part of multipart/signed is \"{}\", expected application/pkcs7-signature",
                    clip(sig.mime_type())
                )));
            }
            let cms = decode_cms(sig.body, sig.value("content-transfer-encoding").as_deref())?;
            if cms.len() > MAX_SIGNATURE_BYTES {
                return Err(VerifyError::TooLarge {
                    size: cms.len(),
                    limit: MAX_SIGNATURE_BYTES,
                });
            }
            Ok(Extracted {
                form: SmimeForm::MultipartSigned,
                content: mime::canonical_crlf(content),
                cms,
            })
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            if let Some(t) = ct.param("smime-type") {
                if !t.eq_ignore_ascii_case("signed-data") {
                    return Err(VerifyError::NotSigned(format!(
                        "{} with smime-type \"{}\" is not a signature",
                        ct.mime,
                        clip(&t)
                    )));
                }
            }
            let cms = decode_cms(top.body, top.value("content-transfer-encoding").as_deref())?;
            Ok(Extracted {
                form: SmimeForm::OpaqueSignedData,
                content: Cow::Borrowed(&[]),
                cms,
            })
        }
        other => Err(VerifyError::NotSigned(format!(
            "top-level content type is \"{}\", not multipart/signed or application/pkcs7-mime",
            clip(other)
        ))),
    }
}

/// The CMS bytes of a signature part: base64 unless the part says binary.
fn decode_cms(body: &[u8], cte: Option<&str>) -> Result<Vec<u8>, VerifyError> {
    let cte = cte.map(|c| c.trim().to_ascii_lowercase());
    match cte.as_deref() {
        Some("binary") | Some("8bit") => Ok(body.to_vec()),
        Some("base64") | Some("7bit") | None => mime::decode_base64(body).map_err(|e| {
            VerifyError::Malformed(format!("signature part is not valid base64: {e}"))
        }),
        Some(other) => Err(VerifyError::Malformed(format!(
            "signature part has content-transfer-encoding \"{}\"",
            clip(other)
        ))),
    }
}

fn digest_for(oid: &str) -> Result<(&'static str, MessageDigest), VerifyError> {
    // Some signers put the signature OID (sha1WithRSAEncryption…) in digestAlgorithm;
    // OpenSSL accepts that, and so do we.
    Ok(match oid {
        "1.3.14.3.2.26" | "1.2.840.113549.1.1.5" => ("sha1", MessageDigest::sha1()),
        "2.16.840.1.101.3.4.2.4" | "1.2.840.113549.1.1.14" => ("sha224", MessageDigest::sha224()),
        "2.16.840.1.101.3.4.2.1" | "1.2.840.113549.1.1.11" => ("sha256", MessageDigest::sha256()),
        "2.16.840.1.101.3.4.2.2" | "1.2.840.113549.1.1.12" => ("sha384", MessageDigest::sha384()),
        "2.16.840.1.101.3.4.2.3" | "1.2.840.113549.1.1.13" => ("sha512", MessageDigest::sha512()),
        other => return Err(VerifyError::UnsupportedDigest(other.to_string())),
    })
}

/// The single CMS certificate matching the signer identifier. Several different matching
/// certificates are refused: OpenSSL and we must agree on the key.
pub(super) fn find_signer(certs: &[X509], sid: &asn1::SignerId) -> Result<X509, VerifyError> {
    let mut found: Option<(X509, Vec<u8>)> = None;
    for c in certs {
        if !signer_matches(c, sid) {
            continue;
        }
        let der = c.to_der().map_err(|e| internal(&e))?;
        match &found {
            None => found = Some((c.clone(), der)),
            Some((_, d)) if *d == der => {}
            Some(_) => {
                return Err(VerifyError::Malformed(
                    "several different certificates match the signer identifier".into(),
                ))
            }
        }
    }
    found.map(|(c, _)| c).ok_or_else(|| {
        VerifyError::Malformed("the signer certificate is not included in the cms".into())
    })
}

fn signer_matches(cert: &X509Ref, sid: &asn1::SignerId) -> bool {
    match sid {
        asn1::SignerId::IssuerSerial { issuer, serial } => {
            let Ok(name) = openssl::x509::X509Name::from_der(issuer) else {
                return false;
            };
            let same_issuer = matches!(
                cert.issuer_name().try_cmp(&name),
                Ok(std::cmp::Ordering::Equal)
            );
            same_issuer && serial_equals(cert, serial)
        }
        asn1::SignerId::KeyId(ski) => cert
            .subject_key_id()
            .is_some_and(|k| k.as_slice() == ski.as_slice()),
    }
}

/// Compares the certificate serial with the content octets of an INTEGER.
fn serial_equals(cert: &X509Ref, content: &[u8]) -> bool {
    let Ok(bn) = cert.serial_number().to_bn() else {
        return false;
    };
    let Some(&first) = content.first() else {
        return false;
    };
    let negative = first & 0x80 != 0;
    let mut magnitude = content.to_vec();
    if negative {
        // Two's complement: invert and add one.
        for b in magnitude.iter_mut() {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    bn.is_negative() == negative && bn.to_vec() == magnitude[start..]
}

fn check_chain(
    signer: &X509,
    cms_certs: &[X509],
    policy: &ChainPolicy,
    at: Instant,
) -> Result<(ChainStatus, RevocationStatus), VerifyError> {
    if policy.anchors.is_empty() && policy.archive_anchors.is_empty() {
        let status = if policy.enforce {
            ChainStatus::Invalid("no trust anchors configured".into())
        } else {
            ChainStatus::NotChecked
        };
        return Ok((status, RevocationStatus::NotChecked));
    }
    let mut builder = X509StoreBuilder::new().map_err(|e| internal(&e))?;
    for (i, a) in policy
        .anchors
        .iter()
        .chain(&policy.archive_anchors)
        .enumerate()
    {
        let cert = X509::from_der(a).map_err(|e| {
            VerifyError::Chain(format!("anchor {i} is not a certificate: {}", ossl(&e)))
        })?;
        builder.add_cert(cert).map_err(|e| internal(&e))?;
    }
    let mut param = X509VerifyParam::new().map_err(|e| internal(&e))?;
    // Sets X509_V_FLAG_USE_CHECK_TIME too.
    param.set_time(at.unix());
    param
        .set_purpose(X509PurposeId::SMIME_SIGN)
        .map_err(|e| internal(&e))?;
    // An anchor may be an intermediate (AgID CA1 itself).
    param
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(|e| internal(&e))?;
    builder.set_param(&param).map_err(|e| internal(&e))?;
    let store = builder.build();

    let mut untrusted = Stack::new().map_err(|e| internal(&e))?;
    for c in cms_certs {
        untrusted.push(c.clone()).map_err(|e| internal(&e))?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| internal(&e))?;
    let (ok, reason, path) = ctx
        .init(&store, signer, &untrusted, |c| {
            let ok = c.verify_cert()?;
            let subject = c
                .current_cert()
                .map(|x| name_one_line(x.subject_name()))
                .unwrap_or_default();
            let path: Vec<X509> = c
                .chain()
                .map(|s| s.iter().map(|x| x.to_owned()).collect())
                .unwrap_or_default();
            Ok((
                ok,
                format!(
                    "{} (depth {}, \"{}\")",
                    c.error().error_string(),
                    c.error_depth(),
                    subject
                ),
                path,
            ))
        })
        .map_err(|e| internal(&e))?;
    if !ok {
        return Ok((ChainStatus::Invalid(reason), RevocationStatus::NotChecked));
    }
    // The anchor reached: an archive anchor lets a signer without extendedKeyUsage pass.
    let archive = path
        .last()
        .and_then(|top| top.to_der().ok())
        .is_some_and(|d| policy.archive_anchors.contains(&d) && !policy.anchors.contains(&d));
    let signer_der = signer.to_der().map_err(|e| internal(&e))?;
    match email_protection(&signer_der) {
        Some(true) => {}
        Some(false) => {
            return Ok((
                ChainStatus::Invalid(
                    "signer certificate: extendedKeyUsage without emailProtection".into(),
                ),
                RevocationStatus::NotChecked,
            ))
        }
        None if archive => {}
        None => {
            return Ok((
                ChainStatus::Invalid(
                    "signer certificate has no extendedKeyUsage (emailProtection required)".into(),
                ),
                RevocationStatus::NotChecked,
            ))
        }
    }
    let Some(checker) = policy
        .revocation
        .as_ref()
        .filter(|c| c.settings().mode != RevocationMode::Off)
    else {
        return Ok((ChainStatus::Valid, RevocationStatus::NotChecked));
    };
    revocation(checker, &path, policy.enforce, at)
}

/// The X.509 path check of a bare certificate (an evidence's signer, outside any CMS):
/// `untrusted` are the intermediates it carries (DER), `policy` the anchors, as for the
/// S/MIME signer of a message.
pub fn certificate_chain(
    cert_der: &[u8],
    untrusted: &[Vec<u8>],
    policy: &ChainPolicy,
    at: Instant,
) -> Result<ChainStatus, VerifyError> {
    let cert = X509::from_der(cert_der)
        .map_err(|e| VerifyError::Malformed(format!("certificate: {}", ossl(&e))))?;
    let mut others = Vec::with_capacity(untrusted.len());
    for d in untrusted {
        others.push(
            X509::from_der(d)
                .map_err(|e| VerifyError::Malformed(format!("certificate: {}", ossl(&e))))?,
        );
    }
    Ok(check_chain(&cert, &others, policy, at)?.0)
}

/// The revocation status of every certificate of `path` below the anchor, and the policy
/// applied to it.
fn revocation(
    checker: &RevocationChecker,
    path: &[X509],
    enforce: bool,
    at: Instant,
) -> Result<(ChainStatus, RevocationStatus), VerifyError> {
    let settings = checker.settings();
    let now = checker.now().unix();
    let grace = i64::try_from(settings.grace.as_secs()).unwrap_or(i64::MAX);
    let (mut good, mut unknown) = (Vec::new(), Vec::new());
    let mut beyond_grace = false;
    for pair in path.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        let subject = || name_one_line(cert.subject_name());
        match checker.check(cert, issuer, at) {
            Answer::Good { source } => good.push(source),
            Answer::Revoked {
                at: when,
                reason,
                source,
            } => {
                let err = VerifyError::Revoked {
                    subject: subject(),
                    at: when,
                    reason,
                    by: source,
                };
                if enforce {
                    return Err(err);
                }
                return Ok((
                    ChainStatus::Invalid(err.to_string()),
                    RevocationStatus::NotChecked,
                ));
            }
            Answer::NoSource => unknown.push(format!(
                "\"{}\": names no crl distribution point or ocsp responder",
                subject()
            )),
            Answer::Unknown { reason, since } => {
                if since.is_some_and(|s| now.saturating_sub(s) > grace) {
                    beyond_grace = true;
                }
                unknown.push(format!("\"{}\": {reason}", subject()));
            }
        }
    }
    if unknown.is_empty() {
        return Ok((
            ChainStatus::Valid,
            RevocationStatus::Good {
                source: good.join(", "),
            },
        ));
    }
    let reason = unknown.join("; ");
    let refusal = match settings.mode {
        RevocationMode::Strict => Some(format!("{reason} (strict revocation policy)")),
        _ if beyond_grace => Some(format!(
            "{reason} (unknown for longer than the grace window of {}s)",
            settings.grace.as_secs()
        )),
        _ => None,
    };
    match refusal {
        Some(r) if enforce => Err(VerifyError::RevocationUnknown(r)),
        Some(r) => Ok((
            ChainStatus::Invalid(format!("revocation status unknown: {r}")),
            RevocationStatus::NotChecked,
        )),
        None => Ok((ChainStatus::Valid, RevocationStatus::Unknown { reason })),
    }
}

/// Whether the certificate's extendedKeyUsage lists emailProtection; `None` without the
/// extension (or when the certificate cannot be read, which OpenSSL already refused).
fn email_protection(der: &[u8]) -> Option<bool> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE)?;
    let eku = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(ext.extn_value.as_bytes()).ok();
    Some(eku.is_some_and(|k| {
        k.0.contains(&const_oid::db::rfc5280::ID_KP_EMAIL_PROTECTION)
    }))
}

fn first_email(cert: &X509Ref) -> Option<String> {
    cert.subject_alt_names()?
        .iter()
        .find_map(|g| g.email().map(str::to_string))
}

/// RFC 2253 order (most specific first), `", "` separated, special characters escaped.
pub fn name_one_line(name: &X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let obj = e.object();
            let key = match obj.nid() {
                Nid::UNDEF => obj.to_string(),
                nid => nid
                    .short_name()
                    .map(str::to_string)
                    .unwrap_or_else(|_| obj.to_string()),
            };
            let value = match e.data().to_string() {
                Ok(s) => s,
                Err(_) => String::from_utf8_lossy(e.data().as_slice()).into_owned(),
            };
            format!("{key}={}", escape_dn_value(&value))
        })
        .collect();
    parts.reverse();
    parts.join(", ")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn asn1_time_instant(t: &openssl::asn1::Asn1TimeRef) -> Result<Instant, VerifyError> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).map_err(|e| internal(&e))?;
    let d = epoch.diff(t).map_err(|e| {
        VerifyError::Malformed(format!("unreadable certificate time: {}", ossl(&e)))
    })?;
    Ok(Instant::from_unix(
        i64::from(d.days) * 86_400 + i64::from(d.secs),
    ))
}

/// OpenSSL error reasons, one line.
fn ossl(e: &ErrorStack) -> String {
    let reasons: Vec<String> = e
        .errors()
        .iter()
        .map(|x| x.reason().unwrap_or("unknown reason").to_string())
        .collect();
    if reasons.is_empty() {
        "unknown openssl error".into()
    } else {
        reasons.join("; ")
    }
}

fn internal(e: &ErrorStack) -> VerifyError {
    VerifyError::Internal(ossl(e))
}

/// Test support: a synthetic provider key and certificate, and a signer of whole messages.
#[cfg(test)]
pub(crate) mod testing {
    use openssl::pkey::{PKey, Private};
    use openssl::x509::X509;

    /// Self-signed test signer, valid 2020..2040, with SAN email and SKI.
    pub(crate) fn signer(serial: u32) -> (X509, PKey<Private>) {
        use openssl::x509::extension::{SubjectAlternativeName, SubjectKeyIdentifier};
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("C", "IT").unwrap();
        name.append_entry_by_text("O", "Example PEC S.p.A.")
            .unwrap();
        name.append_entry_by_text("CN", "Posta Certificata Example")
            .unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(serial)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::from_str("20200101000000Z").unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::from_str("20400101000000Z").unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .email("posta-certificata@pec.example.it")
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        (b.build(), key)
    }

    pub(crate) fn wrap_base64(der: &[u8]) -> String {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        b.as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// `top_headers` (CRLF lines, without the Content-Type) + a `multipart/signed` whose
    /// first part is `content` (CRLF), detached SHA-256 signature.
    pub(crate) fn signed_message(
        top_headers: &str,
        content: &[u8],
        cert: &X509,
        key: &PKey<Private>,
    ) -> Vec<u8> {
        use openssl::cms::{CMSOptions, CmsContentInfo};
        // A correct signer signs the canonical (CRLF) form.
        let content = crate::message::mime::canonical_crlf(content);
        let content = &*content;
        let p7s = CmsContentInfo::sign(
            Some(cert),
            Some(key),
            None,
            Some(content),
            CMSOptions::DETACHED | CMSOptions::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap();
        let mut m = top_headers.as_bytes().to_vec();
        m.extend_from_slice(b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg=sha-256; boundary=\"----SIG\"\r\n\r\nThis is an S/MIME signed message\r\n\r\n------SIG\r\n");
        m.extend_from_slice(content);
        m.extend_from_slice(b"\r\n------SIG\r\nContent-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n");
        m.extend_from_slice(wrap_base64(&p7s).as_bytes());
        m.extend_from_slice(b"\r\n\r\n------SIG--\r\n");
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Instant {
        Instant::parse_cli(s).unwrap()
    }

    /// Tiny deterministic PRNG (xorshift) for garbage inputs.
    fn garbage(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn hostile_inputs_are_refused_without_panic() {
        let trust = TrustSet::new();
        let now = at("2025-01-01");
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\n\n\n".to_vec(),
            b"Content-Type: multipart/signed\n\n".to_vec(),
            b"Content-Type: multipart/signed; boundary=\"\"\n\n--\n".to_vec(),
            // Truncated multipart/signed: no signature part, no close delimiter.
            b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\n\n--b\nContent-Type: text/plain\n\nhello\n--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\nMIIB".to_vec(),
            // A p7s that is not DER.
            b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\n\n--b\n\nhello\n--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ=\n--b--\n".to_vec(),
            // Valid base64, DER-looking but nonsense (deep nesting).
            {
                let mut v = b"Content-Type: application/pkcs7-mime; smime-type=signed-data\nContent-Transfer-Encoding: binary\n\n".to_vec();
                v.extend(std::iter::repeat_n([0x30u8, 0x80], 5000).flatten());
                v
            },
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nAAAA\n".to_vec(),
            b"X-Ricevuta: avvenuta-consegna\nContent-Type: text/plain\n\nforged\n".to_vec(),
        ];
        // A 1 MB header line.
        let mut huge = b"Subject: ".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 1 << 20));
        huge.extend_from_slice(b"\nContent-Type: multipart/signed; boundary=b\n\n--b\n\n--b--\n");
        inputs.push(huge);
        for seed in 1..64u64 {
            inputs.push(garbage(seed, (seed as usize * 97) % 4096));
            let mut g = b"Content-Type: multipart/signed; boundary=zz\n\n--zz\n".to_vec();
            g.extend(garbage(seed, 512));
            g.extend_from_slice(b"\n--zz\nContent-Type: application/x-pkcs7-signature\n\n");
            g.extend(garbage(seed + 1000, 300));
            g.extend_from_slice(b"\n--zz--\n");
            inputs.push(g);
        }
        for raw in &inputs {
            assert!(verify_smime(raw, &trust, now).is_err());
            assert!(verify_smime_with(raw, &VerifyOptions::without_index(now)).is_err());
        }
    }

    use super::testing::{signer as test_signer, wrap_base64};

    const CONTENT: &[u8] = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\nworld";

    fn multipart_signed(p7s: &[u8]) -> Vec<u8> {
        let mut m = b"From: posta-certificata@pec.example.it\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\r\n boundary=\"XX\"\r\n\r\nThis is an S/MIME signed message\r\n--XX\r\n".to_vec();
        m.extend_from_slice(CONTENT);
        m.extend_from_slice(b"\r\n--XX\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        m.extend_from_slice(wrap_base64(p7s).as_bytes());
        m.extend_from_slice(b"\r\n--XX--\r\n");
        m
    }

    #[test]
    fn synthetic_sha256_detached_opaque_and_key_id() {
        let (cert, key) = test_signer(7);
        let mut trust = TrustSet::new();
        trust.add(cert.to_der().unwrap(), None);
        let when = at("2025-06-01");

        // Detached, issuer+serial.
        let flags = CMSOptions::DETACHED | CMSOptions::BINARY;
        let p7s = CmsContentInfo::sign(Some(&cert), Some(&key), None, Some(CONTENT), flags)
            .unwrap()
            .to_der()
            .unwrap();
        let v = verify_smime(&multipart_signed(&p7s), &trust, when).unwrap();
        assert_eq!(v.digest, "sha256");
        assert_eq!(v.form, SmimeForm::MultipartSigned);
        assert_eq!(v.content, CONTENT);
        assert!(v.trusted);
        assert_eq!(
            v.signer_email.as_deref(),
            Some("posta-certificata@pec.example.it")
        );
        assert_eq!(
            v.signer_subject,
            "CN=Posta Certificata Example, O=Example PEC S.p.A., C=IT"
        );
        assert_eq!(v.not_before.rfc3339(), "2020-01-01T00:00:00Z");
        assert!(v.signing_time.is_some());

        // Without an index: verified, not trusted; with an empty one: unknown signer.
        let v = verify_smime_with(&multipart_signed(&p7s), &VerifyOptions::without_index(when))
            .unwrap();
        assert!(!v.trusted);
        assert!(matches!(
            verify_smime(&multipart_signed(&p7s), &TrustSet::new(), when),
            Err(VerifyError::UnknownSigner { .. })
        ));
        assert!(matches!(
            verify_smime(&multipart_signed(&p7s), &trust, at("2041-01-01")),
            Err(VerifyError::Expired { .. })
        ));

        // Detached, subject key identifier.
        let p7s = CmsContentInfo::sign(
            Some(&cert),
            Some(&key),
            None,
            Some(CONTENT),
            flags | CMSOptions::USE_KEYID,
        )
        .unwrap()
        .to_der()
        .unwrap();
        let v = verify_smime(&multipart_signed(&p7s), &trust, when).unwrap();
        assert_eq!(v.content, CONTENT);

        // Opaque signed-data.
        let p7m = CmsContentInfo::sign(
            Some(&cert),
            Some(&key),
            None,
            Some(CONTENT),
            CMSOptions::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap();
        let mut m = b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        m.extend_from_slice(wrap_base64(&p7m).as_bytes());
        m.extend_from_slice(b"\r\n");
        let v = verify_smime(&m, &trust, when).unwrap();
        assert_eq!(v.form, SmimeForm::OpaqueSignedData);
        assert_eq!(v.content, CONTENT);

        // An opaque CMS put in a multipart/signed is refused.
        assert!(matches!(
            verify_smime(&multipart_signed(&p7m), &trust, when),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn ambiguous_signer_certificates_are_refused() {
        // Same issuer and serial, different key: which one verifies must not be a guess.
        let (cert, key) = test_signer(9);
        let (twin, _) = test_signer(9);
        let mut extra = Stack::new().unwrap();
        extra.push(twin.clone()).unwrap();
        let flags = CMSOptions::DETACHED | CMSOptions::BINARY;
        let p7s = CmsContentInfo::sign(Some(&cert), Some(&key), Some(&extra), Some(CONTENT), flags)
            .unwrap()
            .to_der()
            .unwrap();
        let mut trust = TrustSet::new();
        trust.add(twin.to_der().unwrap(), None);
        trust.add(cert.to_der().unwrap(), None);
        match verify_smime(&multipart_signed(&p7s), &trust, at("2025-06-01")) {
            Err(VerifyError::Malformed(m)) => assert!(m.contains("several"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// `CONTENT` signed detached (issuer and serial) by test signer `seed`, as a
    /// `multipart/signed` message with CRLF line ends, and a trust set holding the signer.
    fn signed_detached(seed: u32) -> (TrustSet, Vec<u8>) {
        let (cert, key) = test_signer(seed);
        let mut trust = TrustSet::new();
        trust.add(cert.to_der().unwrap(), None);
        let flags = CMSOptions::DETACHED | CMSOptions::BINARY;
        let p7s = CmsContentInfo::sign(Some(&cert), Some(&key), None, Some(CONTENT), flags)
            .unwrap()
            .to_der()
            .unwrap();
        (trust, multipart_signed(&p7s))
    }

    #[test]
    fn signed_content_is_canonicalised_from_lf() {
        let (trust, crlf) = signed_detached(11);
        let lf: Vec<u8> = crlf.iter().copied().filter(|&c| c != b'\r').collect();
        let v = verify_smime(&lf, &trust, at("2025-06-01")).unwrap();
        assert_eq!(v.content, CONTENT);
    }

    #[test]
    fn shared_content_is_a_slice_of_crlf_data_and_a_copy_of_lf_data() {
        let (trust, crlf) = signed_detached(12);
        let opts = VerifyOptions::new(&trust, at("2025-06-01"));
        let within = |raw: &Bytes, part: &Bytes| {
            let (start, p) = (raw.as_ptr() as usize, part.as_ptr() as usize);
            start <= p && p + part.len() <= start + raw.len()
        };

        let crlf = Bytes::from(crlf);
        let shared = verify_smime_shared(&crlf, &opts).unwrap();
        assert_eq!(shared, verify_smime_with(&crlf, &opts).unwrap());
        assert_eq!(shared.content, CONTENT);
        assert!(within(&crlf, &shared.content), "no copy of CRLF data");

        let lf: Bytes = crlf.iter().copied().filter(|&c| c != b'\r').collect();
        let converted = verify_smime_shared(&lf, &opts).unwrap();
        assert_eq!(converted.content, CONTENT);
        assert!(!within(&lf, &converted.content), "LF data is converted");
    }

    #[test]
    fn share_slices_or_copies() {
        let whole = Bytes::from_static(b"0123456789");
        let part = share(&whole, &whole[2..5]);
        assert_eq!(part, &b"234"[..]);
        assert_eq!(part.as_ptr(), whole[2..].as_ptr());
        let elsewhere = b"234".to_vec();
        let copied = share(&whole, &elsewhere);
        assert_eq!(copied, &b"234"[..]);
        assert_ne!(copied.as_ptr(), elsewhere.as_ptr());
        assert!(share(&whole, &[]).is_empty());
    }

    #[test]
    fn serial_comparison_handles_sign_and_padding() {
        // Self-signed test certificate with serial 0x00ff (positive, padded).
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "t").unwrap();
        let name = name.build();
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
        let mut b = X509::builder().unwrap();
        let serial = openssl::bn::BigNum::from_u32(0xff)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        assert!(serial_equals(&cert, &[0x00, 0xff]));
        assert!(!serial_equals(&cert, &[0xff])); // that is -1
        assert!(!serial_equals(&cert, &[]));
        assert_eq!(name_one_line(cert.subject_name()), "CN=t");
        assert_eq!(escape_dn_value("a, b+c "), "a\\, b\\+c\\ ");
    }
}
