// SPDX-License-Identifier: GPL-3.0-or-later
//! TLS to PostgreSQL (`[store] tls`, `ca_file`, `cert_file`, `key_file`) against real servers that
//! tests/e2e/store_tls.sh starts: one with `ssl = on` that accepts TCP connections over
//! TLS only (pg_hba `hostssl`), its certificate issued for `localhost` by a test CA, and
//! one without TLS. The script sets
//!
//! - `PEC_TEST_PG_TLS_URL`: the TLS server, `postgres://postgres@localhost:PORT/pec`;
//! - `PEC_TEST_PG_PLAIN_URL`: the server without TLS;
//! - `PEC_TEST_PG_TLS_PKI`: the directory with `ca.pem` (the server's CA) and
//!   `other-ca.pem` (a CA that signed nothing of it), and the client certificates (CN
//!   `postgres`) `client.pem` / `client.key` (signed by `ca.pem`) and `other-client.pem` /
//!   `other-client.key` (signed by `other-ca.pem`);
//! - `PEC_TEST_PG_CERT_URL`: a TLS server that authenticates clients by certificate
//!   (`hostssl … cert`, that is clientcert=verify-full), trusting `ca.pem` for them.
//!
//! Without them every test prints SKIPPED.

use std::path::PathBuf;

use pec::config::StoreTls;
use pec::store::postgres::PgTls;
use pec::store::PgStore;

struct Servers {
    tls_url: String,
    plain_url: String,
    pki: PathBuf,
}

fn servers(test: &str) -> Option<Servers> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        var("PEC_TEST_PG_TLS_URL"),
        var("PEC_TEST_PG_PLAIN_URL"),
        var("PEC_TEST_PG_TLS_PKI"),
    ) {
        (Some(tls_url), Some(plain_url), Some(pki)) => Some(Servers {
            tls_url,
            plain_url,
            pki: PathBuf::from(pki),
        }),
        _ => {
            eprintln!(
                "SKIPPED {test}: PEC_TEST_PG_TLS_URL, PEC_TEST_PG_PLAIN_URL and \
                 PEC_TEST_PG_TLS_PKI are not set (tests/e2e/store_tls.sh sets them)"
            );
            None
        }
    }
}

fn tls(mode: StoreTls, ca: Option<PathBuf>) -> PgTls {
    PgTls {
        mode,
        ca_file: ca,
        ..PgTls::default()
    }
}

fn open_err(url: &str, t: &PgTls) -> String {
    match PgStore::open_tls(url, 1, t) {
        Ok(_) => panic!("{url} with {} opened", t.describe()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn verify_full_with_the_servers_ca_connects_over_tls() {
    let Some(s) = servers("verify_full_with_the_servers_ca_connects_over_tls") else {
        return;
    };
    let t = tls(StoreTls::VerifyFull, Some(s.pki.join("ca.pem")));
    let store = PgStore::open_tls(&s.tls_url, 2, &t).unwrap();
    let (version, cipher) = store.session_tls().unwrap().expect("a TLS session");
    assert!(version.starts_with("TLSv1."), "{version}");
    assert!(!cipher.is_empty());
    assert_eq!(store.tls(), &t);
}

#[test]
fn a_wrong_ca_is_refused_and_the_error_names_tls() {
    let Some(s) = servers("a_wrong_ca_is_refused_and_the_error_names_tls") else {
        return;
    };
    for mode in [StoreTls::VerifyCa, StoreTls::VerifyFull] {
        let e = open_err(&s.tls_url, &tls(mode, Some(s.pki.join("other-ca.pem"))));
        assert!(e.contains("TLS"), "{e}");
        assert!(e.contains("certificate verify failed"), "{e}");
        assert!(e.contains(mode.as_str()), "{e}");
    }
}

#[test]
fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let Some(s) = servers("verify_full_checks_the_host_name_and_verify_ca_does_not") else {
        return;
    };
    // The certificate names localhost, not 127.0.0.1.
    let by_ip = s.tls_url.replace("@localhost:", "@127.0.0.1:");
    assert_ne!(by_ip, s.tls_url, "PEC_TEST_PG_TLS_URL must name localhost");
    let ca = Some(s.pki.join("ca.pem"));
    let e = open_err(&by_ip, &tls(StoreTls::VerifyFull, ca.clone()));
    assert!(e.contains("TLS"), "{e}");
    assert!(e.contains("certificate verify failed"), "{e}");
    let store = PgStore::open_tls(&by_ip, 1, &tls(StoreTls::VerifyCa, ca)).unwrap();
    assert!(store.session_tls().unwrap().is_some());
}

#[test]
fn require_encrypts_without_checking_the_certificate() {
    let Some(s) = servers("require_encrypts_without_checking_the_certificate") else {
        return;
    };
    let store = PgStore::open_tls(&s.tls_url, 1, &tls(StoreTls::Require, None)).unwrap();
    assert!(store.session_tls().unwrap().is_some());
}

#[test]
fn a_server_without_tls_is_refused_when_tls_is_required() {
    let Some(s) = servers("a_server_without_tls_is_refused_when_tls_is_required") else {
        return;
    };
    for mode in [StoreTls::Require, StoreTls::VerifyFull] {
        let e = open_err(&s.plain_url, &tls(mode, None));
        assert!(e.contains("TLS"), "{e}");
        assert!(e.contains("server does not support TLS"), "{e}");
    }
    // and without TLS it is reached, in clear
    let store = PgStore::open_tls(&s.plain_url, 1, &tls(StoreTls::Disable, None)).unwrap();
    assert_eq!(store.session_tls().unwrap(), None);
}

#[test]
fn the_tls_server_refuses_connections_in_clear() {
    let Some(s) = servers("the_tls_server_refuses_connections_in_clear") else {
        return;
    };
    let e = open_err(&s.tls_url, &tls(StoreTls::Disable, None));
    assert!(e.contains("no encryption"), "{e}");
}

#[test]
fn an_unreadable_or_empty_ca_file_is_named() {
    let Some(s) = servers("an_unreadable_or_empty_ca_file_is_named") else {
        return;
    };
    let missing = s.pki.join("missing.pem");
    let e = open_err(&s.tls_url, &tls(StoreTls::VerifyFull, Some(missing)));
    assert!(e.contains("ca_file") && e.contains("missing.pem"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = open_err(&s.tls_url, &tls(StoreTls::VerifyFull, Some(empty)));
    assert!(
        e.contains("ca_file") && e.contains("no PEM certificate"),
        "{e}"
    );
}

/// The server that authenticates by client certificate, and the PKI directory.
fn cert_server(test: &str) -> Option<(String, PathBuf)> {
    let s = servers(test)?;
    match std::env::var("PEC_TEST_PG_CERT_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(url) => Some((url, s.pki)),
        None => {
            eprintln!(
                "SKIPPED {test}: PEC_TEST_PG_CERT_URL is not set (tests/e2e/store_tls.sh sets it)"
            );
            None
        }
    }
}

fn with_client(pki: &std::path::Path, cert: &str, key: &str) -> PgTls {
    PgTls {
        mode: StoreTls::VerifyFull,
        ca_file: Some(pki.join("ca.pem")),
        cert_file: Some(pki.join(cert)),
        key_file: Some(pki.join(key)),
    }
}

#[test]
fn a_client_certificate_is_shown_to_a_server_that_asks_for_one() {
    let Some((url, pki)) =
        cert_server("a_client_certificate_is_shown_to_a_server_that_asks_for_one")
    else {
        return;
    };
    let t = with_client(&pki, "client.pem", "client.key");
    let store = PgStore::open_tls(&url, 1, &t).unwrap();
    assert!(store.session_tls().unwrap().is_some());
    assert!(t.describe().contains("cert_file"), "{}", t.describe());
    // with require as well: the certificate goes with every mode that has TLS
    let require = PgTls {
        mode: StoreTls::Require,
        ..t
    };
    PgStore::open_tls(&url, 1, &require).unwrap();
}

#[test]
fn no_client_certificate_or_one_from_another_ca_is_refused() {
    let Some((url, pki)) = cert_server("no_client_certificate_or_one_from_another_ca_is_refused")
    else {
        return;
    };
    let e = open_err(&url, &tls(StoreTls::VerifyFull, Some(pki.join("ca.pem"))));
    assert!(e.contains("requires a valid client certificate"), "{e}");
    let e = open_err(
        &url,
        &with_client(&pki, "other-client.pem", "other-client.key"),
    );
    // the server's TLS alert (it does not know the CA of that certificate), or, when the
    // server closed first, the connection reset: refused at the handshake either way
    assert!(
        e.contains("connect:")
            && (e.contains("alert unknown ca") || e.contains("Connection reset")),
        "{e}"
    );
}

#[test]
fn a_missing_empty_or_mismatched_client_certificate_or_key_is_named() {
    let Some((url, pki)) =
        cert_server("a_missing_empty_or_mismatched_client_certificate_or_key_is_named")
    else {
        return;
    };
    let e = open_err(&url, &with_client(&pki, "missing.pem", "client.key"));
    assert!(e.contains("cert_file") && e.contains("missing.pem"), "{e}");
    let e = open_err(&url, &with_client(&pki, "client.pem", "missing.key"));
    assert!(e.contains("key_file") && e.contains("missing.key"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing\n").unwrap();
    let e = open_err(
        &url,
        &with_client(&pki, empty.to_str().unwrap(), "client.key"),
    );
    assert!(
        e.contains("cert_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = open_err(
        &url,
        &with_client(&pki, "client.pem", empty.to_str().unwrap()),
    );
    assert!(
        e.contains("key_file") && e.contains("no PEM private key"),
        "{e}"
    );
    let e = open_err(&url, &with_client(&pki, "client.pem", "other-client.key"));
    assert!(
        e.contains("key_file") && e.contains("other-client.key") && e.contains("not the key of"),
        "{e}"
    );
}
