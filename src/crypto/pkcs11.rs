// SPDX-License-Identifier: GPL-3.0-or-later
//! The provider key in a PKCS#11 token (SoftHSM2 in development and tests, a network HSM in
//! production), through `cryptoki`.
//!
//! * One `Pkcs11` context per module path for the whole process: several
//!   `C_Initialize` calls in one process crash SoftHSM (rust-cryptoki #260). An
//!   already-initialised library (`CKR_CRYPTOKI_ALREADY_INITIALIZED`) is accepted.
//! * The token is chosen by label, never by slot number (slot ids change when a token is
//!   initialised or reinserted); the slot is looked up again whenever a session is reopened.
//! * Login state is per token and application-wide, so `CKR_USER_ALREADY_LOGGED_IN` is
//!   success. Consequence: while another open session of this process is logged in to the
//!   token, a wrong PIN goes unnoticed.
//! * A pool of sessions lets several threads sign at once (`Session` is `Send`, not `Sync`).
//!   A session that fails with a session or device error is closed, reopened once and the
//!   operation retried; a second failure is reported as [`SignError::Pkcs11`], which the
//!   mail path turns into a temporary failure.
//! * Calls block; async callers should use `spawn_blocking` or a signing thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::{DigestAlg, KeyKind, SignError, Signer};

/// Where the key is and how to use it. The caller resolves the PIN (configuration file,
/// environment, credential store) before building this.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// CKA_LABEL of the token (`CK_TOKEN_INFO.label`).
    pub token_label: String,
    /// CKA_LABEL of the private key.
    pub key_label: String,
    /// User PIN.
    pub pin: String,
    /// CKA_LABEL of the certificate object on the token; `None` = `key_label`.
    pub cert_label: Option<String>,
    /// Digest for CMS signatures.
    pub digest: DigestAlg,
    /// PEM file with the certificates to add to every CMS after the signer's (the issuing CA).
    pub chain_pem: Option<PathBuf>,
    /// Number of sessions in the pool, i.e. how many signatures may run at once (0 = 1).
    pub sessions: usize,
}

impl Pkcs11Config {
    /// A configuration with the default digest, the certificate under the key's label, no
    /// chain and four sessions.
    pub fn new(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
        key_label: impl Into<String>,
        pin: impl Into<String>,
    ) -> Self {
        Pkcs11Config {
            module: module.into(),
            token_label: token_label.into(),
            key_label: key_label.into(),
            pin: pin.into(),
            cert_label: None,
            digest: DigestAlg::default(),
            chain_pem: None,
            sessions: 4,
        }
    }
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .field("pin", &"<redacted>")
            .field("cert_label", &self.cert_label)
            .field("digest", &self.digest)
            .field("chain_pem", &self.chain_pem)
            .field("sessions", &self.sessions)
            .finish()
    }
}

/// The process-wide context for `module`, loaded and initialised on first use.
fn context(module: &Path) -> Result<Pkcs11, SignError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let canonical = std::fs::canonicalize(module).map_err(|e| {
        SignError::Pkcs11(format!("cannot load module \"{}\": {e}", module.display()))
    })?;
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = contexts.get(&canonical) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| {
        SignError::Pkcs11(format!("cannot load module \"{}\": {e}", module.display()))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(SignError::Pkcs11(format!(
                "cannot initialise module \"{}\": {}",
                module.display(),
                describe(&e)
            )))
        }
    }
    contexts.insert(canonical, ctx.clone());
    Ok(ctx)
}

/// `CKR_…` name of a return value (`PinIncorrect` → `CKR_PIN_INCORRECT`).
fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, _) => ckr_name(*rv),
        other => other.to_string().to_lowercase(),
    }
}

/// Errors after which a fresh session may succeed.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::GeneralError,
            _
        )
    )
}

/// Added to the errors that, with SoftHSM, mean a token this user cannot read or write
/// (no token listed, `CKR_GENERAL_ERROR` at login).
const PERMISSION_HINT: &str = "; if the token exists, its files may belong to another user: SoftHSM hides a token it cannot read and fails with CKR_GENERAL_ERROR on one it cannot write; the token directory (e.g. /var/lib/softhsm/tokens/) and every file in it must belong to the user pec runs as (`pec check-config --live` as root names the file)";

/// The certificate `cert_label` on the token `token_label`, read without logging in (a
/// certificate is a public object): what `pec status` needs to show its expiry, without
/// the PIN.
pub fn read_certificate(
    module: &Path,
    token_label: &str,
    cert_label: &str,
) -> Result<Vec<u8>, SignError> {
    let token = Token {
        ctx: context(module)?,
        module: module.to_path_buf(),
        label: token_label.to_string(),
        key_label: String::new(),
        pin: AuthPin::from(String::new()),
    };
    let slot = token.slot()?;
    let session = token.ctx.open_ro_session(slot).map_err(|e| {
        token.err(format!(
            "cannot open a session on token \"{token_label}\": {}",
            describe(&e)
        ))
    })?;
    let handle = token.find_one(
        &session,
        ObjectClass::CERTIFICATE,
        cert_label,
        "certificate",
    )?;
    token.attribute(
        &session,
        handle,
        AttributeType::Value,
        &format!("value of certificate \"{cert_label}\""),
    )
}

/// What is needed to (re)open a logged-in session with the key.
struct Token {
    ctx: Pkcs11,
    module: PathBuf,
    label: String,
    key_label: String,
    pin: AuthPin,
}

/// An open, logged-in session and the key handle found in it.
struct Live {
    session: Session,
    key: ObjectHandle,
}

impl Token {
    fn err(&self, what: String) -> SignError {
        SignError::Pkcs11(what)
    }

    fn slot(&self) -> Result<Slot, SignError> {
        let slots = self.ctx.get_slots_with_token().map_err(|e| {
            self.err(format!(
                "cannot list slots of module \"{}\": {}",
                self.module.display(),
                describe(&e)
            ))
        })?;
        let mut seen = Vec::new();
        for slot in slots {
            let Ok(info) = self.ctx.get_token_info(slot) else {
                continue;
            };
            if info.label() == self.label {
                return Ok(slot);
            }
            seen.push(format!("\"{}\"", info.label()));
        }
        Err(self.err(format!(
            "no token labelled \"{}\" in module \"{}\" (tokens present: {}){}",
            self.label,
            self.module.display(),
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            },
            // SoftHSM always shows one free slot, labelled "": no other token is what a
            // token directory this user cannot read looks like.
            if seen.iter().all(|l| l == "\"\"") {
                PERMISSION_HINT
            } else {
                ""
            }
        )))
    }

    fn open(&self) -> Result<Live, SignError> {
        let slot = self.slot()?;
        let session = self.ctx.open_ro_session(slot).map_err(|e| {
            self.err(format!(
                "cannot open a session on token \"{}\": {}",
                self.label,
                describe(&e)
            ))
        })?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(self.err(format!(
                    "login to token \"{}\" failed: wrong pin (CKR_PIN_INCORRECT)",
                    self.label
                )))
            }
            Err(e) => {
                let hint = if matches!(e, CkError::Pkcs11(RvError::GeneralError, _)) {
                    PERMISSION_HINT
                } else {
                    ""
                };
                return Err(self.err(format!(
                    "login to token \"{}\" failed: {}{hint}",
                    self.label,
                    describe(&e)
                )));
            }
        }
        let key = self.find_one(
            &session,
            ObjectClass::PRIVATE_KEY,
            &self.key_label,
            "private key",
        )?;
        Ok(Live { session, key })
    }

    fn find_one(
        &self,
        session: &Session,
        class: ObjectClass,
        label: &str,
        what: &str,
    ) -> Result<ObjectHandle, SignError> {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| {
                self.err(format!(
                    "cannot search {what} \"{label}\" on token \"{}\": {}",
                    self.label,
                    describe(&e)
                ))
            })?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(self.err(format!(
                "no {what} labelled \"{label}\" on token \"{}\"",
                self.label
            ))),
            many => Err(self.err(format!(
                "{} objects of type {what} labelled \"{label}\" on token \"{}\"; labels must be unique",
                many.len(),
                self.label
            ))),
        }
    }

    fn attribute(
        &self,
        session: &Session,
        object: ObjectHandle,
        ty: AttributeType,
        what: &str,
    ) -> Result<Vec<u8>, SignError> {
        let attrs = session.get_attributes(object, &[ty]).map_err(|e| {
            self.err(format!(
                "cannot read {what} on token \"{}\": {}",
                self.label,
                describe(&e)
            ))
        })?;
        for attr in attrs {
            match attr {
                Attribute::Value(v) | Attribute::Modulus(v) => return Ok(v),
                _ => {}
            }
        }
        Err(self.err(format!("{what} not available on token \"{}\"", self.label)))
    }
}

/// A pool of sessions; `None` marks a session to reopen on next use.
struct Pool {
    idle: Mutex<Vec<Option<Live>>>,
    available: Condvar,
}

struct Lease<'a> {
    pool: &'a Pool,
    live: Option<Live>,
}

impl Pool {
    fn take(&self) -> Lease<'_> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(live) = idle.pop() {
                return Lease { pool: self, live };
            }
            idle = self
                .available
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        idle.push(self.live.take());
        self.pool.available.notify_one();
    }
}

/// Signs with a private key kept in a PKCS#11 token: RSA (`CKM_SHA*_RSA_PKCS`, the token
/// hashes and pads) or ECDSA P-256/P-384 (the digest computed here, `CKM_ECDSA` on the
/// token, its raw `r || s` re-encoded as the DER `ECDSA-Sig-Value` CMS carries).
pub struct Pkcs11Signer {
    token: Token,
    kind: KeyKind,
    digest: DigestAlg,
    cert_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
    pool: Pool,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("module", &self.token.module)
            .field("token_label", &self.token.label)
            .field("key_label", &self.token.key_label)
            .field("kind", &self.kind)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Loads the module (once per process), finds the token by label, logs in, finds the
    /// private key and the certificate by label, checks that they match and opens the
    /// session pool. Every failure names the module, token or object concerned.
    pub fn open(config: &Pkcs11Config) -> Result<Self, SignError> {
        let token = Token {
            ctx: context(&config.module)?,
            module: config.module.clone(),
            label: config.token_label.clone(),
            key_label: config.key_label.clone(),
            pin: AuthPin::from(config.pin.clone()),
        };
        let first = token.open()?;

        let cert_label = config.cert_label.as_deref().unwrap_or(&config.key_label);
        let cert_handle = token.find_one(
            &first.session,
            ObjectClass::CERTIFICATE,
            cert_label,
            "certificate",
        )?;
        let cert_der = token.attribute(
            &first.session,
            cert_handle,
            AttributeType::Value,
            &format!("value of certificate \"{cert_label}\""),
        )?;
        let kind = KeyKind::of_certificate(&cert_der).map_err(|e| {
            SignError::Certificate(format!(
                "certificate \"{cert_label}\" on token \"{}\": {e}",
                token.label
            ))
        })?;
        kind.check_digest(config.digest)?;
        let key_type = session_key_type(&token, &first)?;
        let expected = match kind {
            KeyKind::Rsa { .. } => cryptoki::object::KeyType::RSA,
            KeyKind::Ecdsa(_) => cryptoki::object::KeyType::EC,
        };
        if key_type != expected {
            return Err(SignError::Key(format!(
                "private key \"{}\" on token \"{}\" is of type {key_type}, certificate \"{cert_label}\" holds an {} key",
                token.key_label,
                token.label,
                kind.describe()
            )));
        }

        let chain_der = match &config.chain_pem {
            Some(path) => super::file_key::read_pem_certificates(path)?,
            None => Vec::new(),
        };

        let mut sessions = vec![Some(first)];
        for _ in 1..config.sessions.max(1) {
            sessions.push(Some(token.open()?));
        }
        let signer = Pkcs11Signer {
            token,
            kind,
            digest: config.digest,
            cert_der,
            chain_der,
            pool: Pool {
                idle: Mutex::new(sessions),
                available: Condvar::new(),
            },
        };
        // The key and the certificate belong together when a signature by the one
        // verifies with the other: one check for every key type.
        let probe = b"pec: does the key match the certificate?";
        let signature = signer.sign(config.digest, probe)?;
        if !super::verify_with_certificate(&signer.cert_der, config.digest, probe, &signature)? {
            return Err(SignError::Key(format!(
                "private key \"{}\" on token \"{}\" does not match the public key of certificate \"{cert_label}\"",
                signer.token.key_label, signer.token.label
            )));
        }
        Ok(signer)
    }

    /// One signature over `data` with SHA-256 as the token makes it, outside any CMS (the
    /// baseline for benchmarks): `CKM_SHA256_RSA_PKCS`, or for ECDSA a software SHA-256
    /// and `CKM_ECDSA` (the raw `r || s`, not re-encoded).
    pub fn bare_sign(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        match self.kind {
            KeyKind::Rsa { .. } => self.sign_with(&Mechanism::Sha256RsaPkcs, data),
            KeyKind::Ecdsa(_) => self.sign_with(&Mechanism::Ecdsa, &DigestAlg::Sha256.digest(data)),
        }
    }

    fn sign_with(&self, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut lease = self.pool.take();
        let mut reopened = false;
        loop {
            let live = match lease.live.take() {
                Some(live) => live,
                None => {
                    reopened = true;
                    self.token.open()?
                }
            };
            match live.session.sign(mechanism, live.key, data) {
                Ok(signature) => {
                    lease.live = Some(live);
                    return Ok(signature);
                }
                Err(e) if session_lost(&e) && !reopened => {
                    tracing::warn!(
                        token = %self.token.label,
                        error = %describe(&e),
                        "pkcs#11 session lost, reopening"
                    );
                    drop(live);
                }
                Err(e) => {
                    if !session_lost(&e) {
                        lease.live = Some(live);
                    }
                    return Err(SignError::Pkcs11(format!(
                        "signature with key \"{}\" on token \"{}\" failed: {}",
                        self.token.key_label,
                        self.token.label,
                        describe(&e)
                    )));
                }
            }
        }
    }
}

/// `CKA_KEY_TYPE` of the private key found in `live`.
fn session_key_type(token: &Token, live: &Live) -> Result<cryptoki::object::KeyType, SignError> {
    let attrs = live
        .session
        .get_attributes(live.key, &[AttributeType::KeyType])
        .map_err(|e| {
            token.err(format!(
                "cannot read the type of private key \"{}\" on token \"{}\": {}",
                token.key_label,
                token.label,
                describe(&e)
            ))
        })?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::KeyType(t) => Some(t),
            _ => None,
        })
        .ok_or_else(|| {
            token.err(format!(
                "type of private key \"{}\" not available on token \"{}\"",
                token.key_label, token.label
            ))
        })
}

/// The raw `r || s` of `CKM_ECDSA` (PKCS#11 v2.40 §2.3.1) as a DER `ECDSA-Sig-Value`
/// (RFC 5753 §7.2, what CMS and OpenSSL expect).
fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, SignError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(SignError::Pkcs11(format!(
            "ecdsa signature of {} bytes: expected r || s of equal lengths",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let bad = |e: openssl::error::ErrorStack| SignError::Pkcs11(format!("ecdsa signature: {e}"));
    let r = openssl::bn::BigNum::from_slice(r).map_err(bad)?;
    let s = openssl::bn::BigNum::from_slice(s).map_err(bad)?;
    openssl::ecdsa::EcdsaSig::from_private_components(r, s)
        .and_then(|sig| sig.to_der())
        .map_err(bad)
}

impl Signer for Pkcs11Signer {
    fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    fn digest(&self) -> DigestAlg {
        self.digest
    }

    fn key_kind(&self) -> Result<KeyKind, SignError> {
        Ok(self.kind)
    }

    fn sign(&self, digest: DigestAlg, data: &[u8]) -> Result<Vec<u8>, SignError> {
        self.kind.check_digest(digest)?;
        match self.kind {
            KeyKind::Rsa { .. } => {
                let mechanism = match digest {
                    DigestAlg::Sha1 => Mechanism::Sha1RsaPkcs,
                    DigestAlg::Sha256 => Mechanism::Sha256RsaPkcs,
                    DigestAlg::Sha384 => Mechanism::Sha384RsaPkcs,
                };
                self.sign_with(&mechanism, data)
            }
            // Hashing here rather than CKM_ECDSA_SHA256/384: every token has CKM_ECDSA, and
            // the signed attributes hashed are public.
            KeyKind::Ecdsa(_) => {
                let raw = self.sign_with(&Mechanism::Ecdsa, &digest.digest(data))?;
                ecdsa_raw_to_der(&raw)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }

    #[test]
    fn ecdsa_raw_signatures_become_der() {
        // r = 0x01 (padded), s = 0x80… (needs a leading zero in DER).
        let mut raw = vec![0u8; 64];
        raw[31] = 1;
        raw[32] = 0x80;
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..9], &[0x02, 0x21, 0x00, 0x80]);
        assert_eq!(der.len(), 0x28);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
        assert!(ecdsa_raw_to_der(&[]).is_err());
    }

    #[test]
    fn signer_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Pkcs11Signer>();
    }
}
