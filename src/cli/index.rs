// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec index sync|show|lookup|publish`: the local copy of the provider index.

use std::sync::Arc;

use clap::Subcommand;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use crate::config::Config;
use crate::index::sync::SyncError;
use crate::index::{sha1_hex_upper, tls_policy, ProviderInfo, ProviderRecord};
use crate::message::time::{Clock, SystemClock};
use crate::store::LogStore;

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Fetch the index from `index.ldap_url` or `index.signed_ldif`, check it and store it.
    ///
    /// Then writes `index.tls_policy_map`, when set, from the stored copy.
    ///
    /// Exit status: 0 stored, 1 fetch failed or the copy was refused (the current copy
    /// stays) or the TLS policy map could not be written (the copy is stored), 2
    /// configuration or store error.
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
    /// Write the Postfix TLS policy map (`index.tls_policy_map`, or --output) from the copy
    /// in use: every other provider's certified domain with `verify`, in `texthash:` format.
    /// `pec index sync` and `pec serve` write it too when `index.tls_policy_map` is set.
    TlsPolicy(IndexTlsPolicyArgs),
}

#[derive(Debug, clap::Args)]
pub struct IndexTlsPolicyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Write here instead of `index.tls_policy_map` ("-": standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
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

/// Runs one `pec index` command; returns the exit status.
pub fn run(command: &IndexCommand) -> i32 {
    match command {
        IndexCommand::Sync(args) => {
            with_store(&args.config, "pec index sync", |c, s| sync(args, c, s))
        }
        IndexCommand::Show(args) => with_store(args, "pec index show", show),
        IndexCommand::Lookup(args) => {
            with_store(&args.config, "pec index lookup", |c, s| lookup(args, c, s))
        }
        IndexCommand::Publish(args) => exit("pec index publish", publish(args)),
        IndexCommand::TlsPolicy(args) => {
            with_store(&args.config, "pec index tls-policy", |c, s| {
                tls_policy(args, c, s)
            })
        }
    }
}

/// Configuration and store for a command that works on the store (its setup errors are
/// printed as `pec index: …`), then the command itself, printed as `command: …`.
pub(super) fn with_store(
    args: &ConfigArgs,
    command: &str,
    f: impl FnOnce(&Config, Arc<dyn LogStore>) -> Result<i32, CliError>,
) -> i32 {
    let setup = args.load().and_then(|config| {
        let store = crate::wiring::open_store(&config).map_err(CliError::usage)?;
        Ok((config, store))
    });
    match setup {
        Ok((config, store)) => exit(command, f(&config, store)),
        Err(e) => exit("pec index", Err(e)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::usage(format!("cannot start the runtime: {e}")))
}

fn sync(args: &IndexSyncArgs, config: &Config, store: Arc<dyn LogStore>) -> Result<i32, CliError> {
    let settings = config.settings().map_err(CliError::usage)?;
    let Some(source) = settings.index_source else {
        return Err(CliError::usage(
            "no source: set index.ldap_url or index.signed_ldif",
        ));
    };
    let runtime = runtime()?;
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
            match &config.index.tls_policy_map {
                Some(path) => write_tls_policy(path, &c.index, config),
                None => Ok(0),
            }
        }
        Err(e @ SyncError::Store(_)) => Err(CliError::usage(e)),
        Err(e) => Err(CliError::failed(e)),
    }
}

fn tls_policy(
    args: &IndexTlsPolicyArgs,
    config: &Config,
    store: Arc<dyn LogStore>,
) -> Result<i32, CliError> {
    let (index, _) =
        crate::index::sync::load_current(&*store, &config.index.ldif).map_err(CliError::usage)?;
    match args
        .output
        .as_ref()
        .or(config.index.tls_policy_map.as_ref())
    {
        Some(path) if path.as_os_str() == "-" => {
            let (text, skipped) = tls_policy::render(&index, &config.provider.domains);
            print!("{text}");
            for d in skipped {
                eprintln!("pec index tls-policy: left out \"{d}\": not a DNS name");
            }
            Ok(0)
        }
        Some(path) => write_tls_policy(path, &index, config),
        None => Err(CliError::usage(
            "no map to write: set index.tls_policy_map or give --output",
        )),
    }
}

/// Writes the TLS policy map and says so; a failure to write is exit status 1 (the index
/// itself, if just synchronised, is stored).
fn write_tls_policy(
    path: &std::path::Path,
    index: &crate::index::ProviderIndex,
    config: &Config,
) -> Result<i32, CliError> {
    let w = tls_policy::write(path, index, &config.provider.domains)
        .map_err(|e| CliError::failed(format!("TLS policy map \"{}\": {e}", path.display())))?;
    println!(
        "{} the TLS policy map {}: {} certified domains with \"{}\"",
        if w.changed { "wrote" } else { "unchanged:" },
        w.path.display(),
        w.domains,
        tls_policy::LEVEL
    );
    for d in w.skipped {
        eprintln!("left out of the TLS policy map: \"{d}\" (not a DNS name)");
    }
    Ok(0)
}

fn show(config: &Config, store: Arc<dyn LogStore>) -> Result<i32, CliError> {
    let (index, from) =
        crate::index::sync::load_current(&*store, &config.index.ldif).map_err(CliError::usage)?;
    println!("{} providers, from {from}", index.providers().len());
    for p in index.providers() {
        let certs: Vec<String> = index
            .trust()
            .certificates()
            .filter(|c| c.provider.as_ref() == Some(p))
            .map(|c| sha1_hex_upper(&c.der))
            .collect();
        println!("{}", p.name);
        println!("  mailReceipt: {}", p.mail_receipt);
        println!("  managedDomains: {}", p.managed_domains.join(", "));
        for c in certs {
            println!("  certificate SHA-1: {c}");
        }
    }
    Ok(0)
}

fn lookup(
    args: &IndexLookupArgs,
    config: &Config,
    store: Arc<dyn LogStore>,
) -> Result<i32, CliError> {
    let (index, _) =
        crate::index::sync::load_current(&*store, &config.index.ldif).map_err(CliError::usage)?;
    let show = |p: &ProviderInfo| {
        println!("provider: {}", p.name);
        println!("mailReceipt: {}", p.mail_receipt);
        println!("managedDomains: {}", p.managed_domains.join(", "));
    };
    let path = std::path::Path::new(&args.what);
    if path.is_file() {
        let bytes =
            std::fs::read(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        let der = openssl::x509::X509::from_pem(&bytes)
            .or_else(|_| openssl::x509::X509::from_der(&bytes))
            .and_then(|c| c.to_der())
            .map_err(|_| {
                CliError::usage(format!("{}: not a PEM or DER certificate", path.display()))
            })?;
        println!("certificate SHA-1: {}", sha1_hex_upper(&der));
        return Ok(match index.trust().find(&der) {
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
        });
    }
    let domain = args
        .what
        .rsplit_once('@')
        .map_or(args.what.as_str(), |(_, d)| d);
    Ok(match index.provider_for_domain(domain) {
        Some(p) => {
            println!("{domain}: certificato");
            show(p);
            0
        }
        None => {
            println!("{domain}: esterno (not a PEC domain of the index)");
            1
        }
    })
}

fn publish(args: &IndexPublishArgs) -> Result<i32, CliError> {
    let config = args.config.load()?;
    let signer = crate::wiring::open_signer(&config).map_err(CliError::usage)?;
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
                return Err(CliError::usage(format!("--cert {}: {e}", path.display())));
            }
        }
    }
    let record = ProviderRecord {
        info: ProviderInfo {
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
    let der = crate::index::sync::publish(&record, &*signer, SystemClock.now())
        .map_err(CliError::usage)?;
    std::fs::write(&args.out, &der)
        .map_err(|e| CliError::usage(format!("{}: {e}", args.out.display())))?;
    println!(
        "wrote {} ({} bytes): {} with {} certificate(s): {}",
        args.out.display(),
        der.len(),
        record.info.name,
        record.certificates.len(),
        record
            .certificates
            .iter()
            .map(|c| sha1_hex_upper(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(0)
}
