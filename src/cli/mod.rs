// SPDX-License-Identifier: GPL-3.0-or-later
//! Command-line interface (clap derive), shared by `main.rs` and the man-page generator:
//! the commands, one file each, with one error type ([`CliError`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod admin;
pub mod args;
pub mod capacity;
pub mod error;
mod evidence;
mod index;
pub mod install;
pub mod log;
pub mod ops;
mod quarantine;
mod rem;
mod rem_routing;
mod rem_trust;
mod serve;
mod service;
mod setup;
pub mod store;
mod timers;
pub mod verify;
pub mod verify_rem;

use admin::{MailboxCommand, SenderCommand};
pub use args::ConfigArgs;
pub use error::CliError;
use index::IndexCommand;
use ops::{CheckConfigArgs, DomainCommand, KeysArgs};
use timers::TimersCommand;
use verify::VerifyArgs;

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
    /// check`). With --live, also reach the PEC message key and the seal key (login, each
    /// key found and paired with its certificate, usage bits checked; nothing signed), the
    /// store, clamd (PING), Dovecot LMTP (LHLO), Postfix's reinjection listener (EHLO) and
    /// the index source, naming each failure.
    CheckConfig(CheckConfigArgs),
    /// The legal log (registro dei messaggi): seal, verify, search, export, purge.
    Log {
        #[command(subcommand)]
        command: log::LogCommand,
    },
    /// Write the man pages pec(8) and pec.toml(5) into a directory (for packaging).
    #[command(hide = true)]
    GenerateMan {
        /// Output directory.
        dir: PathBuf,
    },
    /// The 12 h / 24 h delivery timers (`pec serve` runs them every `timers.interval`).
    #[command(subcommand)]
    Timers(TimersCommand),
    /// The local copy of the provider index (`pec serve` refreshes it every
    /// `index.refresh`).
    #[command(subcommand)]
    Index(IndexCommand),
    /// REM (ETSI EN 319 532-4, the AgID REM-Policy-IT profile): the Trusted Lists of the
    /// REM peers, our CSI document, the routing check of a recipient domain.
    #[command(subcommand)]
    Rem(rem::RemCommand),
    /// Which login may send as which address (by default a login sends only as itself).
    #[command(subcommand)]
    Sender(SenderCommand),
    /// The quarantine of infected messages (kept 30 months, spec §8): list, show, export
    /// byte-exact for the authorities.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
    /// Per-mailbox settings kept in the store: receipt type, limits, daily quota, state,
    /// policy for ordinary mail, arrival notices, retirement.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// The REM evidences (ETSI EN 319 522-2) we issued or received, kept beside their
    /// legal-log records: show, export byte-exact, list by message.
    Evidence {
        #[command(subcommand)]
        command: evidence::EvidenceCommand,
    },
    /// Suspend the whole service (an incident, a planned outage): the access point answers
    /// every submission with a temporary failure giving --reason, until `pec resume`. The
    /// legal log records the interval; `pec stats agid` reports it.
    Suspend(service::SuspendArgs),
    /// End the suspension begun by `pec suspend`.
    Resume(ConfigArgs),
    /// Reports for the regulator.
    #[command(subcommand)]
    Stats(service::StatsCommand),
    /// The store: schema migrations, and moving a SQLite store into PostgreSQL.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Health summary: store, legal log seals, index age and source, pending timers,
    /// quarantine, signing certificate expiry, pec serve's listeners and metrics endpoint.
    ///
    /// Exit status: 0 healthy (warnings allowed), 1 something is wrong, 2 configuration
    /// error.
    Status(ConfigArgs),
    /// Show the signing certificate (subject, issuer, serial, validity, fingerprints) and
    /// check it against the provider index.
    ///
    /// Exit status: 0 valid and listed for provider.name (a warning is printed within
    /// --warn-days of the expiry), 1 expired, not yet valid, not in the index or listed for
    /// another provider, 2 configuration or key error.
    Keys(KeysArgs),
    /// The PEC domains served: provider.domains of the configuration plus those added here
    /// (kept in the store). Prints the Postfix lines to apply.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Measure this node's cryptographic floor: the signatures and verifications of a PEC
    /// transaction, each timed with the configured key, token and provider index (CPU time
    /// of this process and wall time), the floor per transaction of the sender's and the
    /// recipient's side, and the transactions per second per core they allow. For sizing a
    /// node; it signs only test messages and keeps none.
    Capacity(capacity::CapacityArgs),
    /// Installation helpers: the single-provider index file, the Postfix and Dovecot lines
    /// of this configuration (see /usr/share/doc/pec/install.md).
    #[command(subcommand)]
    Setup(setup::SetupCommand),
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
        Command::Verify(args) => verify::run(&args),
        Command::CheckConfig(args) => ops::check_config(&args),
        Command::Status(args) => ops::status_command(&args),
        Command::Keys(args) => ops::keys_command(&args),
        Command::Domain(command) => ops::domain(&command),
        Command::Serve(args) => serve::run(&args),
        Command::GenerateMan { dir } => error::exit(
            "pec generate-man",
            generate_man(&dir).map(|()| 0).map_err(CliError::usage),
        ),
        Command::Timers(command) => timers::run(&command),
        Command::Index(command) => index::run(&command),
        Command::Sender(command) => admin::sender(&command),
        Command::Mailbox(command) => admin::mailbox(&command),
        Command::Suspend(args) => service::suspend(&args),
        Command::Resume(args) => service::resume(&args),
        Command::Stats(command) => service::stats(&command),
        Command::Log { command } => log::run(&command),
        Command::Quarantine { command } => quarantine::run(&command),
        Command::Evidence { command } => evidence::evidence_command(&command),
        Command::Store { command } => store::run(&command),
        Command::Setup(command) => setup::run(&command),
        Command::Capacity(args) => capacity::run(&args),
        Command::Rem(command) => rem::run(&command),
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
    // clap_mangen names each subcommand as a page of its own (`pec-verify(8)`); they are
    // sections of this one page, below.
    let mut text = String::from_utf8_lossy(&page).into_owned();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name().replace('-', "\\-");
        text = text.replace(&format!("pec\\-{name}(8)"), &format!("pec {name}"));
    }
    text = text.replace("pec\\-help(8)", "pec help");
    let mut page = text.into_bytes();
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
    page.extend_from_slice(
        b".SH \"SEE ALSO\"\n\\fBpec.toml\\fR(5); the installation guide /usr/share/doc/pec/install.md and the operator guide /usr/share/doc/pec/operator-guide.md\n",
    );
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
