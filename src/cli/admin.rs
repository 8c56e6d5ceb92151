// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec sender allow` and `pec mailbox policy`: per-login and per-mailbox settings kept in
//! the store.

use clap::Subcommand;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use super::index::with_store;
use crate::store::MailboxPolicy;

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

/// A plausible addr-spec for the admin commands (one `@`, non-empty parts, no spaces).
fn admin_address(what: &str, a: &str) -> Result<(), CliError> {
    let ok = a
        .rsplit_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        && !a.chars().any(|c| c.is_whitespace() || c == '<' || c == '>');
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!("{what}: invalid address \"{a}\"")))
    }
}

/// Runs `pec sender allow`; returns the exit status.
pub fn sender(command: &SenderCommand) -> i32 {
    let SenderCommand::Allow {
        config,
        login,
        address,
    } = command;
    if let Err(e) = admin_address("sender", address) {
        return exit("pec", Err(e));
    }
    with_store(config, "pec sender allow", |_, store| {
        store
            .allow_sender(login, address)
            .map_err(CliError::usage)?;
        println!("{login} may send as {}", address.to_ascii_lowercase());
        Ok(0)
    })
}

/// Runs `pec mailbox policy`; returns the exit status.
pub fn mailbox(command: &MailboxCommand) -> i32 {
    let MailboxCommand::Policy {
        config,
        mailbox,
        policy,
        to,
    } = command;
    if let Err(e) = admin_address("mailbox", mailbox) {
        return exit("pec", Err(e));
    }
    let policy = match (policy.as_str(), to.as_deref()) {
        ("anomaly", None) => MailboxPolicy::Anomaly,
        ("refuse", None) => MailboxPolicy::Refuse,
        ("forward", Some(to)) => {
            if let Err(e) = admin_address("--to", to) {
                return exit("pec", Err(e));
            }
            MailboxPolicy::Forward(to.to_string())
        }
        ("forward", None) => {
            let e = CliError::usage("forward needs --to ADDRESS");
            return exit("pec mailbox policy", Err(e));
        }
        (p, Some(_)) => {
            let e = CliError::usage(format!("--to goes with forward, not {p}"));
            return exit("pec mailbox policy", Err(e));
        }
        (p, None) => {
            let e = CliError::usage(format!("unknown policy \"{p}\""));
            return exit("pec mailbox policy", Err(e));
        }
    };
    with_store(config, "pec mailbox policy", |_, store| {
        store
            .set_mailbox_policy(mailbox, &policy)
            .map_err(CliError::usage)?;
        match &policy {
            MailboxPolicy::Forward(to) => println!("{mailbox}: forward to {to}"),
            p => println!("{mailbox}: {}", p.label()),
        }
        Ok(0)
    })
}
