//! Verification of incoming S/MIME signatures (spec §2.1, §5.2 items 1–3, §10, §12.2).
//!
//! OpenSSL does the cryptography: it reads BER (the RustCrypto `cms` crate cannot) and
//! checks the signature over the signed attributes and the content digest. Everything
//! around it is done here, so that each decision is explicit:
//!
//! * the MIME split of `multipart/signed` is our own line-based scan (delimiters only at the
//!   start of a line), and the first body part is canonicalised to CRLF line ends exactly as
//!   RFC 5751 prescribes before it is hashed;
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

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509NameRef, X509PurposeId, X509Ref, X509StoreContext, X509};
use thiserror::Error;

use super::asn1;
use crate::index::{sha1_hex_upper, ProviderInfo, TrustSet};
use crate::message::time::Instant;

/// Largest message we try to verify (PEC's reference limit is 30 MB of content, spec §5.1;
/// base64 and headers add about a third).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Largest detached signature (`smime.p7s`, decoded). Real ones are 3–10 KB.
pub const MAX_SIGNATURE_BYTES: usize = 1024 * 1024;

/// Why a message is not a correctly signed S/MIME message from a trusted signer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// No S/MIME signature structure at the top level (ordinary mail).
    #[error("not signed: {0}")]
    NotSigned(String),
    /// There is a signature structure, but it cannot be read.
    #[error("malformed s/mime signature: {0}")]
    Malformed(String),
    #[error("message too large: {size} bytes (limit {limit})")]
    TooLarge { size: usize, limit: usize },
    #[error("unsupported digest algorithm \"{0}\"")]
    UnsupportedDigest(String),
    /// The signature does not verify, or the content was altered.
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("{count} signers, exactly one expected")]
    MultipleSigners { count: usize },
    /// The signer certificate is not in the provider index.
    #[error(
        "unknown signer: certificate \"{subject}\" (sha1 \"{sha1}\") is not in the provider index"
    )]
    UnknownSigner { sha1: String, subject: String },
    #[error(
        "signer certificate not yet valid: valid from \"{}\", checked at \"{}\"",
        .not_before.rfc3339(),
        .at.rfc3339()
    )]
    NotYetValid { not_before: Instant, at: Instant },
    #[error(
        "signer certificate expired: valid until \"{}\", checked at \"{}\"",
        .not_after.rfc3339(),
        .at.rfc3339()
    )]
    Expired { not_after: Instant, at: Instant },
    #[error(
        "signing time \"{}\" outside the signer certificate validity \"{}\" .. \"{}\"",
        .signing_time.rfc3339(),
        .not_before.rfc3339(),
        .not_after.rfc3339()
    )]
    SigningTimeOutsideValidity {
        signing_time: Instant,
        not_before: Instant,
        not_after: Instant,
    },
    /// The X.509 path check of [`ChainPolicy`] failed (only when it is enforced).
    #[error("certificate chain: {0}")]
    Chain(String),
    /// OpenSSL failed for a reason unrelated to the input (allocation, library state).
    #[error("openssl: {0}")]
    Internal(String),
}

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

/// Optional X.509 path validation of the signer certificate, on top of the provider index.
#[derive(Debug, Clone, Default)]
pub struct ChainPolicy {
    /// DER of the trust anchors (root CAs, e.g. Actalis Authentication Root CA). The
    /// intermediates come from the CMS.
    pub anchors: Vec<Vec<u8>>,
    /// Turn a failing chain into [`VerifyError::Chain`]; otherwise it is only reported in
    /// [`Verified::chain`].
    pub enforce: bool,
}

impl ChainPolicy {
    /// Anchors from a PEM bundle (e.g. `/etc/ssl/certs/ca-certificates.crt`).
    pub fn from_pem(pem: &[u8], enforce: bool) -> Result<Self, VerifyError> {
        let certs = X509::stack_from_pem(pem)
            .map_err(|e| VerifyError::Chain(format!("anchors: {}", ossl(&e))))?;
        let mut anchors = Vec::with_capacity(certs.len());
        for c in certs {
            anchors.push(c.to_der().map_err(|e| internal(&e))?);
        }
        Ok(ChainPolicy { anchors, enforce })
    }
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
    pub content: Vec<u8>,
    /// Provider record of the signer, when the index knows it.
    pub provider: Option<ProviderInfo>,
    /// Whether the signer was found in the provider index (false only when verified with
    /// [`VerifyOptions::without_index`]).
    pub trusted: bool,
    pub chain: ChainStatus,
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
        SmimeForm::OpaqueSignedData => sd.econtent.clone().ok_or_else(|| {
            VerifyError::Malformed("signed-data without encapsulated content".into())
        })?,
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
        SmimeForm::MultipartSigned => Some(content.as_slice()),
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

    let chain = match opts.chain {
        None => ChainStatus::NotChecked,
        Some(policy) => {
            let status = check_chain(&signer, &sd.certificates, policy, opts.at)?;
            if let (true, ChainStatus::Invalid(reason)) = (policy.enforce, &status) {
                return Err(VerifyError::Chain(reason.clone()));
            }
            status
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
        content,
        provider,
        trusted,
        chain,
        form: extracted.form,
    })
}

struct Extracted {
    form: SmimeForm,
    /// Canonical signed content (multipart/signed only; empty for opaque).
    content: Vec<u8>,
    /// The CMS bytes (DER or BER).
    cms: Vec<u8>,
}

fn is_pkcs7_signature(mime: &str) -> bool {
    mime.eq_ignore_ascii_case("application/pkcs7-signature")
        || mime.eq_ignore_ascii_case("application/x-pkcs7-signature")
}

fn extract(raw: &[u8]) -> Result<Extracted, VerifyError> {
    let top = entity::split(raw);
    let fields = entity::fields(top.header);
    let Some(ct_value) = entity::first(&fields, "content-type") else {
        return Err(VerifyError::NotSigned(
            "no content-type header at the top level".into(),
        ));
    };
    let Some(ct) = entity::ContentType::parse(ct_value) else {
        return Err(VerifyError::NotSigned(format!(
            "unreadable content-type \"{}\"",
            entity::clip(ct_value)
        )));
    };
    match ct.mime.as_str() {
        "multipart/signed" => {
            if let Some(p) = ct.param("protocol") {
                if !is_pkcs7_signature(p) {
                    return Err(VerifyError::NotSigned(format!(
                        "multipart/signed with protocol \"{}\" is not s/mime",
                        entity::clip(p)
                    )));
                }
            }
            let boundary = ct
                .param("boundary")
                .filter(|b| entity::valid_boundary(b))
                .ok_or_else(|| {
                    VerifyError::Malformed("multipart/signed without a valid boundary".into())
                })?;
            let mp = entity::multipart(top.body, boundary);
            if !mp.closed {
                return Err(VerifyError::Malformed(
                    "multipart/signed has no closing delimiter (truncated message?)".into(),
                ));
            }
            if mp.parts.len() != 2 {
                return Err(VerifyError::Malformed(format!(
                    "multipart/signed has {} body parts, expected 2",
                    mp.parts.len()
                )));
            }
            let sig = entity::split(mp.parts[1]);
            let sig_fields = entity::fields(sig.header);
            let sig_type = entity::first(&sig_fields, "content-type")
                .and_then(entity::ContentType::parse)
                .map(|c| c.mime)
                .unwrap_or_else(|| "text/plain".into());
            if !is_pkcs7_signature(&sig_type) {
                return Err(VerifyError::Malformed(format!(
                    "second part of multipart/signed is \"{}\", expected application/pkcs7-signature",
                    entity::clip(&sig_type)
                )));
            }
            let cms = decode_cms(
                sig.body,
                entity::first(&sig_fields, "content-transfer-encoding"),
            )?;
            if cms.len() > MAX_SIGNATURE_BYTES {
                return Err(VerifyError::TooLarge {
                    size: cms.len(),
                    limit: MAX_SIGNATURE_BYTES,
                });
            }
            Ok(Extracted {
                form: SmimeForm::MultipartSigned,
                content: entity::canonical_crlf(mp.parts[0]),
                cms,
            })
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            if let Some(t) = ct.param("smime-type") {
                if !t.eq_ignore_ascii_case("signed-data") {
                    return Err(VerifyError::NotSigned(format!(
                        "{} with smime-type \"{}\" is not a signature",
                        ct.mime,
                        entity::clip(t)
                    )));
                }
            }
            let cms = decode_cms(
                top.body,
                entity::first(&fields, "content-transfer-encoding"),
            )?;
            Ok(Extracted {
                form: SmimeForm::OpaqueSignedData,
                content: Vec::new(),
                cms,
            })
        }
        other => Err(VerifyError::NotSigned(format!(
            "top-level content type is \"{}\", not multipart/signed or application/pkcs7-mime",
            entity::clip(other)
        ))),
    }
}

/// The CMS bytes of a signature part: base64 unless the part says binary.
fn decode_cms(body: &[u8], cte: Option<&str>) -> Result<Vec<u8>, VerifyError> {
    let cte = cte.map(|c| c.trim().to_ascii_lowercase());
    match cte.as_deref() {
        Some("binary") | Some("8bit") => Ok(body.to_vec()),
        Some("base64") | Some("7bit") | None => entity::decode_base64(body).map_err(|e| {
            VerifyError::Malformed(format!("signature part is not valid base64: {e}"))
        }),
        Some(other) => Err(VerifyError::Malformed(format!(
            "signature part has content-transfer-encoding \"{}\"",
            entity::clip(other)
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
fn find_signer(certs: &[X509], sid: &asn1::SignerId) -> Result<X509, VerifyError> {
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
) -> Result<ChainStatus, VerifyError> {
    if policy.anchors.is_empty() {
        return Ok(if policy.enforce {
            ChainStatus::Invalid("no trust anchors configured".into())
        } else {
            ChainStatus::NotChecked
        });
    }
    let mut builder = X509StoreBuilder::new().map_err(|e| internal(&e))?;
    for (i, a) in policy.anchors.iter().enumerate() {
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
    builder.set_param(&param).map_err(|e| internal(&e))?;
    let store = builder.build();

    let mut untrusted = Stack::new().map_err(|e| internal(&e))?;
    for c in cms_certs {
        untrusted.push(c.clone()).map_err(|e| internal(&e))?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| internal(&e))?;
    let (ok, reason) = ctx
        .init(&store, signer, &untrusted, |c| {
            let ok = c.verify_cert()?;
            let subject = c
                .current_cert()
                .map(|x| name_one_line(x.subject_name()))
                .unwrap_or_default();
            Ok((
                ok,
                format!(
                    "{} (depth {}, \"{}\")",
                    c.error().error_string(),
                    c.error_depth(),
                    subject
                ),
            ))
        })
        .map_err(|e| internal(&e))?;
    Ok(if ok {
        ChainStatus::Valid
    } else {
        ChainStatus::Invalid(reason)
    })
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

/// Raw MIME entity scanning, no decoding of content: header/body split, header fields,
/// Content-Type parameters, multipart delimiters at line starts, CRLF canonicalisation and
/// transfer decodings. Used for the signature split and by the classifier, which needs the
/// same exact, bug-free boundary handling (mail-parser #156 treats a mid-line `--boundary`
/// as a delimiter).
pub mod entity {
    use base64::Engine;

    /// An entity split at the first empty line.
    #[derive(Debug, Clone, Copy)]
    pub struct Entity<'a> {
        /// Header lines, including the line end of the last one.
        pub header: &'a [u8],
        /// Everything after the empty line.
        pub body: &'a [u8],
    }

    /// Splits at the first empty line (LF or CRLF). Without one, all is header.
    pub fn split(raw: &[u8]) -> Entity<'_> {
        let mut pos = 0;
        while pos < raw.len() {
            let end = raw[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(raw.len(), |i| pos + i + 1);
            let line = &raw[pos..end];
            if line == b"\n" || line == b"\r\n" {
                return Entity {
                    header: &raw[..pos],
                    body: &raw[end..],
                };
            }
            pos = end;
        }
        Entity {
            header: raw,
            body: &[],
        }
    }

    /// One header field, unfolded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Field {
        pub name: String,
        /// Unfolded value, line breaks removed, trimmed (lossy UTF-8).
        pub value: String,
    }

    /// Header fields in order. Lines without a colon are ignored.
    pub fn fields(header: &[u8]) -> Vec<Field> {
        let mut out: Vec<Field> = Vec::new();
        let mut current: Option<(String, Vec<u8>)> = None;
        for line in header.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if matches!(line[0], b' ' | b'\t') {
                if let Some((_, v)) = current.as_mut() {
                    v.extend_from_slice(line);
                }
                continue;
            }
            if let Some((n, v)) = current.take() {
                out.push(finish(n, v));
            }
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
                if !name.is_empty() && !name.contains(' ') {
                    current = Some((name, line[colon + 1..].to_vec()));
                }
            }
        }
        if let Some((n, v)) = current.take() {
            out.push(finish(n, v));
        }
        out
    }

    fn finish(name: String, value: Vec<u8>) -> Field {
        Field {
            name,
            value: String::from_utf8_lossy(&value).trim().to_string(),
        }
    }

    /// Value of the first field called `name` (case-insensitive).
    pub fn first<'f>(fields: &'f [Field], name: &str) -> Option<&'f str> {
        fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
    }

    /// Every field called `name` (case-insensitive).
    pub fn all<'f>(fields: &'f [Field], name: &'f str) -> impl Iterator<Item = &'f Field> + 'f {
        fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
    }

    /// A value shortened for error messages.
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

    /// `type/subtype; param=value; …` (RFC 2045; RFC 2231 extended values are decoded
    /// when their charset is UTF-8 or US-ASCII, and continuations are joined).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ContentType {
        /// Lower-case `type/subtype`.
        pub mime: String,
        /// Lower-case names, values as written (unquoted).
        pub params: Vec<(String, String)>,
    }

    impl ContentType {
        /// Also parses Content-Disposition values (`inline; filename=…`): `mime` is then
        /// the disposition type.
        pub fn parse(value: &str) -> Option<ContentType> {
            let mut it = Tokens {
                s: value.as_bytes(),
                pos: 0,
            };
            it.skip_cfws();
            let mime = it.token()?.to_ascii_lowercase();
            let mime = if it.peek() == Some(b'/') {
                it.pos += 1;
                let sub = it.token()?.to_ascii_lowercase();
                format!("{mime}/{sub}")
            } else {
                mime
            };
            let mut raw: Vec<(String, String)> = Vec::new();
            loop {
                it.skip_cfws();
                match it.peek() {
                    None => break,
                    Some(b';') => it.pos += 1,
                    Some(_) => {
                        // Garbage between parameters: skip to the next ';'.
                        while it.peek().is_some_and(|b| b != b';') {
                            it.pos += 1;
                        }
                        continue;
                    }
                }
                it.skip_cfws();
                let Some(name) = it.token() else {
                    continue;
                };
                it.skip_cfws();
                if it.peek() != Some(b'=') {
                    continue;
                }
                it.pos += 1;
                it.skip_cfws();
                let val = if it.peek() == Some(b'"') {
                    it.quoted()
                } else {
                    it.token().unwrap_or_default()
                };
                raw.push((name.to_ascii_lowercase(), val));
            }
            Some(ContentType {
                mime,
                params: rfc2231(raw),
            })
        }

        pub fn param(&self, name: &str) -> Option<&str> {
            self.params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Joins `name*0`, `name*1*`… continuations and decodes `name*=charset''%xx` values.
    fn rfc2231(raw: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut ext: Vec<(String, u32, bool, String)> = Vec::new();
        for (name, val) in raw {
            let Some(star) = name.find('*') else {
                out.push((name, val));
                continue;
            };
            let base = name[..star].to_string();
            let rest = &name[star + 1..];
            let encoded = rest.ends_with('*') || rest.is_empty();
            let idx = rest.trim_end_matches('*').parse::<u32>().unwrap_or(0);
            ext.push((base, idx, encoded, val));
        }
        ext.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
        let mut i = 0;
        while i < ext.len() {
            let base = ext[i].0.clone();
            let mut bytes: Vec<u8> = Vec::new();
            while i < ext.len() && ext[i].0 == base {
                let (_, idx, encoded, val) = &ext[i];
                let mut v = val.as_str();
                if *encoded && *idx == 0 {
                    // charset'language'value
                    let mut q = v.splitn(3, '\'');
                    if let (Some(_cs), Some(_lang), Some(value)) = (q.next(), q.next(), q.next()) {
                        v = value;
                    }
                }
                if *encoded {
                    bytes.extend(percent_decode(v));
                } else {
                    bytes.extend_from_slice(v.as_bytes());
                }
                i += 1;
            }
            if !out.iter().any(|(n, _)| *n == base) {
                out.push((base, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
        out
    }

    fn percent_decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        out
    }

    fn hexval(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }

    struct Tokens<'a> {
        s: &'a [u8],
        pos: usize,
    }

    impl Tokens<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.pos).copied()
        }

        /// White space and (nested) comments.
        fn skip_cfws(&mut self) {
            loop {
                match self.peek() {
                    Some(b' ' | b'\t' | b'\r' | b'\n') => self.pos += 1,
                    Some(b'(') => {
                        let mut depth = 0usize;
                        while let Some(c) = self.peek() {
                            self.pos += 1;
                            match c {
                                b'\\' => self.pos += 1,
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
                    _ => return,
                }
            }
        }

        /// RFC 2045 token (anything but tspecials, space and controls).
        fn token(&mut self) -> Option<String> {
            let start = self.pos;
            while let Some(c) = self.peek() {
                let tspecial = matches!(
                    c,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                );
                if tspecial || c <= b' ' || c == 0x7f {
                    break;
                }
                self.pos += 1;
            }
            (self.pos > start)
                .then(|| String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
        }

        fn quoted(&mut self) -> String {
            self.pos += 1; // opening quote
            let mut v = Vec::new();
            while let Some(c) = self.peek() {
                self.pos += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        if let Some(n) = self.peek() {
                            v.push(n);
                            self.pos += 1;
                        }
                    }
                    b'\r' | b'\n' => {}
                    _ => v.push(c),
                }
            }
            String::from_utf8_lossy(&v).into_owned()
        }
    }

    /// RFC 2046: 1 to 70 characters.
    pub fn valid_boundary(b: &str) -> bool {
        !b.is_empty() && b.len() <= 70
    }

    /// Body parts of a multipart body.
    #[derive(Debug, Clone)]
    pub struct Multipart<'a> {
        /// Each part from after its delimiter line to before the line break that precedes
        /// the next delimiter (the break belongs to the delimiter, RFC 2046 §5.1.1).
        pub parts: Vec<&'a [u8]>,
        /// Whether the close delimiter was found.
        pub closed: bool,
    }

    /// Splits a multipart body. A delimiter is a whole line `--boundary` (or `--boundary--`
    /// for the close delimiter) optionally followed by white space; nothing else counts, in
    /// particular not a `--boundary` in the middle of a line or followed by other text.
    pub fn multipart<'a>(body: &'a [u8], boundary: &str) -> Multipart<'a> {
        let b = boundary.as_bytes();
        let mut parts = Vec::new();
        let mut part_start: Option<usize> = None;
        let mut pos = 0;
        while pos < body.len() {
            let nl = body[pos..].iter().position(|&c| c == b'\n');
            let line_end = nl.map_or(body.len(), |i| pos + i);
            let next = nl.map_or(body.len(), |i| pos + i + 1);
            let line = &body[pos..line_end];
            if let Some(close) = delimiter(line, b) {
                if let Some(start) = part_start {
                    let mut end = pos;
                    if end > 0 && body[end - 1] == b'\n' {
                        end -= 1;
                        if end > 0 && body[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    parts.push(&body[start..end.max(start)]);
                }
                if close {
                    return Multipart {
                        parts,
                        closed: true,
                    };
                }
                part_start = Some(next);
            }
            pos = next;
        }
        if let Some(start) = part_start {
            parts.push(&body[start.min(body.len())..]);
        }
        Multipart {
            parts,
            closed: false,
        }
    }

    /// `Some(is_close)` when `line` (without its LF) is a delimiter line for `b`.
    fn delimiter(line: &[u8], b: &[u8]) -> Option<bool> {
        let rest = line.strip_prefix(b"--")?.strip_prefix(b)?;
        let (close, rest) = match rest.strip_prefix(b"--") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        rest.iter()
            .all(|&c| matches!(c, b' ' | b'\t' | b'\r'))
            .then_some(close)
    }

    /// Bare LF → CRLF; existing CRLF untouched (RFC 5751 §3.1.1 canonical form).
    pub fn canonical_crlf(bytes: &[u8]) -> Vec<u8> {
        let extra = bytes.iter().filter(|&&c| c == b'\n').count();
        let mut out = Vec::with_capacity(bytes.len() + extra);
        let mut prev = 0u8;
        for &c in bytes {
            if c == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(c);
            prev = c;
        }
        out
    }

    /// Lenient base64: white space ignored, padding optional, anything else is an error.
    pub fn decode_base64(body: &[u8]) -> Result<Vec<u8>, String> {
        let clean: Vec<u8> = body
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        engine.decode(&clean).map_err(|e| e.to_string())
    }

    /// Quoted-printable (RFC 2045 §6.7), tolerant of bad escapes (kept literally).
    pub fn decode_qp(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len());
        let mut i = 0;
        while i < body.len() {
            let c = body[i];
            if c != b'=' {
                out.push(c);
                i += 1;
                continue;
            }
            // Soft line break: '=' then optional white space then (CR)LF.
            let mut j = i + 1;
            while j < body.len() && matches!(body[j], b' ' | b'\t') {
                j += 1;
            }
            if body.get(j) == Some(&b'\n') {
                i = j + 1;
                continue;
            }
            if body.get(j) == Some(&b'\r') && body.get(j + 1) == Some(&b'\n') {
                i = j + 2;
                continue;
            }
            match (
                body.get(i + 1).copied().and_then(hexval),
                body.get(i + 2).copied().and_then(hexval),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    }

    /// Decodes a part body per its Content-Transfer-Encoding.
    pub fn decode_transfer(body: &[u8], cte: Option<&str>) -> Result<Vec<u8>, String> {
        match cte.map(|c| c.trim().to_ascii_lowercase()).as_deref() {
            None | Some("7bit") | Some("8bit") | Some("binary") => Ok(body.to_vec()),
            Some("base64") => decode_base64(body),
            Some("quoted-printable") => Ok(decode_qp(body)),
            Some(other) => Err(format!(
                "unknown content-transfer-encoding \"{}\"",
                clip(other)
            )),
        }
    }
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
        let content = super::entity::canonical_crlf(content);
        let content = content.as_slice();
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

    #[test]
    fn multipart_delimiters_only_at_line_start() {
        let body = b"preamble\r\n--b\r\npart one --b not a delimiter\r\n--bx\r\nstill one\r\n--b  \r\npart two\n--b--\r\nepilogue\r\n--b\r\n";
        let mp = entity::multipart(body, "b");
        assert!(mp.closed);
        assert_eq!(mp.parts.len(), 2);
        assert_eq!(
            mp.parts[0],
            b"part one --b not a delimiter\r\n--bx\r\nstill one"
        );
        assert_eq!(mp.parts[1], b"part two");
    }

    #[test]
    fn multipart_unclosed_and_empty() {
        let mp = entity::multipart(b"--b\nonly\n", "b");
        assert!(!mp.closed);
        assert_eq!(mp.parts, vec![&b"only\n"[..]]);
        let mp = entity::multipart(b"--b\n--b\n--b--\n", "b");
        assert!(mp.closed);
        assert_eq!(mp.parts, vec![&b""[..], &b""[..]]);
        let mp = entity::multipart(b"no delimiters at all", "b");
        assert!(!mp.closed && mp.parts.is_empty());
    }

    #[test]
    fn canonicalisation_and_header_split() {
        assert_eq!(entity::canonical_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        let e = entity::split(b"A: 1\n folded\nB: 2\n\nbody\n");
        assert_eq!(e.body, b"body\n");
        let f = entity::fields(e.header);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].value, "1 folded");
        let e = entity::split(b"only: header");
        assert!(e.body.is_empty());
    }

    #[test]
    fn content_type_parameters() {
        let ct = entity::ContentType::parse(
            "Multipart/Signed; protocol=\"application/x-pkcs7-signature\"; micalg=sha1;\r\n boundary=\"----0E32\" (comment)",
        )
        .unwrap();
        assert_eq!(ct.mime, "multipart/signed");
        assert_eq!(ct.param("Boundary"), Some("----0E32"));
        assert_eq!(ct.param("micalg"), Some("sha1"));
        let cd = entity::ContentType::parse("inline;\n\tfilename*=UTF-8''daticert%2Exml").unwrap();
        assert_eq!(cd.mime, "inline");
        assert_eq!(cd.param("filename"), Some("daticert.xml"));
        assert!(entity::ContentType::parse("").is_none());
    }

    #[test]
    fn qp_and_base64() {
        assert_eq!(
            entity::decode_qp(b"=E8 stato=\r\n ok=3D"),
            b"\xe8 stato ok="
        );
        assert_eq!(entity::decode_qp(b"bad =ZZ end="), b"bad =ZZ end=");
        assert_eq!(entity::decode_base64(b"aGVs\r\nbG8=\n").unwrap(), b"hello");
        assert!(entity::decode_base64(b"not base64 !").is_err());
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

    #[test]
    fn signed_content_is_canonicalised_from_lf() {
        let (cert, key) = test_signer(11);
        let mut trust = TrustSet::new();
        trust.add(cert.to_der().unwrap(), None);
        let flags = CMSOptions::DETACHED | CMSOptions::BINARY;
        let p7s = CmsContentInfo::sign(Some(&cert), Some(&key), None, Some(CONTENT), flags)
            .unwrap()
            .to_der()
            .unwrap();
        let crlf = multipart_signed(&p7s);
        let lf: Vec<u8> = crlf.iter().copied().filter(|&c| c != b'\r').collect();
        let v = verify_smime(&lf, &trust, at("2025-06-01")).unwrap();
        assert_eq!(v.content, CONTENT);
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
