// SPDX-License-Identifier: GPL-3.0-or-later
//! Provider index sync against a real slapd. Needs the server that tests/e2e/index.sh
//! starts: `PEC_E2E_LDAP=ldap://127.0.0.1:PORT` (base o=postacert holding both test
//! providers) and `PEC_E2E_LDAP_PKI` (the test PKI directory of tests/pki/make-pki.sh).
//! Without them every test prints SKIPPED and passes.

use std::time::Duration;

use openssl::x509::X509;
use pec::doubles::TestStore;
use pec::index::sync::{self, Source};
use pec::message::kind::RecipientType;
use pec::message::time::Instant;
use pec::store::Store;

fn server() -> Option<(String, std::path::PathBuf)> {
    match (
        std::env::var("PEC_E2E_LDAP"),
        std::env::var("PEC_E2E_LDAP_PKI"),
    ) {
        (Ok(url), Ok(pki)) => Some((url, pki.into())),
        _ => {
            // Straight to the stream, past the test harness's capture: loud on purpose.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PEC_E2E_LDAP / PEC_E2E_LDAP_PKI not set (run tests/e2e/index.sh)"
            );
            None
        }
    }
}

fn now() -> Instant {
    Instant::parse_cli("2026-01-02T10:00:00Z").unwrap()
}

#[tokio::test]
async fn anonymous_and_bound_syncs_see_both_providers_and_their_certificates() {
    let Some((url, pki)) = server() else { return };
    for (bind_dn, password) in [
        (None, None),
        (
            Some("cn=admin,o=postacert".to_string()),
            Some("secret".to_string()),
        ),
    ] {
        let store = TestStore::new();
        let source = Source::Ldap {
            url: url.clone(),
            bind_dn,
            password,
            timeout: Duration::from_secs(5),
        };
        let c = sync::sync(&store, &source, false, now()).await.unwrap();
        assert_eq!(c.stored.providers, 2);
        assert_eq!(store.stored_index().unwrap().unwrap().source, url);
        assert_eq!(
            c.index.recipient_type("x@PEC.EXAMPLE.NET"),
            RecipientType::Certificato
        );
        let net = X509::from_pem(&std::fs::read(pki.join("net.pem")).unwrap())
            .unwrap()
            .to_der()
            .unwrap();
        let found = c.index.trust().find(&net).expect("NET certificate");
        assert_eq!(
            found.provider.as_ref().unwrap().mail_receipt,
            "ricevute@pec.example.net"
        );
    }
}

#[tokio::test]
async fn a_wrong_password_is_an_error() {
    let Some((url, _)) = server() else { return };
    let e = sync::fetch_ldap(
        &url,
        Some("cn=admin,o=postacert"),
        Some("wrong"),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("bind"), "{e}");
}
