// SPDX-License-Identifier: GPL-3.0-or-later
//! Installation checks: what stops a new installation although every outside system
//! answers (issue 18). `pec check-config --live` and `pec status` run them besides reaching
//! each system; each failure says what to do.
//!
//! * the files the service user must read or write (configuration, store, index, token),
//!   judged by their owner, group and mode against the service user and its groups, the
//!   directories on the way included;
//! * clamd's `StreamMaxLength` below the largest message pec scans;
//! * a PEC domain in Postfix's `mydestination`;
//! * the post-crash duplicate check not runnable as the service user;
//! * the service mailboxes unknown to Dovecot.
//!
//! The judgements are pure functions of what was read (tested here); the readers (files,
//! `/etc/passwd`, `postconf`, `doveadm`) are thin.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The outcome of one check, with what to do when it is not `Ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    /// Works, but needs attention.
    Warn(String),
    Failed(String),
}

impl Outcome {
    pub fn is_failed(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

/// The user `pec serve` runs as: its ids and every group it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Primary and supplementary groups.
    pub groups: Vec<u32>,
}

impl ServiceUser {
    /// Looks `name` up in `/etc/passwd` and `/etc/group` (the files the package's adduser
    /// writes; a user only in LDAP or NSS modules is not found).
    pub fn lookup(name: &str) -> std::io::Result<Option<ServiceUser>> {
        let passwd = std::fs::read_to_string("/etc/passwd")?;
        let group = std::fs::read_to_string("/etc/group")?;
        Ok(Self::from_files(name, &passwd, &group))
    }

    /// [`ServiceUser::lookup`] on the texts of `/etc/passwd` and `/etc/group`.
    pub fn from_files(name: &str, passwd: &str, group: &str) -> Option<ServiceUser> {
        let (uid, gid) = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })?;
        let mut groups = vec![gid];
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
        Some(ServiceUser {
            name: name.to_string(),
            uid,
            gid,
            groups,
        })
    }
}

/// What the service user needs of a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    /// Read and write (a directory: create and remove entries in it).
    Write,
}

/// Owner, group and permission bits of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub dir: bool,
}

impl Mode {
    fn of(path: &Path) -> std::io::Result<Mode> {
        let m = std::fs::metadata(path)?;
        Ok(Mode {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            dir: m.is_dir(),
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uid {} gid {} mode {:04o}",
            self.uid, self.gid, self.mode
        )
    }
}

/// The permission bits (r=4, w=2, x=1) that apply to `user` on a file of mode `m`: the
/// owner's, else the group's, else the others' (as the kernel decides, without ACLs).
pub fn bits_for(user: &ServiceUser, m: &Mode) -> u32 {
    if user.uid == 0 {
        return 7;
    }
    if m.uid == user.uid {
        (m.mode >> 6) & 7
    } else if user.groups.contains(&m.gid) {
        (m.mode >> 3) & 7
    } else {
        m.mode & 7
    }
}

/// Whether `user` may do `need` on a file of mode `m` (a directory also needs `x`).
pub fn allows(user: &ServiceUser, m: &Mode, need: Need) -> bool {
    let b = bits_for(user, m);
    let want = match need {
        Need::Read => 4,
        Need::Write => 6,
    } | if m.dir { 1 } else { 0 };
    b & want == want
}

/// Checks that `user` can reach `path` (search permission on every directory above it) and
/// do `need` on it. `what` names the file in the message ("the store"). A missing file is
/// judged by its directory, which must then be writable (pec creates it).
pub fn check_access(user: &ServiceUser, what: &str, path: &Path, need: Need) -> Outcome {
    let fix = |p: &Path, m: &Mode| {
        let how = if m.dir && need == Need::Write {
            format!("chown {}:{} {}", user.name, user.name, p.display())
        } else if need == Need::Write {
            format!("chown {}: {}", user.name, p.display())
        } else {
            format!(
                "chgrp {} {} && chmod g+r {}",
                user.name,
                p.display(),
                p.display()
            )
        };
        format!("run `{how}`")
    };
    let mut target = path.to_path_buf();
    let mut target_need = need;
    let exists = path.exists();
    if !exists {
        match path.parent() {
            Some(p) => {
                target = p.to_path_buf();
                target_need = Need::Write;
            }
            None => return Outcome::Failed(format!("{what}: {}: no such file", path.display())),
        }
    }
    // Every directory above must let the user through (x).
    let mut ancestors: Vec<PathBuf> = target.ancestors().skip(1).map(Path::to_path_buf).collect();
    ancestors.reverse();
    for dir in ancestors {
        if dir.as_os_str().is_empty() {
            continue;
        }
        if let Ok(m) = Mode::of(&dir) {
            if bits_for(user, &m) & 1 == 0 {
                return Outcome::Failed(format!(
                    "{what}: {}: user {} cannot enter {} ({m}): give it search permission (chmod o+x, or the group)",
                    path.display(),
                    user.name,
                    dir.display()
                ));
            }
        }
    }
    let m = match Mode::of(&target) {
        Ok(m) => m,
        Err(e) => return Outcome::Failed(format!("{what}: {}: {e}", target.display())),
    };
    if !allows(user, &m, target_need) {
        let verb = match target_need {
            Need::Read => "read",
            Need::Write => "write",
        };
        let created = if exists {
            String::new()
        } else {
            format!(" (pec creates {} there)", path.display())
        };
        return Outcome::Failed(format!(
            "{what}: user {} cannot {verb} {} ({m}){created}: {}",
            user.name,
            target.display(),
            fix(&target, &m)
        ));
    }
    Outcome::Ok(format!(
        "{what}: {}: {} may {}",
        path.display(),
        user.name,
        match need {
            Need::Read => "read it",
            Need::Write => "write it",
        }
    ))
}

/// The SQLite store's files: its directory and the database with its `-wal` and `-shm`
/// companions must all be writable by the service user (a store created by root, e.g. by
/// an admin command run as root, is not, and every message is then refused temporarily).
pub fn check_store_files(user: &ServiceUser, db: &Path) -> Outcome {
    let mut paths = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if p.exists() {
            paths.push(p);
        }
    }
    if let Some(dir) = db.parent() {
        let o = check_access(user, "store directory", dir, Need::Write);
        if o.is_failed() {
            return o;
        }
    }
    for p in &paths {
        let o = check_access(user, "store", p, Need::Write);
        if o.is_failed() {
            return o;
        }
    }
    Outcome::Ok(format!(
        "{}: writable by {} (database, journal and directory)",
        db.display(),
        user.name
    ))
}

/// SoftHSM2's token directory (`directories.tokendir` of its configuration, the file
/// `SOFTHSM2_CONF` names or `/etc/softhsm/softhsm2.conf`).
pub fn softhsm_tokendir(conf_text: &str) -> Option<PathBuf> {
    conf_text.lines().find_map(|l| {
        let l = l.trim();
        let (k, v) = l.split_once('=')?;
        (k.trim() == "directories.tokendir").then(|| PathBuf::from(v.trim()))
    })
}

/// Every file and directory under a SoftHSM2 token directory must be readable and writable
/// by the service user (SoftHSM rewrites token files on login and object changes): a token
/// created by root is not, and then pec sees `CKR_GENERAL_ERROR` or no token at all.
pub fn check_token_dir(user: &ServiceUser, tokendir: &Path) -> Outcome {
    let top = check_access(user, "token directory", tokendir, Need::Read);
    if top.is_failed() {
        return top;
    }
    let mut stack = vec![tokendir.to_path_buf()];
    let mut files = 0usize;
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // Root reads everything; as the service user an unreadable directory was
            // already reported above.
            Err(e) => return Outcome::Failed(format!("token directory: {}: {e}", dir.display())),
        };
        for e in entries.flatten() {
            let p = e.path();
            let m = match Mode::of(&p) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if !allows(user, &m, Need::Write) {
                return Outcome::Failed(format!(
                    "token: user {} cannot read and write {} ({m}): SoftHSM then fails with CKR_GENERAL_ERROR or shows no token; run `chown -R {}: {}` (or create the token as {}: `runuser -u {} -- softhsm2-util --init-token …`)",
                    user.name,
                    p.display(),
                    user.name,
                    tokendir.display(),
                    user.name,
                    user.name
                ));
            }
            if m.dir {
                stack.push(p);
            } else {
                files += 1;
            }
        }
    }
    Outcome::Ok(format!(
        "{}: {files} token files, all readable and writable by {}",
        tokendir.display(),
        user.name
    ))
}

/// A clamd size (`StreamMaxLength 25M`): a number with an optional `K` or `M` suffix
/// (ClamAV's units: 1024 and 1048576), in bytes.
pub fn parse_clamd_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1024),
        'm' | 'M' => (&v[..v.len() - 1], 1024 * 1024),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

/// clamd's `StreamMaxLength` from the text of its configuration (ClamAV's default, 100M,
/// when the key is absent).
pub fn clamd_stream_max(conf_text: &str) -> Option<u64> {
    for l in conf_text.lines() {
        let l = l.trim();
        if l.starts_with('#') {
            continue;
        }
        let mut parts = l.splitn(2, char::is_whitespace);
        if parts.next() == Some("StreamMaxLength") {
            return parts.next().and_then(parse_clamd_size);
        }
    }
    Some(100 * 1024 * 1024)
}

/// clamd refuses a stream longer than its `StreamMaxLength`, and pec then answers 451 for
/// that message forever: the limit must reach the largest message pec scans (`need`,
/// `[filter] max_size`).
pub fn check_clamd_stream(conf: &Path, conf_text: &str, need: u64) -> Outcome {
    match clamd_stream_max(conf_text) {
        None => Outcome::Warn(format!(
            "{}: StreamMaxLength not understood",
            conf.display()
        )),
        Some(have) if have < need => Outcome::Failed(format!(
            "{}: StreamMaxLength is {} MB, below the {} MB pec may scan ([filter] max_size): larger messages would be refused temporarily, forever; set `StreamMaxLength {}M` (and MaxScanSize) and restart clamd",
            conf.display(),
            have / 1_000_000,
            need / 1_000_000,
            need.div_ceil(1024 * 1024)
        )),
        Some(have) => Outcome::Ok(format!(
            "{}: StreamMaxLength {} MB covers the {} MB pec may scan",
            conf.display(),
            have / 1_000_000,
            need / 1_000_000
        )),
    }
}

/// The PEC domains that Postfix would deliver locally: those in `mydestination`
/// (`postconf -xh mydestination`, its value expanded), compared case-insensitively.
pub fn domains_in_mydestination(mydestination: &str, domains: &[String]) -> Vec<String> {
    let listed: Vec<String> = mydestination
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    domains
        .iter()
        .filter(|d| listed.contains(&d.to_ascii_lowercase()))
        .cloned()
        .collect()
}

/// [`domains_in_mydestination`] as a check, with what to do.
pub fn check_mydestination(mydestination: &str, domains: &[String]) -> Outcome {
    let bad = domains_in_mydestination(mydestination, domains);
    if bad.is_empty() {
        Outcome::Ok(format!(
            "no PEC domain in mydestination ({})",
            mydestination.trim()
        ))
    } else {
        Outcome::Failed(format!(
            "mydestination lists {}: Postfix delivers it to local Unix users, past pec; list it in virtual_mailbox_domains only, e.g. `postconf -e 'myhostname = mx.{}' 'mydestination = $myhostname, localhost'` and `postfix reload`",
            bad.join(", "),
            bad[0]
        ))
    }
}

/// The effective uid of this process (from `/proc/self/status`: no libc call).
pub fn effective_uid() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// A command as the service user: through `runuser` when this process is root, as it is
/// otherwise (then it must be the service user itself).
fn as_user(user: &ServiceUser, argv: &[String]) -> Command {
    if effective_uid() == Some(0) && user.uid != 0 {
        let mut c = Command::new("runuser");
        c.arg("-u").arg(&user.name).arg("--").args(argv);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }
}

/// The duplicate check's command line for `mailbox` and a transport envelope no mailbox
/// holds (the search the delivery point makes after a crash, `%c` included).
pub fn duplicate_check_argv(template: &[String], mailbox: &str) -> Vec<String> {
    let probe = crate::delivery::dedup::Identity {
        message_id: "pec-preflight.invalid@localhost".into(),
        class: Some(("X-Trasporto", "posta-certificata".into())),
    };
    crate::delivery::dedup::check_argv(template, mailbox, &probe)
}

/// Runs the post-crash duplicate check (`[delivery] duplicate_check`) as the service user,
/// for `mailbox` and a Message-ID nobody has: it must exit 0 (without output). Run as pec,
/// a plain `doveadm search -u` fails ("userdb uid … doesn't match peer uid"), silently in
/// the mail path: duplicates come back after a crash.
pub fn check_duplicate_command(user: &ServiceUser, template: &[String], mailbox: &str) -> Outcome {
    if template.is_empty() {
        return Outcome::Warn(
            "[delivery] duplicate_check is empty: after a crash a message may be stored twice"
                .into(),
        );
    }
    if effective_uid() != Some(0) && effective_uid() != Some(user.uid) {
        return Outcome::Warn(format!(
            "duplicate check not tried: run as root or as {}",
            user.name
        ));
    }
    let argv = duplicate_check_argv(template, mailbox);
    match as_user(user, &argv).output() {
        Ok(out) if out.status.success() => Outcome::Ok(format!(
            "`{}` runs as {}",
            argv.join(" "),
            user.name
        )),
        Ok(out) => Outcome::Failed(format!(
            "`{}` fails as user {} ({}: {}): after a crash, delivered messages would be delivered again; with Dovecot, give {} the doveadm server's socket (/usr/share/pec/dovecot/20-pec-lmtp.conf) and set duplicate_check = [\"doveadm\", \"-o\", \"stats_writer_socket_path=\", \"search\", \"-S\", \"/run/dovecot/doveadm-server\", \"-u\", \"%u\", \"header\", \"Message-ID\", \"%m\", \"%c\"]",
            argv.join(" "),
            user.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            user.name
        )),
        Err(e) => Outcome::Failed(format!("`{}`: {e}", argv.join(" "))),
    }
}

/// Whether Dovecot knows each service mailbox (`doveadm user ADDRESS`; root only).
pub fn check_mailboxes(addresses: &[&str]) -> Outcome {
    if effective_uid() != Some(0) {
        return Outcome::Warn("service mailboxes not looked up: run as root".into());
    }
    let mut missing = Vec::new();
    for a in addresses {
        match Command::new("doveadm").args(["user", a]).output() {
            Ok(out) if out.status.success() => {}
            Ok(_) => missing.push(a.to_string()),
            Err(e) => return Outcome::Warn(format!("doveadm user: {e}")),
        }
    }
    if missing.is_empty() {
        Outcome::Ok(format!("Dovecot knows {}", addresses.join(", ")))
    } else {
        Outcome::Failed(format!(
            "Dovecot does not know {}: receipts addressed there would bounce; create the mailbox (e.g. a line in /etc/dovecot/pec-users) and list it in virtual_mailbox_maps",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pec() -> ServiceUser {
        ServiceUser {
            name: "pec".into(),
            uid: 100,
            gid: 101,
            groups: vec![101, 110],
        }
    }

    #[test]
    fn service_user_from_passwd_and_group() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npec:x:100:101::/var/lib/pec:/usr/sbin/nologin\n";
        let group = "root:x:0:\npec:x:101:\nsofthsm:x:110:pec\nmail:x:8:other\n";
        assert_eq!(ServiceUser::from_files("pec", passwd, group), Some(pec()));
        assert_eq!(ServiceUser::from_files("nobody", passwd, group), None);
    }

    #[test]
    fn permission_bits_follow_owner_then_group_then_others() {
        let u = pec();
        let root_file = Mode {
            uid: 0,
            gid: 0,
            mode: 0o644,
            dir: false,
        };
        assert!(allows(&u, &root_file, Need::Read));
        assert!(!allows(&u, &root_file, Need::Write));
        let group_file = Mode {
            uid: 0,
            gid: 110,
            mode: 0o660,
            dir: false,
        };
        assert!(allows(&u, &group_file, Need::Write));
        let private_root = Mode {
            uid: 0,
            gid: 0,
            mode: 0o600,
            dir: false,
        };
        assert!(!allows(&u, &private_root, Need::Read));
        let own_dir = Mode {
            uid: 100,
            gid: 101,
            mode: 0o750,
            dir: true,
        };
        assert!(allows(&u, &own_dir, Need::Write));
        let no_x = Mode {
            uid: 100,
            gid: 101,
            mode: 0o600,
            dir: true,
        };
        assert!(!allows(&u, &no_x, Need::Read));
    }

    #[test]
    fn a_file_the_user_cannot_write_is_reported_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("pec.db");
        std::fs::write(&db, b"").unwrap();
        // Owned by whoever runs the test; judged for another user: others' bits only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let stranger = ServiceUser {
            name: "pec".into(),
            uid: 4242,
            gid: 4242,
            groups: vec![4242],
        };
        let o = check_store_files(&stranger, &db);
        match o {
            Outcome::Failed(t) => {
                assert!(t.contains("cannot write"), "{t}");
                assert!(t.contains("chown pec"), "{t}");
            }
            other => panic!("{other:?}"),
        }
        // A missing database is judged by its directory.
        std::fs::remove_file(&db).unwrap();
        let o = check_store_files(&stranger, &db);
        assert!(o.is_failed(), "{o:?}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!check_store_files(&stranger, &db).is_failed());
    }

    #[test]
    fn token_files_of_another_user_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tokens");
        std::fs::create_dir_all(tok.join("uuid")).unwrap();
        std::fs::write(tok.join("uuid/token.object"), b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for p in [dir.path().to_path_buf(), tok.clone(), tok.join("uuid")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(
            tok.join("uuid/token.object"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let stranger = ServiceUser {
            name: "pec".into(),
            uid: 4242,
            gid: 4242,
            groups: vec![4242],
        };
        match check_token_dir(&stranger, &tok) {
            Outcome::Failed(t) => assert!(
                t.contains("CKR_GENERAL_ERROR") && t.contains("chown -R pec"),
                "{t}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            softhsm_tokendir("# c\ndirectories.tokendir = /var/lib/softhsm/tokens/\n"),
            Some(PathBuf::from("/var/lib/softhsm/tokens/"))
        );
    }

    #[test]
    fn clamd_stream_limit_against_the_filter_size() {
        assert_eq!(parse_clamd_size("25M"), Some(25 * 1024 * 1024));
        assert_eq!(parse_clamd_size("512K"), Some(512 * 1024));
        assert_eq!(parse_clamd_size("1000"), Some(1000));
        assert_eq!(parse_clamd_size("lots"), None);
        let debian =
            "LocalSocket /var/run/clamav/clamd.ctl\n#StreamMaxLength 1M\nStreamMaxLength 25M\n";
        assert_eq!(clamd_stream_max(debian), Some(25 * 1024 * 1024));
        assert_eq!(
            clamd_stream_max("LocalSocket /x\n"),
            Some(100 * 1024 * 1024)
        );
        let p = Path::new("/etc/clamav/clamd.conf");
        match check_clamd_stream(p, debian, 160_000_000) {
            Outcome::Failed(t) => assert!(t.contains("StreamMaxLength 153M"), "{t}"),
            other => panic!("{other:?}"),
        }
        assert!(!check_clamd_stream(p, "StreamMaxLength 160M\n", 160_000_000).is_failed());
    }

    #[test]
    fn pec_domain_in_mydestination() {
        let d = vec!["pec.example.it".to_string()];
        assert_eq!(
            domains_in_mydestination("pec.example.it, localhost.localdomain, localhost", &d),
            d
        );
        assert!(domains_in_mydestination("mx.pec.example.it, localhost", &d).is_empty());
        assert!(check_mydestination("PEC.example.it localhost", &d).is_failed());
        assert!(!check_mydestination("mx.pec.example.it, localhost", &d).is_failed());
    }

    #[test]
    fn duplicate_check_placeholders() {
        let t: Vec<String> = crate::delivery::dedup::DEFAULT_CHECK
            .iter()
            .map(|s| s.to_string())
            .collect();
        let argv = duplicate_check_argv(&t, "ricevute@pec.example.it");
        assert_eq!(argv[3], "ricevute@pec.example.it");
        assert_eq!(argv[6], "pec-preflight.invalid@localhost");
        assert_eq!(argv[7..], ["header", "X-Trasporto", "posta-certificata"]);
        assert!(matches!(
            check_duplicate_command(&pec(), &[], "a@b"),
            Outcome::Warn(_)
        ));
    }
}
