//! Ricevuta breve: the original with every named part replaced by its SHA-1 (spec §3.6).
