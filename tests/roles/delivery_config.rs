// SPDX-License-Identifier: GPL-3.0-or-later
//! The `[delivery]` section of pec.toml (the LMTP proxy): defaults, the sample, validation.

use pec::config::{self, DeliveryConfig, Endpoint};

fn with_delivery(section: &str) -> String {
    let sample = config::example();
    let start = sample
        .find("\n[delivery]\n")
        .expect("[delivery] in the sample");
    format!("{}\n{section}", &sample[..start])
}

#[test]
fn the_sample_documents_the_defaults() {
    let c = config::parse(config::example(), "etc/pec.toml.sample").unwrap();
    assert_eq!(c.delivery, DeliveryConfig::default());
    for key in ["listen", "dovecot", "reinject", "arrival_notices"] {
        assert!(
            config::example().contains(&format!("\n{key} = ")),
            "delivery.{key} in the sample"
        );
    }
    let s = c.settings().unwrap();
    assert_eq!(
        s.delivery.listen,
        Endpoint::Inet {
            host: "127.0.0.1".into(),
            port: 10025
        }
    );
}

#[test]
fn the_section_is_optional() {
    let c = config::parse(&with_delivery(""), "t.toml").unwrap();
    assert_eq!(c.delivery, DeliveryConfig::default());
}

#[test]
fn dovecot_may_be_a_unix_socket_but_the_listener_is_tcp() {
    let c = config::parse(
        &with_delivery("[delivery]\ndovecot = \"unix:/run/dovecot/lmtp\"\n"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.settings().unwrap().delivery.dovecot,
        Endpoint::Unix("/run/dovecot/lmtp".into())
    );
    let bad = config::parse(
        &with_delivery("[delivery]\nlisten = \"unix:/run/pec/lmtp\"\n"),
        "t.toml",
    )
    .and_then(|c| c.settings().map(|_| ()).map_err(|e| panic!("{e}")));
    let e = bad.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("delivery.listen"), "{e}");
}

#[test]
fn unknown_keys_are_refused() {
    let e = config::parse(&with_delivery("[delivery]\nlisten_port = 1\n"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen_port"), "{e}");
}
