// SPDX-License-Identifier: GPL-3.0-or-later
//! `daticert.xml`, the certification data (spec §4): model, writer and reader.
//!
//! The writer ([`Daticert::to_xml`]) reproduces byte for byte the layout of Aruba and Namirial
//! (spec §4.1): UTF-8 declaration, no DOCTYPE, 4-space indentation, LF line ends, a final
//! newline, `<ricevuta tipo="…" />` with a space before `/>`, and both `postacert` attributes.
//!
//! The reader ([`Daticert::parse`]) is a strict structural check against the DTD of spec §4.2,
//! built on `quick_xml::Reader` events. Security (spec §4.1, §10 item 2): nothing is ever
//! fetched, a DOCTYPE is accepted only if it declares no entity (`<!ENTITY`, the XXE and
//! "billion laughs" vectors), and the only references expanded are the five predefined XML
//! entities and numeric character references. Input is capped at [`MAX_DATICERT_SIZE`].
//! [`Daticert::check_for_tipo`] then enforces the per-type table of spec §4.3.

use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::kind::{Errore, ReceiptType, RecipientType, Tipo};
use super::time::Instant;

/// One `<destinatari>` element.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Destinatario {
    pub address: String,
    pub tipo: RecipientType,
}

/// `<data zona="…"><giorno/><ora/></data>`, kept as text so that foreign documents
/// round-trip exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataCert {
    /// `+0100` / `+0200`.
    pub zona: String,
    /// `dd/mm/yyyy`.
    pub giorno: String,
    /// `hh:mm:ss`.
    pub ora: String,
}

impl DataCert {
    pub fn from_instant(at: Instant) -> Self {
        let l = at.legal();
        DataCert {
            zona: l.zona(),
            giorno: l.giorno(),
            ora: l.ora(),
        }
    }
}

/// The whole document (`<postacert>`), spec §4.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daticert {
    pub tipo: Tipo,
    pub errore: Errore,
    // <intestazione>
    pub mittente: String,
    pub destinatari: Vec<Destinatario>,
    pub risposte: String,
    /// Decoded subject of the original; `None` when the element is absent.
    pub oggetto: Option<String>,
    // <dati>
    pub gestore_emittente: String,
    pub data: DataCert,
    /// PEC msgid of the transport envelope, without angle brackets.
    pub identificativo: String,
    /// Client msgid of the original, with its angle brackets as written (`<…>`).
    pub msgid: Option<String>,
    pub ricevuta: Option<ReceiptType>,
    pub consegna: Option<String>,
    pub ricezione: Vec<String>,
    pub errore_esteso: Option<String>,
}

/// Largest `daticert.xml` the reader accepts (1 MiB); real ones are about 1 KiB.
pub const MAX_DATICERT_SIZE: usize = 1024 * 1024;

/// Deepest element nesting the DTD allows: `postacert > dati > data > giorno`.
const MAX_DEPTH: usize = 4;

/// Why a `daticert.xml` was refused (spec §4). Every message starts with `daticert:` and
/// names the element concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaticertError {
    #[error("daticert: document too large: {size} bytes, the limit is {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("daticert: unsupported encoding: {reason}")]
    Encoding { reason: String },
    #[error("daticert: malformed xml at byte {position}: {reason}")]
    Syntax { position: u64, reason: String },
    #[error("daticert: truncated document: {reason}")]
    Truncated { reason: String },
    #[error("daticert: doctype declares entities (<!ENTITY>): refused (xxe / entity expansion)")]
    EntityDeclaration,
    #[error("daticert: doctype: {reason}")]
    Doctype { reason: String },
    #[error("daticert: undefined entity reference &{name}; in <{element}>")]
    UndefinedEntity { name: String, element: String },
    #[error("daticert: bad character reference &{reference}; in <{element}>: {reason}")]
    BadCharRef {
        reference: String,
        element: String,
        reason: String,
    },
    #[error("daticert: root element <{0}>: expected <postacert>")]
    WrongRoot(String),
    #[error("daticert: no root element")]
    NoRoot,
    #[error("daticert: trailing content after </postacert>: {0}")]
    Trailing(String),
    #[error("daticert: {0} before the root element")]
    BeforeRoot(String),
    #[error("daticert: element <{element}> inside <{parent}>: unknown element")]
    UnknownElement { element: String, parent: String },
    #[error(
        "daticert: element <{element}> inside <{parent}>: not allowed, <{parent}> holds text only"
    )]
    ElementInText { element: String, parent: String },
    #[error("daticert: element <{element}> inside <{parent}>: nesting deeper than the dtd allows")]
    TooDeep { element: String, parent: String },
    #[error("daticert: attribute {attribute:?} on <{element}>: unknown attribute")]
    UnknownAttribute { element: String, attribute: String },
    #[error("daticert: attribute {attribute:?} on <{element}>: {reason}")]
    BadAttribute {
        element: String,
        attribute: String,
        reason: String,
    },
    #[error("daticert: element <{element}> after <{after}>: wrong order")]
    WrongOrder { element: String, after: String },
    #[error("daticert: element <{element}> inside <{parent}>: duplicated")]
    Duplicated { element: String, parent: String },
    #[error("daticert: <{parent}> lacks required element <{element}>: missing")]
    MissingElement { element: String, parent: String },
    #[error("daticert: <{element}> lacks required attribute {attribute:?}: missing")]
    MissingAttribute { element: String, attribute: String },
    #[error("daticert: attribute {attribute:?} on <{element}>: unknown value {value:?}")]
    UnknownValue {
        element: String,
        attribute: String,
        value: String,
    },
    #[error("daticert: text {text:?} inside <{element}>: only elements are allowed here")]
    UnexpectedText { element: String, text: String },
    #[error("daticert: <{element}> must be empty")]
    NotEmpty { element: String },
    /// The document is well formed but does not fit its `tipo` (spec §4.3).
    #[error("daticert: tipo \"{tipo}\": {reason}")]
    WrongForTipo { tipo: Tipo, reason: String },
}

// ---------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------

/// Whether `c` may appear in an XML 1.0 document (production `Char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text content and attribute values: `& < > "` become entity references, a CR
/// becomes `&#13;` (so that line-end normalisation keeps it), and characters XML 1.0
/// cannot carry at all become U+FFFD. With `attribute`, tab and LF are escaped too
/// (attribute-value normalisation would turn them into spaces).
fn escape_into(out: &mut String, s: &str, attribute: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("    ");
    }
}

/// `<name>text</name>` on its own line.
fn write_leaf(out: &mut String, level: usize, name: &str, text: &str) {
    indent(out, level);
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, text, false);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

impl Daticert {
    /// Writes the document exactly in the Aruba / Namirial layout (spec §4.1, §4.4), element
    /// order fixed by the DTD (spec §4.2). Text that XML cannot carry (control characters)
    /// is replaced by U+FFFD.
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(1024);
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<postacert tipo=\"");
        x.push_str(self.tipo.as_str());
        x.push_str("\" errore=\"");
        x.push_str(self.errore.as_str());
        x.push_str("\">\n");

        x.push_str("    <intestazione>\n");
        write_leaf(&mut x, 2, "mittente", &self.mittente);
        for d in &self.destinatari {
            x.push_str("        <destinatari tipo=\"");
            x.push_str(d.tipo.as_str());
            x.push_str("\">");
            escape_into(&mut x, &d.address, false);
            x.push_str("</destinatari>\n");
        }
        write_leaf(&mut x, 2, "risposte", &self.risposte);
        if let Some(o) = &self.oggetto {
            write_leaf(&mut x, 2, "oggetto", o);
        }
        x.push_str("    </intestazione>\n");

        x.push_str("    <dati>\n");
        write_leaf(&mut x, 2, "gestore-emittente", &self.gestore_emittente);
        x.push_str("        <data zona=\"");
        escape_into(&mut x, &self.data.zona, true);
        x.push_str("\">\n");
        write_leaf(&mut x, 3, "giorno", &self.data.giorno);
        write_leaf(&mut x, 3, "ora", &self.data.ora);
        x.push_str("        </data>\n");
        write_leaf(&mut x, 2, "identificativo", &self.identificativo);
        if let Some(m) = &self.msgid {
            write_leaf(&mut x, 2, "msgid", m);
        }
        if let Some(r) = self.ricevuta {
            x.push_str("        <ricevuta tipo=\"");
            x.push_str(r.as_str());
            x.push_str("\" />\n");
        }
        if let Some(c) = &self.consegna {
            write_leaf(&mut x, 2, "consegna", c);
        }
        for r in &self.ricezione {
            write_leaf(&mut x, 2, "ricezione", r);
        }
        if let Some(e) = &self.errore_esteso {
            write_leaf(&mut x, 2, "errore-esteso", e);
        }
        x.push_str("    </dati>\n");
        x.push_str("</postacert>\n");
        x
    }
}

// ---------------------------------------------------------------------------------------
// Reader, step 1: a tiny tree, with the security and well-formedness checks
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Element(Element),
    Text(String),
}

fn is_xml_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn trim_xml(s: &str) -> &str {
    s.trim_matches(is_xml_ws)
}

/// A short, quotable excerpt for error messages.
fn excerpt(s: &str) -> String {
    let t = trim_xml(s);
    let mut e: String = t.chars().take(40).collect();
    if t.chars().count() > 40 {
        e.push('…');
    }
    e
}

fn tag_name(raw: &str) -> String {
    raw.to_owned()
}

/// Checks the declared encoding. Decision (spec §4.1 says UTF-8 [RT][OBS]): UTF-8 and
/// US-ASCII are accepted; any other declared encoding (ISO-8859-1 included) is accepted only
/// when every byte is ASCII, where all of them agree with UTF-8. A Latin-1 document with
/// accented letters is refused with a clear reason rather than transcoded: no provider has
/// been seen writing one, and guessing would change certified data.
fn check_declared_encoding(label: &str, all_ascii: bool) -> Result<(), DaticertError> {
    let l = label.trim().to_ascii_lowercase();
    if matches!(l.as_str(), "utf-8" | "utf8") {
        return Ok(());
    }
    if all_ascii {
        return Ok(());
    }
    Err(DaticertError::Encoding {
        reason: format!(
            "declared encoding {label:?} with non-ascii bytes: only utf-8 is supported"
        ),
    })
}

/// A DOCTYPE is tolerated (Telecom writes an external one, spec §4.1) but never loaded.
/// Any entity declaration is refused outright: that covers external entities (XXE) and
/// entity expansion bombs, since without declarations no entity can be defined.
fn check_doctype(content: &str) -> Result<(), DaticertError> {
    if content.to_ascii_uppercase().contains("<!ENTITY") {
        return Err(DaticertError::EntityDeclaration);
    }
    let name = content
        .trim_start_matches(is_xml_ws)
        .split(|c: char| is_xml_ws(c) || c == '[')
        .next()
        .unwrap_or("");
    if name != "postacert" {
        return Err(DaticertError::Doctype {
            reason: format!("document type {name:?}: expected \"postacert\""),
        });
    }
    Ok(())
}

fn syntax_error(reader: &Reader<&[u8]>, e: quick_xml::Error) -> DaticertError {
    use quick_xml::errors::SyntaxError;
    match e {
        quick_xml::Error::Syntax(
            s @ (SyntaxError::UnclosedPI
            | SyntaxError::UnclosedXmlDecl
            | SyntaxError::UnclosedComment
            | SyntaxError::UnclosedDoctype
            | SyntaxError::UnclosedCData
            | SyntaxError::UnclosedTag
            | SyntaxError::UnclosedSingleQuotedAttributeValue
            | SyntaxError::UnclosedDoubleQuotedAttributeValue),
        ) => DaticertError::Truncated {
            reason: s.to_string(),
        },
        e => DaticertError::Syntax {
            position: reader.error_position(),
            reason: e.to_string(),
        },
    }
}

/// `position`: where the reader stands, for error messages.
fn element_from(start: &BytesStart<'_>, position: u64) -> Result<Element, DaticertError> {
    let name = tag_name(start.name().as_ref());
    let mut attrs = Vec::new();
    for a in start.attributes() {
        let a = a.map_err(|e| DaticertError::Syntax {
            position,
            reason: format!("attribute on <{name}>: {e}"),
        })?;
        let key = tag_name(a.key.as_ref());
        // Only the predefined entities; character references are resolved by quick-xml.
        let value = a
            .normalized_value_with(XmlVersion::Implicit1_0, 1, resolve_xml_entity)
            .map_err(|e| DaticertError::BadAttribute {
                element: name.clone(),
                attribute: key.clone(),
                reason: match e {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, n),
                    ) => format!("undefined entity reference &{n};"),
                    e => e.to_string(),
                },
            })?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
    })
}

/// Where the reader is relative to the root element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prolog,
    Root,
    Epilog,
}

struct TreeBuilder {
    stack: Vec<Element>,
    root: Option<Element>,
    phase: Phase,
}

impl TreeBuilder {
    fn current_name(&self) -> String {
        self.stack
            .last()
            .map(|e| e.name.clone())
            .unwrap_or_else(|| "postacert".to_owned())
    }

    fn text(&mut self, s: &str) -> Result<(), DaticertError> {
        match self.stack.last_mut() {
            Some(top) => {
                match top.children.last_mut() {
                    Some(Node::Text(t)) => t.push_str(s),
                    _ => top.children.push(Node::Text(s.to_owned())),
                }
                Ok(())
            }
            None if s.chars().all(is_xml_ws) => Ok(()),
            None if self.phase == Phase::Epilog => {
                Err(DaticertError::Trailing(format!("text {:?}", excerpt(s))))
            }
            None => Err(DaticertError::BeforeRoot(format!("text {:?}", excerpt(s)))),
        }
    }

    fn open(&mut self, el: Element, empty: bool) -> Result<(), DaticertError> {
        if self.phase == Phase::Epilog {
            return Err(DaticertError::Trailing(format!("element <{}>", el.name)));
        }
        self.phase = Phase::Root;
        if self.stack.len() >= MAX_DEPTH {
            return Err(DaticertError::TooDeep {
                element: el.name,
                parent: self.current_name(),
            });
        }
        if empty {
            self.close(el);
        } else {
            self.stack.push(el);
        }
        Ok(())
    }

    fn close(&mut self, el: Element) {
        match self.stack.last_mut() {
            Some(parent) => parent.children.push(Node::Element(el)),
            None => {
                self.root = Some(el);
                self.phase = Phase::Epilog;
            }
        }
    }
}

fn build_tree(text: &str, all_ascii: bool) -> Result<Element, DaticertError> {
    let mut reader = Reader::from_str(text);
    // The defaults already check end-tag names; comments are checked too (no `--`).
    reader.config_mut().check_comments = true;
    let mut b = TreeBuilder {
        stack: Vec::new(),
        root: None,
        phase: Phase::Prolog,
    };
    let mut first = true;
    let mut seen_doctype = false;
    loop {
        let ev = reader.read_event().map_err(|e| syntax_error(&reader, e))?;
        let is_first = std::mem::replace(&mut first, false);
        match ev {
            Event::Decl(d) => {
                if !is_first {
                    return Err(DaticertError::Syntax {
                        position: reader.buffer_position(),
                        reason: "xml declaration not at the start of the document".to_owned(),
                    });
                }
                let version = d.version().map_err(|e| syntax_error(&reader, e))?;
                if version.as_ref() != "1.0" && version.as_ref() != "1.1" {
                    return Err(DaticertError::Syntax {
                        position: 0,
                        reason: format!("xml version {:?} not supported", version.as_ref()),
                    });
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|e| DaticertError::Syntax {
                        position: 0,
                        reason: format!("xml declaration: {e}"),
                    })?;
                    check_declared_encoding(&enc, all_ascii)?;
                }
            }
            Event::DocType(t) => {
                if b.phase != Phase::Prolog || seen_doctype {
                    return Err(DaticertError::Doctype {
                        reason: "misplaced or repeated <!DOCTYPE>".to_owned(),
                    });
                }
                seen_doctype = true;
                check_doctype(&t)?;
            }
            Event::PI(_) | Event::Comment(_) => {}
            Event::Start(s) => b.open(element_from(&s, reader.buffer_position())?, false)?,
            Event::Empty(s) => b.open(element_from(&s, reader.buffer_position())?, true)?,
            Event::End(_) => {
                // quick-xml has already checked that the name matches the open element.
                if let Some(el) = b.stack.pop() {
                    b.close(el);
                }
            }
            Event::Text(t) => b.text(&t.xml10_content())?,
            Event::CData(c) => b.text(&c.xml10_content())?,
            Event::GeneralRef(r) => {
                let element = b.current_name();
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) if is_xml_char(c) => c.to_string(),
                        Ok(_) => {
                            return Err(DaticertError::BadCharRef {
                                reference: r.to_string(),
                                element,
                                reason: "not an xml character".to_owned(),
                            })
                        }
                        Err(e) => {
                            return Err(DaticertError::BadCharRef {
                                reference: r.to_string(),
                                element,
                                reason: e.to_string(),
                            })
                        }
                    }
                } else {
                    match resolve_xml_entity(&r) {
                        Some(v) => v.to_owned(),
                        None => {
                            return Err(DaticertError::UndefinedEntity {
                                name: r.to_string(),
                                element,
                            })
                        }
                    }
                };
                b.text(&resolved)?;
            }
            Event::Eof => break,
        }
    }
    if let Some(open) = b.stack.last() {
        return Err(DaticertError::Truncated {
            reason: format!("end of input inside <{}>", open.name),
        });
    }
    b.root.ok_or(DaticertError::NoRoot)
}

// ---------------------------------------------------------------------------------------
// Reader, step 2: the content models of the DTD (spec §4.2)
// ---------------------------------------------------------------------------------------

/// One position of a sequence content model.
struct Slot {
    name: &'static str,
    required: bool,
    repeated: bool,
}

const fn slot(name: &'static str, required: bool, repeated: bool) -> Slot {
    Slot {
        name,
        required,
        repeated,
    }
}

const POSTACERT: &[Slot] = &[slot("intestazione", true, false), slot("dati", true, false)];
const INTESTAZIONE: &[Slot] = &[
    slot("mittente", true, false),
    slot("destinatari", true, true),
    slot("risposte", true, false),
    slot("oggetto", false, false),
];
const DATI: &[Slot] = &[
    slot("gestore-emittente", true, false),
    slot("data", true, false),
    slot("identificativo", true, false),
    slot("msgid", false, false),
    slot("ricevuta", false, false),
    slot("consegna", false, false),
    slot("ricezione", false, true),
    slot("errore-esteso", false, false),
];
const DATA: &[Slot] = &[slot("giorno", true, false), slot("ora", true, false)];

/// Distributes the children of `parent` over `slots`, enforcing order, multiplicity and
/// presence. Returns one list per slot.
fn sequence<'a>(
    parent: &'a Element,
    slots: &[Slot],
) -> Result<Vec<Vec<&'a Element>>, DaticertError> {
    let mut out: Vec<Vec<&Element>> = slots.iter().map(|_| Vec::new()).collect();
    let mut current: Option<usize> = None;
    let mut last = "";
    for (pos, child) in parent.children.iter().enumerate() {
        let el = match child {
            Node::Text(t) if t.chars().all(is_xml_ws) => continue,
            Node::Text(t) => {
                return Err(DaticertError::UnexpectedText {
                    element: parent.name.clone(),
                    text: excerpt(t),
                })
            }
            Node::Element(el) => el,
        };
        let idx = slots
            .iter()
            .position(|s| s.name == el.name)
            .ok_or_else(|| DaticertError::UnknownElement {
                element: el.name.clone(),
                parent: parent.name.clone(),
            })?;
        let from = match current {
            Some(c) if idx < c => {
                return Err(DaticertError::WrongOrder {
                    element: el.name.clone(),
                    after: last.to_owned(),
                })
            }
            Some(c) if idx == c => {
                if !slots[idx].repeated {
                    return Err(DaticertError::Duplicated {
                        element: el.name.clone(),
                        parent: parent.name.clone(),
                    });
                }
                idx
            }
            Some(c) => c + 1,
            None => 0,
        };
        if let Some(missing) = slots
            .get(from..idx)
            .and_then(|s| s.iter().find(|s| s.required))
        {
            // A required element skipped here but present further on is misplaced, not
            // missing: say so.
            let later = parent
                .children
                .iter()
                .skip(pos + 1)
                .any(|c| matches!(c, Node::Element(e) if e.name == missing.name));
            return Err(if later {
                DaticertError::WrongOrder {
                    element: missing.name.to_owned(),
                    after: el.name.clone(),
                }
            } else {
                DaticertError::MissingElement {
                    element: missing.name.to_owned(),
                    parent: parent.name.clone(),
                }
            });
        }
        if let Some(list) = out.get_mut(idx) {
            list.push(el);
        }
        current = Some(idx);
        last = &el.name;
    }
    let from = current.map_or(0, |c| c + 1);
    if let Some(missing) = slots
        .get(from..)
        .and_then(|s| s.iter().find(|s| s.required))
    {
        return Err(DaticertError::MissingElement {
            element: missing.name.to_owned(),
            parent: parent.name.clone(),
        });
    }
    Ok(out)
}

/// Refuses any attribute of `el` not in `allowed`.
fn only_attributes(el: &Element, allowed: &[&str]) -> Result<(), DaticertError> {
    match el
        .attrs
        .iter()
        .find(|(k, _)| !allowed.contains(&k.as_str()))
    {
        Some((k, _)) => Err(DaticertError::UnknownAttribute {
            element: el.name.clone(),
            attribute: k.clone(),
        }),
        None => Ok(()),
    }
}

fn attribute<'a>(el: &'a Element, name: &str) -> Option<&'a str> {
    el.attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required_attribute<'a>(el: &'a Element, name: &str) -> Result<&'a str, DaticertError> {
    attribute(el, name).ok_or_else(|| DaticertError::MissingAttribute {
        element: el.name.clone(),
        attribute: name.to_owned(),
    })
}

fn enum_value<T>(
    el: &Element,
    attr: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, DaticertError> {
    parse(value).ok_or_else(|| DaticertError::UnknownValue {
        element: el.name.clone(),
        attribute: attr.to_owned(),
        value: value.to_owned(),
    })
}

/// Text content of a `#PCDATA` element, surrounding white space trimmed.
fn text_of(el: &Element) -> Result<String, DaticertError> {
    only_attributes(el, &[])?;
    pcdata(el)
}

fn pcdata(el: &Element) -> Result<String, DaticertError> {
    let mut s = String::new();
    for c in &el.children {
        match c {
            Node::Text(t) => s.push_str(t),
            Node::Element(child) => {
                return Err(DaticertError::ElementInText {
                    element: child.name.clone(),
                    parent: el.name.clone(),
                })
            }
        }
    }
    Ok(trim_xml(&s).to_owned())
}

/// `ricevuta@tipo`: exact match (XML attribute values are case-sensitive, unlike the
/// `X-TipoRicevuta` header that [`ReceiptType::parse`] reads).
fn receipt_type_exact(value: &str) -> Option<ReceiptType> {
    ReceiptType::ALL.into_iter().find(|t| t.as_str() == value)
}

fn one<'a>(list: &[&'a Element]) -> Option<&'a Element> {
    list.first().copied()
}

/// `slots` guarantees presence for required positions; this turns a broken guarantee
/// into an error instead of a panic.
fn required<'a>(
    list: &[&'a Element],
    name: &str,
    parent: &str,
) -> Result<&'a Element, DaticertError> {
    one(list).ok_or_else(|| DaticertError::MissingElement {
        element: name.to_owned(),
        parent: parent.to_owned(),
    })
}

fn slot_list<'a, 'b>(lists: &'b [Vec<&'a Element>], i: usize) -> &'b [&'a Element] {
    lists.get(i).map(Vec::as_slice).unwrap_or(&[])
}

impl Daticert {
    /// Strict reader for `daticert.xml` (spec §4.1, §4.2, §10 item 2). See the module
    /// documentation for what is accepted. Structure only: call
    /// [`Daticert::check_for_tipo`] for the per-type rules.
    pub fn parse(xml: &[u8]) -> Result<Daticert, DaticertError> {
        if xml.len() > MAX_DATICERT_SIZE {
            return Err(DaticertError::TooLarge {
                size: xml.len(),
                max: MAX_DATICERT_SIZE,
            });
        }
        if xml.starts_with(&[0xFE, 0xFF]) || xml.starts_with(&[0xFF, 0xFE]) {
            return Err(DaticertError::Encoding {
                reason: "utf-16 byte order mark: only utf-8 is supported".to_owned(),
            });
        }
        let body = xml.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(xml);
        let text = std::str::from_utf8(body).map_err(|e| DaticertError::Encoding {
            reason: format!(
                "not valid utf-8 (bad byte at offset {}): only utf-8 is supported",
                e.valid_up_to()
            ),
        })?;
        let root = build_tree(text, text.is_ascii())?;
        Self::from_tree(&root)
    }

    fn from_tree(root: &Element) -> Result<Daticert, DaticertError> {
        if root.name != "postacert" {
            return Err(DaticertError::WrongRoot(root.name.clone()));
        }
        only_attributes(root, &["tipo", "errore"])?;
        let tipo = enum_value(root, "tipo", required_attribute(root, "tipo")?, Tipo::parse)?;
        // DTD default: errore "nessuno".
        let errore = match attribute(root, "errore") {
            Some(v) => enum_value(root, "errore", v, Errore::parse)?,
            None => Errore::Nessuno,
        };
        let top = sequence(root, POSTACERT)?;
        let intestazione = required(slot_list(&top, 0), "intestazione", "postacert")?;
        let dati = required(slot_list(&top, 1), "dati", "postacert")?;
        only_attributes(intestazione, &[])?;
        only_attributes(dati, &[])?;

        let i = sequence(intestazione, INTESTAZIONE)?;
        let mittente = text_of(required(slot_list(&i, 0), "mittente", "intestazione")?)?;
        let mut destinatari = Vec::new();
        for d in slot_list(&i, 1) {
            only_attributes(d, &["tipo"])?;
            // DTD default: tipo "certificato".
            let tipo = match attribute(d, "tipo") {
                Some(v) => enum_value(d, "tipo", v, RecipientType::parse)?,
                None => RecipientType::Certificato,
            };
            destinatari.push(Destinatario {
                address: pcdata(d)?,
                tipo,
            });
        }
        let risposte = text_of(required(slot_list(&i, 2), "risposte", "intestazione")?)?;
        let oggetto = one(slot_list(&i, 3)).map(text_of).transpose()?;

        let d = sequence(dati, DATI)?;
        let gestore_emittente = text_of(required(slot_list(&d, 0), "gestore-emittente", "dati")?)?;
        let data_el = required(slot_list(&d, 1), "data", "dati")?;
        only_attributes(data_el, &["zona"])?;
        let zona = trim_xml(required_attribute(data_el, "zona")?).to_owned();
        let dd = sequence(data_el, DATA)?;
        let giorno = text_of(required(slot_list(&dd, 0), "giorno", "data")?)?;
        let ora = text_of(required(slot_list(&dd, 1), "ora", "data")?)?;
        let identificativo = text_of(required(slot_list(&d, 2), "identificativo", "dati")?)?;
        let msgid = one(slot_list(&d, 3)).map(text_of).transpose()?;
        let ricevuta = match one(slot_list(&d, 4)) {
            Some(r) => {
                only_attributes(r, &["tipo"])?;
                // EMPTY in the DTD; white space alone is tolerated.
                if !pcdata(r)?.is_empty() {
                    return Err(DaticertError::NotEmpty {
                        element: r.name.clone(),
                    });
                }
                // #REQUIRED per the DTD of RFC 6109 (spec §4.2; whether the Italian DTD
                // has a default is [UNVERIFIED]): a bare <ricevuta/> is refused.
                let v = required_attribute(r, "tipo")?;
                Some(enum_value(r, "tipo", v, receipt_type_exact)?)
            }
            None => None,
        };
        let consegna = one(slot_list(&d, 5)).map(text_of).transpose()?;
        let ricezione = slot_list(&d, 6)
            .iter()
            .map(|e| text_of(e))
            .collect::<Result<Vec<_>, _>>()?;
        let errore_esteso = one(slot_list(&d, 7)).map(text_of).transpose()?;

        Ok(Daticert {
            tipo,
            errore,
            mittente,
            destinatari,
            risposte,
            oggetto,
            gestore_emittente,
            data: DataCert { zona, giorno, ora },
            identificativo,
            msgid,
            ricevuta,
            consegna,
            ricezione,
            errore_esteso,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Per-type rules (spec §4.3)
// ---------------------------------------------------------------------------------------

/// What a `dati` child may be for one `tipo`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    Required,
    Optional,
    Forbidden,
}

impl Daticert {
    /// Enforces the per-type table of spec §4.3 (which `dati` children and which `errore`
    /// values each `tipo` carries) plus non-empty mandatory values. Lenient exactly where
    /// real providers deviate from the rules; each leniency is commented with its source.
    pub fn check_for_tipo(&self) -> Result<(), DaticertError> {
        use Rule::*;
        let fail = |reason: String| DaticertError::WrongForTipo {
            tipo: self.tipo,
            reason,
        };
        for (name, value) in [
            ("mittente", &self.mittente),
            ("gestore-emittente", &self.gestore_emittente),
            ("identificativo", &self.identificativo),
            ("giorno", &self.data.giorno),
            ("ora", &self.data.ora),
        ] {
            if value.trim().is_empty() {
                return Err(fail(format!("<{name}> is empty")));
            }
        }
        if self.data.zona.trim().is_empty() {
            return Err(fail("<data> attribute \"zona\" is empty".to_owned()));
        }
        if self.destinatari.is_empty() {
            return Err(fail("no <destinatari>".to_owned()));
        }
        if let Some(d) = self
            .destinatari
            .iter()
            .find(|d| d.address.trim().is_empty())
        {
            return Err(fail(format!(
                "empty <destinatari tipo=\"{}\">",
                d.tipo.as_str()
            )));
        }

        // (ricevuta, consegna, ricezione, errore-esteso, allowed errore values)
        let (ricevuta, consegna, ricezione, esteso, errori): (Rule, Rule, Rule, Rule, &[Errore]) =
            match self.tipo {
                Tipo::PostaCertificata => (
                    Required,
                    Forbidden,
                    Forbidden,
                    Forbidden,
                    &[Errore::Nessuno],
                ),
                // Leniency [OBS]: Aruba writes no <ricevuta> in acceptance receipts; the table
                // marks it absent on that evidence only, so a provider echoing it is accepted.
                Tipo::Accettazione => (
                    Optional,
                    Forbidden,
                    Forbidden,
                    Forbidden,
                    &[Errore::Nessuno],
                ),
                Tipo::NonAccettazione => (
                    Forbidden,
                    Forbidden,
                    Forbidden,
                    Required,
                    &[Errore::Altro, Errore::Virus],
                ),
                Tipo::PresaInCarico => (
                    Forbidden,
                    Forbidden,
                    Required,
                    Forbidden,
                    &[Errore::Nessuno],
                ),
                Tipo::AvvenutaConsegna => {
                    (Required, Required, Forbidden, Forbidden, &[Errore::Nessuno])
                }
                // Leniency [OBS]: the Aruba-structured samples carry no <ricevuta>, others may
                // echo it, so it is optional. errore: Aruba reports a non-existent mailbox with
                // "altro" and others with "no-dest" (spec §3.7, §11): every error value except
                // "nessuno" is accepted.
                Tipo::ErroreConsegna => (
                    Optional,
                    Required,
                    Forbidden,
                    Required,
                    &[
                        Errore::NoDest,
                        Errore::NoDominio,
                        Errore::Virus,
                        Errore::Altro,
                    ],
                ),
                // Leniency [UNVERIFIED]: spec §4.3 fixes no errore value for timeout notices
                // (we emit "altro"), and only the 24 h notice is seen with a 5.4.1 code in
                // <errore-esteso>; so any errore and an optional <errore-esteso>.
                Tipo::PreavvisoErroreConsegna => {
                    (Forbidden, Required, Forbidden, Optional, &Errore::ALL)
                }
                // Leniency [OBS]: the recipient is in <consegna> from RT version 2.1 on and in
                // <ricezione> before (spec §3.8); either is accepted, checked below.
                Tipo::RilevazioneVirus => {
                    (Forbidden, Optional, Optional, Required, &[Errore::Virus])
                }
            };

        let check = |rule: Rule, present: bool, name: &str| -> Result<(), DaticertError> {
            match (rule, present) {
                (Required, false) => Err(fail(format!("<{name}> is required"))),
                (Forbidden, true) => Err(fail(format!("<{name}> is not allowed"))),
                _ => Ok(()),
            }
        };
        check(ricevuta, self.ricevuta.is_some(), "ricevuta")?;
        check(consegna, self.consegna.is_some(), "consegna")?;
        check(ricezione, !self.ricezione.is_empty(), "ricezione")?;
        check(esteso, self.errore_esteso.is_some(), "errore-esteso")?;
        if self.tipo == Tipo::RilevazioneVirus
            && self.consegna.is_none()
            && self.ricezione.is_empty()
        {
            return Err(fail(
                "<consegna> (or <ricezione> before RT 2.1) is required".to_owned(),
            ));
        }
        if let Some(c) = &self.consegna {
            if c.trim().is_empty() {
                return Err(fail("<consegna> is empty".to_owned()));
            }
        }
        if self.ricezione.iter().any(|r| r.trim().is_empty()) {
            return Err(fail("empty <ricezione>".to_owned()));
        }
        if !errori.contains(&self.errore) {
            let allowed: Vec<&str> = errori.iter().map(|e| e.as_str()).collect();
            return Err(fail(format!(
                "errore \"{}\" not allowed (expected {})",
                self.errore,
                allowed.join(" | ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(tipo: Tipo) -> Daticert {
        Daticert {
            tipo,
            errore: Errore::Nessuno,
            mittente: "mario.rossi@pec.example.it".to_owned(),
            destinatari: vec![
                Destinatario {
                    address: "a@pec.rp.example".to_owned(),
                    tipo: RecipientType::Certificato,
                },
                Destinatario {
                    address: "b@example.com".to_owned(),
                    tipo: RecipientType::Esterno,
                },
            ],
            risposte: "mario.rossi@pec.example.it".to_owned(),
            oggetto: Some("Fattura n. 12 <bozza> & \"altro\" — perché".to_owned()),
            gestore_emittente: "Example PEC S.p.A.".to_owned(),
            data: DataCert {
                zona: "+0200".to_owned(),
                giorno: "03/06/2025".to_owned(),
                ora: "10:11:12".to_owned(),
            },
            identificativo: "opec1.20250603101112.1.1.k3j9x0@pec.example.it".to_owned(),
            msgid: Some("<abc@client>".to_owned()),
            ricevuta: None,
            consegna: None,
            ricezione: vec![],
            errore_esteso: None,
        }
    }

    /// One valid document per tipo, shaped after spec §4.4.
    fn one_per_tipo() -> Vec<Daticert> {
        Tipo::ALL
            .into_iter()
            .map(|tipo| {
                let mut d = base(tipo);
                match tipo {
                    Tipo::PostaCertificata => d.ricevuta = Some(ReceiptType::Breve),
                    Tipo::Accettazione => d.msgid = None,
                    Tipo::NonAccettazione => {
                        d.errore = Errore::Altro;
                        d.errore_esteso = Some(
                            "destinatario di busta non presente negli header To/Cc".to_owned(),
                        );
                    }
                    Tipo::PresaInCarico => {
                        d.ricezione =
                            vec!["a@pec.rp.example".to_owned(), "c@pec.rp.example".to_owned()];
                    }
                    Tipo::AvvenutaConsegna => {
                        d.ricevuta = Some(ReceiptType::Sintetica);
                        d.consegna = Some("a@pec.rp.example".to_owned());
                        d.oggetto = None;
                    }
                    Tipo::ErroreConsegna => {
                        d.errore = Errore::NoDest;
                        d.consegna = Some("a@pec.rp.example".to_owned());
                        d.errore_esteso =
                            Some("5.1.1 - Example PEC S.p.A. - indirizzo non valido".to_owned());
                    }
                    Tipo::PreavvisoErroreConsegna => {
                        d.errore = Errore::Altro;
                        d.consegna = Some("a@pec.rp.example".to_owned());
                        d.errore_esteso =
                            Some("5.4.1 - Example PEC S.p.A. - tempo scaduto".to_owned());
                    }
                    Tipo::RilevazioneVirus => {
                        d.errore = Errore::Virus;
                        d.consegna = Some("a@pec.rp.example".to_owned());
                        d.errore_esteso = Some("Eicar-Test-Signature".to_owned());
                    }
                }
                d
            })
            .collect()
    }

    #[test]
    fn round_trip_one_document_per_tipo() {
        for d in one_per_tipo() {
            d.check_for_tipo().unwrap_or_else(|e| panic!("{e}"));
            let xml = d.to_xml();
            let back = Daticert::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{xml}"));
            assert_eq!(back, d, "{xml}");
            assert_eq!(back.to_xml(), xml);
        }
    }

    #[test]
    fn writer_layout() {
        let mut d = base(Tipo::AvvenutaConsegna);
        d.ricevuta = Some(ReceiptType::Breve);
        d.consegna = Some("a@pec.rp.example".to_owned());
        d.ricezione = vec!["r@x".to_owned()];
        d.errore_esteso = Some("e".to_owned());
        let x = d.to_xml();
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<postacert tipo=\"avvenuta-consegna\" errore=\"nessuno\">\n    <intestazione>\n        <mittente>"));
        assert!(x.ends_with("    </dati>\n</postacert>\n"));
        assert!(!x.contains('\r'));
        assert!(x.contains("\n        <ricevuta tipo=\"breve\" />\n"));
        assert!(x.contains("<msgid>&lt;abc@client&gt;</msgid>"));
        assert!(x.contains(
            "<oggetto>Fattura n. 12 &lt;bozza&gt; &amp; &quot;altro&quot; — perché</oggetto>"
        ));
        assert!(x.contains("        <data zona=\"+0200\">\n            <giorno>03/06/2025</giorno>\n            <ora>10:11:12</ora>\n        </data>\n"));
        // DTD order in <dati>.
        let order = [
            "<identificativo>",
            "<msgid>",
            "<ricevuta",
            "<consegna>",
            "<ricezione>",
            "<errore-esteso>",
        ];
        let pos: Vec<usize> = order
            .iter()
            .map(|t| x.find(t).unwrap_or(usize::MAX))
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    }

    #[test]
    fn writer_replaces_characters_xml_cannot_carry() {
        let mut d = base(Tipo::Accettazione);
        d.oggetto = Some("a\u{1}b\rc".to_owned());
        let x = d.to_xml();
        assert!(x.contains("<oggetto>a\u{FFFD}b&#13;c</oggetto>"));
        let back = Daticert::parse(x.as_bytes()).expect("parses");
        assert_eq!(back.oggetto.as_deref(), Some("a\u{FFFD}b\rc"));
    }

    fn parse_str(x: &str) -> Result<Daticert, DaticertError> {
        Daticert::parse(x.as_bytes())
    }

    fn minimal(dati_extra: &str) -> String {
        format!(
            "<postacert tipo=\"accettazione\"><intestazione><mittente>m</mittente>\
             <destinatari>d</destinatari><risposte>r</risposte></intestazione><dati>\
             <gestore-emittente>g</gestore-emittente><data zona=\"+0100\"><giorno>01/01/2025</giorno>\
             <ora>00:00:00</ora></data><identificativo>i</identificativo>{dati_extra}</dati></postacert>"
        )
    }

    #[test]
    fn dtd_defaults_and_optional_parts() {
        let d = parse_str(&minimal("")).expect("parses");
        assert_eq!(d.errore, Errore::Nessuno);
        assert_eq!(d.destinatari[0].tipo, RecipientType::Certificato);
        assert_eq!(d.oggetto, None);
        assert_eq!(d.msgid, None);
        let d = parse_str(&minimal("").replace("</risposte>", "</risposte><oggetto/>"))
            .expect("parses");
        assert_eq!(d.oggetto.as_deref(), Some(""));
    }

    #[test]
    fn accepts_prolog_comments_pis_bom_cdata_and_char_refs() {
        let x =
            format!(
            "\u{FEFF}<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>\n<!-- c -->\n\
             <?xml-stylesheet type=\"text/xsl\" href=\"x.xsl\"?>\n\
             <!DOCTYPE postacert SYSTEM \"postacert.dtd\">\n{}\n<!-- after -->\n",
            minimal("<msgid>  &#60;a&#x40;b&gt;<!-- in text --></msgid>")
                .replace("<oggetto/>", "")
                .replace("<mittente>m</mittente>", "<mittente>\n  <![CDATA[m&m]]>  \n</mittente>")
        );
        let d = parse_str(&x).expect("parses");
        assert_eq!(d.mittente, "m&m");
        assert_eq!(d.msgid.as_deref(), Some("<a@b>"));
    }

    #[test]
    fn internal_doctype_without_entities_is_accepted() {
        let x = format!(
            "<!DOCTYPE postacert [<!ELEMENT postacert (intestazione, dati)>\n\
             <!ATTLIST destinatari tipo (certificato|esterno) \"certificato\">]>{}",
            minimal("")
        );
        parse_str(&x).expect("parses");
        // Lower-case or parameter-entity tricks still contain "<!ENTITY".
        let x = format!(
            "<!DOCTYPE postacert [<!ENTITY % p SYSTEM \"http://x/\"> %p;]>{}",
            minimal("")
        );
        assert_eq!(parse_str(&x), Err(DaticertError::EntityDeclaration));
        let x = format!("<!DOCTYPE other>{}", minimal(""));
        assert!(parse_str(&x).unwrap_err().to_string().contains("\"other\""));
    }

    #[test]
    fn encoding_decisions() {
        // ISO-8859-1 declared but pure ASCII: identical bytes, accepted.
        let x = format!(
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{}",
            minimal("")
        );
        parse_str(&x).expect("ascii under a latin-1 label");
        // ISO-8859-1 declared with a Latin-1 byte: refused.
        let mut bytes = format!(
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{}",
            minimal("")
        )
        .into_bytes();
        let at = bytes.iter().position(|&b| b == b'g').unwrap_or(0);
        bytes[at] = 0xE8;
        let e = Daticert::parse(&bytes).unwrap_err();
        assert!(e.to_string().contains("utf-8"), "{e}");
        // ISO-8859-1 declared, UTF-8 non-ASCII content: refused by the label.
        let x = format!(
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{}",
            minimal("")
        )
        .replace("<gestore-emittente>g", "<gestore-emittente>è");
        let e = parse_str(&x).unwrap_err();
        assert!(e.to_string().contains("ISO-8859-1"), "{e}");
        // UTF-16 BOM.
        assert!(matches!(
            Daticert::parse(&[0xFF, 0xFE, b'<', 0]),
            Err(DaticertError::Encoding { .. })
        ));
    }

    #[test]
    fn structural_refusals() {
        let cases: Vec<(String, &str)> = vec![
            (
                minimal("")
                    .replace("<postacert", "<postacerts")
                    .replace("</postacert>", "</postacerts>"),
                "expected <postacert>",
            ),
            (format!("{}<postacert/>", minimal("")), "trailing content"),
            (format!("{} garbage", minimal("")), "trailing content"),
            (format!("x{}", minimal("")), "before the root"),
            (
                minimal("<identificativo>j</identificativo>"),
                "<identificativo> inside <dati>: duplicated",
            ),
            (
                minimal("").replace("<dati>", "<dati>hello"),
                "text \"hello\" inside <dati>",
            ),
            (
                minimal("<msgid><b>x</b></msgid>"),
                "element <b> inside <msgid>: not allowed",
            ),
            (
                minimal("").replace("<giorno>01/01/2025", "<giorno><x>1</x>"),
                "nesting deeper than the dtd allows",
            ),
            (
                minimal("").replace("<destinatari>d</destinatari>", ""),
                "lacks required element <destinatari>",
            ),
            (
                minimal("").replace(" zona=\"+0100\"", ""),
                "lacks required attribute \"zona\"",
            ),
            (
                minimal("").replace("<postacert tipo=\"accettazione\">", "<postacert>"),
                "lacks required attribute \"tipo\"",
            ),
            (
                minimal("<ricevuta/>"),
                "<ricevuta> lacks required attribute \"tipo\"",
            ),
            (
                minimal("<ricevuta tipo=\"Completa\"/>"),
                "unknown value \"Completa\"",
            ),
            (
                minimal("<ricevuta tipo=\"breve\">x</ricevuta>"),
                "<ricevuta> must be empty",
            ),
            (
                minimal("").replace("<destinatari>", "<destinatari tipo=\"pec\">"),
                "unknown value \"pec\"",
            ),
            (
                minimal("").replace("<mittente>", "<mittente lang=\"it\">"),
                "\"lang\" on <mittente>: unknown attribute",
            ),
            (
                minimal("").replace("<postacert ", "<postacert xmlns=\"urn:x\" "),
                "unknown attribute",
            ),
            (minimal("&#1;"), "not an xml character"),
            (minimal("").replace("</dati>", "</data>"), "malformed xml"),
            (String::new(), "no root element"),
            (
                minimal("").replace("<data zona=\"+0100\"", "<data zona=\"a\" zona=\"b\""),
                "duplicate",
            ),
        ];
        for (x, want) in cases {
            let e = parse_str(&x).expect_err(&x);
            assert!(e.to_string().contains(want), "{e} / want {want:?}\n{x}");
        }
    }

    #[test]
    fn surrounding_white_space_is_trimmed() {
        let x = minimal("").replace("<mittente>m", "<mittente>\n\t  m ");
        assert_eq!(parse_str(&x).expect("parses").mittente, "m");
    }

    #[test]
    fn check_for_tipo_table() {
        use Tipo::*;
        let ok = one_per_tipo();
        let get = |t: Tipo| {
            ok.iter()
                .find(|d| d.tipo == t)
                .cloned()
                .unwrap_or_else(|| base(t))
        };
        let bad: Vec<(Daticert, &str)> = vec![
            (
                {
                    let mut d = get(PostaCertificata);
                    d.ricevuta = None;
                    d
                },
                "<ricevuta> is required",
            ),
            (
                {
                    let mut d = get(PostaCertificata);
                    d.consegna = Some("x".into());
                    d
                },
                "<consegna> is not allowed",
            ),
            (
                {
                    let mut d = get(PostaCertificata);
                    d.errore = Errore::Altro;
                    d
                },
                "errore \"altro\" not allowed",
            ),
            (
                {
                    let mut d = get(AvvenutaConsegna);
                    d.consegna = None;
                    d
                },
                "<consegna> is required",
            ),
            (
                {
                    let mut d = get(AvvenutaConsegna);
                    d.ricevuta = None;
                    d
                },
                "<ricevuta> is required",
            ),
            (
                {
                    let mut d = get(PresaInCarico);
                    d.ricezione.clear();
                    d
                },
                "<ricezione> is required",
            ),
            (
                {
                    let mut d = get(NonAccettazione);
                    d.errore_esteso = None;
                    d
                },
                "<errore-esteso> is required",
            ),
            (
                {
                    let mut d = get(NonAccettazione);
                    d.errore = Errore::NoDest;
                    d
                },
                "errore \"no-dest\" not allowed",
            ),
            (
                {
                    let mut d = get(ErroreConsegna);
                    d.errore_esteso = None;
                    d
                },
                "<errore-esteso> is required",
            ),
            (
                {
                    let mut d = get(ErroreConsegna);
                    d.errore = Errore::Nessuno;
                    d
                },
                "errore \"nessuno\" not allowed",
            ),
            (
                {
                    let mut d = get(RilevazioneVirus);
                    d.errore = Errore::Altro;
                    d
                },
                "errore \"altro\" not allowed",
            ),
            (
                {
                    let mut d = get(RilevazioneVirus);
                    d.consegna = None;
                    d
                },
                "<consegna> (or <ricezione>",
            ),
            (
                {
                    let mut d = get(PreavvisoErroreConsegna);
                    d.consegna = None;
                    d
                },
                "<consegna> is required",
            ),
            (
                {
                    let mut d = get(Accettazione);
                    d.identificativo = " ".into();
                    d
                },
                "<identificativo> is empty",
            ),
        ];
        for (d, want) in bad {
            let e = d.check_for_tipo().expect_err(want);
            assert!(e.to_string().contains(want), "{e} / {want}");
            assert!(e
                .to_string()
                .starts_with(&format!("daticert: tipo \"{}\"", d.tipo)));
        }
        // The documented leniencies.
        let mut d = get(Accettazione);
        d.ricevuta = Some(ReceiptType::Completa);
        d.check_for_tipo().expect("acceptance may echo <ricevuta>");
        for e in [
            Errore::Altro,
            Errore::NoDest,
            Errore::NoDominio,
            Errore::Virus,
        ] {
            let mut d = get(ErroreConsegna);
            d.errore = e;
            d.check_for_tipo()
                .expect("any error value for errore-consegna");
        }
        let mut d = get(RilevazioneVirus);
        d.consegna = None;
        d.ricezione = vec!["a@pec.rp.example".into()];
        d.check_for_tipo()
            .expect("pre-2.1 rilevazione-virus with <ricezione>");
        let mut d = get(PreavvisoErroreConsegna);
        d.errore_esteso = None;
        d.errore = Errore::Nessuno;
        d.check_for_tipo().expect("12 h notice without code");
    }
}
