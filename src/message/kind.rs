// SPDX-License-Identifier: GPL-3.0-or-later
//! The PEC message catalogue (spec §3): every message type with its class header, subject
//! prefix and daticert `tipo` / `errore`, in one table.

use std::fmt;

/// Value of `X-Trasporto` (envelopes only, spec §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trasporto {
    /// `posta-certificata`: busta di trasporto.
    PostaCertificata,
    /// `errore`: busta di anomalia.
    Errore,
}

impl Trasporto {
    pub const ALL: [Trasporto; 2] = [Trasporto::PostaCertificata, Trasporto::Errore];

    pub fn as_str(self) -> &'static str {
        match self {
            Trasporto::PostaCertificata => "posta-certificata",
            Trasporto::Errore => "errore",
        }
    }

    /// Parses a header value (case-insensitive, surrounding white space ignored).
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(v))
    }
}

/// Value of `X-Ricevuta` (receipts and notices only, spec §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ricevuta {
    Accettazione,
    NonAccettazione,
    PresaInCarico,
    AvvenutaConsegna,
    ErroreConsegna,
    PreavvisoErroreConsegna,
    RilevazioneVirus,
}

impl Ricevuta {
    pub const ALL: [Ricevuta; 7] = [
        Ricevuta::Accettazione,
        Ricevuta::NonAccettazione,
        Ricevuta::PresaInCarico,
        Ricevuta::AvvenutaConsegna,
        Ricevuta::ErroreConsegna,
        Ricevuta::PreavvisoErroreConsegna,
        Ricevuta::RilevazioneVirus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ricevuta::Accettazione => "accettazione",
            Ricevuta::NonAccettazione => "non-accettazione",
            Ricevuta::PresaInCarico => "presa-in-carico",
            Ricevuta::AvvenutaConsegna => "avvenuta-consegna",
            Ricevuta::ErroreConsegna => "errore-consegna",
            Ricevuta::PreavvisoErroreConsegna => "preavviso-errore-consegna",
            Ricevuta::RilevazioneVirus => "rilevazione-virus",
        }
    }

    /// Parses a header value (case-insensitive, surrounding white space ignored).
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(v))
    }

    /// The daticert `tipo` that a receipt with this header must carry.
    pub fn tipo(self) -> Tipo {
        match self {
            Ricevuta::Accettazione => Tipo::Accettazione,
            Ricevuta::NonAccettazione => Tipo::NonAccettazione,
            Ricevuta::PresaInCarico => Tipo::PresaInCarico,
            Ricevuta::AvvenutaConsegna => Tipo::AvvenutaConsegna,
            Ricevuta::ErroreConsegna => Tipo::ErroreConsegna,
            Ricevuta::PreavvisoErroreConsegna => Tipo::PreavvisoErroreConsegna,
            Ricevuta::RilevazioneVirus => Tipo::RilevazioneVirus,
        }
    }
}

/// daticert `postacert@tipo` (spec §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tipo {
    Accettazione,
    NonAccettazione,
    PresaInCarico,
    AvvenutaConsegna,
    PostaCertificata,
    ErroreConsegna,
    PreavvisoErroreConsegna,
    RilevazioneVirus,
}

impl Tipo {
    pub const ALL: [Tipo; 8] = [
        Tipo::Accettazione,
        Tipo::NonAccettazione,
        Tipo::PresaInCarico,
        Tipo::AvvenutaConsegna,
        Tipo::PostaCertificata,
        Tipo::ErroreConsegna,
        Tipo::PreavvisoErroreConsegna,
        Tipo::RilevazioneVirus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tipo::PostaCertificata => "posta-certificata",
            Tipo::Accettazione => "accettazione",
            Tipo::NonAccettazione => "non-accettazione",
            Tipo::PresaInCarico => "presa-in-carico",
            Tipo::AvvenutaConsegna => "avvenuta-consegna",
            Tipo::ErroreConsegna => "errore-consegna",
            Tipo::PreavvisoErroreConsegna => "preavviso-errore-consegna",
            Tipo::RilevazioneVirus => "rilevazione-virus",
        }
    }

    /// Exact match, as XML attribute values are case-sensitive.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

impl fmt::Display for Tipo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// daticert `postacert@errore` (spec §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Errore {
    #[default]
    Nessuno,
    NoDest,
    NoDominio,
    Virus,
    Altro,
}

impl Errore {
    pub const ALL: [Errore; 5] = [
        Errore::Nessuno,
        Errore::NoDest,
        Errore::NoDominio,
        Errore::Virus,
        Errore::Altro,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Errore::Nessuno => "nessuno",
            Errore::NoDest => "no-dest",
            Errore::NoDominio => "no-dominio",
            Errore::Virus => "virus",
            Errore::Altro => "altro",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

impl fmt::Display for Errore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Delivery receipt type: `X-TipoRicevuta` and daticert `ricevuta@tipo` (spec §3.6).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptType {
    /// Ricevuta completa: carries the whole original.
    #[default]
    Completa,
    /// Ricevuta breve: the original with attachments replaced by their SHA-1.
    Breve,
    /// Ricevuta sintetica: text and daticert only.
    Sintetica,
}

impl ReceiptType {
    pub const ALL: [ReceiptType; 3] = [
        ReceiptType::Completa,
        ReceiptType::Breve,
        ReceiptType::Sintetica,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptType::Completa => "completa",
            ReceiptType::Breve => "breve",
            ReceiptType::Sintetica => "sintetica",
        }
    }

    /// Parses an `X-TipoRicevuta` header value (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(v))
    }

    /// The type actually issued to one recipient (spec §3.6 table): a carbon-copy
    /// recipient always gets `sintetica`; a primary recipient gets what was requested.
    /// A recipient that is in both To and Cc, or in neither, counts as primary.
    pub fn issued_for(self, placement: Placement) -> ReceiptType {
        match placement {
            Placement::Primary => self,
            Placement::CarbonCopy => ReceiptType::Sintetica,
        }
    }
}

impl fmt::Display for ReceiptType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a recipient stands in the original's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// In `To:` (or ambiguous: both or neither, spec §3.6).
    Primary,
    /// Only in `Cc:`.
    CarbonCopy,
}

/// daticert `destinatari@tipo`: whether a recipient's domain belongs to a PEC provider.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RecipientType {
    /// `certificato`: the domain is in the provider index.
    #[default]
    Certificato,
    /// `esterno`: ordinary Internet mail.
    Esterno,
}

impl RecipientType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientType::Certificato => "certificato",
            RecipientType::Esterno => "esterno",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "certificato" => Some(RecipientType::Certificato),
            "esterno" => Some(RecipientType::Esterno),
            _ => None,
        }
    }

    /// Wording used in readable texts: `posta certificata` / `posta ordinaria`.
    pub fn label(self) -> &'static str {
        match self {
            RecipientType::Certificato => "posta certificata",
            RecipientType::Esterno => "posta ordinaria",
        }
    }
}

/// Which 12 h / 24 h timeout notice (spec §3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// 12 h "preavviso": not taken in charge nor delivered within 12 hours.
    Hours12,
    /// 24 h: not delivered within 24 hours, the transaction is closed negatively.
    Hours24,
}

/// Every message a provider generates (spec §3, the eleven types; delivery receipts come in
/// three shapes and non-acceptance / non-delivery have a virus variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Busta di trasporto (spec §3.1).
    TransportEnvelope,
    /// Ricevuta di accettazione (spec §3.2).
    Acceptance,
    /// Avviso di non accettazione per eccezioni formali (spec §3.3).
    NonAcceptance,
    /// Avviso di non accettazione per virus (spec §3.4).
    NonAcceptanceVirus,
    /// Ricevuta di presa in carico (spec §3.5).
    TakeCharge,
    /// Ricevuta di avvenuta consegna (spec §3.6).
    Delivery(ReceiptType),
    /// Avviso di mancata consegna (spec §3.7).
    NonDelivery,
    /// Avviso di mancata consegna per virus (spec §3.9).
    NonDeliveryVirus,
    /// Avviso di mancata consegna per superamento tempi massimi (spec §3.10).
    Timeout(Timeout),
    /// Avviso di rilevazione virus (spec §3.8).
    VirusDetection,
    /// Busta di anomalia (spec §3.11).
    AnomalyEnvelope,
}

impl MessageKind {
    /// Every kind, for exhaustive tests.
    pub const ALL: [MessageKind; 14] = [
        MessageKind::TransportEnvelope,
        MessageKind::Acceptance,
        MessageKind::NonAcceptance,
        MessageKind::NonAcceptanceVirus,
        MessageKind::TakeCharge,
        MessageKind::Delivery(ReceiptType::Completa),
        MessageKind::Delivery(ReceiptType::Breve),
        MessageKind::Delivery(ReceiptType::Sintetica),
        MessageKind::NonDelivery,
        MessageKind::NonDeliveryVirus,
        MessageKind::Timeout(Timeout::Hours12),
        MessageKind::Timeout(Timeout::Hours24),
        MessageKind::VirusDetection,
        MessageKind::AnomalyEnvelope,
    ];

    /// Subject prefix, exact (spec §3 table); each ends with `": "`.
    pub fn subject_prefix(self) -> &'static str {
        match self {
            MessageKind::TransportEnvelope => "POSTA CERTIFICATA: ",
            MessageKind::Acceptance => "ACCETTAZIONE: ",
            MessageKind::NonAcceptance => "AVVISO DI NON ACCETTAZIONE: ",
            MessageKind::NonAcceptanceVirus => "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
            MessageKind::TakeCharge => "PRESA IN CARICO: ",
            MessageKind::Delivery(_) => "CONSEGNA: ",
            MessageKind::NonDelivery => "AVVISO DI MANCATA CONSEGNA: ",
            MessageKind::NonDeliveryVirus => "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
            MessageKind::Timeout(_) => "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
            MessageKind::VirusDetection => "PROBLEMA DI SICUREZZA: ",
            MessageKind::AnomalyEnvelope => "ANOMALIA MESSAGGIO: ",
        }
    }

    /// The class header this kind carries: `X-Trasporto` for envelopes, `X-Ricevuta` otherwise.
    pub fn class(self) -> Class {
        match self {
            MessageKind::TransportEnvelope => Class::Trasporto(Trasporto::PostaCertificata),
            MessageKind::AnomalyEnvelope => Class::Trasporto(Trasporto::Errore),
            MessageKind::Acceptance => Class::Ricevuta(Ricevuta::Accettazione),
            MessageKind::NonAcceptance | MessageKind::NonAcceptanceVirus => {
                Class::Ricevuta(Ricevuta::NonAccettazione)
            }
            MessageKind::TakeCharge => Class::Ricevuta(Ricevuta::PresaInCarico),
            MessageKind::Delivery(_) => Class::Ricevuta(Ricevuta::AvvenutaConsegna),
            MessageKind::NonDelivery | MessageKind::NonDeliveryVirus => {
                Class::Ricevuta(Ricevuta::ErroreConsegna)
            }
            MessageKind::Timeout(_) => Class::Ricevuta(Ricevuta::PreavvisoErroreConsegna),
            MessageKind::VirusDetection => Class::Ricevuta(Ricevuta::RilevazioneVirus),
        }
    }

    /// daticert `tipo`, or `None` for the anomaly envelope (which has no daticert).
    pub fn tipo(self) -> Option<Tipo> {
        match self.class() {
            Class::Trasporto(Trasporto::PostaCertificata) => Some(Tipo::PostaCertificata),
            Class::Trasporto(Trasporto::Errore) => None,
            Class::Ricevuta(r) => Some(r.tipo()),
        }
    }

    /// Whether `X-VerificaSicurezza: errore` is added (virus-related notices to the user).
    pub fn security_flag(self) -> bool {
        matches!(
            self,
            MessageKind::NonAcceptanceVirus | MessageKind::NonDeliveryVirus
        )
    }

    /// Whether the original message travels inside as `postacert.eml`.
    pub fn carries_original(self) -> bool {
        matches!(
            self,
            MessageKind::TransportEnvelope
                | MessageKind::AnomalyEnvelope
                | MessageKind::Delivery(ReceiptType::Completa)
                | MessageKind::Delivery(ReceiptType::Breve)
        )
    }

    /// Whether this kind is addressed to the sending provider's `mailReceipt` rather than
    /// to the sender (spec §2.3).
    pub fn to_service_mailbox(self) -> bool {
        matches!(self, MessageKind::TakeCharge | MessageKind::VirusDetection)
    }

    /// Title of the readable text part (spec §2.4: wording is free, the data are fixed).
    pub fn title(self) -> &'static str {
        match self {
            MessageKind::TransportEnvelope => "Messaggio di posta certificata",
            MessageKind::Acceptance => "Ricevuta di accettazione",
            MessageKind::NonAcceptance => "Avviso di non accettazione",
            MessageKind::NonAcceptanceVirus => "Avviso di non accettazione per virus",
            MessageKind::TakeCharge => "Ricevuta di presa in carico",
            MessageKind::Delivery(ReceiptType::Completa) => "Ricevuta di avvenuta consegna",
            MessageKind::Delivery(ReceiptType::Breve) => "Ricevuta breve di avvenuta consegna",
            MessageKind::Delivery(ReceiptType::Sintetica) => {
                "Ricevuta sintetica di avvenuta consegna"
            }
            MessageKind::NonDelivery => "Avviso di mancata consegna",
            MessageKind::NonDeliveryVirus => "Avviso di mancata consegna per virus",
            MessageKind::Timeout(_) => {
                "Avviso di mancata consegna per superamento dei tempi massimi"
            }
            MessageKind::VirusDetection => "Avviso di rilevazione virus",
            MessageKind::AnomalyEnvelope => "Anomalia nel messaggio",
        }
    }

    /// Label used in the legal log, after the TMail `PEC_Milter` vocabulary (spec §8).
    pub fn log_label(self) -> &'static str {
        match self {
            MessageKind::TransportEnvelope => "BustaTrasporto",
            MessageKind::AnomalyEnvelope => "BustaAnomalia",
            MessageKind::Acceptance => "Accettazione",
            MessageKind::NonAcceptance => "NonAccettazione",
            MessageKind::NonAcceptanceVirus => "NonAccettazioneVirus",
            MessageKind::TakeCharge => "PresaInCarico",
            MessageKind::Delivery(_) => "Consegna",
            MessageKind::NonDelivery => "MancataConsegna",
            MessageKind::NonDeliveryVirus => "MancataConsegnaVirus",
            MessageKind::Timeout(Timeout::Hours12) => "MancataConsegna12h",
            MessageKind::Timeout(Timeout::Hours24) => "MancataConsegna24h",
            MessageKind::VirusDetection => "RilevazioneVirus",
        }
    }
}

/// The one class header of a PEC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Trasporto(Trasporto),
    Ricevuta(Ricevuta),
}

impl Class {
    pub fn header_name(self) -> &'static str {
        match self {
            Class::Trasporto(_) => "X-Trasporto",
            Class::Ricevuta(_) => "X-Ricevuta",
        }
    }

    pub fn header_value(self) -> &'static str {
        match self {
            Class::Trasporto(t) => t.as_str(),
            Class::Ricevuta(r) => r.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_ends_with_colon_space_and_is_ascii_upper() {
        for k in MessageKind::ALL {
            let p = k.subject_prefix();
            assert!(p.ends_with(": "), "{k:?}");
            assert!(p.is_ascii());
            assert_eq!(p, p.to_ascii_uppercase());
        }
    }

    #[test]
    fn class_and_tipo_agree() {
        for k in MessageKind::ALL {
            match k.class() {
                Class::Ricevuta(r) => assert_eq!(k.tipo(), Some(r.tipo())),
                Class::Trasporto(Trasporto::PostaCertificata) => {
                    assert_eq!(k.tipo(), Some(Tipo::PostaCertificata))
                }
                Class::Trasporto(Trasporto::Errore) => assert_eq!(k.tipo(), None),
            }
        }
    }

    #[test]
    fn header_values_parse_case_insensitively() {
        assert_eq!(
            Ricevuta::parse(" Presa-In-Carico "),
            Some(Ricevuta::PresaInCarico)
        );
        assert_eq!(
            Trasporto::parse("posta-certificata\r\n"),
            Some(Trasporto::PostaCertificata)
        );
        assert_eq!(Ricevuta::parse("consegna"), None);
        assert_eq!(ReceiptType::parse("Breve"), Some(ReceiptType::Breve));
        assert_eq!(ReceiptType::parse("normale"), None);
    }

    #[test]
    fn receipt_type_selection_table() {
        use Placement::*;
        use ReceiptType::*;
        assert_eq!(Completa.issued_for(Primary), Completa);
        assert_eq!(Completa.issued_for(CarbonCopy), Sintetica);
        assert_eq!(Breve.issued_for(Primary), Breve);
        assert_eq!(Breve.issued_for(CarbonCopy), Sintetica);
        assert_eq!(Sintetica.issued_for(Primary), Sintetica);
        assert_eq!(Sintetica.issued_for(CarbonCopy), Sintetica);
    }

    #[test]
    fn originals_never_in_forbidden_notices() {
        for k in [
            MessageKind::NonAcceptance,
            MessageKind::NonAcceptanceVirus,
            MessageKind::VirusDetection,
            MessageKind::Timeout(Timeout::Hours12),
            MessageKind::Timeout(Timeout::Hours24),
            MessageKind::Delivery(ReceiptType::Sintetica),
        ] {
            assert!(!k.carries_original(), "{k:?}");
        }
    }
}
