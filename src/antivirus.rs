//! Antivirus: clamd over its INSTREAM protocol (TCP or unix socket), behind a trait.

use thiserror::Error;

use crate::BoxFuture;

/// What the scanner found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanVerdict {
    Clean,
    /// Infected, with the signature name (e.g. `Eicar-Test-Signature`).
    Infected(String),
}

#[derive(Debug, Error)]
pub enum AvError {
    #[error("antivirus unreachable at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("antivirus timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("antivirus protocol error: {0}")]
    Protocol(String),
}

/// A virus scanner. Every error is a reason to tempfail (fail closed), never to accept.
pub trait Antivirus: Send + Sync {
    fn scan<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<ScanVerdict, AvError>>;
}
