//! `daticert.xml`, the certification data (spec §4): model, writer and reader.

use super::kind::{Errore, ReceiptType, RecipientType, Tipo};
use super::time::Instant;

/// One `<destinatari>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
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

// =========================================================================================
// PLACEHOLDER (branch `verify`) — BEGIN. To be deleted at merge.
//
// The real `Daticert::parse(&[u8]) -> Result<Daticert, DaticertError>` and
// `Daticert::check_for_tipo()` are being written in a parallel branch. This is a minimal
// stand-in so that the classification code (`message::classify`) can be built and tested.
// Callers only use `Daticert::parse(..)` and `.check_for_tipo()` and turn the error into a
// string with `.to_string()`, so the real `DaticertError` drops in without other changes.
// =========================================================================================
impl Daticert {
    /// PLACEHOLDER: reads a `daticert.xml` document (no DTD validation, no entity loading).
    pub fn parse(xml: &[u8]) -> Result<Daticert, String> {
        placeholder::parse(xml)
    }

    /// PLACEHOLDER: the per-`tipo` presence rules of spec §4.3, minimally.
    pub fn check_for_tipo(&self) -> Result<(), String> {
        let need_ricevuta = matches!(self.tipo, Tipo::PostaCertificata | Tipo::AvvenutaConsegna);
        if need_ricevuta && self.ricevuta.is_none() {
            return Err(format!("tipo \"{}\" requires <ricevuta>", self.tipo));
        }
        let need_consegna = matches!(
            self.tipo,
            Tipo::AvvenutaConsegna
                | Tipo::ErroreConsegna
                | Tipo::PreavvisoErroreConsegna
                | Tipo::RilevazioneVirus
        );
        if need_consegna && self.consegna.is_none() && self.ricezione.is_empty() {
            return Err(format!("tipo \"{}\" requires <consegna>", self.tipo));
        }
        if self.tipo == Tipo::PresaInCarico && self.ricezione.is_empty() {
            return Err("tipo \"presa-in-carico\" requires at least one <ricezione>".into());
        }
        if self.destinatari.is_empty() {
            return Err("no <destinatari>".into());
        }
        Ok(())
    }
}

mod placeholder {
    use quick_xml::events::{BytesStart, Event};

    use super::{DataCert, Daticert, Destinatario};
    use crate::message::kind::{Errore, ReceiptType, RecipientType, Tipo};

    struct State {
        d: Daticert,
        tipo: Option<Tipo>,
        dest_tipo: RecipientType,
    }

    pub(super) fn parse(xml: &[u8]) -> Result<Daticert, String> {
        let text = std::str::from_utf8(xml).map_err(|_| "daticert.xml is not utf-8".to_string())?;
        let mut reader = quick_xml::Reader::from_str(text);
        let mut path: Vec<String> = Vec::new();
        let mut buf = String::new();
        let mut st = State {
            d: Daticert {
                tipo: Tipo::PostaCertificata,
                errore: Errore::Nessuno,
                mittente: String::new(),
                destinatari: Vec::new(),
                risposte: String::new(),
                oggetto: None,
                gestore_emittente: String::new(),
                data: DataCert {
                    zona: String::new(),
                    giorno: String::new(),
                    ora: String::new(),
                },
                identificativo: String::new(),
                msgid: None,
                ricevuta: None,
                consegna: None,
                ricezione: Vec::new(),
                errore_esteso: None,
            },
            tipo: None,
            dest_tipo: RecipientType::Certificato,
        };
        loop {
            match reader.read_event().map_err(|e| format!("xml: {e}"))? {
                Event::Start(e) => {
                    let name = start(&mut st, &e, path.is_empty())?;
                    if path.len() > 16 {
                        return Err("xml nested too deeply".into());
                    }
                    buf.clear();
                    path.push(name);
                }
                Event::Empty(e) => {
                    start(&mut st, &e, path.is_empty())?;
                }
                Event::Text(t) => buf.push_str(&t.xml10_content()),
                Event::CData(c) => buf.push_str(&c),
                Event::GeneralRef(r) => {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        buf.push(c);
                    } else {
                        buf.push(match r.xml10_content().as_ref() {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "quot" => '"',
                            "apos" => '\'',
                            other => return Err(format!("unknown entity \"&{other};\"")),
                        });
                    }
                }
                Event::End(_) => {
                    let name = path.pop().unwrap_or_default();
                    let v = buf.trim().to_string();
                    buf.clear();
                    let d = &mut st.d;
                    match name.as_str() {
                        "mittente" => d.mittente = v,
                        "destinatari" => d.destinatari.push(Destinatario {
                            address: v,
                            tipo: std::mem::take(&mut st.dest_tipo),
                        }),
                        "risposte" => d.risposte = v,
                        "oggetto" => d.oggetto = Some(v),
                        "gestore-emittente" => d.gestore_emittente = v,
                        "giorno" => d.data.giorno = v,
                        "ora" => d.data.ora = v,
                        "identificativo" => d.identificativo = v,
                        "msgid" => d.msgid = Some(v),
                        "consegna" => d.consegna = Some(v),
                        "ricezione" => d.ricezione.push(v),
                        "errore-esteso" => d.errore_esteso = Some(v),
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        st.d.tipo = st.tipo.ok_or("<postacert> without tipo")?;
        if st.d.identificativo.is_empty() {
            return Err("no <identificativo>".into());
        }
        Ok(st.d)
    }

    fn start(st: &mut State, e: &BytesStart<'_>, root: bool) -> Result<String, String> {
        let name = e.name().as_ref().to_string();
        if root && name != "postacert" {
            return Err(format!("root element is <{name}>, expected <postacert>"));
        }
        for a in e.attributes() {
            let a = a.map_err(|e| format!("xml attribute: {e}"))?;
            let key = a.key.as_ref().to_string();
            let val = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| format!("xml attribute: {e}"))?
                .into_owned();
            match (name.as_str(), key.as_str()) {
                ("postacert", "tipo") => {
                    st.tipo = Some(Tipo::parse(&val).ok_or(format!("unknown tipo \"{val}\""))?)
                }
                ("postacert", "errore") => {
                    st.d.errore = Errore::parse(&val).ok_or(format!("unknown errore \"{val}\""))?
                }
                ("destinatari", "tipo") => {
                    st.dest_tipo = RecipientType::parse(&val)
                        .ok_or(format!("unknown destinatari tipo \"{val}\""))?
                }
                ("data", "zona") => st.d.data.zona = val,
                ("ricevuta", "tipo") => {
                    st.d.ricevuta = Some(
                        ReceiptType::parse(&val)
                            .ok_or(format!("unknown ricevuta tipo \"{val}\""))?,
                    )
                }
                _ => {}
            }
        }
        Ok(name)
    }
}
// =========================================================================================
// PLACEHOLDER — END.
// =========================================================================================
