// SPDX-License-Identifier: GPL-3.0-or-later
//! Files the attachment tests build themselves, byte by byte: zip archives (stored or
//! deflated, the encryption flag on request), an OOXML document with and without
//! `vbaProject.bin`, an OLE compound file with the streams asked for, the headers of a
//! Windows PE and a Linux ELF program, a PDF, and messages carrying them (attached, inside a
//! forwarded `message/rfc822`, inside a forwarded PEC transport envelope). Test support
//! like [`crate::doubles`]: nothing on the mail path uses it.

use std::io::Write;

use base64::Engine;

use super::zip::{CENTRAL, EOCD, LOCAL};

/// One entry of a zip archive to write.
#[derive(Debug, Clone)]
pub struct ZipFile {
    pub name: String,
    pub data: Vec<u8>,
    pub deflate: bool,
    /// Sets flag bit 0 (encrypted); the data is written as is.
    pub encrypted: bool,
}

impl ZipFile {
    pub fn stored(name: &str, data: &[u8]) -> Self {
        ZipFile {
            name: name.into(),
            data: data.to_vec(),
            deflate: false,
            encrypted: false,
        }
    }

    pub fn deflated(name: &str, data: &[u8]) -> Self {
        ZipFile {
            deflate: true,
            ..ZipFile::stored(name, data)
        }
    }

    pub fn encrypted(name: &str, data: &[u8]) -> Self {
        ZipFile {
            encrypted: true,
            ..ZipFile::stored(name, data)
        }
    }
}

/// The zip archive of `files`, in order (no data descriptors, no ZIP64).
pub fn zip(files: &[ZipFile]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for f in files {
        let body = if f.deflate {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = e.write_all(&f.data);
            e.finish().unwrap_or_default()
        } else {
            f.data.clone()
        };
        let mut crc = flate2::Crc::new();
        crc.update(&f.data);
        let method: u16 = if f.deflate { 8 } else { 0 };
        let flags = u16::from(f.encrypted);
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&flags.to_le_bytes());
            v.extend_from_slice(&method.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes()); // time, date
            v.extend_from_slice(&crc.sum().to_le_bytes());
            v.extend_from_slice(&(body.len() as u32).to_le_bytes());
            v.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra length
        };
        out.extend_from_slice(LOCAL);
        common(&mut out);
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(&body);

        central.extend_from_slice(CENTRAL);
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        common(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(f.name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let n = files.len().min(0xFFFF) as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(EOCD);
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out
}

/// A Word document (OOXML): with `macros`, the `word/vbaProject.bin` of a `.docm`.
pub fn docx(macros: bool) -> Vec<u8> {
    let mut files = vec![
        ZipFile::deflated(
            "[Content_Types].xml",
            br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>"#,
        ),
        ZipFile::deflated(
            "word/document.xml",
            br#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Contratto</w:t></w:r></w:p></w:body></w:document>"#,
        ),
    ];
    if macros {
        files.push(ZipFile::deflated(
            "word/vbaProject.bin",
            &ole(&["VBA", "_VBA_PROJECT", "dir"]),
        ));
    }
    zip(&files)
}

/// An OLE compound file (MS-CFB, version 3, 512-byte sectors): the header, one FAT sector
/// and one directory sector holding the root entry and `names` (storages for `VBA` and
/// `Macros`, streams otherwise; at most three).
pub fn ole(names: &[&str]) -> Vec<u8> {
    let mut out = vec![0u8; 512 * 3];
    out[..8].copy_from_slice(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]);
    out[24..26].copy_from_slice(&0x3Eu16.to_le_bytes()); // minor version
    out[26..28].copy_from_slice(&3u16.to_le_bytes()); // major version
    out[28..30].copy_from_slice(&0xFFFEu16.to_le_bytes()); // byte order
    out[30..32].copy_from_slice(&9u16.to_le_bytes()); // sector shift
    out[32..34].copy_from_slice(&6u16.to_le_bytes()); // mini sector shift
    out[44..48].copy_from_slice(&1u32.to_le_bytes()); // FAT sectors
    out[48..52].copy_from_slice(&1u32.to_le_bytes()); // first directory sector
    out[56..60].copy_from_slice(&4096u32.to_le_bytes()); // mini stream cutoff
    out[60..64].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes()); // no mini FAT
    out[68..72].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes()); // no DIFAT sectors
    for i in 0..109 {
        let v: u32 = if i == 0 { 0 } else { 0xFFFF_FFFF };
        out[76 + i * 4..80 + i * 4].copy_from_slice(&v.to_le_bytes());
    }
    // sector 0: the FAT (itself, then the directory's one-sector chain)
    let fat = 512;
    for (i, v) in [0xFFFF_FFFDu32, 0xFFFF_FFFE].iter().enumerate() {
        out[fat + i * 4..fat + i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    for i in 2..128 {
        out[fat + i * 4..fat + i * 4 + 4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    }
    // sector 1: the directory
    let dir = 1024;
    let entry = |out: &mut Vec<u8>, slot: usize, name: &str, kind: u8| {
        let at = dir + slot * 128;
        let utf16: Vec<u8> = name.encode_utf16().flat_map(|c| c.to_le_bytes()).collect();
        out[at..at + utf16.len()].copy_from_slice(&utf16);
        out[at + 64..at + 66].copy_from_slice(&((utf16.len() + 2) as u16).to_le_bytes());
        out[at + 66] = kind;
        out[at + 67] = 1; // black
        for f in [68, 72, 76] {
            out[at + f..at + f + 4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        }
    };
    entry(&mut out, 0, "Root Entry", 5);
    for (i, name) in names.iter().take(3).enumerate() {
        let kind = if matches!(*name, "VBA" | "Macros") {
            1
        } else {
            2
        };
        entry(&mut out, i + 1, name, kind);
    }
    out
}

/// The start of a Windows PE program: the MZ header, the DOS stub, `PE\0\0` and a COFF
/// header for x86-64.
pub fn pe() -> Vec<u8> {
    let mut out = vec![0u8; 0x200];
    out[..2].copy_from_slice(b"MZ");
    out[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    let stub = b"This program cannot be run in DOS mode.\r\r\n$";
    out[0x4E..0x4E + stub.len()].copy_from_slice(stub);
    out[0x80..0x84].copy_from_slice(b"PE\0\0");
    out[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    out
}

/// The start of a Linux ELF program (64-bit, little endian, x86-64 executable).
pub fn elf() -> Vec<u8> {
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // 64-bit
    out[5] = 1; // little endian
    out[6] = 1; // version
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&0x3Eu16.to_le_bytes()); // x86-64
    out
}

/// A one-page PDF; with `encrypted`, a trailer naming an `/Encrypt` dictionary.
pub fn pdf(encrypted: bool) -> Vec<u8> {
    let mut s = String::from(
        "%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n",
    );
    if encrypted {
        s.push_str("3 0 obj << /Filter /Standard /V 2 /R 3 /Length 128 /P -44 >> endobj\ntrailer << /Root 1 0 R /Encrypt 3 0 R >>\n");
    } else {
        s.push_str("trailer << /Root 1 0 R >>\n");
    }
    s.push_str("%%EOF\n");
    s.into_bytes()
}

/// One attachment of a test message.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

impl Attachment {
    pub fn new(name: &str, content_type: &str, data: &[u8]) -> Self {
        Attachment {
            name: name.into(),
            content_type: content_type.into(),
            data: data.to_vec(),
        }
    }
}

fn base64_lines(data: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(b.len() + b.len() / 38);
    for chunk in b.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// A submission from alice@pec.example.it to bob@pec.example.net with a text part and
/// `attachments` (base64), CRLF.
pub fn message(subject: &str, attachments: &[Attachment]) -> Vec<u8> {
    let b = "b1_attachments_test";
    let mut s = format!(
        "From: Alice <alice@pec.example.it>\r\nTo: bob@pec.example.net\r\nSubject: {subject}\r\nDate: Tue, 3 Jun 2025 10:11:09 +0200\r\nMessage-ID: <att-{}@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nIn allegato.\r\n",
        subject.len()
    );
    for a in attachments {
        s.push_str(&format!(
            "--{b}\r\nContent-Type: {}; name=\"{}\"\r\nContent-Disposition: attachment; filename=\"{}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            a.content_type,
            a.name,
            a.name,
            base64_lines(&a.data)
        ));
    }
    s.push_str(&format!("--{b}--\r\n"));
    s.into_bytes()
}

/// A message forwarding `inner` as a `message/rfc822` attachment named `name`, written as
/// is (7bit), as mail clients forward.
pub fn forward(name: &str, inner: &[u8]) -> Vec<u8> {
    let b = "b2_forward_test";
    let mut s = format!(
        "From: Alice <alice@pec.example.it>\r\nTo: bob@pec.example.net\r\nSubject: I: inoltro\r\nDate: Tue, 3 Jun 2025 10:11:09 +0200\r\nMessage-ID: <fwd-{}@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nInoltro.\r\n--{b}\r\nContent-Type: message/rfc822; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n",
        inner.len()
    )
    .into_bytes();
    s.extend_from_slice(inner);
    s.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    s
}

/// A PEC transport envelope (its layout, spec §2.1: `multipart/signed` over the text,
/// `daticert.xml` and `postacert.eml`) carrying `original`; the signature is a placeholder,
/// since only the layout matters to the attachment checks.
pub fn pec_envelope(original: &[u8]) -> Vec<u8> {
    let (signed, mixed, alt) = ("b3_signed", "b3_mixed", "b3_alt");
    let mut s = format!(
        "Subject: POSTA CERTIFICATA: contratto\r\nX-Trasporto: posta-certificata\r\nFrom: \"Per conto di: carol@pec.example.net\" <posta-certificata@pec.example.net>\r\nTo: alice@pec.example.it\r\nDate: Mon, 2 Jun 2025 10:00:00 +0200\r\nMessage-ID: <opec1.x@pec.example.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg=sha1; boundary=\"{signed}\"\r\n\r\nThis is an S/MIME signed message\r\n--{signed}\r\nContent-Type: multipart/mixed; boundary=\"{mixed}\"\r\n\r\n--{mixed}\r\nContent-Type: multipart/alternative; boundary=\"{alt}\"\r\n\r\n--{alt}\r\nContent-Type: text/plain; charset=\"iso-8859-1\"\r\n\r\nMessaggio di posta certificata\r\n--{alt}--\r\n--{mixed}\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{mixed}\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n",
        base64_lines(b"<?xml version=\"1.0\"?><postacert tipo=\"posta-certificata\" errore=\"nessuno\"/>")
    )
    .into_bytes();
    s.extend_from_slice(original);
    s.extend_from_slice(
        format!(
            "\r\n--{mixed}--\r\n\r\n--{signed}\r\nContent-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{signed}--\r\n",
            base64_lines(&[0x30, 0x80, 0, 0])
        )
        .as_bytes(),
    );
    s
}
