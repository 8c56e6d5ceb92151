// SPDX-License-Identifier: GPL-3.0-or-later
//! The provider index in LDIF form (spec §7.1 schema), as exported by the national index.
//!
//! [`parse_ldif`] reads LDIF content records (RFC 2849): an optional `version: 1`, entries
//! separated by blank lines, each starting with `dn:`; `attr: value`, `attr:: base64`,
//! folded lines (a continuation line starts with one space), comments (`#`, folded comments
//! too), attribute options (`providerCertificate;binary::`), attribute names in any case or
//! as their numeric OID. Change records and `attr:< URL` values are refused: the index is
//! data, and a URL value would make the parser read files.
//!
//! Every entry of objectclass `provider` becomes a [`ProviderRecord`]: the main entry
//! (`providerName=…,o=postacert`) and each secondary one (`providerUnit=…,providerName=…`).
//! Other entries (`o=postacert` itself) are ignored. A record must have exactly one
//! `providerName` and one `mailReceipt`, at least one `managedDomains`, at least one
//! `providerCertificate` (DER X.509) and at least one `providerCertificateHash`, and every
//! listed hash must be the SHA-1 of one of the entry's certificates: the hashes are what the
//! reception point looks certificates up by (spec §7.2).

use std::collections::HashSet;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use der::Decode;

use super::{sha1_hex_upper, IndexError, ProviderInfo, ProviderRecord};

/// Longest line [`write_ldif`] writes before folding (RFC 2849 suggests 76 columns).
const FOLD_AT: usize = 76;

/// Numeric OIDs accepted in place of attribute names (spec §7.1 table, RFC 4512 objectClass).
const OID_NAMES: &[(&str, &str)] = &[
    ("1.3.6.1.4.1.16572.2.2.1", "providercertificatehash"),
    ("1.3.6.1.4.1.16572.2.2.2", "providercertificate"),
    ("1.3.6.1.4.1.16572.2.2.3", "providername"),
    ("1.3.6.1.4.1.16572.2.2.4", "mailreceipt"),
    ("1.3.6.1.4.1.16572.2.2.5", "manageddomains"),
    ("1.3.6.1.4.1.16572.2.2.6", "ldiflocationurl"),
    ("1.3.6.1.4.1.16572.2.2.7", "providerunit"),
    ("2.5.4.0", "objectclass"),
];

/// One unfolded line, with the number of its first physical line.
struct Logical {
    line: usize,
    text: String,
}

/// One `attr: value` of an entry.
struct Attr {
    /// Base name, lower case, OIDs mapped to names (`providercertificate`).
    name: String,
    value: Vec<u8>,
    line: usize,
}

/// One LDIF content record.
struct Entry {
    dn: String,
    line: usize,
    attrs: Vec<Attr>,
}

impl Entry {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Attr> + 'a {
        self.attrs.iter().filter(move |a| a.name == name)
    }
}

/// Parses the LDIF text of the index into provider records, in file order.
pub fn parse_ldif(text: &str) -> Result<Vec<ProviderRecord>, IndexError> {
    let entries = parse_entries(text)?;
    let mut records = Vec::new();
    for entry in &entries {
        if let Some(r) = provider_record(entry)? {
            records.push(r);
        }
    }
    Ok(records)
}

/// Writes records as LDIF that [`parse_ldif`] reads back to the same records.
///
/// The first record with a given `providerName` is written as the main entry
/// `providerName=<name>,o=postacert`; later ones with the same name as secondary entries
/// `providerUnit=<unit>,providerName=<name>,o=postacert`. [`ProviderRecord`] does not keep
/// the unit's name, so `<unit>` is the record's first managed domain (or `unit<N>`). One
/// `providerCertificateHash` (upper-case hex SHA-1) is written per certificate. The
/// `o=postacert` entry itself is not written.
pub fn write_ldif(records: &[ProviderRecord]) -> String {
    let mut out = String::from("version: 1\n");
    let mut dns: HashSet<String> = HashSet::new();
    for (n, r) in records.iter().enumerate() {
        let name = &r.info.name;
        let main_dn = format!("providerName={},o=postacert", escape_dn_value(name));
        let (dn, unit) = if dns.contains(&main_dn.to_lowercase()) {
            let fallback = format!("unit{}", n + 1);
            let mut unit = r.info.managed_domains.first().cloned().unwrap_or_default();
            let dn_for = |u: &str| format!("providerUnit={},{main_dn}", escape_dn_value(u));
            if unit.is_empty() || dns.contains(&dn_for(&unit).to_lowercase()) {
                unit = fallback;
            }
            (dn_for(&unit), Some(unit))
        } else {
            (main_dn, None)
        };
        dns.insert(dn.to_lowercase());

        out.push('\n');
        write_attr(&mut out, "dn", dn.as_bytes());
        write_attr(&mut out, "objectclass", b"top");
        write_attr(&mut out, "objectclass", b"provider");
        write_attr(&mut out, "providerName", name.as_bytes());
        if let Some(unit) = &unit {
            write_attr(&mut out, "providerUnit", unit.as_bytes());
        }
        for c in &r.certificates {
            write_attr(
                &mut out,
                "providerCertificateHash",
                sha1_hex_upper(c).as_bytes(),
            );
        }
        for c in &r.certificates {
            write_attr(&mut out, "providerCertificate;binary", c);
        }
        write_attr(&mut out, "mailReceipt", r.info.mail_receipt.as_bytes());
        for d in &r.info.managed_domains {
            write_attr(&mut out, "managedDomains", d.as_bytes());
        }
    }
    out
}

fn syntax(line: usize, message: impl Into<String>) -> IndexError {
    IndexError::Syntax {
        line,
        message: message.into(),
    }
}

/// Splits the text into records of unfolded lines, dropping comments.
fn logical_records(text: &str) -> Result<Vec<Vec<Logical>>, IndexError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut current: Vec<Logical> = Vec::new();
    let mut in_comment = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.is_empty() {
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
            in_comment = false;
            continue;
        }
        if let Some(rest) = raw.strip_prefix(' ') {
            if in_comment {
                continue;
            }
            match current.last_mut() {
                Some(l) => l.text.push_str(rest),
                None => return Err(syntax(line, "continuation line with no line to continue")),
            }
            continue;
        }
        in_comment = raw.starts_with('#');
        if !in_comment {
            current.push(Logical {
                line,
                text: raw.to_string(),
            });
        }
    }
    if !current.is_empty() {
        records.push(current);
    }
    Ok(records)
}

/// Splits `attr: value` / `attr:: base64` into the lower-case base name (options dropped,
/// OIDs mapped) and the value's bytes.
fn parse_attr(l: &Logical) -> Result<Attr, IndexError> {
    let Some((desc, rest)) = l.text.split_once(':') else {
        return Err(syntax(
            l.line,
            format!(
                "expected \"attribute: value\", found \"{}\"",
                shorten(&l.text)
            ),
        ));
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.';
    if desc.is_empty() || !desc.chars().all(valid) || desc.starts_with(';') {
        return Err(syntax(
            l.line,
            format!("invalid attribute description \"{}\"", shorten(desc)),
        ));
    }
    let base = desc.split(';').next().unwrap_or(desc).to_ascii_lowercase();
    let name = OID_NAMES
        .iter()
        .find(|(oid, _)| *oid == base)
        .map_or(base, |(_, n)| (*n).to_string());
    let value = if let Some(b64) = rest.strip_prefix(':') {
        BASE64.decode(b64.trim_matches(' ')).map_err(|e| {
            syntax(
                l.line,
                format!("attribute \"{desc}\": invalid base64 value: {e}"),
            )
        })?
    } else if rest.starts_with('<') {
        return Err(syntax(
            l.line,
            format!("attribute \"{desc}\": URL values (\"{desc}:<\") are not supported"),
        ));
    } else {
        rest.trim_start_matches(' ').as_bytes().to_vec()
    };
    Ok(Attr {
        name,
        value,
        line: l.line,
    })
}

fn parse_entries(text: &str) -> Result<Vec<Entry>, IndexError> {
    let mut entries = Vec::new();
    let mut dns: HashSet<String> = HashSet::new();
    for (i, record) in logical_records(text)?.into_iter().enumerate() {
        let mut lines = record.iter().peekable();
        if i == 0 {
            if let Some(first) = lines.peek() {
                let a = parse_attr(first)?;
                if a.name == "version" {
                    if a.value.as_slice() != b"1" {
                        return Err(syntax(
                            first.line,
                            format!(
                                "unsupported LDIF version \"{}\"",
                                String::from_utf8_lossy(&a.value)
                            ),
                        ));
                    }
                    lines.next();
                }
            }
        }
        let Some(first) = lines.next() else { continue };
        let dn_attr = parse_attr(first)?;
        if dn_attr.name != "dn" {
            return Err(syntax(
                first.line,
                format!(
                    "entry does not start with \"dn:\": \"{}\"",
                    shorten(&first.text)
                ),
            ));
        }
        let dn = String::from_utf8(dn_attr.value)
            .map_err(|_| syntax(first.line, "dn is not valid UTF-8"))?
            .trim()
            .to_string();
        if dn.is_empty() {
            return Err(syntax(first.line, "empty dn"));
        }
        if !dns.insert(dn.to_lowercase()) {
            return Err(syntax(first.line, format!("duplicate entry \"{dn}\"")));
        }
        let mut attrs = Vec::new();
        for l in lines {
            let a = parse_attr(l)?;
            match a.name.as_str() {
                "changetype" | "control" => {
                    return Err(syntax(
                        l.line,
                        format!(
                            "entry \"{dn}\": change records are not supported, only content records"
                        ),
                    ))
                }
                "dn" => {
                    return Err(syntax(
                        l.line,
                        format!("entry \"{dn}\": second \"dn:\" (missing blank line?)"),
                    ))
                }
                "version" => {
                    return Err(syntax(
                        l.line,
                        "\"version:\" only allowed on the first line",
                    ))
                }
                _ => attrs.push(a),
            }
        }
        if attrs.is_empty() {
            return Err(syntax(
                first.line,
                format!("entry \"{dn}\" has no attributes"),
            ));
        }
        entries.push(Entry {
            dn,
            line: first.line,
            attrs,
        });
    }
    Ok(entries)
}

/// The attribute name of the first RDN of `dn`, lower case.
fn first_rdn_attr(dn: &str) -> String {
    dn.split('=')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn provider_record(e: &Entry) -> Result<Option<ProviderRecord>, IndexError> {
    let names: Vec<&Attr> = e.values("providername").collect();
    let who = names
        .first()
        .map(|a| String::from_utf8_lossy(&a.value).trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| e.dn.clone());
    let err = |line: usize, message: String| IndexError::Provider {
        line,
        provider: who.clone(),
        message,
    };

    let is_provider = e
        .values("objectclass")
        .any(|a| a.value.trim_ascii().eq_ignore_ascii_case(b"provider"));
    if !is_provider {
        let rdn = first_rdn_attr(&e.dn);
        if rdn == "providername" || rdn == "providerunit" {
            return Err(err(
                e.line,
                format!("entry \"{}\" lacks \"objectclass: provider\"", e.dn),
            ));
        }
        return Ok(None);
    }

    let name = single_text(e, "providerName", &err)?;
    let mail_receipt = single_text(e, "mailReceipt", &err)?;
    let receipt_line = e.values("mailreceipt").next().map_or(e.line, |a| a.line);
    if !looks_like_addr_spec(&mail_receipt) {
        return Err(err(
            receipt_line,
            format!("mailReceipt \"{mail_receipt}\" is not a bare address (local@domain)"),
        ));
    }

    let mut managed_domains: Vec<String> = Vec::new();
    for a in e.values("manageddomains") {
        let d = text(a, &err)?.trim().to_ascii_lowercase();
        if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(err(a.line, format!("invalid managedDomains \"{d}\"")));
        }
        if !managed_domains.contains(&d) {
            managed_domains.push(d);
        }
    }
    if managed_domains.is_empty() {
        return Err(err(e.line, "missing managedDomains".into()));
    }

    let mut certificates: Vec<Vec<u8>> = Vec::new();
    for a in e.values("providercertificate") {
        if let Err(x) = x509_cert::Certificate::from_der(&a.value) {
            return Err(err(
                a.line,
                format!("providerCertificate is not a DER X.509 certificate: {x}"),
            ));
        }
        if !certificates.contains(&a.value) {
            certificates.push(a.value.clone());
        }
    }
    if certificates.is_empty() {
        return Err(err(e.line, "missing providerCertificate".into()));
    }

    let hashes: Vec<String> = certificates.iter().map(|c| sha1_hex_upper(c)).collect();
    let mut listed = 0;
    for a in e.values("providercertificatehash") {
        listed += 1;
        let h = text(a, &err)?.trim().to_string();
        if !hashes.iter().any(|c| c.eq_ignore_ascii_case(&h)) {
            return Err(err(
                a.line,
                format!(
                    "providerCertificateHash \"{h}\" is not the SHA-1 of any of its {} certificate(s) ({})",
                    certificates.len(),
                    hashes.join(", ")
                ),
            ));
        }
    }
    if listed == 0 {
        return Err(err(e.line, "missing providerCertificateHash".into()));
    }

    Ok(Some(ProviderRecord {
        info: ProviderInfo {
            name,
            mail_receipt,
            managed_domains,
        },
        certificates,
    }))
}

/// The single value of a required single-valued text attribute, trimmed.
fn single_text(
    e: &Entry,
    display: &str,
    err: &impl Fn(usize, String) -> IndexError,
) -> Result<String, IndexError> {
    let key = display.to_ascii_lowercase();
    let values: Vec<&Attr> = e.values(&key).collect();
    match values.as_slice() {
        [] => Err(err(e.line, format!("missing {display}"))),
        [a] => {
            let v = text(a, err)?.trim().to_string();
            if v.is_empty() {
                Err(err(a.line, format!("empty {display}")))
            } else {
                Ok(v)
            }
        }
        [_, second, ..] => Err(err(
            second.line,
            format!("{display} is single-valued, found {} values", values.len()),
        )),
    }
}

fn text<'a>(
    a: &'a Attr,
    err: &impl Fn(usize, String) -> IndexError,
) -> Result<&'a str, IndexError> {
    std::str::from_utf8(&a.value).map_err(|_| err(a.line, format!("{} is not valid UTF-8", a.name)))
}

/// `local@domain`, both sides non-empty, no spaces or angle brackets (spec §7.1 mailReceipt).
fn looks_like_addr_spec(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !s.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
                && !domain.contains('@')
        }
        None => false,
    }
}

/// RFC 2849 SAFE-STRING, and no trailing space (which readers may strip).
fn is_safe_string(v: &[u8]) -> bool {
    match v.first() {
        None => true,
        Some(b' ' | b':' | b'<') => false,
        Some(_) => {
            v.iter()
                .all(|b| (1..=127).contains(b) && *b != b'\n' && *b != b'\r')
                && v.last() != Some(&b' ')
        }
    }
}

/// Appends `desc: value` (or `desc:: base64` when the value is not a safe string), folded.
pub(crate) fn write_attr(out: &mut String, desc: &str, value: &[u8]) {
    let line = match std::str::from_utf8(value) {
        Ok(s) if is_safe_string(value) => format!("{desc}: {s}"),
        _ => format!("{desc}:: {}", BASE64.encode(value)),
    };
    // `line` is ASCII (non-ASCII values are base64), so byte positions are char boundaries.
    let mut rest = line.as_str();
    let mut width = FOLD_AT;
    while rest.len() > width {
        let (head, tail) = rest.split_at(width);
        out.push_str(head);
        out.push_str("\n ");
        rest = tail;
        width = FOLD_AT - 1;
    }
    out.push_str(rest);
    out.push('\n');
}

/// Escapes an attribute value for a DN (RFC 4514 §2.4).
fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_at_76_columns() {
        let mut out = String::new();
        write_attr(&mut out, "description", "x".repeat(200).as_bytes());
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.iter().all(|l| l.len() <= FOLD_AT), "{out}");
        assert!(lines[1..].iter().all(|l| l.starts_with(' ')));
        let unfolded: String = lines
            .iter()
            .enumerate()
            .map(|(i, l)| if i == 0 { *l } else { &l[1..] })
            .collect();
        assert_eq!(unfolded, format!("description: {}", "x".repeat(200)));
    }

    #[test]
    fn unsafe_values_are_base64() {
        for v in [" lead", ":colon", "<lt", "trail ", "caffè", "a\nb"] {
            let mut out = String::new();
            write_attr(&mut out, "description", v.as_bytes());
            assert!(out.starts_with("description:: "), "{v:?}: {out}");
        }
        let mut out = String::new();
        write_attr(&mut out, "description", b"plain: text");
        assert_eq!(out, "description: plain: text\n");
    }

    #[test]
    fn dn_escaping() {
        assert_eq!(escape_dn_value("A, B + C"), "A\\, B \\+ C");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
        assert_eq!(escape_dn_value("Example PEC S.p.A."), "Example PEC S.p.A.");
    }
}
