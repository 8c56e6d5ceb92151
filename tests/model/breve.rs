// SPDX-License-Identifier: GPL-3.0-or-later
//! Ricevuta breve hashing (spec §3.6) on constructed originals, a real Aruba original and
//! hostile input.

use crate::samples;

use pec::message::breve::{breve_original, Breve, BreveError, HashedPart, MAX_MIME_DEPTH};
use sha1::{Digest, Sha1};

/// Turns a readable LF fixture into the CRLF wire form.
fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

/// Bare LF to CRLF; existing CRLF untouched (some stored samples already have CRLF).
fn to_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 20);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// The transmitted body bytes of the part whose header block contains `marker`: from after
/// the empty line ending its headers to before the CRLF preceding `--boundary`.
fn part_body<'a>(msg: &'a [u8], marker: &str, boundary: &str) -> &'a [u8] {
    let at = find(msg, marker.as_bytes());
    let start = at + find(&msg[at..], b"\r\n\r\n") + 4;
    let end = start + find(&msg[start..], format!("\r\n--{boundary}").as_bytes());
    &msg[start..end]
}

fn breve(msg: &[u8]) -> Breve {
    breve_original(msg).unwrap_or_else(|e| panic!("{e}"))
}

fn text(b: &Breve) -> String {
    String::from_utf8(b.message.clone()).expect("utf-8 output")
}

const MIXED: &str = "Return-Path: <mario.rossi@pec.example.it>
From: Mario Rossi <mario.rossi@pec.example.it>
To: anna.bianchi@pec.example.org
Subject: =?UTF-8?Q?Fattura_e_nota?=
Message-ID: <abc123@client.example>
X-TipoRicevuta: breve
MIME-Version: 1.0
Content-Type: multipart/mixed;
 boundary=\"=_XYZ_01\"

This is a multi-part message in MIME format.
--=_XYZ_01
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Gentile Anna,
in allegato la fattura. Cos=C3=AC va bene?
--=_XYZ_01
Content-Type: application/pdf; name=\"fattura 12.pdf\"
Content-Disposition: attachment; filename=\"fattura 12.pdf\"
Content-Transfer-Encoding: base64
Content-ID: <part1@client.example>

JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl
Y29kZT4+CnN0cmVhbQp4nDPQM1Qo5ypUMFAw0DMwslAwtTTVszA3UShKVQhXyOMqBAD3TgXXCmVu
ZHN0cmVhbQplbmRvYmoK
--=_XYZ_01
Content-Type: text/plain; charset=iso-8859-1; name=\"nota.txt\"
Content-Transfer-Encoding: quoted-printable
Content-Disposition: inline

perch=E9 la nota =
=E8 lunga
--=_XYZ_01--

epilogue line
";

#[test]
fn text_body_and_two_attachments() {
    let msg = crlf(MIXED);
    let b = breve(&msg);
    let pdf = part_body(&msg, "name=\"fattura 12.pdf\"", "=_XYZ_01");
    let nota = part_body(&msg, "name=\"nota.txt\"", "=_XYZ_01");
    assert!(pdf.starts_with(b"JVBERi0x") && pdf.ends_with(b"ZHN0cmVhbQplbmRvYmoK"));
    assert!(nota.starts_with(b"perch=E9") && nota.ends_with(b"=E8 lunga"));
    assert_eq!(
        b.hashes,
        vec![
            HashedPart {
                file_name: "fattura 12.pdf".to_owned(),
                sha1_hex: sha1_hex(pdf)
            },
            HashedPart {
                file_name: "nota.txt".to_owned(),
                sha1_hex: sha1_hex(nota)
            },
        ]
    );
    let out = text(&b);
    let expected = MIXED
        .replace(
            "Content-Type: application/pdf; name=\"fattura 12.pdf\"
Content-Disposition: attachment; filename=\"fattura 12.pdf\"
Content-Transfer-Encoding: base64
Content-ID: <part1@client.example>

JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl
Y29kZT4+CnN0cmVhbQp4nDPQM1Qo5ypUMFAw0DMwslAwtTTVszA3UShKVQhXyOMqBAD3TgXXCmVu
ZHN0cmVhbQplbmRvYmoK",
            &format!(
                "Content-ID: <part1@client.example>
Content-Type: text/plain; charset=us-ascii; name=\"fattura 12.pdf.hash\"
Content-Disposition: attachment; filename=\"fattura 12.pdf.hash\"
Content-Transfer-Encoding: 7bit

{}",
                b.hashes[0].sha1_hex
            ),
        )
        .replace(
            "Content-Type: text/plain; charset=iso-8859-1; name=\"nota.txt\"
Content-Transfer-Encoding: quoted-printable
Content-Disposition: inline

perch=E9 la nota =
=E8 lunga",
            &format!(
                "Content-Type: text/plain; charset=us-ascii; name=\"nota.txt.hash\"
Content-Disposition: inline; filename=\"nota.txt.hash\"
Content-Transfer-Encoding: 7bit

{}",
                b.hashes[1].sha1_hex
            ),
        );
    assert_eq!(out, String::from_utf8(crlf(&expected)).expect("utf-8"));
    // The unnamed text part and the top-level headers are byte-identical.
    let body_part = part_body(&msg, "charset=utf-8", "=_XYZ_01");
    assert_eq!(
        part_body(&b.message, "charset=utf-8", "=_XYZ_01"),
        body_part
    );
    let head_end = find(&msg, b"\r\n\r\n");
    assert_eq!(&b.message[..head_end], &msg[..head_end]);
    for h in &b.hashes {
        assert_eq!(h.sha1_hex.len(), 40);
        assert!(h
            .sha1_hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }
}

#[test]
fn bare_lf_input_gives_the_same_hashes_and_keeps_lf() {
    let crlf_b = breve(&crlf(MIXED));
    let lf_b = breve(MIXED.as_bytes());
    assert_eq!(lf_b.hashes, crlf_b.hashes);
    assert!(!lf_b.message.contains(&b'\r'));
    assert_eq!(
        String::from_utf8(lf_b.message)
            .expect("utf-8")
            .replace('\n', "\r\n"),
        text(&crlf_b)
    );
}

#[test]
fn nested_mixed_inside_alternative() {
    let msg = crlf(
        "From: a@pec.example.it
Content-Type: multipart/alternative; boundary=\"outer\"

--outer
Content-Type: text/plain

solo testo
--outer
Content-Type: multipart/mixed; boundary=\"inner\"

inner preamble
--inner
Content-Type: text/html

<p>ciao</p>
--inner
Content-Type: image/png; name=\"logo.png\"
Content-Transfer-Encoding: base64

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk
--inner--
inner epilogue
--outer--
",
    );
    let b = breve(&msg);
    let png = part_body(&msg, "name=\"logo.png\"", "inner");
    assert_eq!(
        b.hashes,
        vec![HashedPart {
            file_name: "logo.png".to_owned(),
            sha1_hex: sha1_hex(png)
        }]
    );
    let out = text(&b);
    assert!(out.contains(&format!(
        "--inner\r\nContent-Type: text/plain; charset=us-ascii; name=\"logo.png.hash\"\r\n\
         Content-Disposition: attachment; filename=\"logo.png.hash\"\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n{}\r\n--inner--\r\ninner epilogue\r\n--outer--\r\n",
        sha1_hex(png)
    )));
    let keep = find(&msg, b"--inner\r\nContent-Type: image/png");
    assert_eq!(&b.message[..keep], &msg[..keep]);
}

#[test]
fn multipart_signed_original_keeps_its_signature() {
    let msg = crlf(
        "From: a@pec.example.it
MIME-Version: 1.0
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sig\"

This is an S/MIME signed message
--sig
Content-Type: multipart/mixed; boundary=\"mix\"

--mix
Content-Type: text/plain

firmato
--mix
Content-Type: application/octet-stream
Content-Disposition: attachment; filename=\"dati.bin\"
Content-Transfer-Encoding: base64

AAECAwQFBgcICQ==
--mix--
--sig
Content-Type: application/pkcs7-signature; name=\"smime.p7s\"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename=\"smime.p7s\"

MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCAMIIC
--sig--
",
    );
    let b = breve(&msg);
    let bin = part_body(&msg, "filename=\"dati.bin\"", "mix");
    assert_eq!(
        b.hashes,
        vec![HashedPart {
            file_name: "dati.bin".to_owned(),
            sha1_hex: sha1_hex(bin)
        }]
    );
    let sig_at = find(
        &msg,
        b"\r\n--sig\r\nContent-Type: application/pkcs7-signature",
    );
    let sig_part = &msg[sig_at..];
    assert!(b.message.ends_with(sig_part), "signature part changed");
    assert!(!text(&b).contains("smime.p7s.hash"));
}

#[test]
fn opaque_pkcs7_mime_is_unchanged() {
    for ct in ["application/pkcs7-mime", "application/x-pkcs7-mime"] {
        let msg = crlf(&format!(
            "From: a@pec.example.it
MIME-Version: 1.0
Content-Type: {ct}; smime-type=signed-data; name=\"smime.p7m\"
Content-Disposition: attachment; filename=\"smime.p7m\"
Content-Transfer-Encoding: base64

MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABIIB
"
        ));
        let b = breve(&msg);
        assert_eq!(b.message, msg);
        assert!(b.hashes.is_empty());
    }
}

#[test]
fn named_message_rfc822_is_replaced_whole() {
    let msg = crlf(
        "From: a@pec.example.it
Content-Type: multipart/mixed; boundary=\"b1\"

--b1
Content-Type: text/plain

vedi inoltro
--b1
Content-Type: message/rfc822; name=\"inoltro.eml\"
Content-Disposition: attachment; filename=\"inoltro.eml\"

From: c@example.com
Subject: vecchio
Content-Type: multipart/mixed; boundary=\"b2\"

--b2
Content-Type: text/plain

dentro
--b2
Content-Type: application/zip; name=\"dentro.zip\"
Content-Transfer-Encoding: base64

UEsDBBQAAAAIAA==
--b2--
--b1--
",
    );
    let b = breve(&msg);
    let inner = part_body(&msg, "name=\"inoltro.eml\"", "b1");
    assert!(inner.starts_with(b"From: c@example.com") && inner.ends_with(b"--b2--"));
    assert_eq!(
        b.hashes,
        vec![HashedPart {
            file_name: "inoltro.eml".to_owned(),
            sha1_hex: sha1_hex(inner)
        }]
    );
    let out = text(&b);
    assert!(!out.contains("dentro.zip"));
    assert!(out.contains("filename=\"inoltro.eml.hash\""));
}

#[test]
fn rfc2231_filename() {
    let msg = crlf(
        "From: a@pec.example.it
Content-Type: multipart/mixed; boundary=\"b\"

--b
Content-Type: application/pdf
Content-Disposition: attachment;
 filename*=UTF-8''fattura%20n%C2%B01.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--b
Content-Type: application/pdf
Content-Disposition: attachment; filename*0*=utf-8''lung%C3%A0; filename*1=\"_due.pdf\"

JVBERi0xLjUK
--b--
",
    );
    let b = breve(&msg);
    let names: Vec<&str> = b.hashes.iter().map(|h| h.file_name.as_str()).collect();
    assert_eq!(names, ["fattura n°1.pdf", "lungà_due.pdf"]);
    assert_eq!(b.hashes[0].sha1_hex, sha1_hex(b"JVBERi0xLjQK"));
    assert_eq!(b.hashes[1].sha1_hex, sha1_hex(b"JVBERi0xLjUK"));
    let out = text(&b);
    assert!(out.contains("name*=utf-8''fattura%20n%C2%B01.pdf.hash"));
    assert!(out.contains("filename*=utf-8''fattura%20n%C2%B01.pdf.hash"));
    assert!(out.contains("filename*=utf-8''lung%C3%A0_due.pdf.hash"));
    assert!(out.is_ascii());
}

#[test]
fn single_part_named_message() {
    let msg = crlf(
        "From: a@pec.example.it
To: b@pec.example.it
Content-Type: application/pdf; name=\"solo.pdf\"
Content-Transfer-Encoding: base64
Subject: solo allegato
Content-Disposition: attachment; filename=\"solo.pdf\"
X-Client: prova

JVBERi0xLjQKJcOkw7zDtsOf
Cg==
",
    );
    let b = breve(&msg);
    let hash = sha1_hex(b"JVBERi0xLjQKJcOkw7zDtsOf\r\nCg==");
    assert_eq!(
        b.hashes,
        vec![HashedPart {
            file_name: "solo.pdf".to_owned(),
            sha1_hex: hash.clone()
        }]
    );
    assert_eq!(
        text(&b),
        String::from_utf8(crlf(&format!(
            "From: a@pec.example.it
To: b@pec.example.it
Subject: solo allegato
X-Client: prova
Content-Type: text/plain; charset=us-ascii; name=\"solo.pdf.hash\"
Content-Disposition: attachment; filename=\"solo.pdf.hash\"
Content-Transfer-Encoding: 7bit

{hash}
"
        )))
        .expect("utf-8")
    );
}

#[test]
fn boundary_inside_a_line_is_not_a_delimiter() {
    let msg = crlf(
        "Content-Type: multipart/mixed; boundary=\"b\"

--b
Content-Type: text/plain; name=\"a.txt\"

riga uno --b non delimita
--b riga due
--b--
",
    );
    let b = breve(&msg);
    let body = b"riga uno --b non delimita\r\n--b riga due";
    assert_eq!(b.hashes.len(), 1);
    assert_eq!(b.hashes[0].sha1_hex, sha1_hex(body));
}

#[test]
fn unterminated_multipart_and_missing_boundary_are_tolerated() {
    let msg = crlf(
        "Content-Type: multipart/mixed; boundary=\"b\"

--b
Content-Type: text/plain

testo
--b
Content-Type: application/pdf; name=\"x.pdf\"

JVBERi0x
",
    );
    let b = breve(&msg);
    assert_eq!(b.hashes.len(), 1);
    assert_eq!(b.hashes[0].sha1_hex, sha1_hex(b"JVBERi0x"));

    let msg = crlf(
        "Content-Type: multipart/mixed

--b
Content-Type: application/pdf; name=\"x.pdf\"

JVBERi0x
--b--
",
    );
    let b = breve(&msg);
    assert_eq!(b.message, msg);
    assert!(b.hashes.is_empty());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let mut msg = String::new();
    for i in 0..10_000 {
        msg.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    msg.push_str("Content-Type: text/plain; name=\"x\"\r\n\r\nx\r\n");
    assert_eq!(
        breve_original(msg.as_bytes()),
        Err(BreveError::TooDeep {
            max: MAX_MIME_DEPTH
        })
    );
    // Exactly at the limit still works.
    let mut ok = String::new();
    for i in 0..MAX_MIME_DEPTH {
        ok.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    ok.push_str("Content-Type: text/plain; name=\"x\"\r\n\r\nx\r\n");
    assert_eq!(breve(ok.as_bytes()).hashes.len(), 1);
}

#[test]
fn hostile_inputs_never_panic() {
    let mut inputs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\r\n".to_vec(),
        b"\n\n\n".to_vec(),
        b"\r".to_vec(),
        b"no colon at all".to_vec(),
        b"Content-Type: multipart/mixed; boundary=".to_vec(),
        b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n----\r\n".to_vec(),
        b"Content-Type: multipart/mixed; boundary=\"b\r\n\r\n--b\r\n".to_vec(),
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b".to_vec(),
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b--".to_vec(),
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n--b--\r\n".to_vec(),
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; name=\r\n".to_vec(),
        b"Content-Type: (((; name*0*=''%; name*1*=%zz; name*x=1\r\n\r\nbody".to_vec(),
        b"Content-Type: a/b; name*=''\r\nContent-Disposition: ;;;=;\"\r\n\r\n".to_vec(),
        b"Content-Type: a/b; name*99999999999999999999=x\r\n\r\nz".to_vec(),
        b"Content-Disposition: attachment; filename=\"=?x?q?=ZZ?=\"\r\n\r\n\n".to_vec(),
        b"Content-Type: message/rfc822; name=x\r\n\r\n".to_vec(),
        b"Content-Type: multipart/signed; boundary=s\r\n\r\n--s\r\n--s--".to_vec(),
        b"Content-Type: application/pkcs7-mime\r\n".to_vec(),
        b" folded first line\r\n\r\n".to_vec(),
        (0u8..=255).cycle().take(5000).collect(),
    ];
    // Random-looking mixes of MIME tokens.
    let tokens: [&[u8]; 9] = [
        b"--b",
        b"\r\n",
        b"\n",
        b"Content-Type: multipart/mixed; boundary=b",
        b"Content-Type: text/plain; name=\"q\"",
        b"--b--",
        b"\r\n\r\n",
        b"Content-Disposition: attachment; filename*0*=utf-8''%C3",
        b"x",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..500 {
        let mut m = Vec::new();
        for _ in 0..40 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            m.extend_from_slice(tokens[(seed % tokens.len() as u64) as usize]);
        }
        inputs.push(m);
    }
    for input in &inputs {
        if let Ok(b) = breve_original(input) {
            for h in &b.hashes {
                assert_eq!(h.sha1_hex.len(), 40);
            }
        }
    }
    assert_eq!(breve(b"").message, b"");
}

/// Cuts the `postacert.eml` body (the carried original) out of a stored envelope: from
/// after the part headers to before the line break preceding the next delimiter.
fn carried_original(envelope: &[u8]) -> Vec<u8> {
    let at = find(envelope, b"name=\"postacert.eml\"");
    let line_start = envelope[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    // The delimiter line just before the part's headers.
    let before = &envelope[..line_start.saturating_sub(1)];
    let delim_start = before
        .windows(3)
        .rposition(|w| w == b"\n--")
        .map(|p| p + 1)
        .expect("delimiter before postacert.eml");
    let delim_end = delim_start + find(&envelope[delim_start..], b"\n");
    let delimiter = &envelope[delim_start..delim_end];
    let start = at + find(&envelope[at..], b"\n\n") + 2;
    let mut needle = b"\n".to_vec();
    needle.extend_from_slice(delimiter);
    let end = start + find(&envelope[start..], &needle);
    // Stored with LF; in transit it is CRLF.
    to_crlf(&envelope[start..end])
}

#[test]
fn real_aruba_original_goes_through() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let env = std::fs::read(dir.join("aruba-2014-busta-trasporto-1.eml")).expect("sample");
    let original = carried_original(&env);
    assert!(original.starts_with(b"Received: from pec.it"));
    assert!(find(&original, b"multipart/alternative") > 0);
    let b = breve(&original);
    // Text and HTML alternatives only: nothing named, nothing changes.
    assert!(b.hashes.is_empty());
    assert_eq!(b.message, original);
}

#[test]
fn real_aruba_envelope_as_original_hashes_its_named_parts() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let env = std::fs::read(dir.join("aruba-2014-ricevuta-avvenuta-consegna-completa.eml"))
        .expect("sample");
    let msg = to_crlf(&env);
    let b = breve(&msg);
    // multipart/signed: daticert.xml and postacert.eml are hashed, smime.p7s is not.
    let names: Vec<&str> = b.hashes.iter().map(|h| h.file_name.as_str()).collect();
    assert_eq!(names, ["daticert.xml", "postacert.eml"]);
    let daticert = part_body(
        &msg,
        "name=\"daticert.xml\"",
        "----------=_1415985992-23219-15",
    );
    assert!(daticert.starts_with(b"PD94bWwg"));
    assert_eq!(b.hashes[0].sha1_hex, sha1_hex(daticert));
    let sig = find(&msg, b"Content-Type: application/x-pkcs7-signature");
    let tail = &msg[sig..];
    assert!(b.message.ends_with(tail));
}
