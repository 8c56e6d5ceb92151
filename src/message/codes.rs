// SPDX-License-Identifier: GPL-3.0-or-later
//! The codes written in `errore-esteso` and in the readable text of the notices (spec §3.10,
//! §12.1 NOTA 12), in one place. Format as observed at Aruba:
//! `<x.y.z> - <provider name> - <description>`.
//!
//! [UNVERIFIED] NOTA 12's full table was not retrieved (spec §12.1). The 24 h code `5.4.1` is
//! what Aruba and Namirial send and what PagoPA's integration treats as a definitive failure.
//! The 12 h notice is not a failure: we use the transient RFC 3463 code `4.4.7` ("delivery
//! time expired"), which no integration reads as final.

use super::kind::{Errore, Timeout};

/// One coded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// Enhanced status code, `x.y.z`.
    pub code: &'static str,
    /// Italian description.
    pub text: &'static str,
}

/// 12 h notice (preavviso): transient.
pub const TIMEOUT_12H: Code = Code {
    code: "4.4.7",
    text: "mancata consegna nelle prime 12 ore",
};

/// 24 h notice: definitive failure.
pub const TIMEOUT_24H: Code = Code {
    code: "5.4.1",
    text: "mancata consegna entro 24 ore",
};

impl Code {
    /// The code of a timer notice.
    pub fn timeout(which: Timeout) -> Code {
        match which {
            Timeout::Hours12 => TIMEOUT_12H,
            Timeout::Hours24 => TIMEOUT_24H,
        }
    }

    /// `errore-esteso` as written by `provider`: `<code> - <provider> - <text>`.
    pub fn errore_esteso(self, provider: &str) -> String {
        format!("{} - {} - {}", self.code, provider, self.text)
    }
}

// ---------------------------------------------------------------------------------------
// Avviso di mancata consegna
//
// The coded reasons of the avviso di mancata consegna (spec §3.7, §12.1 NOTA 12): one table
// from the enhanced status code of Dovecot's permanent failure to the daticert `errore`
// and the readable description, written `<x.y.z> - <provider> - <description>` as real
// providers do (`5.1.1 - <GESTORE> - indirizzo non valido`, Aruba).
//
// [UNVERIFIED] Only `5.1.1 … indirizzo non valido` is observed (spec §12.1). The other rows
// follow NOTA 12's event groups (casella piena, casella disattivata, …) with Dovecot's
// codes; the exact AgID wording must be checked against the "Note integrative" PDF before
// it is frozen. Everything lives here so that the check touches one table.

/// One row: enhanced status code (as Dovecot or a bouncing MTA writes it), daticert `errore`,
/// description.
const TABLE: &[(&str, Errore, &str)] = &[
    // NOTA 12 group 1-4: utente / casella inesistente, non valida, revocata. Dovecot:
    // "550 5.1.1 <u> User doesn't exist". Aruba writes errore="altro" here, an
    // Aruba-structured sample no-dest (spec §3.7): we use no-dest, the DTD's meaning.
    ("5.1.1", Errore::NoDest, "indirizzo non valido"),
    // Bad destination mailbox syntax.
    ("5.1.3", Errore::NoDest, "indirizzo non valido"),
    // Destination mailbox has moved, no forwarding address.
    ("5.1.6", Errore::NoDest, "indirizzo non valido"),
    // Bounces of our envelopes by another MTA (crate::bounce): the domain does
    // not exist or cannot be reached. Postfix: "Host or domain name not found" is 5.4.4.
    ("5.1.2", Errore::NoDominio, "dominio non valido"),
    ("5.4.4", Errore::NoDominio, "dominio non valido"),
    // NOTA 12 group 5-6: casella temporaneamente disattivata / non in grado di accettare.
    ("5.2.1", Errore::Altro, "casella disattivata"),
    // NOTA 12 group 7: casella piena. Dovecot: "552 5.2.2 <u> Mailbox is full".
    ("5.2.2", Errore::Altro, "casella piena"),
    // Message larger than the mailbox accepts.
    ("5.2.3", Errore::Altro, "messaggio troppo grande"),
    ("5.3.4", Errore::Altro, "messaggio troppo grande"),
];

/// Description for a permanent failure without a known code.
const OTHER: &str = "errore di consegna nella casella del destinatario";

/// The coded reason of a permanent failure reported with `code` (an enhanced status code,
/// or `None` when the reply carried none): daticert `errore` and the `errore-esteso` /
/// readable text `<code> - <provider> - <description>`.
pub fn non_delivery_reason(code: Option<&str>, provider: &str) -> (Errore, String) {
    let row = code.and_then(|c| TABLE.iter().find(|(k, _, _)| *k == c));
    match row {
        Some((k, errore, text)) => (*errore, format!("{k} - {provider} - {text}")),
        None => {
            let k = code.filter(|c| c.starts_with("5.")).unwrap_or("5.0.0");
            (Errore::Altro, format!("{k} - {provider} - {OTHER}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_24h_code_starts_with_5_4_1_and_the_12h_one_is_transient() {
        let e = Code::timeout(Timeout::Hours24).errore_esteso("Example PEC S.p.A.");
        assert_eq!(
            e,
            "5.4.1 - Example PEC S.p.A. - mancata consegna entro 24 ore"
        );
        assert!(Code::timeout(Timeout::Hours12)
            .errore_esteso("X")
            .starts_with("4."));
    }
}

#[cfg(test)]
mod non_delivery_tests {
    use super::*;

    #[test]
    fn known_codes_have_their_text() {
        assert_eq!(
            non_delivery_reason(Some("5.1.1"), "Gestore"),
            (
                Errore::NoDest,
                "5.1.1 - Gestore - indirizzo non valido".into()
            )
        );
        assert_eq!(
            non_delivery_reason(Some("5.2.2"), "Gestore"),
            (Errore::Altro, "5.2.2 - Gestore - casella piena".into())
        );
    }

    #[test]
    fn unknown_codes_are_altro() {
        let (e, t) = non_delivery_reason(Some("5.7.1"), "G");
        assert_eq!(e, Errore::Altro);
        assert!(t.starts_with("5.7.1 - G - "), "{t}");
        let (_, t) = non_delivery_reason(None, "G");
        assert!(t.starts_with("5.0.0 - G - "), "{t}");
    }

    #[test]
    fn every_row_is_a_permanent_code() {
        for (k, _, _) in TABLE {
            assert!(k.starts_with("5."), "{k}");
        }
    }
}
