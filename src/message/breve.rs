//! Ricevuta breve: the original with every named part replaced by its SHA-1 (spec §3.6).
// TEMPORARY stub, replaced by the daticert-breve branch at merge.
pub struct Breve { pub message: Vec<u8> }
pub fn breve_original(original: &[u8]) -> Result<Breve, String> { Ok(Breve { message: original.to_vec() }) }
