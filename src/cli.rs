//! Command-line interface (clap derive), shared by `main.rs` and the man-page generator.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// PEC (Posta Elettronica Certificata) provider for Postfix and Dovecot.
#[derive(Debug, Parser)]
#[command(name = "pec", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify PEC messages: signature, signer, daticert, and what kind of message each is.
    ///
    /// Exit status: 0 every file is a valid PEC message, 1 at least one is not, 2 usage or
    /// I/O error.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Messages to verify (RFC 5322 files, `.eml`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// PEM file with one or more trusted provider certificates: the signer must be one of
    /// them, as if they were the provider index. Repeatable.
    ///
    /// Without --trust the signature and the certificate validity are still verified and
    /// the message is classified, but the signer is not checked against a provider index:
    /// the verdict is "signature valid, signer not checked against a provider index (use
    /// --trust)" and the file counts as not valid (exit status 1).
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
    /// Check certificate validity at this time instead of now: `YYYY-MM-DD` or an RFC 3339
    /// instant (for archived mail).
    #[arg(long = "at", value_name = "DATE")]
    pub at: Option<String>,
    /// Print one JSON object per file instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Verify(args) => crate::crypto::verify_cmd::run(&args),
    }
}
