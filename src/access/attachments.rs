// SPDX-License-Identifier: GPL-3.0-or-later
//! The attachment checks of the access point, after the antivirus (a provider policy, not a
//! formal rule of the technical rules; modelled on Aruba's, see docs/attachments.md):
//!
//! * an attachment whose name has a blocked extension, or whose content is a program
//!   whatever its name (Windows PE, ELF, Mach-O, Java class, Windows Installer package), is
//!   **refused** with a non-acceptance notice naming it;
//! * a document with macros (OOXML with `vbaProject.bin`, OLE with a VBA project) and an
//!   attachment that cannot be scanned (an encrypted zip entry, an encrypted Office
//!   document or PDF, or one the bounds below stopped us from inspecting in full) are
//!   **accepted** with a [`Caution`]: a header on the transport envelope and a courtesy
//!   notice in its readable text.
//!
//! The walk looks inside `message/rfc822` parts (a forwarded message, the `postacert.eml`
//! of a forwarded PEC envelope), `.eml` files and zip archives (OOXML documents are zip
//! archives too), within [`Bounds`]: nesting depth, archive entries and decompressed bytes
//! for the whole message, and time. Over a bound the outcome is defined: the container
//! being inspected is reported as not inspected in full ([`CautionKind::NotInspected`])
//! and accepted, as Aruba accepts what it cannot scan, with the warning.

use std::time::{Duration, Instant};

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use memchr::memmem;

use super::zip::{Archive, ZipError};
use crate::message::build::{Caution, CautionKind};

/// The default blocked extensions: programs and scripts that run when opened on Windows
/// (and a few elsewhere), the list PEC providers publish (Aruba's among them). Lower case,
/// without the dot; `access.blocked_extensions` replaces it.
pub const DEFAULT_BLOCKED_EXTENSIONS: &[&str] = &[
    "ade", "adp", "app", "asp", "bas", "bat", "chm", "cla", "class", "cmd", "com", "cpl", "crt",
    "csh", "exe", "fxp", "hlp", "hpj", "hta", "inf", "ins", "isp", "jar", "js", "jse", "ksh",
    "lnk", "mda", "mdb", "mde", "mdt", "mdw", "mdz", "msc", "msh", "msh1", "msh1xml", "msh2",
    "msh2xml", "mshxml", "msi", "msp", "mst", "ocx", "ops", "pcd", "pif", "pl", "prf", "prg",
    "ps1", "ps1xml", "ps2", "ps2xml", "psc1", "psc2", "reg", "scf", "scr", "sct", "shb", "shs",
    "url", "vb", "vbe", "vbp", "vbs", "vsmacros", "ws", "wsc", "wsf", "wsh",
];

/// How far the walk goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// Containers within containers (messages and archives), the submission being 0.
    pub max_depth: usize,
    /// Archive entries looked at, in the whole submission.
    pub max_entries: usize,
    /// Bytes decompressed from archives, in the whole submission (the zip-bomb bound; an
    /// archive whose directory declares more is not opened).
    pub max_bytes: u64,
    /// Time for the whole walk.
    pub max_time: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_depth: 20,
            max_entries: 5_000,
            max_bytes: 200_000_000,
            max_time: Duration::from_secs(10),
        }
    }
}

/// The attachment policy of the access point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentPolicy {
    /// Extensions refused, lower case without the dot.
    pub blocked_extensions: Vec<String>,
    pub bounds: Bounds,
}

impl Default for AttachmentPolicy {
    fn default() -> Self {
        AttachmentPolicy {
            blocked_extensions: DEFAULT_BLOCKED_EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
            bounds: Bounds::default(),
        }
    }
}

/// Why an attachment is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReason {
    /// Its name ends in this blocked extension.
    Extension(String),
    /// Its content is a program of this kind, whatever its name.
    Program(&'static str),
}

/// The first refused attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// Where it is: the names of its containers and its own, joined by ` > `.
    pub path: String,
    pub reason: BlockReason,
}

impl Blocked {
    /// The reason for the non-acceptance notice, in Italian.
    pub fn reason(&self) -> String {
        match &self.reason {
            BlockReason::Extension(ext) => format!(
                "allegato non ammesso: {} (estensione .{ext} non ammessa per motivi di sicurezza)",
                self.path
            ),
            BlockReason::Program(kind) => format!(
                "allegato non ammesso: {} (il contenuto è un programma eseguibile, {kind})",
                self.path
            ),
        }
    }
}

/// What the walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Set: the submission is refused.
    pub blocked: Option<Blocked>,
    /// The warnings for an accepted submission, in the order found, one per attachment and
    /// kind.
    pub cautions: Vec<Caution>,
}

/// Longest attachment path shown (names are the sender's: bounded and without controls).
const MAX_SHOWN: usize = 200;
/// How much of an archive entry is read to tell what it is.
const SNIFF: u64 = 4096;

/// Walks `message` under `policy`. Pure and bounded; run it off the async threads.
pub fn inspect(message: &[u8], policy: &AttachmentPolicy) -> Inspection {
    let mut w = Walker {
        policy,
        deadline: Instant::now() + policy.bounds.max_time,
        entries: 0,
        bytes: 0,
        out: Inspection::default(),
    };
    w.message(message, "", 0);
    w.out
}

struct Walker<'p> {
    policy: &'p AttachmentPolicy,
    deadline: Instant,
    entries: usize,
    bytes: u64,
    out: Inspection,
}

/// A name as shown: control characters replaced, at most [`MAX_SHOWN`] characters.
fn shown(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.chars().count() > MAX_SHOWN {
        let mut s: String = clean.chars().take(MAX_SHOWN).collect();
        s.push('…');
        s
    } else {
        clean
    }
}

fn join(path: &str, name: &str) -> String {
    let name = if name.is_empty() {
        "(senza nome)"
    } else {
        name
    };
    if path.is_empty() {
        shown(name)
    } else {
        shown(&format!("{path} > {name}"))
    }
}

/// The extension of a file name, lower case; the last path segment counts (zip entries).
fn extension(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let base = base.trim_end_matches(['.', ' ']);
    let (_, ext) = base.rsplit_once('.')?;
    (!ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

impl Walker<'_> {
    fn done(&self) -> bool {
        self.out.blocked.is_some()
    }

    fn over_time(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn caution(&mut self, kind: CautionKind, path: &str) {
        let name = if path.is_empty() {
            "(messaggio)".to_string()
        } else {
            path.to_string()
        };
        if !self
            .out
            .cautions
            .iter()
            .any(|c| c.kind == kind && c.name == name)
        {
            self.out.cautions.push(Caution { kind, name });
        }
    }

    fn block(&mut self, path: &str, reason: BlockReason) {
        if self.out.blocked.is_none() {
            self.out.blocked = Some(Blocked {
                path: path.to_string(),
                reason,
            });
        }
    }

    /// A whole message (the submission, a forwarded one, an `.eml` file).
    fn message(&mut self, raw: &[u8], path: &str, depth: usize) {
        if depth > self.policy.bounds.max_depth {
            self.caution(CautionKind::NotInspected, path);
            return;
        }
        if let Some(m) = MessageParser::default().parse(raw) {
            self.parts(&m, path, depth);
        }
    }

    fn parts(&mut self, m: &Message<'_>, path: &str, depth: usize) {
        // parts[0] is the message's own body (the root multipart or single part)
        for part in &m.parts {
            if self.done() {
                return;
            }
            if self.over_time() {
                self.caution(CautionKind::NotInspected, path);
                return;
            }
            let name = part.attachment_name().unwrap_or("");
            let here = join(path, name);
            if !name.is_empty() && self.blocked_name(name, &here) {
                return;
            }
            let is_message = part
                .content_type()
                .is_some_and(|ct| ct.c_type.eq_ignore_ascii_case("message"));
            match &part.body {
                PartType::Multipart(_) => {}
                PartType::Message(inner) => {
                    if depth + 1 > self.policy.bounds.max_depth {
                        self.caution(CautionKind::NotInspected, &here);
                    } else {
                        self.parts(inner, &here, depth + 1);
                    }
                }
                // A message/rfc822 the parser left undecoded (encoded beyond its own
                // nesting limit): parse it here, within our bound.
                PartType::Binary(b) | PartType::InlineBinary(b) if is_message => {
                    self.message(b, &here, depth + 1)
                }
                PartType::Binary(b) | PartType::InlineBinary(b) => self.file(name, b, &here, depth),
                // Text bodies are looked at only when named (attached files); the message's
                // own text is not an attachment.
                PartType::Text(t) | PartType::Html(t) => {
                    if !name.is_empty() {
                        self.file(name, t.as_bytes(), &here, depth)
                    }
                }
            }
        }
    }

    fn blocked_name(&mut self, name: &str, here: &str) -> bool {
        if let Some(ext) = extension(name) {
            if self.policy.blocked_extensions.contains(&ext) {
                self.block(here, BlockReason::Extension(ext));
                return true;
            }
        }
        false
    }

    /// One file: its content decides (programs, archives, documents).
    fn file(&mut self, name: &str, data: &[u8], here: &str, depth: usize) {
        match sniff(data) {
            Kind::Program(kind) => self.block(here, BlockReason::Program(kind)),
            Kind::Zip => self.archive(data, here, depth + 1),
            Kind::Ole => match ole_streams(data) {
                Ole::Installer => self.block(here, BlockReason::Program("Windows Installer")),
                Ole::Macros => self.caution(CautionKind::Macro, here),
                Ole::Encrypted => self.caution(CautionKind::Encrypted, here),
                Ole::Plain => {}
            },
            Kind::Pdf => {
                if memmem::find(data, b"/Encrypt").is_some() {
                    self.caution(CautionKind::Encrypted, here);
                }
            }
            Kind::Other => {
                if extension(name).as_deref() == Some("eml") {
                    self.message(data, here, depth + 1);
                }
            }
        }
    }

    fn archive(&mut self, data: &[u8], here: &str, depth: usize) {
        if depth > self.policy.bounds.max_depth {
            self.caution(CautionKind::NotInspected, here);
            return;
        }
        let Ok(archive) = Archive::open(data) else {
            self.caution(CautionKind::NotInspected, here);
            return;
        };
        for entry in archive.entries() {
            if self.done() {
                return;
            }
            let Ok(entry) = entry else {
                self.caution(CautionKind::NotInspected, here);
                return;
            };
            self.entries += 1;
            if self.entries > self.policy.bounds.max_entries || self.over_time() {
                self.caution(CautionKind::NotInspected, here);
                return;
            }
            if entry.is_dir() {
                continue;
            }
            let inner = join(here, &entry.name);
            if self.blocked_name(&entry.name, &inner) {
                return;
            }
            if entry.encrypted {
                self.caution(CautionKind::Encrypted, &inner);
                continue;
            }
            let base = entry.name.rsplit('/').next().unwrap_or("");
            if base.eq_ignore_ascii_case("vbaProject.bin") {
                // OOXML with a VBA project (.docm, .xlsm, .pptm): the document has macros
                self.caution(CautionKind::Macro, here);
                continue;
            }
            // Declared sizes first: an entry that says it holds more than the budget left
            // is not inflated at all (the zip bomb stops here).
            let left = self.policy.bounds.max_bytes.saturating_sub(self.bytes);
            if entry.size > left {
                self.caution(CautionKind::NotInspected, here);
                return;
            }
            // Read what tells the kind; read the rest only for what is opened in turn.
            let head = match archive.read(&entry, SNIFF.min(left), self.deadline) {
                Ok((head, _)) => head,
                Err(e) => {
                    self.unreadable(e, here, &inner);
                    continue;
                }
            };
            let needs_all = matches!(sniff(&head), Kind::Zip | Kind::Ole | Kind::Pdf)
                || extension(&entry.name).as_deref() == Some("eml");
            let data = if needs_all {
                match archive.read(&entry, left, self.deadline) {
                    Ok((all, true)) => all,
                    Ok((_, false)) => {
                        // it inflates past the budget, whatever its directory said
                        self.bytes = self.policy.bounds.max_bytes;
                        self.caution(CautionKind::NotInspected, here);
                        return;
                    }
                    Err(e) => {
                        self.unreadable(e, here, &inner);
                        continue;
                    }
                }
            } else {
                head
            };
            self.bytes = self.bytes.saturating_add(data.len() as u64);
            self.file(&entry.name, &data, &inner, depth);
        }
    }

    fn unreadable(&mut self, e: ZipError, archive: &str, entry: &str) {
        match e {
            ZipError::Deadline => self.caution(CautionKind::NotInspected, archive),
            _ => self.caution(CautionKind::NotInspected, entry),
        }
    }
}

/// What a file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Program(&'static str),
    Zip,
    Ole,
    Pdf,
    Other,
}

const OLE_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

fn sniff(d: &[u8]) -> Kind {
    if d.starts_with(b"MZ") && is_pe(d) {
        return Kind::Program("Windows PE");
    }
    if d.starts_with(b"\x7fELF") {
        return Kind::Program("ELF");
    }
    if [
        [0xFE, 0xED, 0xFA, 0xCE],
        [0xFE, 0xED, 0xFA, 0xCF],
        [0xCE, 0xFA, 0xED, 0xFE],
        [0xCF, 0xFA, 0xED, 0xFE],
    ]
    .iter()
    .any(|m| d.starts_with(m))
    {
        return Kind::Program("Mach-O");
    }
    if d.starts_with(&[0xCA, 0xFE, 0xBA, 0xBE]) {
        return Kind::Program("classe Java o Mach-O");
    }
    if d.starts_with(b"PK\x03\x04") || d.starts_with(b"PK\x05\x06") {
        return Kind::Zip;
    }
    if d.starts_with(&OLE_MAGIC) {
        return Kind::Ole;
    }
    if d.len() >= 5 && memmem::find(&d[..d.len().min(1024)], b"%PDF-").is_some() {
        return Kind::Pdf;
    }
    Kind::Other
}

/// `MZ` with the `PE\0\0` signature where `e_lfanew` points, or the DOS stub's sentence
/// (a PE cut short by the sniffing window).
fn is_pe(d: &[u8]) -> bool {
    let lfanew = d
        .get(0x3C..0x40)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .and_then(|v| usize::try_from(v).ok());
    if let Some(at) = lfanew {
        if d.get(at..at.saturating_add(4)) == Some(b"PE\0\0") {
            return true;
        }
    }
    memmem::find(
        &d[..d.len().min(512)],
        b"This program cannot be run in DOS mode",
    )
    .is_some()
}

#[derive(Debug, PartialEq, Eq)]
enum Ole {
    Installer,
    Macros,
    Encrypted,
    Plain,
}

/// The CLSIDs of Windows Installer packages and patches in the root entry.
const INSTALLER_CLSIDS: [[u8; 16]; 2] = [
    [
        0x84, 0x10, 0x0C, 0x00, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46,
    ],
    [
        0x86, 0x10, 0x0C, 0x00, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46,
    ],
];

/// The directory entries of an OLE compound file (MS-CFB §2.6), found where they can be:
/// every 128 bytes after the 512-byte header (sectors are 512 or 4096 bytes, so entries are
/// 128-byte aligned), each with a plausible name length and type. Without walking the FAT:
/// a stream name that merely occurs inside another stream's data is not aligned and typed
/// like an entry.
fn ole_streams(d: &[u8]) -> Ole {
    let mut found = Ole::Plain;
    let mut at = 512;
    while at + 128 <= d.len() {
        let e = &d[at..at + 128];
        let len = usize::from(u16::from_le_bytes([e[64], e[65]]));
        let kind = e[66];
        if (4..=64).contains(&len) && len % 2 == 0 && (1..=5).contains(&kind) {
            let name: Vec<u16> = e[..len - 2]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let name = String::from_utf16_lossy(&name);
            if kind == 5 && INSTALLER_CLSIDS.iter().any(|c| e[80..96] == c[..]) {
                return Ole::Installer;
            }
            match name.as_str() {
                "_VBA_PROJECT" | "_VBA_PROJECT_CUR" | "VBA" | "Macros" => found = Ole::Macros,
                "EncryptedPackage" | "EncryptionInfo" if found == Ole::Plain => {
                    found = Ole::Encrypted
                }
                _ => {}
            }
        }
        at += 128;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        assert_eq!(extension("a.EXE").as_deref(), Some("exe"));
        assert_eq!(extension("dir/x.tar.gz").as_deref(), Some("gz"));
        assert_eq!(extension("evil.exe.").as_deref(), Some("exe"));
        assert_eq!(extension("evil.exe  ").as_deref(), Some("exe"));
        assert_eq!(extension("dir.d/file"), None);
        assert_eq!(extension("noext"), None);
    }

    #[test]
    fn sniffing() {
        use crate::access::testfiles::{docx, elf, ole, pdf, pe};
        assert_eq!(sniff(&pe()), Kind::Program("Windows PE"));
        assert_eq!(sniff(&pe()[..0x7C]), Kind::Program("Windows PE"));
        assert_eq!(
            sniff(b"MZ is a text that starts like a program"),
            Kind::Other
        );
        assert_eq!(sniff(&elf()), Kind::Program("ELF"));
        assert_eq!(sniff(&docx(false)), Kind::Zip);
        assert_eq!(sniff(&ole(&[])), Kind::Ole);
        assert_eq!(sniff(&pdf(false)), Kind::Pdf);
        assert_eq!(ole_streams(&ole(&["WordDocument"])), Ole::Plain);
        assert_eq!(
            ole_streams(&ole(&["WordDocument", "Macros", "_VBA_PROJECT"])),
            Ole::Macros
        );
        assert_eq!(
            ole_streams(&ole(&["EncryptionInfo", "EncryptedPackage"])),
            Ole::Encrypted
        );
        let mut msi = ole(&["SummaryInformation"]);
        msi[1024 + 80..1024 + 96].copy_from_slice(&INSTALLER_CLSIDS[0]);
        assert_eq!(ole_streams(&msi), Ole::Installer);
    }

    #[test]
    fn shown_names_are_bounded_and_clean() {
        assert_eq!(shown("a\r\nb"), "a??b");
        assert_eq!(shown(&"x".repeat(500)).chars().count(), MAX_SHOWN + 1);
        assert_eq!(join("", ""), "(senza nome)");
        assert_eq!(join("a.zip", "b.exe"), "a.zip > b.exe");
    }
}
