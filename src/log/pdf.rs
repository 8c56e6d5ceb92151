// SPDX-License-Identifier: GPL-3.0-or-later
//! PDF export of legal-log records (`pec log export --format pdf`), written by hand: PDF
//! 1.4, A4 portrait, the standard Courier font (no embedding, WinAnsi encoding), plain text
//! lines, no compression. A reader for people; the CSV and JSON exports stay the data
//! formats. Characters outside WinAnsi's Latin-1 range print as `?`.

use super::receipt_type;
use crate::message::time::Instant;
use crate::store::LoggedEvent;

/// Page size (A4, points), margins and type.
const WIDTH: u32 = 595;
const HEIGHT: u32 = 842;
const MARGIN: u32 = 40;
const FONT_SIZE: u32 = 8;
const LEADING: u32 = 10;
/// Courier's advance is 0.6 em: characters per line within the margins.
const COLUMNS: usize = ((WIDTH - 2 * MARGIN) * 10 / (FONT_SIZE * 6)) as usize;
/// Text lines per page, the footer excluded.
const LINES: usize = ((HEIGHT - 2 * MARGIN) / LEADING) as usize - 2;

/// The records as a PDF document titled `title` (generated at `now`).
pub fn to_pdf(events: &[LoggedEvent], title: &str, now: Instant) -> Vec<u8> {
    let mut lines = vec![
        title.to_string(),
        format!(
            "Generato il {} alle {}{} - {} registrazioni",
            now.legal().giorno(),
            now.legal().ora(),
            now.legal().zona(),
            events.len()
        ),
        String::new(),
    ];
    for e in events {
        let ev = &e.event;
        let legal = ev.at.legal();
        let kind = match receipt_type(e) {
            "" => ev.kind.label().to_string(),
            t => format!("{} ({t})", ev.kind.label()),
        };
        lines.push(format!(
            "#{} {} {}{} {} - esito: {}",
            e.id,
            legal.giorno(),
            legal.ora(),
            legal.zona(),
            kind,
            ev.outcome
        ));
        let recipients = ev
            .recipients
            .iter()
            .map(|(a, t)| format!("{a} ({})", t.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut fields = vec![
            ("identificativo", ev.pec_id.clone()),
            ("mittente", ev.sender.clone()),
            ("destinatari", recipients),
            ("oggetto", ev.subject.clone()),
        ];
        if !ev.related_ids.is_empty() {
            fields.push(("messaggi generati", ev.related_ids.join(", ")));
        }
        fields.push(("gestore", ev.provider.clone()));
        if let Some(q) = &ev.queue_id {
            fields.push(("queue id", q.clone()));
        }
        if let Some(r) = &ev.reason {
            fields.push(("motivo", r.clone()));
        }
        fields.push(("hash", hex::encode(&e.hash)));
        for (name, value) in fields {
            lines.extend(wrap(&format!("    {name}: {value}"), COLUMNS));
        }
        lines.push(String::new());
    }
    document(&lines, title, now)
}

/// `line` cut into pieces of at most `width` characters (continuations indented).
fn wrap(line: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= width {
        return vec![line.to_string()];
    }
    let mut out = vec![chars[..width].iter().collect::<String>()];
    let indent = "        ";
    let rest = width - indent.len();
    for chunk in chars[width..].chunks(rest) {
        out.push(format!("{indent}{}", chunk.iter().collect::<String>()));
    }
    out
}

/// A PDF literal string of `s` in WinAnsi (Latin-1 for the characters used here).
fn literal(s: &str) -> Vec<u8> {
    let mut out = vec![b'('];
    for c in s.chars() {
        let b = match u32::from(c) {
            0x20..=0x7E => c as u8,
            0xA0..=0xFF => u32::from(c) as u8,
            _ => b'?',
        };
        match b {
            b'(' | b')' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            0x80..=0xFF => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b')');
    out
}

/// The page content streams, then the objects, the cross-reference table and the trailer.
fn document(lines: &[String], title: &str, now: Instant) -> Vec<u8> {
    let pages: Vec<&[String]> = if lines.is_empty() {
        vec![&[]]
    } else {
        lines.chunks(LINES).collect()
    };
    let count = pages.len();
    // Objects: 1 catalog, 2 pages, 3 font, 4 info, then page i = 5 + 2i, content = 6 + 2i.
    let mut objects: Vec<Vec<u8>> = Vec::with_capacity(4 + 2 * count);
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    let kids: Vec<String> = (0..count).map(|i| format!("{} 0 R", 5 + 2 * i)).collect();
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {count} >>",
            kids.join(" ")
        )
        .into_bytes(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>".to_vec(),
    );
    let mut info = b"<< /Producer (pec) /Title ".to_vec();
    info.extend(literal(title));
    info.extend(
        format!(
            " /CreationDate (D:{}Z) >>",
            now.utc().format("%Y%m%d%H%M%S")
        )
        .bytes(),
    );
    objects.push(info);
    for (i, page) in pages.iter().enumerate() {
        let mut content = format!(
            "BT /F1 {FONT_SIZE} Tf {LEADING} TL {MARGIN} {} Td\n",
            HEIGHT - MARGIN - FONT_SIZE
        )
        .into_bytes();
        for line in page.iter() {
            content.extend(literal(line));
            content.extend_from_slice(b" '\n");
        }
        content.extend_from_slice(b"ET\nBT /F1 7 Tf ");
        content.extend(format!("{MARGIN} {} Td ", MARGIN / 2).bytes());
        content.extend(literal(&format!("pagina {} di {count}", i + 1)));
        content.extend_from_slice(b" Tj ET\n");
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {WIDTH} {HEIGHT}] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                6 + 2 * i
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend(content);
        stream.extend_from_slice(b"endstream");
        objects.push(stream);
    }

    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", i + 1).bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::kind::{MessageKind, RecipientType};
    use crate::store::{EventKind, LogEvent};

    fn record(id: i64) -> LoggedEvent {
        LoggedEvent {
            id,
            event: LogEvent {
                pec_id: format!("opec.{id}@pec.example.it"),
                at: Instant::parse_cli("2026-11-05T10:00:00Z").unwrap(),
                kind: EventKind::Issued(MessageKind::TransportEnvelope),
                sender: "mario@pec.example.it".into(),
                recipients: vec![("anna@pec.example.net".into(), RecipientType::Certificato)],
                subject: format!("Fattura n. {id} (perché è urgente) \\ ok"),
                related_ids: Vec::new(),
                provider: "PEC Example".into(),
                queue_id: None,
                outcome: "ok".into(),
                reason: None,
            },
            hash: vec![0xab; 32],
        }
    }

    /// The byte offset each xref entry names holds `N 0 obj`, and startxref names the xref.
    fn check_structure(pdf: &[u8]) -> usize {
        let text = String::from_utf8_lossy(pdf);
        assert!(text.starts_with("%PDF-1.4\n"));
        assert!(text.ends_with("%%EOF\n"));
        let start: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pdf[start..].starts_with(b"xref\n"));
        let entries: Vec<&str> = std::str::from_utf8(&pdf[start..])
            .unwrap()
            .lines()
            .skip(3)
            .take_while(|l| l.ends_with(" n "))
            .collect();
        for (i, e) in entries.iter().enumerate() {
            let offset: usize = e[..10].parse().unwrap();
            assert!(
                pdf[offset..].starts_with(format!("{} 0 obj\n", i + 1).as_bytes()),
                "object {}",
                i + 1
            );
        }
        // Every stream's /Length is exact.
        let find = |from: usize, what: &[u8]| {
            pdf[from..]
                .windows(what.len())
                .position(|w| w == what)
                .map(|p| from + p)
        };
        let mut from = 0;
        while let Some(at) = find(from, b"<< /Length ") {
            let end = find(at + 11, b" ").unwrap();
            let len: usize = std::str::from_utf8(&pdf[at + 11..end])
                .unwrap()
                .parse()
                .unwrap();
            let data = find(at, b"stream\n").unwrap() + 7;
            assert_eq!(&pdf[data + len..data + len + 9], b"endstream");
            from = data;
        }
        entries.len()
    }

    #[test]
    fn a_valid_document_with_every_record_paginated() {
        let events: Vec<LoggedEvent> = (1..=200).map(record).collect();
        let pdf = to_pdf(&events, "Registro dei messaggi", Instant::from_unix(0));
        // PEC_PDF_SAMPLE=FILE keeps the document, to look at it.
        if let Some(path) = std::env::var_os("PEC_PDF_SAMPLE") {
            std::fs::write(path, &pdf).unwrap();
        }
        let objects = check_structure(&pdf);
        let text = String::from_utf8_lossy(&pdf);
        let pages = text.matches("/Type /Page ").count();
        assert!(pages > 5, "{pages} pages");
        assert_eq!(objects, 4 + 2 * pages);
        assert!(text.contains(&format!("(pagina {pages} di {pages})")));
        // Escapes: parentheses and backslash; Latin-1 letters as octal.
        assert!(
            text.contains("Fattura n. 200 \\(perch\\351 \\350 urgente\\) \\\\ ok)"),
            "escaped"
        );
        assert!(text.contains("opec.137@pec.example.it"));
    }

    #[test]
    fn no_records_is_one_page() {
        let pdf = to_pdf(&[], "Registro", Instant::from_unix(0));
        assert_eq!(check_structure(&pdf), 6);
    }

    #[test]
    fn long_lines_are_wrapped() {
        let w = wrap(&"x".repeat(250), 100);
        assert_eq!(w.len(), 3);
        assert!(w.iter().all(|l| l.chars().count() <= 100));
        assert_eq!(w.concat().chars().filter(|c| *c == 'x').count(), 250);
    }
}
