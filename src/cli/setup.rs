// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec setup`: what a command writes better than an administrator copies from prose
//! (issue 18): the single-provider index file, and the Postfix and Dovecot lines that
//! match the configuration. See `docs/install.md`.

use std::path::PathBuf;

use clap::Subcommand;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use crate::config::{Config, Endpoint};
use crate::setup::{
    dovecot_lines, own_index_ldif, postfix_main_lines, postfix_master_lines, Hooks,
};

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Write the index file ([index] ldif) with this provider's own record: provider.name,
    /// provider.mail_receipt, provider.domains and the certificate. Until the national
    /// index is synchronised it lets this provider's users exchange PEC among themselves.
    Index {
        #[command(flatten)]
        config: ConfigArgs,
        /// The provider certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Write here instead of [index] ldif ("-": standard output).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Print the main.cf settings (one `postconf -e` argument per line) and the master.cf
    /// services that hook Postfix to this configuration's listeners.
    Postfix {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only the main.cf settings, or only the master.cf services.
        #[arg(long, value_parser = ["main", "master"])]
        only: Option<String>,
    },
    /// Print the Dovecot configuration this one needs: LMTP where [delivery] dovecot
    /// points, and the doveadm server's socket for the service user (the duplicate check).
    Dovecot(ConfigArgs),
}

fn hooks(config: &Config) -> Result<Hooks, CliError> {
    let s = config.settings().map_err(CliError::usage)?;
    let milter = match &s.access.listen {
        Endpoint::Inet { .. } => format!("inet:{}", s.access.listen),
        Endpoint::Unix(p) => format!("unix:{}", p.display()),
    };
    Ok(Hooks {
        domains: config.provider.domains.clone(),
        milter,
        filter: s.filter.listen.to_string(),
        delivery: s.delivery.listen.to_string(),
        reinject: s.access.reinject.to_string(),
        dovecot: s.delivery.dovecot.to_string(),
        message_size_limit: s.access.hard_size_limit,
        tls_policy_map: config
            .index
            .tls_policy_map
            .as_ref()
            .map(|p| p.display().to_string()),
    })
}

pub fn run(command: &SetupCommand) -> i32 {
    let result = match command {
        SetupCommand::Index {
            config,
            cert,
            output,
        } => config.load().and_then(|c| {
            let pem = std::fs::read(cert)
                .map_err(|e| CliError::usage(format!("{}: {e}", cert.display())))?;
            let ldif = own_index_ldif(
                &c.provider.name,
                &c.provider.mail_receipt,
                &c.provider.domains,
                &pem,
            )
            .map_err(|e| CliError::usage(format!("{}: {e}", cert.display())))?;
            let out = output.clone().unwrap_or_else(|| c.index.ldif.clone());
            if out.as_os_str() == "-" {
                print!("{ldif}");
            } else {
                std::fs::write(&out, ldif)
                    .map_err(|e| CliError::failed(format!("{}: {e}", out.display())))?;
                println!(
                    "{}: the index with the record of \"{}\" ({})",
                    out.display(),
                    c.provider.name,
                    c.provider.domains.join(", ")
                );
            }
            Ok(0)
        }),
        SetupCommand::Postfix { config, only } => config.load().and_then(|c| {
            let h = hooks(&c)?;
            if only.as_deref() != Some("master") {
                for l in postfix_main_lines(&h) {
                    println!("{l}");
                }
            }
            if only.as_deref() != Some("main") {
                print!("{}", postfix_master_lines(&h));
            }
            Ok(0)
        }),
        SetupCommand::Dovecot(config) => config.load().and_then(|c| {
            print!(
                "{}",
                dovecot_lines(&hooks(&c)?, super::install::SERVICE_USER)
            );
            Ok(0)
        }),
    };
    exit("pec setup", result)
}
