// SPDX-License-Identifier: GPL-3.0-or-later
//! Configuration loading and checking: every error names the file, the line and the key.

use std::path::PathBuf;
use std::time::Duration;

use pec::config::{self, parse_duration, parse_size, Endpoint, PinSource, SigningConfig};
use pec::crypto::DigestAlg;

const FILE: &str = "/etc/pec/pec.toml";

/// A minimal valid configuration; the tests below quote its line numbers.
const BASE: &str = r#"[provider]
name = "Example PEC"
service_address = "posta-certificata@pec.example.it"
mail_receipt = "ricevute@pec.example.it"
domains = ["PEC.Example.it", "pec2.example.it"]

[signing]
backend = "pkcs11"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "pec"
key_label = "k"
pin = "1234"

[store]
path = "/var/lib/pec/pec.db"

[index]
ldif = "/var/lib/pec/index.ldif"

[antivirus]
clamd = "tcp:127.0.0.1:3310"

[access]
max_total_size = "30MB"
"#;

/// `BASE` with `from` replaced by `to` (which must occur).
fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

fn error(text: &str) -> String {
    match config::parse(text, FILE) {
        Ok(c) => panic!("parsed: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_configuration_parses_with_defaults_and_typed_values() {
    let c = config::parse(BASE, FILE).unwrap();
    assert_eq!(c.provider.name, "Example PEC");
    assert_eq!(c.provider.domains, ["pec.example.it", "pec2.example.it"]);
    assert_eq!(c.provider.node, 1);
    assert!(c.provider.envelope_sender_header);
    match &c.signing {
        SigningConfig::Pkcs11 {
            module,
            key_label,
            cert_label,
            digest,
            sessions,
            ..
        } => {
            assert_eq!(module, &PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
            assert_eq!(key_label, "k");
            assert_eq!(cert_label, &None);
            assert_eq!(digest, "sha256");
            assert_eq!(*sessions, 4);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.access.max_recipients, 500);
    assert_eq!(c.filter.max_size, "160MB");

    let s = c.settings().unwrap();
    assert_eq!(s.digest, DigestAlg::Sha256);
    assert_eq!(s.pin, Some(PinSource::Literal("1234".into())));
    assert_eq!(
        s.clamd,
        Endpoint::Inet {
            host: "127.0.0.1".into(),
            port: 3310
        }
    );
    assert_eq!(s.antivirus_timeout, Duration::from_secs(30));
    assert_eq!(s.access.max_total_size, 30_000_000);
    assert_eq!(s.access.hard_size_limit, 150_000_000);
    assert_eq!(s.access.listen.to_string(), "127.0.0.1:10030");
    assert_eq!(s.access.reinject.to_string(), "127.0.0.1:10027");
    assert_eq!(s.filter.listen.to_string(), "127.0.0.1:10026");
    assert_eq!(s.filter.max_size, 160_000_000);
}

#[test]
fn the_pem_backend_parses() {
    let text = with(
        "backend = \"pkcs11\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"pec\"\nkey_label = \"k\"\npin = \"1234\"",
        "backend = \"pem\"\nkey_file = \"/etc/pec/key.pem\"\ncert_file = \"/etc/pec/cert.pem\"\ndigest = \"sha1\"",
    );
    let c = config::parse(&text, FILE).unwrap();
    assert_eq!(
        c.signing,
        SigningConfig::Pem {
            key_file: "/etc/pec/key.pem".into(),
            cert_file: "/etc/pec/cert.pem".into(),
            chain_file: None,
            digest: "sha1".into(),
            seal_key_file: None,
            seal_cert_file: None,
        }
    );
    let s = c.settings().unwrap();
    assert_eq!((s.digest, s.pin), (DigestAlg::Sha1, None));
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    assert_eq!(
        error(&format!("colour = \"blue\"\n{BASE}")),
        r#"/etc/pec/pec.toml: line 1: key "colour": unknown key"#
    );
    assert_eq!(
        error(&with("pec.db\"", "pec.db\"\nowner = \"pec\"")),
        r#"/etc/pec/pec.toml: line 16: key "store.owner": unknown key"#
    );
    assert_eq!(
        error(&with("pin = \"1234\"", "pin = \"1234\"\nslot = 0")),
        r#"/etc/pec/pec.toml: line 13: key "signing.slot": unknown key"#
    );
    assert_eq!(
        error(&with(
            "pin = \"1234\"",
            "pin = \"1234\"\nkey_file = \"/k.pem\""
        )),
        r#"/etc/pec/pec.toml: line 13: key "signing.key_file": unknown key for backend "pkcs11""#
    );
    assert_eq!(
        error(&with("[access]", "[acess]")),
        r#"/etc/pec/pec.toml: line 23: key "acess": unknown key"#
    );
}

#[test]
fn wrong_types_name_the_key() {
    assert_eq!(
        error(&with("name = \"Example PEC\"", "name = 3")),
        r#"/etc/pec/pec.toml: line 2: key "provider.name": invalid type: integer "3", expected a string"#
    );
    assert_eq!(
        error(&with(
            "pin = \"1234\"",
            "pin = \"1234\"\nsessions = \"four\""
        )),
        r#"/etc/pec/pec.toml: line 13: key "signing.sessions": invalid type: string "four", expected usize"#
    );
    assert_eq!(
        error(&with("\"30MB\"", "\"30MB\"\nmax_recipients = -1")),
        r#"/etc/pec/pec.toml: line 25: key "access.max_recipients": invalid value: integer "-1", expected usize"#
    );
    assert_eq!(
        error(&with("backend = \"pkcs11\"", "backend = \"hsm\"")),
        r#"/etc/pec/pec.toml: line 8: key "signing.backend": unknown variant "hsm", expected "pkcs11" or "pem""#
    );
}

#[test]
fn missing_required_keys_are_named() {
    assert_eq!(
        error(&with("name = \"Example PEC\"\n", "")),
        r#"/etc/pec/pec.toml: line 1: key "provider.name": missing required key"#
    );
    assert_eq!(
        error(&with("key_label = \"k\"\n", "")),
        r#"/etc/pec/pec.toml: line 7: key "signing.key_label": missing required key"#
    );
    assert_eq!(
        error(&with("[index]\nldif = \"/var/lib/pec/index.ldif\"\n", "")),
        r#"/etc/pec/pec.toml: line 1: key "index": missing required key"#
    );
}

#[test]
fn syntax_errors_have_a_line() {
    assert_eq!(
        error(&with("name = \"Example PEC\"", "name = ")),
        "/etc/pec/pec.toml: line 2: string values must be quoted, expected literal string"
    );
    assert_eq!(
        error(&with(
            "name = \"Example PEC\"",
            "name = \"a\"\nname = \"b\""
        )),
        r#"/etc/pec/pec.toml: line 3: duplicate key "name""#
    );
}

#[test]
fn invalid_sizes_and_durations() {
    assert_eq!(
        error(&with("\"30MB\"", "\"5x\"")),
        r#"/etc/pec/pec.toml: line 24: key "access.max_total_size": invalid size "5x""#
    );
    assert_eq!(
        error(&with("\"30MB\"", "\"0MB\"")),
        r#"/etc/pec/pec.toml: line 24: key "access.max_total_size": invalid size "0MB": must not be zero"#
    );
    assert_eq!(
        error(&format!("{BASE}\n[filter]\nmax_size = \"1.5GB\"\n")),
        r#"/etc/pec/pec.toml: line 27: key "filter.max_size": invalid size "1.5GB""#
    );
    assert_eq!(
        error(&with("3310\"", "3310\"\ntimeout = \"5x\"")),
        r#"/etc/pec/pec.toml: line 22: key "antivirus.timeout": invalid duration "5x""#
    );
    // The default hard limit is below the configured total: the error points at [access].
    assert_eq!(
        error(&with("\"30MB\"", "\"200MB\"")),
        r#"/etc/pec/pec.toml: line 23: key "access.hard_size_limit": "150MB" is smaller than access.max_total_size "200MB""#
    );
    assert_eq!(
        error(&with("\"30MB\"", "\"30MB\"\nmax_recipients = 0")),
        r#"/etc/pec/pec.toml: line 25: key "access.max_recipients": must be at least 1"#
    );
}

#[test]
fn invalid_addresses() {
    assert_eq!(
        error(&with("tcp:127.0.0.1:3310", "tcp:localhost")),
        r#"/etc/pec/pec.toml: line 21: key "antivirus.clamd": invalid address "tcp:localhost": expected HOST:PORT, inet:HOST:PORT, tcp:HOST:PORT or unix:/PATH"#
    );
    assert_eq!(
        error(&with(
            "\"30MB\"",
            "\"30MB\"\nreinject = \"unix:/run/postfix.sock\""
        )),
        r#"/etc/pec/pec.toml: line 25: key "access.reinject": invalid address "unix:/run/postfix.sock": expected HOST:PORT (TCP only)"#
    );
    assert_eq!(
        error(&with(
            "\"30MB\"",
            "\"30MB\"\nlisten = \"inet:127.0.0.1:99999\""
        )),
        r#"/etc/pec/pec.toml: line 25: key "access.listen": invalid address "inet:127.0.0.1:99999": expected HOST:PORT, inet:HOST:PORT, tcp:HOST:PORT or unix:/PATH"#
    );
    let unix = config::parse(
        &with(
            "\"30MB\"",
            "\"30MB\"\nlisten = \"unix:/run/pec/milter.sock\"",
        ),
        FILE,
    )
    .unwrap()
    .settings()
    .unwrap();
    assert_eq!(
        unix.access.listen,
        Endpoint::Unix("/run/pec/milter.sock".into())
    );
}

#[test]
fn invalid_email_addresses_and_domains() {
    assert_eq!(
        error(&with(
            "\"posta-certificata@pec.example.it\"",
            "\"posta-certificata\""
        )),
        r#"/etc/pec/pec.toml: line 3: key "provider.service_address": invalid email address "posta-certificata""#
    );
    assert_eq!(
        error(&with(
            "\"ricevute@pec.example.it\"",
            "\"ricevute@pec..example.it\""
        )),
        r#"/etc/pec/pec.toml: line 4: key "provider.mail_receipt": invalid email address "ricevute@pec..example.it""#
    );
    assert_eq!(
        error(&with("[\"PEC.Example.it\", \"pec2.example.it\"]", "[]")),
        r#"/etc/pec/pec.toml: line 5: key "provider.domains": no domain: list the PEC domains whose mailboxes live here"#
    );
    assert_eq!(
        error(&with("\"pec2.example.it\"", "\"pec.example.it\"")),
        r#"/etc/pec/pec.toml: line 5: key "provider.domains": domain "pec.example.it" is listed twice"#
    );
    assert_eq!(
        error(&with("\"pec2.example.it\"", "\"\"")),
        r#"/etc/pec/pec.toml: line 5: key "provider.domains": invalid domain """#
    );
}

#[test]
fn the_pin_comes_from_exactly_one_place() {
    assert_eq!(
        error(&with(
            "pin = \"1234\"",
            "pin = \"1234\"\npin_env = \"PEC_PIN\""
        )),
        r#"/etc/pec/pec.toml: line 12: key "signing.pin": set pin or pin_env, not both"#
    );
    assert_eq!(
        error(&with("pin = \"1234\"\n", "")),
        r#"/etc/pec/pec.toml: line 7: key "signing.pin": missing: set pin or pin_env"#
    );
    let c = config::parse(
        &with("pin = \"1234\"", "pin_env = \"PEC_TEST_PIN_UNSET\""),
        FILE,
    )
    .unwrap();
    let pin = c.settings().unwrap().pin.unwrap();
    assert_eq!(pin, PinSource::Env("PEC_TEST_PIN_UNSET".into()));
    assert_eq!(
        pin.resolve().unwrap_err().to_string(),
        r#"key "signing.pin_env": environment variable "PEC_TEST_PIN_UNSET" is not set"#
    );
    assert_eq!(
        format!("{:?}", PinSource::Literal("1234".into())),
        "Literal(<redacted>)"
    );
}

#[test]
fn other_semantic_checks() {
    assert_eq!(
        error(&with("pin = \"1234\"", "pin = \"1234\"\ndigest = \"md5\"")),
        r#"/etc/pec/pec.toml: line 13: key "signing.digest": invalid digest "md5": expected "sha256", "sha384" or "sha1""#
    );
    assert_eq!(
        error(&with("pin = \"1234\"", "pin = \"1234\"\nsessions = 0")),
        r#"/etc/pec/pec.toml: line 13: key "signing.sessions": must be at least 1"#
    );
    assert_eq!(
        error(&with(
            "\"30MB\"",
            "\"30MB\"\nblocked_extensions = [\".exe\"]"
        )),
        r#"/etc/pec/pec.toml: line 25: key "access.blocked_extensions": invalid extension ".exe": write it without the dot"#
    );
    assert_eq!(
        error(&format!("{BASE}\n[filter]\nmax_size = \"20MB\"\n")),
        r#"/etc/pec/pec.toml: line 27: key "filter.max_size": "20MB" is smaller than access.max_total_size "30MB""#
    );
    let c = config::parse(
        &with(
            "\"30MB\"",
            "\"30MB\"\nblocked_extensions = [\"EXE\", \"scr\"]",
        ),
        FILE,
    )
    .unwrap();
    assert_eq!(c.access.blocked_extensions, ["exe", "scr"]);
    // the bounds of the attachment checks
    assert_eq!(
        error(&with("\"30MB\"", "\"30MB\"\nattachment_max_depth = 0")),
        r#"/etc/pec/pec.toml: line 25: key "access.attachment_max_depth": must be at least 1"#
    );
    assert_eq!(
        error(&with(
            "\"30MB\"",
            "\"30MB\"\nattachment_max_bytes = \"lots\""
        )),
        r#"/etc/pec/pec.toml: line 25: key "access.attachment_max_bytes": invalid size "lots""#
    );
    assert_eq!(
        error(&with("\"30MB\"", "\"30MB\"\nattachment_max_time = \"0s\"")),
        r#"/etc/pec/pec.toml: line 25: key "access.attachment_max_time": invalid duration "0s": must not be zero"#
    );
    // an empty list blocks no extension; the default is the documented list
    let c = config::parse(&with("\"30MB\"", "\"30MB\"\nblocked_extensions = []"), FILE).unwrap();
    assert!(c.access.blocked_extensions.is_empty());
    assert_eq!(
        pec::config::AccessConfig::default().blocked_extensions,
        pec::access::attachments::DEFAULT_BLOCKED_EXTENSIONS
    );
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pec.toml");
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.file, path.display().to_string());
    assert!(err.to_string().contains(": cannot read: "), "{err}");

    std::fs::write(&path, with("\"30MB\"", "\"5x\"")).unwrap();
    let err = config::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: line 24: key \"access.max_total_size\": invalid size \"5x\"",
            path.display()
        )
    );
    assert_eq!(
        (err.line, err.key.as_deref()),
        (Some(24), Some("access.max_total_size"))
    );

    std::fs::write(&path, BASE).unwrap();
    assert_eq!(
        config::load(&path).unwrap(),
        config::parse(BASE, FILE).unwrap()
    );
}

#[test]
fn size_and_duration_syntax() {
    let sizes = [
        ("512B", Some(512)),
        ("10KB", Some(10_000)),
        ("100MB", Some(100_000_000)),
        ("150 MB", Some(150_000_000)),
        ("100mb", Some(100_000_000)),
        ("2GB", Some(2_000_000_000)),
        ("1KiB", Some(1_024)),
        ("30MiB", Some(31_457_280)),
        ("1GiB", Some(1_073_741_824)),
        ("100", None),
        ("MB", None),
        ("1.5MB", None),
        ("-1MB", None),
        ("5x", None),
        ("100  MB", None),
        ("99999999999999999999B", None),
        ("18446744073709551615KB", None),
    ];
    for (text, want) in sizes {
        assert_eq!(parse_size(text), want, "{text}");
    }
    let durations = [
        ("30s", Some(30)),
        ("5m", Some(300)),
        ("2h", Some(7_200)),
        ("1d", Some(86_400)),
        ("0s", Some(0)),
        ("30", None),
        ("5M", None),
        ("1w", None),
        ("1.5h", None),
        ("18446744073709551615d", None),
    ];
    for (text, want) in durations {
        assert_eq!(
            parse_duration(text),
            want.map(Duration::from_secs),
            "{text}"
        );
    }
}

#[test]
fn endpoint_syntax() {
    let inet = |host: &str, port| {
        Some(Endpoint::Inet {
            host: host.into(),
            port,
        })
    };
    assert_eq!(Endpoint::parse("127.0.0.1:10030"), inet("127.0.0.1", 10030));
    assert_eq!(
        Endpoint::parse("inet:localhost:10030"),
        inet("localhost", 10030)
    );
    assert_eq!(
        Endpoint::parse("tcp:clamd.lan:3310"),
        inet("clamd.lan", 3310)
    );
    assert_eq!(Endpoint::parse("[::1]:25"), inet("::1", 25));
    assert_eq!(
        Endpoint::parse("unix:/run/clamav/clamd.ctl"),
        Some(Endpoint::Unix("/run/clamav/clamd.ctl".into()))
    );
    for bad in [
        "localhost",
        "::1:25",
        "[nothost]:25",
        "host:0",
        "host:65536",
        "host:+25",
        ":25",
        "unix:relative.sock",
        "unix:",
        "inet:",
        "ho st:25",
    ] {
        assert_eq!(Endpoint::parse(bad), None, "{bad}");
    }
    assert_eq!(inet("::1", 25).unwrap().to_string(), "[::1]:25");
    assert_eq!(
        Endpoint::Unix("/run/x.sock".into()).to_string(),
        "unix:/run/x.sock"
    );
}

#[test]
fn the_sample_configuration_parses_and_matches_etc() {
    let c = config::parse(config::example(), "etc/pec.toml.sample").unwrap();
    let s = c.settings().unwrap();
    assert_eq!(s.pin, Some(PinSource::Env("PEC_PKCS11_PIN".into())));
    // The defaults written in the sample are the real defaults.
    assert_eq!(c.access, pec::config::AccessConfig::default());
    assert_eq!(c.filter, pec::config::FilterConfig::default());
    assert_eq!(c.timers, pec::config::TimersConfig::default());
    assert_eq!(c.serve, pec::config::ServeConfig::default());
    assert_eq!(c.rem, pec::config::RemConfig::default());
    assert_eq!(s.rem_trust, None);
    assert_eq!(s.csi_validity, std::time::Duration::from_secs(365 * 86400));
    let on_disk =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/pec.toml.sample"))
            .unwrap();
    assert_eq!(on_disk, config::example());
}

/// Every key set in the sample has a comment on the line above (or on its own line), and
/// every key the program knows appears in the sample, set or commented out.
#[test]
fn every_key_of_the_sample_is_documented() {
    use toml::de::{DeTable, DeValue};

    let text = config::example();
    let lines: Vec<&str> = text.lines().collect();
    let doc = DeTable::parse(text).unwrap();

    fn walk(table: &DeTable<'_>, text: &str, lines: &[&str], prefix: &str, seen: &mut usize) {
        for (key, value) in table.iter() {
            let line = text[..key.span().start].matches('\n').count();
            let name = format!("{prefix}{}", key.get_ref());
            let above = line.checked_sub(1).map(|l| lines[l].trim_start());
            assert!(
                above.is_some_and(|l| l.starts_with('#')) || lines[line].contains(" # "),
                "key {name:?} (line {}) has no comment",
                line + 1
            );
            *seen += 1;
            if let DeValue::Table(t) = value.get_ref() {
                walk(t, text, lines, &format!("{name}."), seen);
            }
        }
    }
    let mut seen = 0;
    walk(doc.get_ref(), text, &lines, "", &mut seen);
    assert!(seen > 30, "only {seen} keys");

    let known = [
        (
            "provider",
            &[
                "name",
                "service_address",
                "mail_receipt",
                "domains",
                "node",
                "envelope_sender_header",
            ][..],
        ),
        (
            "signing",
            &[
                "backend",
                "module",
                "token_label",
                "key_label",
                "cert_label",
                "pin",
                "pin_env",
                "chain_file",
                "digest",
                "sessions",
                "key_file",
                "cert_file",
            ][..],
        ),
        (
            "store",
            &[
                "path",
                "backend",
                "url",
                "pool_size",
                "tls",
                "ca_file",
                "cert_file",
                "key_file",
            ][..],
        ),
        (
            "index",
            &[
                "ldif",
                "ldap_url",
                "bind_dn",
                "bind_password",
                "signed_ldif",
                "signer_cert",
                "refresh",
                "timeout",
                "force",
            ][..],
        ),
        ("antivirus", &["clamd", "timeout"][..]),
        (
            "access",
            &[
                "listen",
                "max_total_size",
                "hard_size_limit",
                "max_recipients",
                "blocked_extensions",
                "attachment_max_depth",
                "attachment_max_entries",
                "attachment_max_bytes",
                "attachment_max_time",
                "reject_in_smtp",
                "reinject",
            ][..],
        ),
        ("filter", &["listen", "reinject", "max_size"][..]),
        ("timers", &["enabled", "interval"][..]),
        ("metrics", &["listen"][..]),
        ("serve", &["roles"][..]),
        (
            "rem.trust",
            &[
                "tl_urls",
                "tl_signer_files",
                "refresh",
                "timeout",
                "tls_ca_file",
            ][..],
        ),
        (
            "rem.csi",
            &[
                "sequence",
                "operator_name",
                "street",
                "locality",
                "postal_code",
                "country",
                "electronic_addresses",
                "information_uri",
                "policy_uri",
                "pointer_to_tl",
                "distribution_point",
                "erds_id",
                "erds_domain",
                "assurance_level",
                "tls_certificate",
                "validity",
            ][..],
        ),
        (
            "rem",
            &[
                "enabled",
                "mode",
                "provider_name",
                "policies",
                "relay_wait",
                "consignment_wait",
                "evidence_tsa_url",
                "evidence_tsa_ca_file",
                "evidence_tsa_timeout",
                "evidence_tsa_policy",
                "evidence_tsa_username",
                "evidence_tsa_password_file",
                "evidence_tsa_client_cert",
                "evidence_tsa_client_key",
                "evidence_tsa_tls_ca_file",
            ][..],
        ),
    ];
    for (table, keys) in known {
        assert!(
            text.contains(&format!("\n[{table}]\n")),
            "[{table}] missing"
        );
        for key in keys {
            let set = lines.iter().any(|l| l.starts_with(&format!("{key} = ")));
            let commented = lines.iter().any(|l| l.starts_with(&format!("# {key} = ")));
            assert!(set || commented, "{table}.{key} missing from the sample");
        }
    }
}

#[test]
fn reception_policy_defaults_to_anomaly_and_is_checked() {
    use pec::store::MailboxPolicy;
    let s = config::parse(BASE, FILE).unwrap().settings().unwrap();
    assert_eq!(s.default_policy, MailboxPolicy::Anomaly);
    let refuse = format!("{BASE}\n[reception]\ndefault_policy = \"refuse\"\n");
    let s = config::parse(&refuse, FILE).unwrap().settings().unwrap();
    assert_eq!(s.default_policy, MailboxPolicy::Refuse);
    let fwd = format!(
        "{BASE}\n[reception]\ndefault_policy = \"forward\"\ndefault_forward_to = \"pm@example.org\"\n"
    );
    let s = config::parse(&fwd, FILE).unwrap().settings().unwrap();
    assert_eq!(
        s.default_policy,
        MailboxPolicy::Forward("pm@example.org".into())
    );
    let bad = format!("{BASE}\n[reception]\ndefault_policy = \"drop\"\n");
    assert_eq!(
        error(&bad),
        r#"/etc/pec/pec.toml: line 27: key "reception.default_policy": unknown policy "drop": use anomaly, refuse or forward"#
    );
    let missing = format!("{BASE}\n[reception]\ndefault_policy = \"forward\"\n");
    assert!(error(&missing).contains("reception.default_forward_to"));
    let stray = format!("{BASE}\n[reception]\ndefault_forward_to = \"pm@example.org\"\n");
    assert!(error(&stray).contains("only for default_policy"));
    let unknown = format!("{BASE}\n[reception]\npolicy = \"refuse\"\n");
    assert!(error(&unknown).contains("policy"));
}

#[test]
fn the_timers_section_has_defaults_and_is_checked_with_line_numbers() {
    let s = config::parse(BASE, FILE).unwrap().settings().unwrap();
    assert_eq!(s.timers_interval, Duration::from_secs(60));
    let c = config::parse(
        &format!("{BASE}\n[timers]\nenabled = false\ninterval = \"30s\"\n"),
        FILE,
    )
    .unwrap();
    assert!(!c.timers.enabled);
    assert_eq!(
        c.settings().unwrap().timers_interval,
        Duration::from_secs(30)
    );
    assert_eq!(
        error(&format!("{BASE}\n[timers]\ninterval = \"1h\"\n")),
        r#"/etc/pec/pec.toml: line 27: key "timers.interval": "1h" is longer than 10m: the 24 h notice, due from 23 h 50 min, would miss its 24 h deadline"#
    );
    assert_eq!(
        error(&format!("{BASE}\n[timers]\ninterval = \"soon\"\n")),
        r#"/etc/pec/pec.toml: line 27: key "timers.interval": invalid duration "soon""#
    );
    assert_eq!(
        error(&format!("{BASE}\n[timers]\nperiod = \"1m\"\n")),
        r#"/etc/pec/pec.toml: line 27: key "timers.period": unknown key"#
    );
}

#[test]
fn the_serve_section_names_the_roles_of_the_process() {
    let all = config::parse(BASE, FILE).unwrap().serve.enabled().unwrap();
    assert!(all.access && all.filter && all.delivery);
    let c = config::parse(&format!("{BASE}\n[serve]\nroles = [\"delivery\"]\n"), FILE).unwrap();
    c.settings().unwrap();
    let one = c.serve.enabled().unwrap();
    assert!(!one.access && !one.filter && one.delivery);
    assert_eq!(
        error(&format!("{BASE}\n[serve]\nroles = [\"milter\"]\n")),
        r#"/etc/pec/pec.toml: line 27: key "serve.roles": unknown role "milter": use access, filter or delivery"#
    );
    assert_eq!(
        error(&format!("{BASE}\n[serve]\nroles = []\n")),
        r#"/etc/pec/pec.toml: line 27: key "serve.roles": no role: name at least one"#
    );
    assert_eq!(
        error(&format!(
            "{BASE}\n[serve]\nroles = [\"filter\", \"filter\"]\n"
        )),
        r#"/etc/pec/pec.toml: line 27: key "serve.roles": role "filter" given twice"#
    );
}

#[test]
fn the_index_source_is_ldap_or_a_signed_ldif_checked_with_line_numbers() {
    use pec::index::sync::Source;
    let s = config::parse(BASE, FILE).unwrap().settings().unwrap();
    assert_eq!(s.index_source, None);
    assert_eq!(s.index_refresh, Duration::from_secs(86_400));
    let ix = |extra: &str| with("index.ldif\"", &format!("index.ldif\"\n{extra}"));
    let s = config::parse(
        &ix("ldap_url = \"ldap://127.0.0.1:389\"\nbind_dn = \"cn=a,o=postacert\"\nbind_password = \"pw\"\nrefresh = \"12h\""),
        FILE,
    )
    .unwrap()
    .settings()
    .unwrap();
    assert_eq!(
        s.index_source,
        Some(Source::Ldap {
            url: "ldap://127.0.0.1:389".into(),
            bind_dn: Some("cn=a,o=postacert".into()),
            password: Some("pw".into()),
            timeout: Duration::from_secs(30),
        })
    );
    assert_eq!(s.index_refresh, Duration::from_secs(12 * 3600));
    assert_eq!(
        error(&ix("ldap_url = \"http://x\"")),
        r#"/etc/pec/pec.toml: line 19: key "index.ldap_url": "http://x" is not an ldap:// or ldaps:// URL"#
    );
    assert_eq!(
        error(&ix("signed_ldif = \"/i.p7m\"")),
        r#"/etc/pec/pec.toml: line 19: key "index.signed_ldif": needs index.signer_cert, the certificate allowed to sign it"#
    );
    assert_eq!(
        error(&ix(
            "ldap_url = \"ldap://x\"\nsigned_ldif = \"/i.p7m\"\nsigner_cert = \"/c.pem\""
        )),
        r#"/etc/pec/pec.toml: line 20: key "index.signed_ldif": set ldap_url or signed_ldif, not both"#
    );
    assert_eq!(
        error(&ix("bind_password = \"pw\"")),
        r#"/etc/pec/pec.toml: line 19: key "index.bind_password": set without index.bind_dn"#
    );
    assert_eq!(
        error(&ix("ldap = \"ldap://x\"")),
        r#"/etc/pec/pec.toml: line 19: key "index.ldap": unknown key"#
    );
}

/// Issue 19: the TSA's credentials and policy are checked together; the time stamp is
/// mandatory for `pec serve` unless the loudly named development opt-out is set.
#[test]
fn the_tsa_settings() {
    let text = format!(
        "{BASE}\n[log]\ntsa_url = \"https://tsa.example.it/tsa\"\ntsa_ca_file = \"/etc/pec/tsa.pem\"\n\
         tsa_policy = \"1.3.6.1.4.1.99999.1.1\"\ntsa_username = \"pec\"\n\
         tsa_password_file = \"/etc/pec/tsa-password\"\ntsa_client_cert = \"/etc/pec/c.pem\"\n\
         tsa_client_key = \"/etc/pec/c.key\"\ntsa_tls_ca_file = \"/etc/pec/s.pem\"\n\
         tsa_retry = \"30s\"\ntsa_grace = \"2h\"\n"
    );
    let c = config::parse(&text, FILE).unwrap();
    let s = c.settings().unwrap();
    let tsa = s.tsa.unwrap();
    assert_eq!(tsa.policy.as_deref(), Some("1.3.6.1.4.1.99999.1.1"));
    assert_eq!(
        tsa.basic_auth,
        Some(("pec".into(), "/etc/pec/tsa-password".into()))
    );
    assert_eq!(
        tsa.client_cert,
        Some(("/etc/pec/c.pem".into(), "/etc/pec/c.key".into()))
    );
    assert_eq!(tsa.ca_file, Some("/etc/pec/tsa.pem".into()));
    assert_eq!(tsa.tls_ca_file, Some("/etc/pec/s.pem".into()));
    assert_eq!(
        (s.tsa_retry, s.tsa_grace),
        (Duration::from_secs(30), Duration::from_secs(7200))
    );
    assert_eq!(c.check_serve().unwrap_err().key, "signing.seal_key_label");
    let with_seal = text.replace("key_label = ", "seal_key_label = \"seal\"\nkey_label = ");
    let c = config::parse(&with_seal, FILE).unwrap();
    assert_eq!(c.check_serve(), Ok(()));
    // The seal key must be another key than the PEC message key.
    let same = text.replace("key_label = ", "seal_key_label = \"k\"\nkey_label = ");
    let c = config::parse(&same, FILE).unwrap();
    assert_eq!(c.check_serve().unwrap_err().key, "signing.seal_key_label");

    let log = |extra: &str| format!("{BASE}\n[log]\n{extra}");
    let key = |text: &str| match config::parse(text, FILE) {
        Ok(c) => panic!("parsed: {:?}", c.log),
        Err(e) => e.key.unwrap_or_default(),
    };
    // Basic authentication or a client certificate over plain HTTP: refused.
    assert_eq!(
        key(&log(
            "tsa_url = \"http://t/\"\ntsa_username = \"u\"\ntsa_password_file = \"/p\"\n"
        )),
        "log.tsa_username"
    );
    assert_eq!(
        key(&log(
            "tsa_url = \"http://t/\"\ntsa_client_cert = \"/c\"\ntsa_client_key = \"/k\"\n"
        )),
        "log.tsa_client_cert"
    );
    // Half a credential.
    assert_eq!(
        key(&log("tsa_url = \"https://t/\"\ntsa_username = \"u\"\n")),
        "log.tsa_username"
    );
    assert_eq!(
        key(&log("tsa_url = \"https://t/\"\ntsa_client_key = \"/k\"\n")),
        "log.tsa_client_cert"
    );
    assert_eq!(
        key(&log("tsa_url = \"https://t/\"\ntsa_policy = \"1.x\"\n")),
        "log.tsa_policy"
    );

    // No TSA: a valid file, but not one pec serve runs with.
    let seal = |t: String| t.replace("key_label = ", "seal_key_label = \"seal\"\nkey_label = ");
    let c = config::parse(&seal(BASE.to_string()), FILE).unwrap();
    assert_eq!(c.check_serve().unwrap_err().key, "log.tsa_url");
    let c = config::parse(&seal(log("tsa_url = \"https://t/\"\n")), FILE).unwrap();
    assert_eq!(c.check_serve().unwrap_err().key, "log.tsa_ca_file");
    let c = config::parse(&seal(log("dev_insecure_no_tsa = true\n")), FILE).unwrap();
    assert_eq!(c.check_serve(), Ok(()));
}

#[test]
fn the_log_and_quarantine_sections() {
    let c = config::parse(BASE, FILE).unwrap();
    assert_eq!(c.log.retention_months, 30);
    assert_eq!(c.quarantine.retention_months, 30);
    assert_eq!(c.settings().unwrap().tsa, None);

    let text = format!(
        "{BASE}\n[log]\ntsa_url = \"http://tsa.example.it:8080/tsa\"\ntsa_timeout = \"10s\"\n\
         retention_months = 36\n[quarantine]\nretention_months = 40\n"
    );
    let c = config::parse(&text, FILE).unwrap();
    let tsa = c.settings().unwrap().tsa.unwrap();
    assert_eq!(tsa.url, "http://tsa.example.it:8080/tsa");
    assert_eq!(tsa.timeout, Duration::from_secs(10));
    assert_eq!(
        (c.log.retention_months, c.quarantine.retention_months),
        (36, 40)
    );

    // After BASE: a blank line, the table header, the key.
    let line = BASE.lines().count() + 3;
    let bad = format!("{BASE}\n[log]\ntsa_url = \"ftp://tsa.example.it/\"\n");
    assert_eq!(
        error(&bad),
        format!(
            "/etc/pec/pec.toml: line {line}: key \"log.tsa_url\": invalid url \
             \"ftp://tsa.example.it/\": expected https://HOST[:PORT]/PATH or http://…"
        )
    );
    let bad = format!("{BASE}\n[log]\nretention_months = 12\n");
    assert_eq!(
        error(&bad),
        format!(
            "/etc/pec/pec.toml: line {line}: key \"log.retention_months\": 12 is less than \
             the 30 months required"
        )
    );
    let bad = format!("{BASE}\n[quarantine]\nretention_months = 1\nkeep = true\n");
    assert!(
        error(&bad).contains(&format!(
            "line {}: key \"quarantine.keep\": unknown key",
            line + 1
        )),
        "{}",
        error(&bad)
    );
}

#[test]
fn the_owner_self_service_keys() {
    let s = config::parse(BASE, FILE).unwrap().settings().unwrap();
    let r = s.log_requests.unwrap();
    assert_eq!(r.local_part, "registro");
    assert_eq!(r.domains, ["pec.example.it", "pec2.example.it"]);
    assert_eq!((r.limit, r.window), (5, Duration::from_secs(3600)));
    assert_eq!(
        r.address_for("Mario@pec.example.it").as_deref(),
        Some("registro@pec.example.it")
    );

    let text = format!(
        "{BASE}\n[log]\nrequest_address = \"estratti\"\nrequest_limit = 2\n\
         request_window = \"10m\"\nrequest_max_records = 100\n"
    );
    let r = config::parse(&text, FILE)
        .unwrap()
        .settings()
        .unwrap()
        .log_requests
        .unwrap();
    assert_eq!(
        (r.local_part.as_str(), r.limit, r.max_records),
        ("estratti", 2, 100)
    );
    assert_eq!(r.window, Duration::from_secs(600));

    let off = format!("{BASE}\n[log]\nrequest_address = \"\"\n");
    assert_eq!(
        config::parse(&off, FILE)
            .unwrap()
            .settings()
            .unwrap()
            .log_requests,
        None
    );

    for (bad, says) in [
        (
            "request_address = \"registro@pec.example.it\"",
            "not a local part",
        ),
        ("request_address = \"ricevute\"", "provider.mail_receipt"),
        ("request_limit = 0", "at least 1"),
        ("request_window = \"soon\"", "log.request_window"),
    ] {
        let text = format!("{BASE}\n[log]\n{bad}\n");
        assert!(error(&text).contains(says), "{bad}: {}", error(&text));
    }
}

#[test]
fn the_postgres_store_needs_a_url() {
    use pec::config::StoreBackend;
    let c = config::parse(BASE, FILE).unwrap();
    assert_eq!(c.store.backend, StoreBackend::Sqlite);
    let base = BASE.replace("[store]\n", "[store]\nbackend = \"postgres\"\n");
    assert_ne!(base, BASE, "BASE has a [store] section");
    let err = config::parse(&base, FILE).unwrap_err();
    assert!(err.to_string().contains("store.url"), "{err}");
    let with_url = base.replace(
        "backend = \"postgres\"\n",
        "backend = \"postgres\"\nurl = \"postgres://pec@db.example.it/pec\"\n",
    );
    let c = config::parse(&with_url, FILE).unwrap();
    c.settings().unwrap();
    assert_eq!(c.store.backend, StoreBackend::Postgres);
    assert_eq!(c.store.pool_size, 16);
    let zero = with_url.replace("[store]\n", "[store]\npool_size = 0\n");
    let err = config::parse(&zero, FILE).unwrap_err();
    assert!(err.to_string().contains("store.pool_size"), "{err}");
}

/// The shipped sample (etc/pec.toml.sample) broken one way at a time: `pec check-config`
/// names the line and the key of each break.
#[test]
fn each_break_of_the_sample_is_reported_at_its_line_and_key() {
    let sample = config::example();
    // (line to replace, its replacement, the key named; empty for a syntax error). The error
    // is expected on the last line of the replacement.
    let breaks: &[(&str, &str, &str)] = &[
        (
            "name = \"Example PEC S.p.A.\"",
            "name = \"Example PEC S.p.A.",
            "",
        ),
        ("node = 1", "node = \"one\"", "provider.node"),
        (
            "service_address = \"posta-certificata@pec.example.it\"",
            "service_address = \"posta-certificata\"",
            "provider.service_address",
        ),
        ("digest = \"sha256\"", "digest = \"md5\"", "signing.digest"),
        ("sessions = 4", "sessions = 0", "signing.sessions"),
        (
            "path = \"/var/lib/pec/pec.db\"",
            "path = \"/var/lib/pec/pec.db\"\nsize = 3",
            "store.size",
        ),
        ("refresh = \"1d\"", "refresh = \"1x\"", "index.refresh"),
        (
            "clamd = \"unix:/run/clamav/clamd.ctl\"",
            "clamd = \"clamd.ctl\"",
            "antivirus.clamd",
        ),
        (
            "max_total_size = \"100MB\"",
            "max_total_size = \"100XB\"",
            "access.max_total_size",
        ),
        (
            "max_size = \"160MB\"",
            "max_size = \"10MB\"",
            "filter.max_size",
        ),
        (
            "default_policy = \"anomaly\"",
            "default_policy = \"drop\"",
            "reception.default_policy",
        ),
        (
            "dovecot = \"127.0.0.1:24\"",
            "dovecot = \"127.0.0.1\"",
            "delivery.dovecot",
        ),
        ("interval = \"1m\"", "interval = \"20m\"", "timers.interval"),
        (
            "tsa_url = \"https://tsa.example.it/tsa\"",
            "tsa_url = \"ftp://tsa\"",
            "log.tsa_url",
        ),
        (
            "tsa_retry = \"1m\"",
            "tsa_retry = \"soon\"",
            "log.tsa_retry",
        ),
        ("listen = \"\"", "listen = \"nowhere\"", "metrics.listen"),
    ];
    for (from, to, key) in breaks {
        assert_eq!(sample.matches(from).count(), 1, "{from:?} is not unique");
        let text = sample.replacen(from, to, 1);
        let line =
            text[..text.find(to).unwrap()].matches('\n').count() + 1 + to.matches('\n').count();
        let err = error(&text);
        let want = if key.is_empty() {
            format!("{FILE}: line {line}: ")
        } else {
            format!("{FILE}: line {line}: key \"{key}\": ")
        };
        assert!(
            err.starts_with(&want),
            "{to:?}: {err:?} should start with {want:?}"
        );
    }

    // The quarantine's retention_months, the second of the two in the sample.
    let at = sample.rfind("retention_months = 30").unwrap();
    let text = format!(
        "{}retention_months = 12{}",
        &sample[..at],
        &sample[at + 21..]
    );
    let line = sample[..at].matches('\n').count() + 1;
    let err = error(&text);
    assert!(
        err.starts_with(&format!(
            "{FILE}: line {line}: key \"quarantine.retention_months\": "
        )),
        "{err}"
    );
}

/// `pec check-config` prints that error and exits 1; the intact sample exits 0.
#[test]
fn check_config_exits_1_on_a_broken_sample() {
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let path = dir.path().join("pec.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pec"))
            .args(["check-config", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            path,
        )
    };
    let (code, out, _, path) = run(config::example());
    assert_eq!(code, Some(0));
    assert_eq!(out, format!("{}: ok\n", path.display()));
    let broken = config::example().replacen("interval = \"1m\"", "interval = \"1 minute\"", 1);
    let line = broken[..broken.find("interval = \"1 minute\"").unwrap()]
        .matches('\n')
        .count()
        + 1;
    let (code, _, err, path) = run(&broken);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        format!(
            "{}: line {line}: key \"timers.interval\": invalid duration \"1 minute\"\n",
            path.display()
        )
    );
}

#[test]
fn the_postgres_store_tls_settings_are_checked() {
    use pec::config::StoreTls;
    let pg = BASE.replace(
        "[store]\n",
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://pec@db.example.it/pec\"\n",
    );
    assert_ne!(pg, BASE, "BASE has a [store] section");
    let c = config::parse(&pg, FILE).unwrap();
    assert_eq!(c.store.tls, StoreTls::Disable);
    assert_eq!(c.store.ca_file, None);
    let full = pg.replace(
        "[store]\n",
        "[store]\ntls = \"verify-full\"\nca_file = \"/etc/pec/pg-ca.pem\"\n",
    );
    let c = config::parse(&full, FILE).unwrap();
    assert_eq!(c.store.tls, StoreTls::VerifyFull);
    assert_eq!(
        c.store.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/pec/pg-ca.pem"))
    );
    for (mode, want) in [
        ("require", StoreTls::Require),
        ("verify-ca", StoreTls::VerifyCa),
    ] {
        let t = pg.replace("[store]\n", &format!("[store]\ntls = \"{mode}\"\n"));
        assert_eq!(config::parse(&t, FILE).unwrap().store.tls, want);
    }
    // libpq's prefer is not offered: no silent fallback to clear text
    let prefer = pg.replace("[store]\n", "[store]\ntls = \"prefer\"\n");
    let err = error(&prefer);
    assert!(err.contains("tls") && err.contains("prefer"), "{err}");
    // a CA file says nothing without certificate checks
    let ca_only = pg.replace("[store]\n", "[store]\nca_file = \"/etc/pec/pg-ca.pem\"\n");
    let err = error(&ca_only);
    assert!(
        err.contains("store.ca_file") && err.contains("verify-"),
        "{err}"
    );
    // TLS is set in one place
    let sslmode = pg.replace("/pec\"", "/pec?sslmode=require\"");
    assert_ne!(sslmode, pg);
    let err = error(&sslmode);
    assert!(
        err.contains("store.url") && err.contains("store.tls"),
        "{err}"
    );
    // a client certificate: both files, with TLS on
    let client = |tls: &str, lines: &str| {
        pg.replace("[store]\n", &format!("[store]\ntls = \"{tls}\"\n{lines}"))
    };
    let both = "cert_file = \"/etc/pec/pg-client.pem\"\nkey_file = \"/etc/pec/pg-client.key\"\n";
    let c = config::parse(&client("require", both), FILE).unwrap();
    assert_eq!(
        c.store.cert_file.as_deref(),
        Some(std::path::Path::new("/etc/pec/pg-client.pem"))
    );
    assert_eq!(
        c.store.key_file.as_deref(),
        Some(std::path::Path::new("/etc/pec/pg-client.key"))
    );
    let err = error(&client("disable", both));
    assert!(
        err.contains("store.cert_file") && err.contains("TLS"),
        "{err}"
    );
    let err = error(&client(
        "verify-full",
        "cert_file = \"/etc/pec/pg-client.pem\"\n",
    ));
    assert!(
        err.contains("store.key_file") && err.contains("required"),
        "{err}"
    );
    let err = error(&client(
        "verify-full",
        "key_file = \"/etc/pec/pg-client.key\"\n",
    ));
    assert!(
        err.contains("store.cert_file") && err.contains("required"),
        "{err}"
    );
}

#[test]
fn rem_trust_settings_are_checked() {
    let ok = format!(
        "{BASE}\n[rem.trust]\ntl_urls = [\"https://tl.example.it/TL.xml\"]\n\
         tl_signer_files = [\"/etc/pec/tl.pem\"]\nrefresh = \"12h\"\n"
    );
    let s = config::parse(&ok, FILE).unwrap().settings().unwrap();
    let t = s.rem_trust.unwrap();
    assert_eq!(t.tl_urls, ["https://tl.example.it/TL.xml"]);
    assert_eq!(t.refresh, Duration::from_secs(12 * 3600));
    assert_eq!(t.timeout, Duration::from_secs(30));
    let e = error(&format!(
        "{BASE}\n[rem.trust]\ntl_urls = [\"https://tl.example.it/TL.xml\"]\n"
    ));
    assert!(
        e.contains("key \"rem.trust.tl_signer_files\"") && e.contains("needs the certificates"),
        "{e}"
    );
    let e = error(&format!(
        "{BASE}\n[rem.trust]\ntl_urls = [\"ftp://tl.example.it/TL.xml\"]\ntl_signer_files = [\"/x.pem\"]\n"
    ));
    assert!(e.contains("line 27: key \"rem.trust.tl_urls\""), "{e}");
    let e = error(&format!("{BASE}\n[rem.trust]\nrefresh = \"1x\"\n"));
    assert!(
        e.contains("key \"rem.trust.refresh\": invalid duration \"1x\""),
        "{e}"
    );
    let e = error(&format!("{BASE}\n[rem.csi]\nvalidity = \"soon\"\n"));
    assert!(e.contains("key \"rem.csi.validity\""), "{e}");
    let e = error(&format!("{BASE}\n[rem.trust]\nunknown = 1\n"));
    assert!(e.contains("unknown"), "{e}");
}
