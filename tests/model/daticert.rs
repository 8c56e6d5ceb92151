// SPDX-License-Identifier: GPL-3.0-or-later
//! `daticert.xml` reader and writer against real provider output (spec §4, §14) and
//! hostile input (spec §10 item 2).

use crate::samples;

use base64::Engine;
use pec::message::daticert::{DataCert, Daticert, DaticertError, Destinatario};
use pec::message::kind::{Errore, ReceiptType, RecipientType, Tipo};

/// Cuts the base64 `daticert.xml` part out of a stored `.eml` and decodes it.
fn daticert_of(eml: &[u8]) -> Vec<u8> {
    // Some samples carry 8-bit bytes elsewhere; the daticert part itself is base64.
    let text = String::from_utf8_lossy(eml);
    let at = text
        .find("name=\"daticert.xml\"")
        .expect("sample has a daticert.xml part");
    let rest = &text[at..];
    let body = rest
        .find("\n\n")
        .or_else(|| rest.find("\r\n\r\n"))
        .expect("part headers end");
    let mut b64 = String::new();
    for line in rest[body..].lines().skip_while(|l| l.trim().is_empty()) {
        if line.trim().is_empty() || line.starts_with("--") {
            break;
        }
        b64.push_str(line.trim());
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("valid base64")
}

fn read_sample(name: &str) -> Option<Vec<u8>> {
    let dir = samples::samples_dir()?;
    Some(std::fs::read(dir.join(name)).expect("sample readable"))
}

fn aruba_header(
    mittente: &str,
    dest: &str,
    oggetto: &str,
) -> (String, Vec<Destinatario>, String, Option<String>) {
    (
        mittente.to_owned(),
        vec![Destinatario {
            address: dest.to_owned(),
            tipo: RecipientType::Certificato,
        }],
        mittente.to_owned(),
        Some(oggetto.to_owned()),
    )
}

#[test]
fn writer_is_byte_identical_to_aruba_acceptance() {
    let Some(eml) = read_sample("aruba-2014-ricevuta-accettazione.eml") else {
        return;
    };
    let aruba = daticert_of(&eml);
    let (mittente, destinatari, risposte, oggetto) =
        aruba_header("l.battistini@pec.it", "thinkstudio@pec.it", "test private");
    let ours = Daticert {
        tipo: Tipo::Accettazione,
        errore: Errore::Nessuno,
        mittente,
        destinatari,
        risposte,
        oggetto,
        gestore_emittente: "ARUBA PEC S.p.A.".to_owned(),
        data: DataCert {
            zona: "+0100".to_owned(),
            giorno: "14/11/2014".to_owned(),
            ora: "18:26:32".to_owned(),
        },
        identificativo: "opec275.20141114182632.23219.07.1.48@pec.aruba.it".to_owned(),
        msgid: Some(
            "<1415985992.182905912399292.346704098667155-openerp-private@elbati-Vostro-3550>"
                .to_owned(),
        ),
        ricevuta: None,
        consegna: None,
        ricezione: vec![],
        errore_esteso: None,
    };
    assert_eq!(
        ours.to_xml(),
        String::from_utf8(aruba.clone()).expect("utf-8"),
        "writer output differs from Aruba's"
    );
    assert_eq!(Daticert::parse(&aruba).expect("parses"), ours);
}

#[test]
fn writer_reproduces_every_aruba_and_namirial_daticert() {
    for name in [
        "aruba-2014-busta-trasporto-1.eml",
        "aruba-2014-busta-trasporto-2.eml",
        "aruba-2014-ricevuta-accettazione.eml",
        "aruba-2014-ricevuta-avvenuta-consegna-completa.eml",
        "namirial-2024-busta-trasporto-signed-entity.eml",
        "namirial-2024-busta-trasporto-via-mailman.eml",
    ] {
        let Some(eml) = read_sample(name) else {
            return;
        };
        let xml = daticert_of(&eml);
        let d = Daticert::parse(&xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        d.check_for_tipo().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.to_xml().as_bytes(), &xml[..], "{name}");
    }
}

#[test]
fn aruba_samples_field_values() {
    let Some(eml) = read_sample("aruba-2014-busta-trasporto-1.eml") else {
        return;
    };
    let d = Daticert::parse(&daticert_of(&eml)).expect("parses");
    assert_eq!(d.tipo, Tipo::PostaCertificata);
    assert_eq!(d.errore, Errore::Nessuno);
    assert_eq!(d.mittente, "thinkstudio@pec.it");
    assert_eq!(
        d.destinatari,
        vec![Destinatario {
            address: "l.battistini@pec.it".to_owned(),
            tipo: RecipientType::Certificato
        }]
    );
    assert_eq!(d.risposte, "thinkstudio@pec.it");
    assert_eq!(d.oggetto.as_deref(), Some("Re: archetipo"));
    assert_eq!(d.gestore_emittente, "ARUBA PEC S.p.A.");
    assert_eq!(
        d.data,
        DataCert {
            zona: "+0100".to_owned(),
            giorno: "07/11/2014".to_owned(),
            ora: "16:52:00".to_owned()
        }
    );
    assert_eq!(
        d.identificativo,
        "opec275.20141107165200.03048.08.1.17@pec.aruba.it"
    );
    assert_eq!(
        d.msgid.as_deref(),
        Some("<NEOEQO$8B558E13C0664DE7004C1EFB790D1A09@pec.it>")
    );
    assert_eq!(d.ricevuta, Some(ReceiptType::Completa));
    assert_eq!(d.consegna, None);

    let Some(eml) = read_sample("aruba-2014-busta-trasporto-2.eml") else {
        return;
    };
    let d = Daticert::parse(&daticert_of(&eml)).expect("parses");
    assert_eq!(d.oggetto.as_deref(), Some("Re: test"));
    assert_eq!(d.data.giorno, "27/11/2014");
    assert_eq!(d.data.ora, "15:12:16");
    assert_eq!(
        d.msgid.as_deref(),
        Some("<1417097534.920250892639160.712427135196036-openerp-private@master>")
    );

    let Some(eml) = read_sample("aruba-2014-ricevuta-avvenuta-consegna-completa.eml") else {
        return;
    };
    let d = Daticert::parse(&daticert_of(&eml)).expect("parses");
    assert_eq!(d.tipo, Tipo::AvvenutaConsegna);
    assert_eq!(d.ricevuta, Some(ReceiptType::Completa));
    assert_eq!(d.consegna.as_deref(), Some("thinkstudio@pec.it"));
    assert_eq!(
        d.identificativo,
        "opec275.20141114182632.23219.07.1.48@pec.aruba.it"
    );
    assert!(d.ricezione.is_empty());
    assert_eq!(d.errore_esteso, None);
}

#[test]
fn namirial_samples_field_values() {
    for name in [
        "namirial-2024-busta-trasporto-signed-entity.eml",
        "namirial-2024-busta-trasporto-via-mailman.eml",
    ] {
        let Some(eml) = read_sample(name) else {
            return;
        };
        let d = Daticert::parse(&daticert_of(&eml)).expect("parses");
        assert_eq!(d.tipo, Tipo::PostaCertificata, "{name}");
        assert_eq!(d.mittente, "altea.l@namirialpec.it");
        assert_eq!(d.destinatari.len(), 7);
        assert!(d
            .destinatari
            .iter()
            .all(|x| x.tipo == RecipientType::Esterno));
        assert_eq!(d.destinatari[2].address, "osst-users@lists.sourceforge.net");
        assert_eq!(d.destinatari[6].address, "osj12@yahoo.com");
        assert_eq!(d.oggetto.as_deref(), Some("Norah Colly"));
        assert_eq!(d.gestore_emittente, "Namirial S.p.A.");
        assert_eq!(d.data.zona, "+0100");
        assert_eq!(d.data.giorno, "05/12/2024");
        assert_eq!(d.data.ora, "00:02:10");
        assert_eq!(
            d.identificativo,
            "opec21192.20241205000210.24820.46.1.184@sicurezzapostale.it"
        );
        assert_eq!(
            d.msgid.as_deref(),
            Some("<2839ed57-e664-4020-bb69-6a8cb92d05a6@email.android.com>")
        );
        assert_eq!(d.ricevuta, Some(ReceiptType::Completa));
    }
}

#[test]
fn postecom_2012_envelope_daticert() {
    let Some(xml) = read_sample("postecom-2012-daticert.xml") else {
        return;
    };
    let d = Daticert::parse(&xml).expect("parses");
    d.check_for_tipo().expect("fits its tipo");
    assert_eq!(d.tipo, Tipo::PostaCertificata);
    assert_eq!(d.mittente, "12976@pec2.federfarma.it");
    assert_eq!(d.destinatari[0].address, "java@gcc.gnu.org");
    assert_eq!(d.destinatari[0].tipo, RecipientType::Esterno);
    assert_eq!(d.oggetto.as_deref(), Some("Photos"));
    assert_eq!(
        d.gestore_emittente,
        "POSTECOM S.P.A. - GRUPPO POSTE ITALIANE"
    );
    assert_eq!(d.data.zona, "+0200");
    assert_eq!(d.data.giorno, "21/09/2012");
    assert_eq!(d.data.ora, "15:16:38");
    assert_eq!(
        d.identificativo,
        "E82D9D8F.000073B6.E8F90950.8520A581.posta-certificata@postecert.it"
    );
    assert_eq!(d.msgid, None);
    assert_eq!(d.ricevuta, Some(ReceiptType::Completa));
    // Same layout as Aruba's: our writer reproduces it.
    assert_eq!(d.to_xml().as_bytes(), &xml[..]);
}

#[test]
fn telecom_2013_external_doctype_and_stylesheet_parse_offline() {
    let Some(xml) = read_sample("telecom-2013-daticert-avvenuta-consegna.xml") else {
        return;
    };
    // CRLF line ends, <?xml-stylesheet?>, external DOCTYPE: never fetched.
    let d = Daticert::parse(&xml).expect("parses");
    d.check_for_tipo().expect("fits its tipo");
    assert_eq!(d.tipo, Tipo::AvvenutaConsegna);
    assert_eq!(d.errore, Errore::Nessuno);
    assert_eq!(d.mittente, "sit.innovapuglia@pec.rupar.puglia.it");
    let dest: Vec<&str> = d.destinatari.iter().map(|x| x.address.as_str()).collect();
    assert_eq!(
        dest,
        [
            "provincia@pec.provincia.brindisi.it",
            "servizio.assettoterritorio@pec.rupar.puglia.it",
            "ufficioprotocollo@pec.comune.brindisi.it"
        ]
    );
    assert_eq!(
        d.oggetto.as_deref(),
        Some("Autorizzazione Paesaggistica AP74001-66-2012 -  BRINDISI - ABBRACCIAVENTO Angelo")
    );
    assert_eq!(d.gestore_emittente, "I.T. Telecom S.R.L.");
    assert_eq!(d.data.zona, "+0100");
    assert_eq!(d.data.giorno, "07/01/2013");
    assert_eq!(d.data.ora, "17:41:49");
    assert_eq!(
        d.identificativo,
        "201301071741240100.0787.pech@pec.rupar.puglia.it"
    );
    assert_eq!(
        d.msgid.as_deref(),
        Some("<29358849.801357576884181.JavaMail.sit.innovapuglia@pec.rupar.puglia.it>")
    );
    assert_eq!(d.ricevuta, Some(ReceiptType::Completa));
    assert_eq!(
        d.consegna.as_deref(),
        Some("provincia@pec.provincia.brindisi.it")
    );
}

// ----- refusals -----------------------------------------------------------------------

const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="accettazione" errore="nessuno">
    <intestazione>
        <mittente>a@pec.example.it</mittente>
        <destinatari tipo="certificato">b@pec.example.it</destinatari>
        <risposte>a@pec.example.it</risposte>
        <oggetto>prova</oggetto>
    </intestazione>
    <dati>
        <gestore-emittente>Example PEC S.p.A.</gestore-emittente>
        <data zona="+0100">
            <giorno>01/02/2025</giorno>
            <ora>10:11:12</ora>
        </data>
        <identificativo>opec1.20250201101112.1.1.x@pec.example.it</identificativo>
        <msgid>&lt;abc@client&gt;</msgid>
    </dati>
</postacert>
"#;

fn refused(xml: &str) -> DaticertError {
    match Daticert::parse(xml.as_bytes()) {
        Ok(d) => panic!("accepted: {d:?}\n{xml}"),
        Err(e) => e,
    }
}

fn assert_reason(e: &DaticertError, words: &[&str]) {
    let s = e.to_string();
    assert!(s.starts_with("daticert: "), "{s}");
    for w in words {
        assert!(s.contains(w), "{s:?} does not mention {w:?}");
    }
}

#[test]
fn good_document_parses() {
    let d = Daticert::parse(GOOD.as_bytes()).expect("parses");
    d.check_for_tipo().expect("fits");
    assert_eq!(d.msgid.as_deref(), Some("<abc@client>"));
}

#[test]
fn refuses_xxe_declaration_without_use() {
    let xml = GOOD.replacen(
        "<postacert",
        "<!DOCTYPE postacert [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>\n<postacert",
        1,
    );
    let e = refused(&xml);
    assert_eq!(e, DaticertError::EntityDeclaration);
    assert_reason(&e, &["entit", "refused"]);
}

#[test]
fn refuses_xxe_declaration_and_use() {
    let xml = GOOD
        .replacen(
            "<postacert",
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>\n<postacert",
            1,
        )
        .replace("prova", "&e;");
    let e = refused(&xml);
    assert_reason(&e, &["entit"]);
}

#[test]
fn refuses_undefined_entity_reference() {
    let e = refused(&GOOD.replace("prova", "x &e; y"));
    assert_eq!(
        e,
        DaticertError::UndefinedEntity {
            name: "e".to_owned(),
            element: "oggetto".to_owned()
        }
    );
    assert_reason(&e, &["undefined entity", "&e;", "<oggetto>"]);
    let e = refused(&GOOD.replace("tipo=\"certificato\"", "tipo=\"&e;\""));
    assert_reason(&e, &["undefined entity", "destinatari"]);
}

#[test]
fn refuses_billion_laughs() {
    let mut dtd = String::from("<!DOCTYPE postacert [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>\n");
    let xml = GOOD
        .replacen("<postacert", &format!("{dtd}<postacert"), 1)
        .replace("prova", "&lol9;");
    let e = refused(&xml);
    assert_eq!(e, DaticertError::EntityDeclaration);
    assert_reason(&e, &["entit"]);
}

#[test]
fn refuses_wrong_order() {
    let xml = GOOD.replace(
        "<msgid>&lt;abc@client&gt;</msgid>",
        "<ricezione>x@pec.example.it</ricezione>\n<consegna>y@pec.example.it</consegna>",
    );
    let e = refused(&xml);
    assert_reason(
        &e,
        &["daticert: element <consegna> after <ricezione>: wrong order"],
    );
    // In <intestazione> too.
    let xml = GOOD.replace(
        "<risposte>a@pec.example.it</risposte>\n        <oggetto>prova</oggetto>",
        "<oggetto>prova</oggetto><risposte>a@pec.example.it</risposte>",
    );
    assert_reason(
        &refused(&xml),
        &["<risposte> after <oggetto>", "wrong order"],
    );
}

#[test]
fn refuses_unknown_element_and_attribute() {
    let e = refused(&GOOD.replace(
        "<oggetto>prova</oggetto>",
        "<oggetto>prova</oggetto><cc>x</cc>",
    ));
    assert_reason(&e, &["<cc>", "<intestazione>", "unknown element"]);
    let e = refused(&GOOD.replace("<data zona", "<data fuso=\"x\" zona"));
    assert_reason(&e, &["\"fuso\"", "<data>", "unknown attribute"]);
}

#[test]
fn refuses_missing_identificativo() {
    let xml = GOOD.replace(
        "<identificativo>opec1.20250201101112.1.1.x@pec.example.it</identificativo>",
        "",
    );
    let e = refused(&xml);
    assert_eq!(
        e,
        DaticertError::MissingElement {
            element: "identificativo".to_owned(),
            parent: "dati".to_owned()
        }
    );
    assert_reason(&e, &["<identificativo>", "missing"]);
}

#[test]
fn refuses_bad_tipo() {
    let e = refused(&GOOD.replace("tipo=\"accettazione\"", "tipo=\"normale\""));
    assert_reason(&e, &["\"tipo\"", "<postacert>", "unknown value", "normale"]);
    let e = refused(&GOOD.replace("errore=\"nessuno\"", "errore=\"Nessuno\""));
    assert_reason(&e, &["\"errore\"", "unknown value"]);
}

#[test]
fn refuses_truncated_document() {
    for cut in [
        GOOD.len() / 2,
        GOOD.find("</dati>").unwrap_or(0),
        GOOD.len() - 3,
    ] {
        let e = refused(&GOOD[..cut]);
        assert_reason(&e, &["truncated"]);
    }
}

#[test]
fn refuses_two_mib_document() {
    let padding = format!("<!--{}-->", "x".repeat(2 * 1024 * 1024));
    let xml = GOOD.replacen("<postacert", &format!("{padding}\n<postacert"), 1);
    let e = refused(&xml);
    assert!(matches!(e, DaticertError::TooLarge { .. }));
    assert_reason(&e, &["too large", "1048576"]);
}
