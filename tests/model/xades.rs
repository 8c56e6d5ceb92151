// SPDX-License-Identifier: GPL-3.0-or-later
//! XML-DSig and XAdES of ERDS evidences (issue 20): every evidence of the REM kit verifies
//! as XAdES-B-T and fails once altered; our canonical bytes equal xmlsec1's; what we sign
//! (B-B then B-T with the test TSA) verifies with our code and with xmlsec1, for RSA and
//! ECDSA keys; a TSA that is down, slow or lying yields an error and no evidence.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use pec::crypto::testing::{self, TestKey, TestPki};
use pec::crypto::tsa::TsaSettings;
use pec::crypto::xmldsig::{self, XmlDsigError};
use pec::crypto::{DigestAlg, PemSigner, Signer};
use pec::message::time::Instant;
use pec::rem::xades::{self, XadesError};

use crate::samples::rem_kit_dir;
use crate::tsa;

/// SHA-256 fingerprints of the two self-signed "root-ca, Nowina Solutions, PKI-TEST" roots
/// the kit's time-stamp tokens chain to (the AgID flow's and the ETSI scenarios'). The kit's
/// own `TSA.NOWNTSTS202004.pem` is a third, different key that anchors none of them.
const TSA_ROOTS: [&str; 2] = [
    "604a8fb227777c40b8c72b54d435a81f3f7d61d1c6612b543318af7b59a39c78",
    "6a44637636d83b9806ce1c8c6d7d070e51f66364c257814ef65b54250238ff4d",
];

/// Every `.eml` under `dir`, recursively, sorted.
fn emls(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "eml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn collect_evidences(message: &mail_parser::Message<'_>, out: &mut Vec<Vec<u8>>) {
    for part in &message.parts {
        let tagged = part.headers.iter().any(|h| {
            h.name().eq_ignore_ascii_case("REM-Section-Type")
                && h.value()
                    .as_text()
                    .is_some_and(|v| v.trim() == "rem_message/xml_evidence")
        });
        if tagged {
            out.push(part.contents().to_vec());
        }
        if let Some(inner) = part.message() {
            collect_evidences(inner, out);
        }
    }
}

/// `(file, evidence XML)` of every evidence part of every kit message.
fn kit_evidences(kit: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for path in emls(kit) {
        let raw = std::fs::read(&path).unwrap();
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let mut found = Vec::new();
        collect_evidences(&message, &mut found);
        out.extend(found.into_iter().map(|e| (path.clone(), e)));
    }
    assert!(out.len() >= 200, "{} evidences in the kit", out.len());
    out
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The EncapsulatedTimeStamp of an evidence, decoded.
fn token_of(xml: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::str::from_utf8(xml).unwrap();
    let start = text.find("EncapsulatedTimeStamp").unwrap();
    let from = start + text[start..].find('>').unwrap() + 1;
    let to = from + text[from..].find('<').unwrap();
    let b64: String = text[from..to].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// The TSA trust anchors of the kit: the self-signed certificates carried by its tokens
/// whose fingerprints are pinned in [`TSA_ROOTS`], one file each (`dir/tsa-root-N.pem`):
/// both are named "root-ca" and the TSA certificates carry no authority key identifier,
/// so OpenSSL would pick the first of a file holding both, and fail on the other's tokens.
fn kit_tsa_anchors(evidences: &[(PathBuf, Vec<u8>)], dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut found = Vec::new();
    for (_, xml) in evidences {
        let p7 = openssl::pkcs7::Pkcs7::from_der(&token_of(xml)).unwrap();
        let certs = p7.signed().and_then(|s| s.certificates()).unwrap();
        for cert in certs {
            let fp = sha256_hex(&cert.to_der().unwrap());
            if TSA_ROOTS.contains(&fp.as_str()) && !found.contains(&fp) {
                let path = dir.join(format!("tsa-root-{}.pem", found.len()));
                std::fs::write(&path, cert.to_pem().unwrap()).unwrap();
                files.push(path);
                found.push(fp);
            }
        }
    }
    assert_eq!(
        found.len(),
        2,
        "both pinned TSA roots are in the kit's tokens"
    );
    files
}

/// The kit's REM PKI roots and intermediates (AgID and ETSI).
fn kit_pki_store(kit: &Path) -> openssl::x509::store::X509Store {
    let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
    for path in [
        "agid-rem-policy-it/certificates/REM-ROOT-CA.crt",
        "etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES/REM-ROOT-CA.crt",
    ] {
        let pem = std::fs::read(kit.join(path)).unwrap();
        store
            .add_cert(openssl::x509::X509::from_pem(&pem).unwrap())
            .unwrap();
    }
    store.build()
}

fn kit_intermediates(kit: &Path) -> openssl::stack::Stack<openssl::x509::X509> {
    let mut stack = openssl::stack::Stack::new().unwrap();
    for path in [
        "agid-rem-policy-it/certificates/REM-POLICY-IT-INTERMEDIATE-CERTIFICATE.crt",
        "etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES/REM-INTERMEDIATE-CA.crt",
    ] {
        let pem = std::fs::read(kit.join(path)).unwrap();
        stack
            .push(openssl::x509::X509::from_pem(&pem).unwrap())
            .unwrap();
    }
    stack
}

/// Whether `cert_der` chains to the kit's REM roots at `at` (what the caller of
/// `xades::verify` decides with its Trusted List).
fn chains_at(kit: &Path, cert_der: &[u8], at: Instant) -> bool {
    let cert = openssl::x509::X509::from_der(cert_der).unwrap();
    let store = {
        let mut b = openssl::x509::store::X509StoreBuilder::new().unwrap();
        let mut param = openssl::x509::verify::X509VerifyParam::new().unwrap();
        param.set_time(at.unix() as _);
        b.set_param(&param).unwrap();
        for c in kit_pki_store(kit).all_certificates() {
            b.add_cert(c).unwrap();
        }
        b.build()
    };
    let chain = kit_intermediates(kit);
    let mut ctx = openssl::x509::X509StoreContext::new().unwrap();
    ctx.init(&store, &cert, &chain, |c| c.verify_cert())
        .unwrap()
}

/// `xml` with one character of the text after `marker` changed.
fn alter_after(xml: &[u8], marker: &str) -> Vec<u8> {
    let text = std::str::from_utf8(xml).unwrap();
    let at = text.find(marker).unwrap_or_else(|| panic!("no {marker}"));
    let from = at + text[at..].find('>').unwrap() + 1;
    let mut out = xml.to_vec();
    out[from] = if out[from] == b'1' { b'2' } else { b'1' };
    out
}

#[test]
fn every_kit_evidence_verifies_as_xades_b_t_and_fails_once_altered() {
    let Some(kit) = rem_kit_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let evidences = kit_evidences(&kit);
    let anchors = kit_tsa_anchors(&evidences, dir.path());
    for (path, xml) in &evidences {
        let name = path.display();
        // The token chains to one of the two pinned roots (and so not to the other).
        let results: Vec<_> = anchors.iter().map(|a| xades::verify(xml, a)).collect();
        let (index, v) = results
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.as_ref().ok().map(|v| (i, v.clone())))
            .unwrap_or_else(|| panic!("{name}: {:?}", results[0]));
        let anchor = &anchors[index];
        assert!(
            chains_at(&kit, &v.signer, v.signing_time),
            "{name}: the signer chains to the kit's REM PKI at the signing time"
        );
        assert!(v.certificates.contains(&v.signer));
        assert!(
            v.time_stamp.gen_time.unix() >= v.signing_time.unix(),
            "{name}"
        );
        assert_eq!(v.time_stamp.hash_oid, "2.16.840.1.101.3.4.2.1");

        // One character of the evidence's content, of the signed properties, of the
        // time-stamped signature value: each fails.
        let content = alter_after(xml, "EvidenceIdentifier>");
        assert!(
            matches!(
                xades::verify(&content, anchor),
                Err(XadesError::Dsig(XmlDsigError::Digest(_)))
            ),
            "{name}: altered content"
        );
        let time = alter_after(xml, "<xades:SigningTime>");
        assert!(
            matches!(
                xades::verify(&time, anchor),
                Err(XadesError::Dsig(XmlDsigError::Digest(_)))
            ),
            "{name}: altered signing time"
        );
        let stamp = alter_after(xml, "<xades:EncapsulatedTimeStamp");
        assert!(
            xades::verify(&stamp, anchor).is_err(),
            "{name}: altered time stamp"
        );
    }
}

#[test]
fn the_kit_tsa_certificate_anchors_no_kit_token() {
    // Recorded finding: TSA.NOWNTSTS202004.pem (Nowina root-ca 2020-03..2022-03) is not
    // the key that issued the kit's "good-tsa" certificates.
    let Some(kit) = rem_kit_dir() else { return };
    let pem =
        kit.join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES/TSA.NOWNTSTS202004.pem");
    let evidences = kit_evidences(&kit);
    for (path, xml) in evidences.iter().step_by(50) {
        match xades::verify(xml, &pem) {
            Err(XadesError::Tsa(_)) => {}
            other => panic!("{}: {other:?}", path.display()),
        }
    }
}

/// The buffers xmlsec1 prints between `== {what} - start buffer:\n` and
/// `\n== {what} - end buffer`.
fn xmlsec1_buffers(out: &str, what: &str) -> Vec<Vec<u8>> {
    let start = format!("== {what} - start buffer:\n");
    let end = format!("\n== {what} - end buffer");
    let mut found = Vec::new();
    let mut rest = out;
    while let Some(s) = rest.find(&start) {
        let body = &rest[s + start.len()..];
        let e = body.find(&end).unwrap();
        found.push(body.as_bytes()[..e].to_vec());
        rest = &body[e..];
    }
    found
}

fn xmlsec1_available() -> bool {
    let ok = Command::new("xmlsec1").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIPPED: xmlsec1 not installed (Debian package xmlsec1)");
    }
    ok
}

#[test]
fn canonical_bytes_equal_xmlsec1_on_every_kit_evidence() {
    let Some(kit) = rem_kit_dir() else { return };
    if !xmlsec1_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evidence.xml");
    for (path, xml) in kit_evidences(&kit) {
        std::fs::write(&file, &xml).unwrap();
        // Verified without a key check: only the buffers matter here.
        let out = Command::new("xmlsec1")
            .args(["--verify", "--store-references", "--store-signatures"])
            .args(["--insecure", "--id-attr:Id", "SignedProperties"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{}: xmlsec1 failed", path.display());
        let ours = xmldsig::pre_digest(&xml).unwrap();
        assert_eq!(
            xmlsec1_buffers(&stdout, "PreDigest data"),
            ours.references,
            "{}",
            path.display()
        );
        assert_eq!(
            xmlsec1_buffers(&stdout, "PreSigned data"),
            vec![ours.signed_info],
            "{}",
            path.display()
        );
    }
}

// ---- signing ----

struct Env {
    _dir: tempfile::TempDir,
    pki: TestPki,
    dir: PathBuf,
    _tsa: tsa::TsaProcess,
    url: String,
}

/// The test PKI, an RSA-3072 and an ECDSA P-256 leaf, and tsa.py over HTTP, once per test
/// binary. It always answers well: the test that plays the TSA's faults starts its own
/// (the tests run in parallel and share this one).
fn env() -> &'static Env {
    static ENV: OnceLock<&'static Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let pki = testing::make_test_pki(&dir.join("pki")).unwrap();
        testing::issue_test_leaf(&pki, "rem-rsa3072", TestKey::Rsa3072, None).unwrap();
        testing::issue_test_leaf(&pki, "rem-p256", TestKey::EcP256, None).unwrap();
        let (tsa, url) = tsa::start(&dir.join("tsa"), &pki.dir, None);
        Box::leak(Box::new(Env {
            _dir: tmp,
            pki,
            dir,
            _tsa: tsa,
            url,
        }))
    })
}

fn tsa_settings(url: &str) -> TsaSettings {
    let e = env();
    TsaSettings {
        ca_file: Some(e.pki.ca_cert.clone()),
        policy: Some("1.3.6.1.4.1.99999.1.1".into()),
        ..TsaSettings::new(url, Duration::from_secs(20))
    }
}

fn pem_signer(name: &str) -> PemSigner {
    let e = env();
    PemSigner::from_files(
        &e.pki.dir.join(format!("{name}.key")),
        &e.pki.dir.join(format!("{name}.pem")),
        Some(&e.pki.chain),
        DigestAlg::Sha256,
    )
    .unwrap()
}

/// An unsigned evidence in the kit's shape (the evidence writer belongs to rem::evidence).
const UNSIGNED: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>",
    "<tns:Evidence xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" ",
    "xmlns:tns=\"http://uri.etsi.org/19522/v1#\" version=\"EN319522v1.1.1\">\n",
    "    <tns:EvidenceIdentifier>1.2.3@pec.example.it</tns:EvidenceIdentifier>\n",
    "    <tns:ERDSEventId>http://uri.etsi.org/19522/Event/SubmissionAcceptance</tns:ERDSEventId>\n",
    "    <EventTime>2026-12-06T12:00:00Z</EventTime>\n",
    "    <!-- a comment, outside the digest -->\n",
    "    <tns:UserContentInfo><AppLayerIdentifier>&lt;a@b&gt;</AppLayerIdentifier></tns:UserContentInfo>\n",
    "</tns:Evidence>"
);

fn now() -> Instant {
    use pec::message::time::Clock as _;
    pec::message::time::SystemClock.now()
}

/// Verifies `xml` with xmlsec1 against the test CA.
fn xmlsec1_verifies(xml: &str) -> (bool, String) {
    let e = env();
    let file = e.dir.join(format!("signed-{}.xml", rand::random::<u64>()));
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(&e.pki.ca_cert)
        .args(["--id-attr:Id", "SignedProperties"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_signed(signer: &dyn Signer, method: &str) {
    let e = env();
    let at = now();
    let xml = xades::sign(UNSIGNED, signer, at, &tsa_settings(&e.url)).unwrap();
    assert!(xml.contains(method), "{method}");
    assert!(xml.contains("<xades:EncapsulatedTimeStamp"));
    let v = xades::verify(xml.as_bytes(), &e.pki.ca_cert).unwrap();
    assert_eq!(v.signer, signer.certificate_der());
    assert_eq!(v.signing_time, at);
    assert!((v.time_stamp.gen_time.unix() - at.unix()).abs() < 600);
    // The evidence itself is untouched: its canonical form with the signature removed is
    // the unsigned document's.
    let pre = xmldsig::pre_digest(xml.as_bytes()).unwrap();
    assert_eq!(
        pre.references[0],
        xmldsig::canonicalize(UNSIGNED.as_bytes(), &xmldsig::C14n::EXCLUSIVE).unwrap()
    );
    if xmlsec1_available() {
        let (ok, err) = xmlsec1_verifies(&xml);
        assert!(ok, "xmlsec1: {err}");
    }
    // Altered after signing: refused.
    let altered = xml.replace("1.2.3@pec", "1.2.4@pec");
    assert!(xades::verify(altered.as_bytes(), &e.pki.ca_cert).is_err());
}

#[test]
fn signs_b_t_with_an_rsa_3072_pem_key() {
    check_signed(
        &pem_signer("rem-rsa3072"),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    );
}

#[test]
fn signs_b_t_with_an_ecdsa_p256_pem_key() {
    let signer = pem_signer("rem-p256");
    check_signed(
        &signer,
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    );
    // The value is the raw r||s of XML-DSig, 64 bytes for P-256.
    let xml = xades::sign_b_b(UNSIGNED, &signer, now()).unwrap();
    let doc_value = xml
        .split("<ds:SignatureValue")
        .nth(1)
        .and_then(|s| s.split('>').nth(1))
        .and_then(|s| s.split('<').next())
        .unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(doc_value)
        .unwrap();
    assert_eq!(raw.len(), 64);
}

#[test]
fn the_b_b_signature_alone_is_not_an_evidence() {
    let e = env();
    let xml = xades::sign_b_b(UNSIGNED, &pem_signer("rem-rsa3072"), now()).unwrap();
    assert!(xmldsig::verify(xml.as_bytes()).is_ok());
    match xades::verify(xml.as_bytes(), &e.pki.ca_cert) {
        Err(XadesError::Structure(m)) => assert!(m.contains("B-T"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A TCP port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_tsa_down_slow_or_lying_gives_an_error_and_no_evidence() {
    let e = env();
    let signer = pem_signer("rem-rsa3072");
    // Down: nothing listens.
    let down = tsa_settings(&format!("http://127.0.0.1:{}/tsa", closed_port()));
    assert!(matches!(
        xades::sign(UNSIGNED, &signer, now(), &down),
        Err(XadesError::Tsa(_))
    ));
    // Slow: accepts and never answers, within a short timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut slow = tsa_settings(&format!(
        "http://127.0.0.1:{}/tsa",
        silent.local_addr().unwrap().port()
    ));
    slow.timeout = Duration::from_millis(500);
    assert!(matches!(
        xades::sign(UNSIGNED, &signer, now(), &slow),
        Err(XadesError::Tsa(_))
    ));
    drop(silent);
    // Lying or failing: every fault tsa.py plays, on a TSA of this test's own (a fault
    // written to the shared one would fail the tests running beside this one).
    let own = tempfile::tempdir().unwrap();
    let mode_file = own.path().join("tsa-mode");
    let (_faulty, faulty_url) = tsa::start(&own.path().join("tsa"), &e.pki.dir, Some(&mode_file));
    for mode in [
        "down",
        "other-imprint",
        "expired",
        "refuse",
        "garbage",
        "no-nonce",
    ] {
        std::fs::write(&mode_file, mode).unwrap();
        let result = xades::sign(UNSIGNED, &signer, now(), &tsa_settings(&faulty_url));
        assert!(
            matches!(result, Err(XadesError::Tsa(_))),
            "{mode}: {result:?}"
        );
    }
    // A token from another TSA than the configured anchors: refused too.
    let mut foreign = tsa_settings(&e.url);
    foreign.ca_file = Some(e.pki.outsider_cert.clone());
    assert!(xades::sign(UNSIGNED, &signer, now(), &foreign).is_err());
}

#[test]
fn hostile_signatures_are_errors() {
    let e = env();
    let xml = xades::sign(
        UNSIGNED,
        &pem_signer("rem-rsa3072"),
        now(),
        &tsa_settings(&e.url),
    )
    .unwrap();
    // A second signature (a wrapping attempt), an unknown XPath, too many references, a
    // duplicated Id, a DTD: each an error, none a panic or a hang.
    let second = xml.replacen(
        "<EventTime>",
        "<ds:Signature><ds:SignedInfo/></ds:Signature><EventTime>",
        1,
    );
    assert!(xmldsig::verify(second.as_bytes()).is_err());
    let xpath = xml.replace("/descendant::ds:Signature", "/descendant::ds:Object");
    assert!(matches!(
        xmldsig::verify(xpath.as_bytes()),
        Err(XmlDsigError::Unsupported(_))
    ));
    let reference = xml
        .split("<ds:Reference ")
        .nth(2)
        .map(|r| {
            format!(
                "<ds:Reference {}",
                r.split("</ds:Reference>").next().unwrap()
            )
        })
        .unwrap()
        + "</ds:Reference>";
    let many = xml.replacen(
        "</ds:SignedInfo>",
        &format!(
            "{}</ds:SignedInfo>",
            reference.repeat(xmldsig::MAX_REFERENCES)
        ),
        1,
    );
    assert!(matches!(
        xmldsig::verify(many.as_bytes()),
        Err(XmlDsigError::Structure(_))
    ));
    let twice = xml.replacen(
        "<EventTime>",
        &format!("<x Id=\"{}\"/><EventTime>", {
            let at = xml.find("SignedProperties Id=\"").unwrap() + 21;
            &xml[at..at + xml[at..].find('"').unwrap()]
        }),
        1,
    );
    assert!(xmldsig::verify(twice.as_bytes()).is_err());
    let dtd = format!(
        "<!DOCTYPE x [<!ENTITY a \"b\">]>{}",
        &xml[xml.find("<tns:").unwrap()..]
    );
    assert!(matches!(
        xmldsig::verify(dtd.as_bytes()),
        Err(XmlDsigError::Gate(_))
    ));
    let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    assert!(xmldsig::verify(deep.as_bytes()).is_err());
}

/// A Trusted-List-like document with a signature template for `xmlsec1 --sign`:
/// `c14n`/`method` for SignedInfo, a `URI=""` reference with `enveloped` and exclusive c14n
/// with an InclusiveNamespaces PrefixList, and references to `#item1` with c14n 1.1 with
/// comments and with no transform at all (SHA-1, as old lists have).
fn template(c14n: &str, method: &str, enveloped: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<tsl:TrustServiceStatusList xmlns:tsl=\"http://uri.etsi.org/02231/v2#\" xmlns:x=\"urn:x\" xmlns:unused=\"urn:unused\" Id=\"tsl\">\n",
            "  <tsl:SchemeInformation x:a=\"1\"><tsl:Name xml:lang=\"it\">Prova &amp; t&#232;st</tsl:Name><!-- c --></tsl:SchemeInformation>\n",
            "  <tsl:Item Id=\"item1\" b=\"2\" a=\"1\"><x:Thing xmlns=\"urn:default\"/>  text\r\n<![CDATA[<cdata>]]></tsl:Item>\n",
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" Id=\"sig\"><ds:SignedInfo>",
            "<ds:CanonicalizationMethod Algorithm=\"{c14n}\"/><ds:SignatureMethod Algorithm=\"{method}\"/>",
            "<ds:Reference URI=\"\"><ds:Transforms>{enveloped}",
            "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"><ec:InclusiveNamespaces xmlns:ec=\"http://www.w3.org/2001/10/xml-exc-c14n#\" PrefixList=\"unused #default\"/></ds:Transform>",
            "</ds:Transforms><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#sha384\"/><ds:DigestValue/></ds:Reference>",
            "<ds:Reference URI=\"#item1\"><ds:Transforms><ds:Transform Algorithm=\"http://www.w3.org/2006/12/xml-c14n11#WithComments\"/></ds:Transforms>",
            "<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha512\"/><ds:DigestValue/></ds:Reference>",
            "<ds:Reference URI=\"#item1\"><ds:DigestMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/><ds:DigestValue/></ds:Reference>",
            "</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature></tsl:TrustServiceStatusList>\n"
        ),
        c14n = c14n,
        method = method,
        enveloped = enveloped,
    )
}

#[test]
fn signatures_made_by_xmlsec1_verify_with_the_same_canonical_bytes() {
    if !xmlsec1_available() {
        return;
    }
    let e = env();
    let enveloped = format!(
        "<ds:Transform Algorithm=\"{}\"/>",
        xmldsig::ENVELOPED_SIGNATURE
    );
    let filter2 = format!(
        "<ds:Transform Algorithm=\"{f}\"><f2:XPath xmlns:f2=\"{f}\" Filter=\"subtract\">{x}</f2:XPath></ds:Transform>",
        f = xmldsig::NS_FILTER2,
        x = xmldsig::SUBTRACT_SIGNATURES
    );
    let cases = [
        (
            "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
            xmldsig::SignatureMethod::RsaSha512,
            &enveloped,
            "rem-rsa3072",
        ),
        (
            "http://www.w3.org/2006/12/xml-c14n11",
            xmldsig::SignatureMethod::EcdsaSha384,
            &filter2,
            "rem-p256",
        ),
        (
            "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
            xmldsig::SignatureMethod::RsaSha1,
            &enveloped,
            "rem-rsa3072",
        ),
    ];
    for (c14n, method, transform, key) in cases {
        let tpl = e.dir.join("template.xml");
        let signed = e.dir.join("template-signed.xml");
        std::fs::write(&tpl, template(c14n, method.uri(), transform)).unwrap();
        let key = format!(
            "{},{}",
            e.pki.dir.join(format!("{key}.key")).display(),
            e.pki.dir.join(format!("{key}.pem")).display()
        );
        let out = Command::new("xmlsec1")
            .args([
                "--sign",
                "--privkey-pem",
                &key,
                "--id-attr:Id",
                "Item",
                "--output",
            ])
            .arg(&signed)
            .arg(&tpl)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let xml = std::fs::read(&signed).unwrap();
        let v = xmldsig::verify(&xml).unwrap_or_else(|err| panic!("{c14n} {method:?}: {err}"));
        assert_eq!(v.signature_method, method);
        assert_eq!(v.references.len(), 3);
        assert!(v.covers_document());

        let out = Command::new("xmlsec1")
            .args([
                "--verify",
                "--store-references",
                "--store-signatures",
                "--insecure",
            ])
            .args(["--id-attr:Id", "Item"])
            .arg(&signed)
            .output()
            .unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout).unwrap();
        let ours = xmldsig::pre_digest(&xml).unwrap();
        assert_eq!(
            xmlsec1_buffers(&stdout, "PreDigest data"),
            ours.references,
            "{c14n}"
        );
        assert_eq!(
            xmlsec1_buffers(&stdout, "PreSigned data"),
            vec![ours.signed_info],
            "{c14n}"
        );
        // One character of the signed item changed: refused.
        let altered = String::from_utf8(xml).unwrap().replace("  text", "  texT");
        assert!(matches!(
            xmldsig::verify(altered.as_bytes()),
            Err(XmlDsigError::Digest(_))
        ));
    }
}

#[test]
fn our_enveloped_signature_of_a_list_verifies_with_xmlsec1() {
    // The Trusted List shape: enveloped-signature transform, no ds prefix in the document.
    if !xmlsec1_available() {
        return;
    }
    let doc = "<TrustServiceStatusList xmlns=\"http://uri.etsi.org/02231/v2#\" Id=\"tsl\"><SchemeInformation>x</SchemeInformation></TrustServiceStatusList>";
    let spec = xmldsig::SignSpec {
        signature_id: Some("sig".into()),
        enveloped: xmldsig::Enveloped::EnvelopedSignature,
        ..Default::default()
    };
    for key in ["rem-rsa3072", "rem-p256"] {
        let signer = pem_signer(key);
        let xml = xmldsig::sign_enveloped(doc, &signer, &spec).unwrap();
        assert!(xml.contains(xmldsig::ENVELOPED_SIGNATURE));
        let v = xmldsig::verify(xml.as_bytes()).unwrap();
        assert_eq!(v.signer_certificate(), signer.certificate_der());
        let (ok, err) = xmlsec1_verifies(&xml);
        assert!(ok, "{key}: {err}");
    }
}
