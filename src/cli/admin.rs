// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec sender allow` and `pec mailbox policy`: per-login and per-mailbox settings kept in
//! the store.

use clap::Subcommand;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use super::index::with_store;
use crate::message::kind::ReceiptType;
use crate::store::{ArrivalNotice, LogStore, MailboxPolicy, MailboxState, Retired};

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
    /// `anomaly` (wrap it in a signed anomaly envelope), `refuse` (refuse it in SMTP),
    /// `forward` (forward it unchanged to --to), `discard` (drop it, with a legal-log
    /// record) or `folder` (deliver it unchanged into --folder of the mailbox, through
    /// Dovecot LMTP's `lmtp_save_to_detail_mailbox`), overriding `reception.default_policy`.
    Policy {
        #[command(flatten)]
        config: ConfigArgs,
        mailbox: String,
        #[arg(value_parser = ["anomaly", "refuse", "forward", "discard", "folder"])]
        policy: String,
        /// Ordinary address, for `forward`.
        #[arg(long)]
        to: Option<String>,
        /// Folder of the mailbox, for `folder`: letters, digits, `-`, `_`, `.`.
        #[arg(long)]
        folder: Option<String>,
    },
    /// Set MAILBOX's receipt type and limits; `default` puts a setting back to the
    /// provider's value (`access.*`; completa; no quota).
    Set {
        #[command(flatten)]
        config: ConfigArgs,
        mailbox: String,
        /// Receipt type for mail sent without X-TipoRicevuta (ordinary mail clients cannot
        /// set it): completa, breve, sintetica or default.
        #[arg(long, value_name = "TYPE")]
        receipt_type: Option<String>,
        /// Recipients per message (overrides access.max_recipients), or default.
        #[arg(long, value_name = "N")]
        max_recipients: Option<String>,
        /// Size × recipients in bytes (overrides access.max_total_size), or default.
        #[arg(long, value_name = "BYTES")]
        max_total_size: Option<String>,
        /// Messages accepted per 24 hours; over it a non-acceptance notice. `default`: no
        /// quota.
        #[arg(long, value_name = "N")]
        daily_quota: Option<String>,
    },
    /// Set MAILBOX's state: active, suspended (no sending, no receiving: senders get a
    /// non-delivery notice "casella disattivata") or read-only (reading only, as when a
    /// provider ceases: no sending, no receiving).
    State {
        #[command(flatten)]
        config: ConfigArgs,
        mailbox: String,
        #[arg(value_parser = ["active", "suspended", "read-only"])]
        state: String,
    },
    /// Arrival notices of MAILBOX: a short plain message to each --to address when a PEC
    /// message is delivered (only for the --from senders, when given); --off removes them.
    /// Sent when delivery.arrival_notices is on.
    Notify {
        #[command(flatten)]
        config: ConfigArgs,
        mailbox: String,
        /// Ordinary address to notify (repeatable).
        #[arg(long)]
        to: Vec<String>,
        /// Only for messages from this sender (repeatable).
        #[arg(long)]
        from: Vec<String>,
        #[arg(long, conflicts_with_all = ["to", "from"])]
        off: bool,
    },
    /// Retire MAILBOX for good: it neither sends nor receives, and the store keeps it with
    /// the holder's identifier so that it is never given to another holder.
    Retire {
        #[command(flatten)]
        config: ConfigArgs,
        mailbox: String,
        /// The holder's identifier (e.g. the tax code).
        #[arg(long)]
        holder: String,
    },
    /// Whether MAILBOX may be given to HOLDER: exit 0 yes, 1 no (retired for another
    /// holder). For provisioning scripts.
    Available {
        #[command(flatten)]
        config: ConfigArgs,
        mailbox: String,
        #[arg(long)]
        holder: String,
    },
    /// Show MAILBOX's settings, policy, arrival notices and retirement.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        mailbox: String,
    },
    /// The identity MAILBOX's sender is named with in REM evidences: set, show, clear.
    #[command(subcommand)]
    Identity(super::rem::IdentityCommand),
}

/// A plausible addr-spec for the admin commands (one `@`, non-empty parts, no spaces).
pub(super) fn admin_address(what: &str, a: &str) -> Result<(), CliError> {
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

/// Runs `pec mailbox …`; returns the exit status.
pub fn mailbox(command: &MailboxCommand) -> i32 {
    match command {
        MailboxCommand::Identity(command) => super::rem::identity_command(command),
        MailboxCommand::Policy {
            config,
            mailbox,
            policy,
            to,
            folder,
        } => mailbox_policy(config, mailbox, policy, to.as_deref(), folder.as_deref()),
        MailboxCommand::Set {
            config,
            mailbox,
            receipt_type,
            max_recipients,
            max_total_size,
            daily_quota,
        } => {
            let parsed = (|| {
                admin_address("mailbox", mailbox)?;
                Ok::<_, CliError>((
                    receipt_type
                        .as_deref()
                        .map(parse_receipt_type)
                        .transpose()?,
                    max_recipients
                        .as_deref()
                        .map(|v| parse_limit("--max-recipients", v))
                        .transpose()?,
                    max_total_size
                        .as_deref()
                        .map(|v| parse_limit("--max-total-size", v))
                        .transpose()?,
                    daily_quota
                        .as_deref()
                        .map(|v| parse_limit("--daily-quota", v))
                        .transpose()?,
                ))
            })();
            let (rt, mr, mt, dq) = match parsed {
                Ok(p) => p,
                Err(e) => return exit("pec mailbox set", Err(e)),
            };
            with_store(config, "pec mailbox set", |_, store| {
                not_retired(&*store, mailbox)?;
                let mut s = store.mailbox_settings(mailbox).map_err(CliError::usage)?;
                if let Some(v) = rt {
                    s.receipt_type = v;
                }
                if let Some(v) = mr {
                    s.max_recipients = v;
                }
                if let Some(v) = mt {
                    s.max_total_size = v;
                }
                if let Some(v) = dq {
                    s.daily_quota = v;
                }
                store
                    .set_mailbox_settings(mailbox, &s)
                    .map_err(CliError::usage)?;
                show(&*store, mailbox)?;
                Ok(0)
            })
        }
        MailboxCommand::State {
            config,
            mailbox,
            state,
        } => {
            let Some(state) = MailboxState::parse(state) else {
                let e = CliError::usage(format!("unknown state \"{state}\""));
                return exit("pec mailbox state", Err(e));
            };
            if let Err(e) = admin_address("mailbox", mailbox) {
                return exit("pec mailbox state", Err(e));
            }
            with_store(config, "pec mailbox state", |_, store| {
                not_retired(&*store, mailbox)?;
                let mut s = store.mailbox_settings(mailbox).map_err(CliError::usage)?;
                s.state = state;
                store
                    .set_mailbox_settings(mailbox, &s)
                    .map_err(CliError::usage)?;
                println!("{}: {}", mailbox.to_ascii_lowercase(), state.label());
                Ok(0)
            })
        }
        MailboxCommand::Notify {
            config,
            mailbox,
            to,
            from,
            off,
        } => {
            let checked = (|| {
                admin_address("mailbox", mailbox)?;
                for a in to {
                    admin_address("--to", a)?;
                }
                for a in from {
                    admin_address("--from", a)?;
                }
                if !off && to.is_empty() {
                    return Err(CliError::usage("give --to ADDRESS (one or more) or --off"));
                }
                Ok(())
            })();
            if let Err(e) = checked {
                return exit("pec mailbox notify", Err(e));
            }
            let notice = (!off).then(|| ArrivalNotice {
                notify: to.join(", "),
                senders: from.clone(),
            });
            with_store(config, "pec mailbox notify", |_, store| {
                store
                    .set_arrival_notice(mailbox, notice.as_ref())
                    .map_err(CliError::usage)?;
                show(&*store, mailbox)?;
                Ok(0)
            })
        }
        MailboxCommand::Retire {
            config,
            mailbox,
            holder,
        } => {
            if let Err(e) = admin_address("mailbox", mailbox).and_then(|()| holder_id(holder)) {
                return exit("pec mailbox retire", Err(e));
            }
            with_store(config, "pec mailbox retire", |_, store| {
                let retired = Retired {
                    mailbox: mailbox.to_ascii_lowercase(),
                    holder: holder.trim().to_string(),
                    at: crate::message::time::Clock::now(&crate::message::time::SystemClock),
                };
                if store.retire_mailbox(&retired).map_err(CliError::usage)? {
                    println!("{}: retired (holder {})", retired.mailbox, retired.holder);
                    return Ok(0);
                }
                let had = store.retired_mailbox(mailbox).map_err(CliError::usage)?;
                Err(CliError::usage(format!(
                    "{} was retired already (holder {})",
                    retired.mailbox,
                    had.map(|r| r.holder).unwrap_or_default()
                )))
            })
        }
        MailboxCommand::Available {
            config,
            mailbox,
            holder,
        } => {
            if let Err(e) = admin_address("mailbox", mailbox).and_then(|()| holder_id(holder)) {
                return exit("pec mailbox available", Err(e));
            }
            with_store(config, "pec mailbox available", |_, store| {
                match store.retired_mailbox(mailbox).map_err(CliError::usage)? {
                    Some(r) if r.holder != holder.trim() => {
                        println!("{}: retired for another holder: not available", r.mailbox);
                        Ok(1)
                    }
                    Some(r) => {
                        println!("{}: retired for this holder", r.mailbox);
                        Ok(0)
                    }
                    None => {
                        println!("{}: available", mailbox.to_ascii_lowercase());
                        Ok(0)
                    }
                }
            })
        }
        MailboxCommand::Show { config, mailbox } => {
            if let Err(e) = admin_address("mailbox", mailbox) {
                return exit("pec mailbox show", Err(e));
            }
            with_store(config, "pec mailbox show", |_, store| {
                show(&*store, mailbox)?;
                Ok(0)
            })
        }
    }
}

/// `default` (`None`) or a receipt type.
fn parse_receipt_type(v: &str) -> Result<Option<ReceiptType>, CliError> {
    if v == "default" {
        return Ok(None);
    }
    ReceiptType::ALL
        .into_iter()
        .find(|t| t.as_str() == v)
        .map(Some)
        .ok_or_else(|| {
            CliError::usage(format!(
                "--receipt-type: \"{v}\" is not completa, breve, sintetica or default"
            ))
        })
}

/// `default` (`None`) or a positive integer.
fn parse_limit(what: &str, v: &str) -> Result<Option<u64>, CliError> {
    if v == "default" {
        return Ok(None);
    }
    match v.parse::<u64>() {
        Ok(n) if n > 0 && n <= i64::MAX as u64 => Ok(Some(n)),
        _ => Err(CliError::usage(format!(
            "{what}: \"{v}\" is not a positive integer or default"
        ))),
    }
}

fn holder_id(h: &str) -> Result<(), CliError> {
    if h.trim().is_empty() || h.chars().any(char::is_control) {
        return Err(CliError::usage(format!(
            "--holder: invalid identifier \"{h}\""
        )));
    }
    Ok(())
}

/// A retired mailbox's settings are not changed any more.
fn not_retired(store: &dyn LogStore, mailbox: &str) -> Result<(), CliError> {
    match store.retired_mailbox(mailbox).map_err(CliError::usage)? {
        Some(r) => Err(CliError::usage(format!(
            "{} is retired (holder {}): its settings do not change",
            r.mailbox, r.holder
        ))),
        None => Ok(()),
    }
}

/// `pec mailbox show`: one `key: value` line per setting.
fn show(store: &dyn LogStore, mailbox: &str) -> Result<(), CliError> {
    let s = store.mailbox_settings(mailbox).map_err(CliError::usage)?;
    let policy = store.mailbox_policy(mailbox).map_err(CliError::usage)?;
    let notice = store.arrival_notice(mailbox).map_err(CliError::usage)?;
    let retired = store.retired_mailbox(mailbox).map_err(CliError::usage)?;
    let or_default = |v: Option<u64>| v.map_or("default".to_string(), |v| v.to_string());
    println!("mailbox: {}", mailbox.to_ascii_lowercase());
    let state = if retired.is_some() {
        "retired"
    } else {
        s.state.label()
    };
    println!("state: {state}");
    println!(
        "receipt-type: {}",
        s.receipt_type.map_or("default", |t| t.as_str())
    );
    println!("max-recipients: {}", or_default(s.max_recipients));
    println!("max-total-size: {}", or_default(s.max_total_size));
    println!(
        "daily-quota: {}",
        s.daily_quota.map_or("none".to_string(), |v| v.to_string())
    );
    match policy {
        Some(MailboxPolicy::Forward(to)) => println!("policy: forward {to}"),
        Some(MailboxPolicy::Folder(f)) => println!("policy: folder {f}"),
        Some(p) => println!("policy: {}", p.label()),
        None => println!("policy: default"),
    }
    match notice {
        Some(n) if n.senders.is_empty() => println!("arrival-notices: {}", n.notify),
        Some(n) => println!(
            "arrival-notices: {} (from {})",
            n.notify,
            n.senders.join(", ")
        ),
        None => println!("arrival-notices: off"),
    }
    if let Some(r) = retired {
        println!("retired: {} holder {}", r.at.rfc3339(), r.holder);
    }
    Ok(())
}

/// `pec mailbox policy`.
fn mailbox_policy(
    config: &ConfigArgs,
    mailbox: &str,
    policy: &str,
    to: Option<&str>,
    folder: Option<&str>,
) -> i32 {
    if let Err(e) = admin_address("mailbox", mailbox) {
        return exit("pec", Err(e));
    }
    let chosen = match (policy, folder) {
        ("folder", Some(f)) if to.is_none() => {
            if !MailboxPolicy::valid_folder(f) {
                let e = CliError::usage(format!(
                    "--folder: invalid folder \"{f}\" (letters, digits, -, _, .)"
                ));
                return exit("pec mailbox policy", Err(e));
            }
            Some(MailboxPolicy::Folder(f.to_string()))
        }
        ("folder", _) => {
            let e = CliError::usage("folder needs --folder NAME (and no --to)");
            return exit("pec mailbox policy", Err(e));
        }
        (p, Some(_)) => {
            let e = CliError::usage(format!("--folder goes with folder, not {p}"));
            return exit("pec mailbox policy", Err(e));
        }
        ("discard", None) if to.is_none() => Some(MailboxPolicy::Discard),
        _ => None,
    };
    let policy = match (chosen, to) {
        (Some(p), _) => p,
        (None, _) if policy == "discard" => {
            let e = CliError::usage("--to goes with forward, not discard");
            return exit("pec mailbox policy", Err(e));
        }
        (None, None) if policy == "anomaly" => MailboxPolicy::Anomaly,
        (None, None) if policy == "refuse" => MailboxPolicy::Refuse,
        (None, Some(to)) if policy == "forward" => {
            if let Err(e) = admin_address("--to", to) {
                return exit("pec", Err(e));
            }
            MailboxPolicy::Forward(to.to_string())
        }
        (None, None) if policy == "forward" => {
            let e = CliError::usage("forward needs --to ADDRESS");
            return exit("pec mailbox policy", Err(e));
        }
        (None, Some(_)) => {
            let e = CliError::usage(format!("--to goes with forward, not {policy}"));
            return exit("pec mailbox policy", Err(e));
        }
        (None, None) => {
            let e = CliError::usage(format!("unknown policy \"{policy}\""));
            return exit("pec mailbox policy", Err(e));
        }
    };
    with_store(config, "pec mailbox policy", |_, store| {
        store
            .set_mailbox_policy(mailbox, &policy)
            .map_err(CliError::usage)?;
        match &policy {
            MailboxPolicy::Forward(to) => println!("{mailbox}: forward to {to}"),
            MailboxPolicy::Folder(f) => println!("{mailbox}: deliver into folder {f}"),
            p => println!("{mailbox}: {}", p.label()),
        }
        Ok(0)
    })
}
