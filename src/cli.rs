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
    /// check`). With --live, also reach the signing key (login and a test signature), the
    /// store, clamd (PING), Dovecot LMTP (LHLO), Postfix's reinjection listener (EHLO) and
    /// the index source, naming each failure.
    CheckConfig(CheckConfigArgs),
    /// The legal log (registro dei messaggi): seal, verify, search, export, purge.
    Log {
        #[command(subcommand)]
        command: crate::log::cmd::LogCommand,
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
    /// Which login may send as which address (by default a login sends only as itself).
    #[command(subcommand)]
    Sender(SenderCommand),
    /// Per-mailbox settings of the reception point.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// The store: schema migrations, and moving a SQLite store into PostgreSQL.
    Store {
        #[command(subcommand)]
        command: crate::store::cmd::StoreCommand,
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
}

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Also reach the HSM, the store, clamd, Dovecot, Postfix and the index source.
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Warn when the certificate expires within this many days.
    #[arg(long, default_value_t = crate::ops::EXPIRY_WARNING_DAYS)]
    pub warn_days: i64,
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Serve DOMAIN as a PEC domain too (reload pec serve and apply the Postfix lines).
    Add {
        #[command(flatten)]
        config: ConfigArgs,
        domain: String,
    },
    /// List the PEC domains served, and where each comes from.
    List(ConfigArgs),
    /// Stop serving a domain added with `pec domain add`.
    Remove {
        #[command(flatten)]
        config: ConfigArgs,
        domain: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SenderCommand {
    /// Let LOGIN (the SASL login) send as ADDRESS. Once a login has a mapping, it may send
    /// only as the addresses mapped to it (add its own address too if it keeps it).
    Allow {
        #[command(flatten)]
        config: ConfigArgs,
        login: String,
        address: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Set what the reception point does with mail for MAILBOX that is not valid PEC:
    /// `anomaly` (wrap it in a signed anomaly envelope), `refuse` (refuse it in SMTP) or
    /// `forward` (forward it unchanged to --to), overriding `reception.default_policy`.
    Policy {
        #[command(flatten)]
        config: ConfigArgs,
        mailbox: String,
        #[arg(value_parser = ["anomaly", "refuse", "forward"])]
        policy: String,
        /// Ordinary address, for `forward`.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Fetch the index from `index.ldap_url` or `index.signed_ldif`, check it and store it.
    ///
    /// Exit status: 0 stored, 1 fetch failed or the copy was refused (the current copy
    /// stays), 2 configuration or store error.
    Sync(IndexSyncArgs),
    /// Print the providers of the copy in use (stored copy, else `index.ldif`).
    Show(ConfigArgs),
    /// Look up a domain (→ certified or not, and its provider) or a certificate file, PEM
    /// or DER (→ its provider, by SHA-1 then byte comparison). Exit status 0 found, 1 not.
    Lookup(IndexLookupArgs),
    /// Write our own provider record (provider.name, the signing certificate and any
    /// --cert, provider.mail_receipt, provider.domains) as a signed LDIF `.p7m`, signed
    /// with our key, for publication at our LDIFLocationURL.
    Publish(IndexPublishArgs),
}

#[derive(Debug, clap::Args)]
pub struct IndexPublishArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output file (DER).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: std::path::PathBuf,
    /// Further certificate (PEM) to publish besides the signing one, e.g. the renewed one
    /// during the overlap. Repeatable.
    #[arg(long = "cert", value_name = "PEM")]
    pub certs: Vec<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct IndexSyncArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Accept an empty or shrunken index (as `index.force`).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct IndexLookupArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// A domain, or the path of a certificate file.
    pub what: String,
}

#[derive(Debug, Subcommand)]
pub enum TimersCommand {
    /// Run one pass: send every due 12 h / 24 h notice, print one line per notice.
    ///
    /// Exit status: 0 every due notice was sent (or none was due), 1 some could not be sent
    /// (they are retried by the next pass), 2 configuration, store or signer error.
    Run(TimersRunArgs),
}

#[derive(Debug, clap::Args)]
pub struct TimersRunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run the pass as if it were this instant (RFC 3339, e.g. `2026-01-02T10:00:00Z`)
    /// instead of now: for tests, and to catch up by hand.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
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
        Command::Status(args) => match crate::ops::load(&args.config) {
            Ok(c) => {
                use crate::message::time::Clock;
                crate::ops::report(&crate::ops::status(
                    &c,
                    crate::message::time::SystemClock.now(),
                ))
            }
            Err(code) => code,
        },
        Command::Keys(args) => match crate::ops::load(&args.config.config) {
            Ok(c) => crate::ops::keys(&c, args.warn_days),
            Err(code) => code,
        },
        Command::Domain(DomainCommand::Add { config, domain }) => {
            match crate::ops::load(&config.config) {
                Ok(c) => crate::ops::domain_add(&c, &domain),
                Err(code) => code,
            }
        }
        Command::Domain(DomainCommand::Remove { config, domain }) => {
            match crate::ops::load(&config.config) {
                Ok(c) => crate::ops::domain_remove(&c, &domain),
                Err(code) => code,
            }
        }
        Command::Domain(DomainCommand::List(config)) => match crate::ops::load(&config.config) {
            Ok(c) => crate::ops::domain_list(&c),
            Err(code) => code,
        },
        Command::Serve(args) => serve(&args),
        Command::GenerateMan { dir } => match generate_man(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pec generate-man: {e}");
                2
            }
        },
        Command::Timers(TimersCommand::Run(args)) => timers_run(&args),
        Command::Index(IndexCommand::Sync(args)) => index_sync(&args),
        Command::Index(IndexCommand::Show(args)) => index_show(&args),
        Command::Index(IndexCommand::Lookup(args)) => index_lookup(&args),
        Command::Index(IndexCommand::Publish(args)) => index_publish(&args),
        Command::Sender(SenderCommand::Allow {
            config,
            login,
            address,
        }) => sender_allow(&config, &login, &address),
        Command::Mailbox(MailboxCommand::Policy {
            config,
            mailbox,
            policy,
            to,
        }) => mailbox_policy(&config, &mailbox, &policy, to.as_deref()),
        Command::Log { command } => crate::log::cmd::run(&command),
        Command::Store { command } => crate::store::cmd::run(&command),
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

/// A plausible addr-spec for the admin commands (one `@`, non-empty parts, no spaces).
fn admin_address(what: &str, a: &str) -> Result<(), i32> {
    let ok = a
        .rsplit_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        && !a.chars().any(|c| c.is_whitespace() || c == '<' || c == '>');
    if ok {
        Ok(())
    } else {
        eprintln!("pec: {what}: invalid address \"{a}\"");
        Err(2)
    }
}

fn sender_allow(config: &ConfigArgs, login: &str, address: &str) -> i32 {
    if let Err(code) = admin_address("sender", address) {
        return code;
    }
    let (_, store) = match index_setup(config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match store.allow_sender(login, address) {
        Ok(()) => {
            println!("{login} may send as {}", address.to_ascii_lowercase());
            0
        }
        Err(e) => {
            eprintln!("pec sender allow: {e}");
            2
        }
    }
}

fn mailbox_policy(config: &ConfigArgs, mailbox: &str, policy: &str, to: Option<&str>) -> i32 {
    use crate::store::MailboxPolicy;
    if let Err(code) = admin_address("mailbox", mailbox) {
        return code;
    }
    let policy = match (policy, to) {
        ("anomaly", None) => MailboxPolicy::Anomaly,
        ("refuse", None) => MailboxPolicy::Refuse,
        ("forward", Some(to)) => {
            if let Err(code) = admin_address("--to", to) {
                return code;
            }
            MailboxPolicy::Forward(to.to_string())
        }
        ("forward", None) => {
            eprintln!("pec mailbox policy: forward needs --to ADDRESS");
            return 2;
        }
        (p, Some(_)) => {
            eprintln!("pec mailbox policy: --to goes with forward, not {p}");
            return 2;
        }
        (p, None) => {
            eprintln!("pec mailbox policy: unknown policy \"{p}\"");
            return 2;
        }
    };
    let (_, store) = match index_setup(config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match store.set_mailbox_policy(mailbox, &policy) {
        Ok(()) => {
            match &policy {
                MailboxPolicy::Forward(to) => println!("{mailbox}: forward to {to}"),
                p => println!("{mailbox}: {}", p.label()),
            }
            0
        }
        Err(e) => {
            eprintln!("pec mailbox policy: {e}");
            2
        }
    }
}

/// Configuration and store for the `index` commands; prints the error itself.
fn index_setup(
    args: &ConfigArgs,
) -> Result<
    (
        crate::config::Config,
        std::sync::Arc<dyn crate::store::LogStore>,
    ),
    i32,
> {
    let config = crate::config::load(&args.config).map_err(|e| {
        eprintln!("{e}");
        2
    })?;
    let store = crate::store::open(&config.store).map_err(|e| {
        eprintln!("pec index: {e}");
        2
    })?;
    Ok((config, store))
}

fn index_sync(args: &IndexSyncArgs) -> i32 {
    use crate::message::time::{Clock, SystemClock};
    let (config, store) = match index_setup(&args.config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let source = match config.settings() {
        Ok(s) => s.index_source,
        Err(e) => {
            eprintln!("pec index sync: {e}");
            return 2;
        }
    };
    let Some(source) = source else {
        eprintln!("pec index sync: no source: set index.ldap_url or index.signed_ldif");
        return 2;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pec index sync: cannot start the runtime: {e}");
            return 2;
        }
    };
    eprintln!("pec index sync: fetching from {} …", source.name());
    let started = std::time::Instant::now();
    let force = args.force || config.index.force;
    match runtime.block_on(crate::index::sync::sync(
        &*store,
        &source,
        force,
        SystemClock.now(),
    )) {
        Ok(c) => {
            println!(
                "stored {} providers from {} ({} bytes of LDIF, {:.1} s)",
                c.stored.providers,
                c.stored.source,
                c.stored.ldif.len(),
                started.elapsed().as_secs_f64()
            );
            0
        }
        Err(crate::index::sync::SyncError::Store(e)) => {
            eprintln!("pec index sync: {e}");
            2
        }
        Err(e) => {
            eprintln!("pec index sync: {e}");
            1
        }
    }
}

fn index_show(args: &ConfigArgs) -> i32 {
    let (config, store) = match index_setup(args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let (index, from) = match crate::index::sync::load_current(&*store, &config.index.ldif) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("pec index show: {e}");
            return 2;
        }
    };
    println!("{} providers, from {from}", index.providers().len());
    for p in index.providers() {
        let certs: Vec<String> = index
            .trust()
            .certificates()
            .filter(|c| c.provider.as_ref() == Some(p))
            .map(|c| crate::index::sha1_hex_upper(&c.der))
            .collect();
        println!("{}", p.name);
        println!("  mailReceipt: {}", p.mail_receipt);
        println!("  managedDomains: {}", p.managed_domains.join(", "));
        for c in certs {
            println!("  certificate SHA-1: {c}");
        }
    }
    0
}

fn index_lookup(args: &IndexLookupArgs) -> i32 {
    let (config, store) = match index_setup(&args.config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let (index, _) = match crate::index::sync::load_current(&*store, &config.index.ldif) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("pec index lookup: {e}");
            return 2;
        }
    };
    let show = |p: &crate::index::ProviderInfo| {
        println!("provider: {}", p.name);
        println!("mailReceipt: {}", p.mail_receipt);
        println!("managedDomains: {}", p.managed_domains.join(", "));
    };
    let path = std::path::Path::new(&args.what);
    if path.is_file() {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("pec index lookup: {}: {e}", path.display());
                return 2;
            }
        };
        let der = match openssl::x509::X509::from_pem(&bytes)
            .or_else(|_| openssl::x509::X509::from_der(&bytes))
            .and_then(|c| c.to_der())
        {
            Ok(d) => d,
            Err(_) => {
                eprintln!(
                    "pec index lookup: {}: not a PEM or DER certificate",
                    path.display()
                );
                return 2;
            }
        };
        println!("certificate SHA-1: {}", crate::index::sha1_hex_upper(&der));
        return match index.trust().find(&der) {
            Some(t) => {
                match &t.provider {
                    Some(p) => show(p),
                    None => println!("provider: (unknown)"),
                }
                0
            }
            None => {
                println!("not in the index");
                1
            }
        };
    }
    let domain = args
        .what
        .rsplit_once('@')
        .map_or(args.what.as_str(), |(_, d)| d);
    match index.provider_for_domain(domain) {
        Some(p) => {
            println!("{domain}: certificato");
            show(p);
            0
        }
        None => {
            println!("{domain}: esterno (not a PEC domain of the index)");
            1
        }
    }
}

fn timers_run(args: &TimersRunArgs) -> i32 {
    use crate::message::kind::Timeout;
    use crate::message::time::{Clock, FixedClock, Instant, SystemClock};

    let now = match &args.now {
        None => SystemClock.now(),
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => Instant::from_utc(t.with_timezone(&chrono::Utc)),
            Err(e) => {
                eprintln!("pec timers run: --now \"{s}\": not an RFC 3339 instant: {e}");
                return 2;
            }
        },
    };
    let config = match crate::config::load(&args.config.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let timers = match crate::serve::open_timers(&config, std::sync::Arc::new(FixedClock::new(now)))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pec timers run: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pec timers run: cannot start the runtime: {e}");
            return 2;
        }
    };
    let report = match runtime.block_on(timers.run_once(now)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pec timers run: {e}");
            return 2;
        }
    };
    let hours = |w: Timeout| if w == Timeout::Hours12 { "12h" } else { "24h" };
    for s in &report.sent {
        println!(
            "sent {} notice {} to the sender of {} for {}",
            hours(s.which),
            s.notice_id,
            s.pec_id,
            s.recipient
        );
    }
    for f in &report.failed {
        println!(
            "FAILED {} notice for {} of {}: {}",
            hours(f.which),
            f.recipient,
            f.pec_id,
            f.reason
        );
    }
    println!(
        "timers at {}: {} sent (12h: {}, 24h: {}), {} failed",
        now.utc().to_rfc3339(),
        report.sent.len(),
        report.count(Timeout::Hours12),
        report.count(Timeout::Hours24),
        report.failed.len()
    );
    i32::from(!report.failed.is_empty())
}

fn check_config(args: &CheckConfigArgs) -> i32 {
    let path = &args.config.config;
    match crate::config::load(path) {
        Ok(config) => {
            println!("{}: ok", path.display());
            if args.live {
                return crate::ops::report(&crate::ops::check_live(&config));
            }
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
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    // SIGHUP: re-read the configuration (see crate::reload).
    let (hup_tx, hup_rx) = tokio::sync::mpsc::channel(1);
    let reloads = crate::serve::Reloads {
        path: args.config.clone(),
        requests: hup_rx,
    };
    let _hup = runtime.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            // A reload already waiting covers this signal too.
            let _ = hup_tx.try_send(());
        }
    });
    let result = runtime.block_on(crate::serve::run_with(config, Some(reloads), async {
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

fn index_publish(args: &IndexPublishArgs) -> i32 {
    use crate::message::time::{Clock, SystemClock};
    let config = match crate::config::load(&args.config.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let signer = match crate::serve::open_signer(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pec index publish: {e}");
            return 2;
        }
    };
    let mut certificates = vec![signer.certificate_der().to_vec()];
    for path in &args.certs {
        let der = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                openssl::x509::X509::from_pem(&b)
                    .and_then(|c| c.to_der())
                    .map_err(|e| e.to_string())
            });
        match der {
            Ok(d) if certificates.contains(&d) => {}
            Ok(d) => certificates.push(d),
            Err(e) => {
                eprintln!("pec index publish: --cert {}: {e}", path.display());
                return 2;
            }
        }
    }
    let record = crate::index::ProviderRecord {
        info: crate::index::ProviderInfo {
            name: config.provider.name.clone(),
            mail_receipt: config.provider.mail_receipt.clone(),
            managed_domains: config
                .provider
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        },
        certificates,
    };
    let der = match crate::index::sync::publish(&record, &*signer, SystemClock.now()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pec index publish: {e}");
            return 2;
        }
    };
    if let Err(e) = std::fs::write(&args.out, &der) {
        eprintln!("pec index publish: {}: {e}", args.out.display());
        return 2;
    }
    println!(
        "wrote {} ({} bytes): {} with {} certificate(s): {}",
        args.out.display(),
        der.len(),
        record.info.name,
        record.certificates.len(),
        record
            .certificates
            .iter()
            .map(|c| crate::index::sha1_hex_upper(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    0
}
