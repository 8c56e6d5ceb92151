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
    /// Run the provider: the access-point milter and the after-queue content filter.
    ///
    /// Logs go to standard error (`PEC_LOG` or `RUST_LOG` set the filter, default `info`);
    /// SIGTERM or SIGINT stop it after the transactions in progress.
    Serve(ConfigArgs),
    /// Check the configuration file offline and exit: 0 valid, 1 invalid (like `postfix
    /// check`).
    CheckConfig(ConfigArgs),
    /// Write the man pages pec(8) and pec.toml(5) into a directory (for packaging).
    #[command(hide = true)]
    GenerateMan {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The configuration file.
    #[arg(
        long,
        short = 'c',
        env = "PEC_CONFIG",
        default_value = "/etc/pec/pec.toml"
    )]
    pub config: PathBuf,
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
        Command::CheckConfig(args) => check_config(&args),
        Command::Serve(args) => serve(&args),
        Command::GenerateMan { dir } => match generate_man(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pec generate-man: {e}");
                2
            }
        },
    }
}

/// pec(8) from the clap definitions (one page with every subcommand), and pec.toml(5) from
/// the commented sample configuration.
pub fn generate_man(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command().name("pec");
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut page)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let heading = format!("pec {}", sub.get_name()).to_uppercase();
        page.extend_from_slice(format!(".SH \"{heading}\"\n").as_bytes());
        let mut desc = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_description_section(&mut desc)?;
        let mut opts = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut opts)?;
        page.extend_from_slice(&strip_heading(&desc));
        page.extend_from_slice(&strip_heading(&opts));
    }
    std::fs::write(dir.join("pec.8"), page)?;

    let mut conf = String::from(
        ".TH PEC.TOML 5 \"\" \"pec\" \"File formats\"\n.SH NAME\npec.toml \\- configuration of pec, the PEC provider for Postfix and Dovecot\n.SH DESCRIPTION\nOne TOML file, by default /etc/pec/pec.toml. Unknown keys are errors; every error names the file, the line and the key. \\fBpec check\\-config\\fR checks a file offline. The commented sample below documents every key and its default.\n.SH SAMPLE\n.nf\n",
    );
    for line in crate::config::example().lines() {
        let escaped = line.replace('\\', "\\\\");
        if escaped.starts_with('.') || escaped.starts_with('\'') {
            conf.push_str("\\&");
        }
        conf.push_str(&escaped);
        conf.push('\n');
    }
    conf.push_str(".fi\n.SH SEE ALSO\n\\fBpec\\fR(8)\n");
    std::fs::write(dir.join("pec.toml.5"), conf)
}

/// Drops the `.SH` line clap_mangen puts before a section, so sections can be nested.
fn strip_heading(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    text.lines()
        .filter(|l| !l.starts_with(".SH "))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

fn check_config(args: &ConfigArgs) -> i32 {
    match crate::config::load(&args.config) {
        Ok(_) => {
            println!("{}: ok", args.config.display());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn serve(args: &ConfigArgs) -> i32 {
    let filter = std::env::var("PEC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let config = match crate::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pec serve: cannot start the runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(crate::serve::run(config, async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pec serve: {e}");
            1
        }
    }
}
