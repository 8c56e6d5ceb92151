//! Access point (punto di accesso, spec §5.1): formal checks, antivirus, and the decision to
//! wrap the submission into the signed transport envelope or refuse it with a signed
//! non-acceptance notice. `milter.rs` is the thin indymilter adapter.
