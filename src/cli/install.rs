// SPDX-License-Identifier: GPL-3.0-or-later
//! The installation checks of `pec check-config --live` and `pec status` (issue 18): what
//! stops a new installation although every outside system answers. The judgements are in
//! [`crate::preflight`]; here they are applied to a configuration.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::ops::Verdict;
use crate::config::{Config, Endpoint, Settings, SigningConfig, StoreBackend};
use crate::preflight::{self as pf, Need, Outcome, ServiceUser};

/// The user the package runs `pec serve` as.
pub const SERVICE_USER: &str = "pec";
/// Debian's clamd configuration.
const CLAMD_CONF: &str = "/etc/clamav/clamd.conf";

fn verdict(o: Outcome) -> Verdict {
    match o {
        Outcome::Ok(t) => Verdict::Ok(t),
        Outcome::Warn(t) => Verdict::Warn(t),
        Outcome::Failed(t) => Verdict::Failed(t),
    }
}

/// Every installation check, named as `check-config --live` and `status` print them.
pub fn checks(
    config: &Config,
    config_path: Option<&Path>,
    settings: &Settings,
) -> Vec<(String, Verdict)> {
    let mut out = Vec::new();
    // Files and the duplicate check are judged for the service user: only where it
    // exists, and from root or from that user (others may not even see the files).
    let euid = pf::effective_uid();
    let user = match ServiceUser::lookup(SERVICE_USER) {
        Ok(Some(u)) if euid == Some(0) || euid == Some(u.uid) => Some(u),
        _ => None,
    };
    if let Some(user) = &user {
        if let Some(path) = config_path {
            out.push((
                "configuration file".into(),
                verdict(pf::check_access(user, "configuration", path, Need::Read)),
            ));
        }
        if config.store.backend == StoreBackend::Sqlite {
            out.push((
                "store files".into(),
                verdict(pf::check_store_files(user, &config.store.path)),
            ));
        }
        if config.index.ldif.exists() {
            out.push((
                "index file".into(),
                verdict(pf::check_access(
                    user,
                    "index",
                    &config.index.ldif,
                    Need::Read,
                )),
            ));
        }
        if let Some(dir) = softhsm_tokendir(config) {
            out.push((
                "token files".into(),
                verdict(pf::check_token_dir(user, &dir)),
            ));
        }
        out.push((
            "duplicate check".into(),
            verdict(pf::check_duplicate_command(
                user,
                &config.delivery.duplicate_check,
                &config.provider.mail_receipt,
            )),
        ));
    }
    if let Some(v) = clamd_limit(settings) {
        out.push(("clamd stream limit".into(), v));
    }
    if let Some(v) = mydestination(config) {
        out.push(("postfix mydestination".into(), v));
    }
    out.push((
        "service mailboxes".into(),
        service_mailboxes(
            &settings.delivery.dovecot,
            &[
                &config.provider.mail_receipt,
                &config.provider.service_address,
            ],
        ),
    ));
    out
}

/// SoftHSM2's token directory, when the signing module is SoftHSM2's.
fn softhsm_tokendir(config: &Config) -> Option<PathBuf> {
    let SigningConfig::Pkcs11 { module, .. } = &config.signing else {
        return None;
    };
    if !module.to_string_lossy().contains("softhsm") {
        return None;
    }
    let conf = std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"));
    pf::softhsm_tokendir(&std::fs::read_to_string(conf).ok()?)
}

/// clamd's StreamMaxLength against `[filter] max_size`, when pec uses the clamd of
/// Debian's configuration (its LocalSocket).
fn clamd_limit(settings: &Settings) -> Option<Verdict> {
    let text = std::fs::read_to_string(CLAMD_CONF).ok()?;
    let socket = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("LocalSocket "))?;
    let norm = |p: &str| p.trim().replace("/var/run/", "/run/");
    match &settings.clamd {
        Endpoint::Unix(p) if norm(&p.to_string_lossy()) == norm(socket) => Some(verdict(
            pf::check_clamd_stream(Path::new(CLAMD_CONF), &text, settings.filter.max_size),
        )),
        _ => None,
    }
}

/// The system Postfix's mydestination (`postconf -xh`), when there is one.
fn mydestination(config: &Config) -> Option<Verdict> {
    if !Path::new("/etc/postfix/main.cf").exists() {
        return None;
    }
    let out = Command::new("postconf")
        .args(["-xh", "mydestination"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut domains = config.provider.domains.clone();
    domains.sort();
    Some(verdict(pf::check_mydestination(
        &String::from_utf8_lossy(&out.stdout),
        &domains,
    )))
}

/// Asks Dovecot's LMTP whether it takes mail for each service mailbox (`RCPT TO`, then
/// `RSET`): a 5xx means the mailbox does not exist and receipts addressed there bounce.
fn service_mailboxes(dovecot: &Endpoint, addresses: &[&str]) -> Verdict {
    match rcpt_probe(dovecot, addresses) {
        Ok(missing) if missing.is_empty() => {
            Verdict::Ok(format!("Dovecot takes mail for {}", addresses.join(", ")))
        }
        Ok(missing) => Verdict::Failed(format!(
            "Dovecot refuses {}: receipts addressed there would bounce; create the mailbox (e.g. a line in /etc/dovecot/pec-users, see /usr/share/doc/pec/install.md) and list it in Postfix's virtual_mailbox_maps",
            missing.join("; ")
        )),
        Err(e) => Verdict::Warn(format!("{dovecot}: not asked: {e}")),
    }
}

trait Stream: std::io::Read + Write {}
impl<T: std::io::Read + Write> Stream for T {}

fn rcpt_probe(dovecot: &Endpoint, addresses: &[&str]) -> Result<Vec<String>, String> {
    let timeout = Some(Duration::from_secs(5));
    let stream: Box<dyn Stream> = match dovecot {
        Endpoint::Inet { host, port } => {
            let s =
                std::net::TcpStream::connect((host.as_str(), *port)).map_err(|e| e.to_string())?;
            s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
            Box::new(s)
        }
        Endpoint::Unix(p) => {
            let s = std::os::unix::net::UnixStream::connect(p).map_err(|e| e.to_string())?;
            s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
            Box::new(s)
        }
    };
    let mut reader = BufReader::new(stream);
    // One reply, multi-line or not: the last line's code.
    fn reply(r: &mut BufReader<Box<dyn Stream>>) -> Result<String, String> {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line.trim_end().to_string());
            }
        }
    }
    fn send(r: &mut BufReader<Box<dyn Stream>>, cmd: &str) -> Result<(), String> {
        r.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .map_err(|e| e.to_string())
    }
    let expect = |line: String, code: char| {
        if line.starts_with(code) {
            Ok(())
        } else {
            Err(line)
        }
    };
    expect(reply(&mut reader)?, '2')?;
    send(&mut reader, "LHLO pec-check")?;
    expect(reply(&mut reader)?, '2')?;
    let mut missing = Vec::new();
    for a in addresses {
        send(&mut reader, "MAIL FROM:<>")?;
        expect(reply(&mut reader)?, '2')?;
        send(&mut reader, &format!("RCPT TO:<{a}>"))?;
        let line = reply(&mut reader)?;
        if line.starts_with('5') {
            missing.push(format!("{a} ({line})"));
        } else if !line.starts_with('2') {
            return Err(line);
        }
        send(&mut reader, "RSET")?;
        expect(reply(&mut reader)?, '2')?;
    }
    let _ = send(&mut reader, "QUIT");
    Ok(missing)
}
