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

// TEMPORARY stub, replaced by the daticert-breve branch at merge.
impl Daticert {
    pub fn to_xml(&self) -> String {
        format!("<postacert tipo=\"{}\"/>", self.tipo)
    }
}
