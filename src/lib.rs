//! `pec`: a PEC (Posta Elettronica Certificata) provider that plugs into stock Postfix and
//! Dovecot. See `README.md` for the operator's view and `shared/spec/pec-spec.md` for the
//! protocol.
#![forbid(unsafe_code)]

pub mod cli;
pub mod crypto;
pub mod index;
pub mod message;
