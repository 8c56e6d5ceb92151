// SPDX-License-Identifier: GPL-3.0-or-later
//! The error of signature verification, shared by the CMS reader (`asn1.rs`) and the
//! S/MIME verifier (`verify.rs`).

use thiserror::Error;

use crate::message::time::Instant;

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
    /// The X.509 path check of [`ChainPolicy`](super::ChainPolicy) failed (only when it is enforced).
    #[error("certificate chain: {0}")]
    Chain(String),
    /// A certificate of the signer's chain is revoked at the verification instant.
    #[error(
        "certificate \"{subject}\" revoked on \"{}\" ({reason}), according to {by}",
        .at.rfc3339()
    )]
    Revoked {
        subject: String,
        at: Instant,
        reason: String,
        by: String,
    },
    /// No revocation status could be had and the policy (strict mode, or past the grace
    /// window) treats that as not verified.
    #[error("revocation status unknown: {0}")]
    RevocationUnknown(String),
    /// OpenSSL failed for a reason unrelated to the input (allocation, library state).
    #[error("openssl: {0}")]
    Internal(String),
}
