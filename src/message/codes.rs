// SPDX-License-Identifier: GPL-3.0-or-later
//! The codes written in `errore-esteso` and in the readable text of the notices (spec §3.10,
//! §12.1 NOTA 12), in one place. Format as observed at Aruba:
//! `<x.y.z> - <provider name> - <description>`.
//!
//! [UNVERIFIED] NOTA 12's full table was not retrieved (spec §12.1). The 24 h code `5.4.1` is
//! what Aruba and Namirial send and what PagoPA's integration treats as a definitive failure.
//! The 12 h notice is not a failure: we use the transient RFC 3463 code `4.4.7` ("delivery
//! time expired"), which no integration reads as final.

use super::kind::Timeout;

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
