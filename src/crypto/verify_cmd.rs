//! `pec verify`.

use crate::cli::VerifyArgs;

pub fn run(_args: &VerifyArgs) -> i32 {
    eprintln!("pec verify: not built yet");
    2
}
