//! Locates the read-only real PEC samples (spec §14). They are never copied into the
//! project: tests read them where they are.

use std::path::PathBuf;

/// `$PEC_SAMPLES` if set, else `<crate>/../shared/pec-samples`. When the directory is
/// absent, prints a loud `SKIPPED:` line on stderr and returns `None`.
pub fn samples_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PEC_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/pec-samples"
            ))
        });
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: pec-samples not found at {}", dir.display());
        None
    }
}
