// SPDX-License-Identifier: GPL-3.0-or-later
//! The attachment checks of the access point ([`pec::access::attachments`]) on files the
//! tests build: blocked extensions, programs renamed, archives, forwarded messages and PEC
//! envelopes, macros, encrypted content, and hostile input (a zip bomb, 10,000 entries,
//! 100-deep nesting) with a bounded, defined outcome.

use std::time::Duration;

use pec::access::attachments::{inspect, BlockReason, DEFAULT_BLOCKED_EXTENSIONS};
use pec::access::testfiles::{
    docx, elf, forward, message, ole, pdf, pe, pec_envelope, zip, Attachment, ZipFile,
};
use pec::access::{AttachmentPolicy, Bounds};
use pec::message::build::{Caution, CautionKind};

fn policy() -> AttachmentPolicy {
    AttachmentPolicy::default()
}

fn with(name: &str, ct: &str, data: &[u8]) -> Vec<u8> {
    message("prova", &[Attachment::new(name, ct, data)])
}

fn blocked(msg: &[u8]) -> (String, BlockReason) {
    let b = inspect(msg, &policy())
        .blocked
        .expect("the attachment must be refused");
    (b.path, b.reason)
}

fn cautions(msg: &[u8]) -> Vec<Caution> {
    let i = inspect(msg, &policy());
    assert_eq!(i.blocked, None, "nothing is refused");
    i.cautions
}

fn caution(kind: CautionKind, name: &str) -> Caution {
    Caution {
        kind,
        name: name.into(),
    }
}

#[test]
fn the_default_list_blocks_programs_and_scripts() {
    for ext in [
        "exe", "com", "scr", "pif", "bat", "cmd", "vbs", "js", "jse", "wsf", "msi", "cpl", "hta",
        "jar", "ps1",
    ] {
        assert!(DEFAULT_BLOCKED_EXTENSIONS.contains(&ext), "{ext}");
        let (path, reason) = blocked(&with(
            &format!("file.{}", ext.to_uppercase()),
            "application/octet-stream",
            b"data",
        ));
        assert_eq!(path, format!("file.{}", ext.to_uppercase()));
        assert_eq!(reason, BlockReason::Extension(ext.into()));
    }
    // documents pass
    for (name, data) in [
        ("contratto.pdf", pdf(false)),
        ("contratto.docx", docx(false)),
    ] {
        assert_eq!(cautions(&with(name, "application/octet-stream", &data)), []);
    }
}

#[test]
fn the_list_is_overridable() {
    let none = AttachmentPolicy {
        blocked_extensions: vec![],
        ..policy()
    };
    let msg = with("script.vbs", "text/plain", b"MsgBox 1");
    assert_eq!(inspect(&msg, &none).blocked, None);
    let own = AttachmentPolicy {
        blocked_extensions: vec!["txt".into()],
        ..policy()
    };
    assert_eq!(
        inspect(&with("a.txt", "text/plain", b"x"), &own)
            .blocked
            .map(|b| b.reason),
        Some(BlockReason::Extension("txt".into()))
    );
    // programs are refused by content even with no extension blocked
    assert_eq!(
        inspect(&with("a.pdf", "application/pdf", &pe()), &none)
            .blocked
            .map(|b| b.reason),
        Some(BlockReason::Program("Windows PE"))
    );
}

#[test]
fn renamed_programs_are_caught_by_content() {
    let (path, reason) = blocked(&with("fattura.pdf", "application/pdf", &pe()));
    assert_eq!(path, "fattura.pdf");
    assert_eq!(reason, BlockReason::Program("Windows PE"));
    let (_, reason) = blocked(&with("foto.jpg", "image/jpeg", &elf()));
    assert_eq!(reason, BlockReason::Program("ELF"));
    // an unnamed part too
    let mut msg = with("x", "application/octet-stream", &pe());
    let text = String::from_utf8(msg.clone()).unwrap();
    msg = text
        .replace("; name=\"x\"", "")
        .replace("Content-Disposition: attachment; filename=\"x\"\r\n", "")
        .into_bytes();
    assert_eq!(blocked(&msg).1, BlockReason::Program("Windows PE"));
    // a text that merely starts with MZ is not a program
    assert_eq!(
        cautions(&with("note.txt", "text/plain", b"MZ: appunti")),
        []
    );
}

#[test]
fn archives_are_looked_into() {
    let archive = zip(&[
        ZipFile::deflated("documenti/contratto.pdf", &pdf(false)),
        ZipFile::deflated("documenti/setup.exe", &pe()),
    ]);
    let (path, reason) = blocked(&with("documenti.zip", "application/zip", &archive));
    assert_eq!(path, "documenti.zip > documenti/setup.exe");
    assert_eq!(reason, BlockReason::Extension("exe".into()));
    // renamed inside the archive, in an archive in an archive
    let inner = zip(&[ZipFile::deflated("leggimi.txt", &elf())]);
    let outer = zip(&[ZipFile::stored("interno.zip", &inner)]);
    let (path, reason) = blocked(&with("esterno.zip", "application/zip", &outer));
    assert_eq!(path, "esterno.zip > interno.zip > leggimi.txt");
    assert_eq!(reason, BlockReason::Program("ELF"));
    // a zip renamed .dat is opened all the same
    let (_, reason) = blocked(&with("dati.dat", "application/octet-stream", &archive));
    assert_eq!(reason, BlockReason::Extension("exe".into()));
    // a clean archive passes
    let clean = zip(&[ZipFile::deflated("a.txt", b"ciao")]);
    assert_eq!(cautions(&with("a.zip", "application/zip", &clean)), []);
}

#[test]
fn forwarded_messages_and_pec_envelopes_are_looked_into() {
    let inner = with("setup.exe", "application/octet-stream", &pe());
    let (path, _) = blocked(&forward("inoltrato.eml", &inner));
    assert_eq!(path, "inoltrato.eml > setup.exe");
    // a forwarded PEC transport envelope: the program is inside its postacert.eml
    let envelope = pec_envelope(&inner);
    let (path, reason) = blocked(&forward("busta.eml", &envelope));
    assert_eq!(path, "busta.eml > postacert.eml > setup.exe");
    assert_eq!(reason, BlockReason::Extension("exe".into()));
    // the same envelope attached base64 (as some clients forward) and as an .eml in a zip
    let (path, _) = blocked(&with("busta.eml", "message/rfc822", &envelope));
    assert!(path.ends_with("postacert.eml > setup.exe"), "{path}");
    let archive = zip(&[ZipFile::deflated("busta.eml", &envelope)]);
    let (path, _) = blocked(&with("posta.zip", "application/zip", &archive));
    assert_eq!(path, "posta.zip > busta.eml > postacert.eml > setup.exe");
}

#[test]
fn macros_are_accepted_with_a_caution() {
    assert_eq!(
        cautions(&with(
            "bilancio.docm",
            "application/octet-stream",
            &docx(true)
        )),
        [caution(CautionKind::Macro, "bilancio.docm")]
    );
    // renamed .docx: the content decides
    assert_eq!(
        cautions(&with(
            "bilancio.docx",
            "application/octet-stream",
            &docx(true)
        )),
        [caution(CautionKind::Macro, "bilancio.docx")]
    );
    // an OLE document (Word 97) with a VBA project
    let doc = ole(&["WordDocument", "Macros", "_VBA_PROJECT"]);
    assert_eq!(
        cautions(&with("lettera.doc", "application/msword", &doc)),
        [caution(CautionKind::Macro, "lettera.doc")]
    );
    assert_eq!(
        cautions(&with(
            "lettera.doc",
            "application/msword",
            &ole(&["WordDocument"])
        )),
        []
    );
    // inside an archive inside a forwarded message
    let archive = zip(&[ZipFile::deflated("bilancio.xlsm", &docx(true))]);
    let msg = forward("fw.eml", &with("conti.zip", "application/zip", &archive));
    assert_eq!(
        cautions(&msg),
        [caution(
            CautionKind::Macro,
            "fw.eml > conti.zip > bilancio.xlsm"
        )]
    );
}

#[test]
fn what_cannot_be_scanned_is_accepted_with_a_caution() {
    let archive = zip(&[
        ZipFile::stored("leggimi.txt", b"ciao"),
        ZipFile::encrypted("segreto.pdf", b"\x01\x02\x03"),
    ]);
    assert_eq!(
        cautions(&with("riservato.zip", "application/zip", &archive)),
        [caution(
            CautionKind::Encrypted,
            "riservato.zip > segreto.pdf"
        )]
    );
    // an encrypted Office document (OLE with EncryptedPackage)
    let doc = ole(&["EncryptionInfo", "EncryptedPackage"]);
    assert_eq!(
        cautions(&with("bilancio.xlsx", "application/octet-stream", &doc)),
        [caution(CautionKind::Encrypted, "bilancio.xlsx")]
    );
    assert_eq!(
        cautions(&with("atto.pdf", "application/pdf", &pdf(true))),
        [caution(CautionKind::Encrypted, "atto.pdf")]
    );
    // an encrypted entry whose name is blocked is refused: the name is enough
    let archive = zip(&[ZipFile::encrypted("setup.exe", b"\x01")]);
    assert_eq!(
        blocked(&with("a.zip", "application/zip", &archive)).1,
        BlockReason::Extension("exe".into())
    );
    // a corrupt archive cannot be read: not inspected
    let mut bad = zip(&[ZipFile::deflated("a.txt", b"ciao ciao ciao")]);
    let n = bad.len();
    bad[n - 6..n - 2].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
    assert_eq!(
        cautions(&with("rotto.zip", "application/zip", &bad)),
        [caution(CautionKind::NotInspected, "rotto.zip")]
    );
}

#[test]
fn a_zip_bomb_is_not_inflated_past_the_budget() {
    let small = AttachmentPolicy {
        bounds: Bounds {
            max_bytes: 1_000_000,
            ..Bounds::default()
        },
        ..policy()
    };
    // 16 MiB of zeros in about 16 KiB (ratio about 1000), declared honestly: the archive
    // is not opened
    let bomb = zip(&[ZipFile::deflated("zeri.bin", &vec![0u8; 16 << 20])]);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let i = inspect(&with("bomba.zip", "application/zip", &bomb), &small);
    assert_eq!(i.blocked, None);
    assert_eq!(
        i.cautions,
        [caution(CautionKind::NotInspected, "bomba.zip")]
    );
    // an archive that must be inflated to be opened (a 16 MiB stored archive, deflated
    // inside another) and lies about its size (declared 10 bytes): the inflation stops at
    // the byte budget
    let inner = zip(&[ZipFile::stored("zeri.bin", &vec![0u8; 16 << 20])]);
    let mut liar = zip(&[ZipFile::deflated("zeri.zip", &inner)]);
    assert!(liar.len() < 100_000, "{}", liar.len());
    patch_declared_sizes(&mut liar, 10);
    let i = inspect(&with("bomba2.zip", "application/zip", &liar), &small);
    assert_eq!(i.blocked, None);
    assert_eq!(
        i.cautions,
        [caution(CautionKind::NotInspected, "bomba2.zip")]
    );
    // within the default budget (200 MB) the same archives are inspected, and pass
    assert_eq!(cautions(&with("bomba2.zip", "application/zip", &liar)), []);
}

/// Sets every entry's declared uncompressed size (local and central headers) to `size`.
fn patch_declared_sizes(data: &mut [u8], size: u32) {
    let mut i = 0;
    while i + 4 <= data.len() {
        match &data[i..i + 4] {
            b"PK\x03\x04" => data[i + 22..i + 26].copy_from_slice(&size.to_le_bytes()),
            b"PK\x01\x02" => data[i + 24..i + 28].copy_from_slice(&size.to_le_bytes()),
            _ => {}
        }
        i += 1;
    }
}

#[test]
fn ten_thousand_entries_stop_at_the_entry_budget() {
    let files: Vec<ZipFile> = (0..10_000)
        .map(|n| ZipFile::stored(&format!("f{n}.txt"), b"x"))
        .collect();
    let mut all = files.clone();
    all.push(ZipFile::stored("ultimo.exe", &pe()));
    let archive = zip(&all);
    let msg = with("molti.zip", "application/zip", &archive);
    // the default budget (5000) stops before the program at the end: not inspected
    assert_eq!(
        cautions(&msg),
        [caution(CautionKind::NotInspected, "molti.zip")]
    );
    // a budget that covers them all finds it
    let wide = AttachmentPolicy {
        bounds: Bounds {
            max_entries: 20_000,
            ..Bounds::default()
        },
        ..policy()
    };
    assert_eq!(
        inspect(&msg, &wide).blocked.map(|b| b.path),
        Some("molti.zip > ultimo.exe".into())
    );
}

#[test]
fn deep_nesting_stops_at_the_depth_bound() {
    // 100 forwards, each inside the previous one, a program at the bottom
    let mut msg = with("setup.exe", "application/octet-stream", &pe());
    for n in 0..100 {
        msg = forward(&format!("f{n}.eml"), &msg);
    }
    let i = inspect(&msg, &policy());
    assert_eq!(i.blocked, None);
    assert_eq!(i.cautions.len(), 1);
    assert_eq!(i.cautions[0].kind, CautionKind::NotInspected);
    assert_eq!(
        i.cautions[0].name.matches(" > ").count(),
        20,
        "{}",
        i.cautions[0].name
    );
    // within the bound the program is found
    let mut msg = with("setup.exe", "application/octet-stream", &pe());
    for n in 0..5 {
        msg = forward(&format!("f{n}.eml"), &msg);
    }
    assert_eq!(blocked(&msg).1, BlockReason::Extension("exe".into()));
    // 100 zips, each in the previous one
    let mut z = zip(&[ZipFile::stored("setup.exe", &pe())]);
    for n in 0..100 {
        z = zip(&[ZipFile::stored(&format!("z{n}.zip"), &z)]);
    }
    let i = inspect(&with("matrioska.zip", "application/zip", &z), &policy());
    assert_eq!(i.blocked, None);
    assert_eq!(i.cautions[0].kind, CautionKind::NotInspected);
}

#[test]
fn the_time_bound_gives_the_same_defined_outcome() {
    let archive = zip(&[ZipFile::deflated("a.txt", b"ciao")]);
    let msg = with("a.zip", "application/zip", &archive);
    let none = AttachmentPolicy {
        bounds: Bounds {
            max_time: Duration::ZERO,
            ..Bounds::default()
        },
        ..policy()
    };
    let i = inspect(&msg, &none);
    assert_eq!(i.blocked, None);
    assert_eq!(
        i.cautions,
        [caution(CautionKind::NotInspected, "(messaggio)")]
    );
}

#[test]
fn hostile_names_are_shown_clean() {
    let msg = with("a\tb.exe", "application/octet-stream", b"x");
    let (path, _) = blocked(&msg);
    assert!(!path.chars().any(char::is_control), "{path:?}");
}
