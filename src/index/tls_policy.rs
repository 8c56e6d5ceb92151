// SPDX-License-Identifier: GPL-3.0-or-later
//! The Postfix TLS policy map written from the provider index (`[index] tls_policy_map`):
//! every certified domain of the index, other than our own, gets `verify`, so that Postfix
//! sends PEC mail to another provider only over TLS with a certificate from a trusted CA
//! that names the server (spec §5.2: PEC traffic between providers uses TLS); every other
//! domain keeps `smtp_tls_security_level` (`may`: opportunistic TLS for ordinary mail).
//!
//! Why `verify` and not `secure`: `secure` matches the certificate against the recipient
//! domain (`nexthop, dot-nexthop`), which fails for the many certified domains hosted on a
//! provider's mail servers (a customer's `pec.comune.example.it` whose MX is
//! `mx.pec.provider.it`). `verify` matches the MX host name (`smtp_tls_verify_cert_match`,
//! default `hostname`): a peer with an untrusted certificate, a certificate for another
//! name, or no STARTTLS at all is never sent the mail, which stays deferred in the queue.
//!
//! The file is in the `texthash:` format (`DOMAIN LEVEL` per line; Postfix reads it
//! directly, no `postmap`), written to a temporary file next to it and renamed over it.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::ProviderIndex;

/// The policy level given to certified domains.
pub const LEVEL: &str = "verify";

/// The map of `index` as text: one `DOMAIN verify` line per certified domain not in `own`
/// (case-insensitive), sorted, each once. A managed domain that is not a plain DNS name
/// (letters, digits, `-` and `.`; it would change the meaning of the line) is left out and
/// returned in the second list.
pub fn render(index: &ProviderIndex, own: &[String]) -> (String, Vec<String>) {
    let own: BTreeSet<String> = own.iter().map(|d| d.trim().to_ascii_lowercase()).collect();
    let mut domains = BTreeSet::new();
    let mut skipped = Vec::new();
    for p in index.providers() {
        for d in &p.managed_domains {
            let d = d.trim().to_ascii_lowercase();
            if own.contains(&d) {
                continue;
            }
            if is_dns_name(&d) {
                domains.insert(d);
            } else {
                skipped.push(d);
            }
        }
    }
    // Nothing that changes from one sync to the next (a time, the source): the file is
    // rewritten only when the domains change.
    let mut out = String::from(
        "# Postfix TLS policy of the certified (PEC) domains, written by pec from the provider\n\
         # index. Do not edit: every new copy of the index replaces it.\n\
         # main.cf: smtp_tls_policy_maps = texthash:THIS_FILE\n",
    );
    for d in &domains {
        out.push_str(d);
        out.push(' ');
        out.push_str(LEVEL);
        out.push('\n');
    }
    (out, skipped)
}

/// A DNS name as Postfix's table expects it: labels of letters, digits and `-`, joined by
/// single dots, at most 253 characters.
fn is_dns_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// Domains listed.
    pub domains: usize,
    /// Managed domains left out because they are not DNS names.
    pub skipped: Vec<String>,
    /// Whether the file was (re)written: false when it already held this map.
    pub changed: bool,
}

/// Writes the map of `index` to `path` atomically (a temporary file in the same directory,
/// synced, then renamed over `path`): Postfix never reads half a file. A file that already
/// holds the same text is left alone (Postfix takes a younger texthash file for one being
/// written and waits).
pub fn write(path: &Path, index: &ProviderIndex, own: &[String]) -> std::io::Result<Written> {
    let (text, skipped) = render(index, own);
    let mut written = Written {
        path: path.to_path_buf(),
        domains: text.lines().filter(|l| !l.starts_with('#')).count(),
        skipped,
        changed: false,
    };
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(written);
    }
    written.changed = true;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tls_policy".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        // Readable by Postfix whatever pec's umask (the service's is 0027): public data.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(written)
}

/// Where a running service keeps the map: the path and our own domains (left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub own: Vec<String>,
}

impl Target {
    /// [`write`], logged; a failure is logged and leaves the previous map in place (Postfix
    /// keeps using it), never stops the service.
    pub fn write_logged(&self, index: &ProviderIndex) {
        match write(&self.path, index, &self.own) {
            Ok(w) => {
                if w.changed {
                    tracing::info!(path = %w.path.display(), domains = w.domains, "TLS policy map written");
                } else {
                    tracing::debug!(path = %w.path.display(), "TLS policy map unchanged");
                }
                for d in w.skipped {
                    tracing::warn!(domain = %d, "left out of the TLS policy map: not a DNS name");
                }
            }
            Err(e) => tracing::error!(
                "cannot write the TLS policy map \"{}\" (the previous one stays): {e}",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{ProviderInfo, ProviderRecord};

    fn index(domains: &[&[&str]]) -> ProviderIndex {
        ProviderIndex::from_records(
            domains
                .iter()
                .enumerate()
                .map(|(i, ds)| ProviderRecord {
                    info: ProviderInfo {
                        name: format!("P{i}"),
                        mail_receipt: format!("ricevute@p{i}.example"),
                        managed_domains: ds.iter().map(|d| d.to_string()).collect(),
                    },
                    certificates: vec![],
                })
                .collect(),
        )
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_other_certified_domain_gets_verify_sorted_once() {
        let ix = index(&[
            &["pec.example.it"],
            &["PEC.example.net", "legal.example.org"],
            &["pec.example.net"],
        ]);
        let (text, skipped) = render(&ix, &["Pec.Example.IT".into()]);
        assert_eq!(
            lines(&text),
            ["legal.example.org verify", "pec.example.net verify"]
        );
        assert!(skipped.is_empty());
        assert!(text.starts_with("# Postfix TLS policy"));
    }

    #[test]
    fn a_domain_that_would_change_the_line_is_left_out() {
        let ix = index(&[&[
            "evil.example none",
            "ok.example",
            "a..b",
            "-x.example",
            "semi;colon.example",
            "",
        ]]);
        let (text, skipped) = render(&ix, &[]);
        assert_eq!(lines(&text), ["ok.example verify"]);
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(!text.contains("none"));
    }

    #[test]
    fn write_replaces_the_file_atomically_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls_policy");
        std::fs::write(&path, "old.example verify\n").unwrap();
        let w = write(&path, &index(&[&["b.example", "a.example"]]), &[]).unwrap();
        assert_eq!(w.domains, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lines(&text), ["a.example verify", "b.example verify"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("tls_policy")]);
        // The same map again: the file is not replaced (same inode).
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&path).unwrap().ino();
        let w = write(&path, &index(&[&["b.example", "a.example"]]), &[]).unwrap();
        assert!(!w.changed);
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        assert!(
            write(&path, &index(&[&["c.example"]]), &[])
                .unwrap()
                .changed
        );
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), inode);
    }

    #[test]
    fn write_into_a_missing_directory_fails_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/tls_policy");
        assert!(write(&path, &index(&[&["a.example"]]), &[]).is_err());
        assert!(!path.exists());
    }
}
