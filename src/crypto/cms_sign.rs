//! TEMPORARY stub, replaced by the signing branch at merge.
use super::{SignError, Signer};
use crate::message::time::Instant;
pub fn sign_detached(_signer: &dyn Signer, _content: &[u8], _at: Instant) -> Result<Vec<u8>, SignError> {
    Ok(b"stub".to_vec())
}
