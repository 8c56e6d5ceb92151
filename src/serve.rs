//! `pec serve`: runs the enabled roles on one tokio runtime.
