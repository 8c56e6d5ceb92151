use std::path::PathBuf;

/// The real PEC samples (`shared/pec-samples`): `$PEC_SAMPLES` if set, else
/// `<CARGO_MANIFEST_DIR>/../shared/pec-samples`. `None`, after a loud message on stderr, when
/// the directory is absent.
pub fn samples_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("PEC_SAMPLES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/pec-samples"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: pec-samples not found at {}", dir.display());
        None
    }
}
