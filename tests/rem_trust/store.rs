// SPDX-License-Identifier: GPL-3.0-or-later
//! The stored Trusted Lists on both backends: a signed list is stored with its history; a
//! tampered, foreign-signed, expired, rolled-back or unreachable one is refused and the
//! last good copy stays; the peers view comes from the stored copies, verified again.

use std::sync::Mutex;

use pec::message::time::Instant;
use pec::rem::trust::XmlDsig;
use pec::rem_sync::{load_peers, sync_all, sync_source, Fetch, SyncError, TrustSettings};

use super::backends;
use super::backends::Backend;
use super::lists::{sign_with, SignedKit};

const URL: &str = "https://tl.example.cca/TL-CCA.xml";

/// Serves whatever it was last given, or an error.
struct Served(Mutex<Result<Vec<u8>, String>>);

impl Served {
    fn new() -> Self {
        Served(Mutex::new(Err("nothing served".into())))
    }
    fn set(&self, body: &str) {
        *self.0.lock().unwrap() = Ok(body.as_bytes().to_vec());
    }
    fn fail(&self) {
        *self.0.lock().unwrap() = Err("connect: connection refused".into());
    }
}

impl Fetch for Served {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        assert_eq!(url, URL);
        self.0.lock().unwrap().clone()
    }
}

fn at(s: &str) -> Instant {
    Instant::parse_cli(s).unwrap()
}

both!(lists_are_stored_with_history_and_the_last_good_copy_stays);

fn lists_are_stored_with_history_and_the_last_good_copy_stays(b: &Backend) {
    let Some(kit) = SignedKit::new() else { return };
    let store = &*b.store;
    let signer_file = kit.pki.it_cert.clone();
    let settings = TrustSettings {
        tl_urls: vec![URL.into()],
        signer_files: vec![signer_file],
        refresh: std::time::Duration::from_secs(3600),
        timeout: std::time::Duration::from_secs(5),
        tls_ca_file: None,
    };
    let signers = settings.signers().unwrap();
    assert_eq!(signers, std::slice::from_ref(&kit.signer));
    let served = Served::new();
    let now = at("2026-12-06T12:00:00Z");
    let sync = |now| sync_source(store, &served, &XmlDsig, &signers, URL, now);

    // Nothing stored, the source unreachable.
    let e = sync(now).unwrap_err();
    assert!(matches!(e, SyncError::Fetch { .. }), "{e}");
    assert!(store.trusted_lists().unwrap().is_empty());

    // Version 1, signed: stored.
    let v1 = kit.sign(&kit.unsigned);
    served.set(&v1);
    let s = sync(now).unwrap();
    assert!(s.new);
    assert_eq!(
        (s.version.territory.as_str(), s.version.sequence),
        ("CCA", 1)
    );
    assert_eq!(s.version.next_update, Some(at("2031-10-03T08:29:59Z")));
    assert_eq!(s.version.issued_at, at("2020-10-03T08:30:00Z"));
    let current = store.trusted_lists().unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].xml, v1);
    assert_eq!(current[0].version.fetched_at, now);
    // Fetched again unchanged: not a new version, checked later.
    let later = at("2026-12-07T12:00:00Z");
    assert!(!sync(later).unwrap().new);
    let current = store.trusted_lists().unwrap();
    assert_eq!(current[0].version.fetched_at, now);
    assert_eq!(current[0].version.checked_at, later);
    assert_eq!(store.trusted_list_history().unwrap().len(), 1);

    // Refused, each leaving version 1 in place: tampered, signed by an unknown key,
    // unsigned, past its NextUpdate, unreachable.
    served.set(&v1.replace("smtp:mx.rb-rems.rem:25", "smtp:mx.evil.rem:25"));
    assert!(matches!(
        sync(later).unwrap_err(),
        SyncError::Refused { .. }
    ));
    let v2_text = kit.unsigned.replace(
        "<TSLSequenceNumber>1</TSLSequenceNumber>",
        "<TSLSequenceNumber>2</TSLSequenceNumber>",
    );
    served.set(&sign_with(&v2_text, &kit.pki.net_key, &kit.pki.net_cert));
    let e = sync(later).unwrap_err();
    assert!(
        e.to_string()
            .contains("not a configured trusted list signer"),
        "{e}"
    );
    served.set(&v2_text);
    let e = sync(later).unwrap_err();
    assert!(e.to_string().contains("no signature"), "{e}");
    let expired = kit.sign(&v2_text.replace("2031-10-03T08:29:59Z", "2026-12-01T00:00:00Z"));
    served.set(&expired);
    let e = sync(later).unwrap_err();
    assert!(e.to_string().contains("is past"), "{e}");
    served.fail();
    assert!(matches!(sync(later).unwrap_err(), SyncError::Fetch { .. }));
    let current = store.trusted_lists().unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].xml, v1);

    // Version 2: stored beside version 1, and current.
    let v2 = kit.sign(&v2_text);
    served.set(&v2);
    assert!(sync(later).unwrap().new);
    let current = store.trusted_lists().unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].version.sequence, 2);
    assert_eq!(current[0].xml, v2);
    let history = store.trusted_list_history().unwrap();
    let seqs: Vec<u64> = history.iter().map(|v| v.sequence).collect();
    assert_eq!(seqs, [2, 1]);
    // Version 1 served again (a rollback): refused.
    served.set(&v1);
    let e = sync(later).unwrap_err();
    assert!(e.to_string().contains("older than the stored 2"), "{e}");
    assert_eq!(store.trusted_lists().unwrap()[0].version.sequence, 2);

    // The peers view from the stored copy.
    let (peers, left_out) = load_peers(store, &XmlDsig, &settings).unwrap();
    assert!(left_out.is_empty(), "{left_out:?}");
    assert_eq!(peers.trusted_at(later).count(), 3);
    assert!(peers.by_mail_host("mx.rb-rems.rem", later).is_some());
    // Another process sees the same.
    let (again, _) = load_peers(&*b.reopen(), &XmlDsig, &settings).unwrap();
    assert_eq!(again.trusted_at(later).count(), 3);
    // With the signer no longer configured, the stored copy is not used.
    let other = TrustSettings {
        signer_files: vec![kit.pki.net_cert.clone()],
        ..settings.clone()
    };
    let (peers, left_out) = load_peers(store, &XmlDsig, &other).unwrap();
    assert_eq!(peers.all().len(), 0);
    assert_eq!(left_out.len(), 1);
    assert!(
        left_out[0].contains("not a configured trusted list signer"),
        "{left_out:?}"
    );
    // A source no longer configured is not used either.
    let none = TrustSettings {
        tl_urls: vec!["https://elsewhere.example/tl.xml".into()],
        ..settings.clone()
    };
    assert_eq!(load_peers(store, &XmlDsig, &none).unwrap().0.all().len(), 0);

    // sync_all: one result per configured source.
    served.set(&v2);
    let all = sync_all(store, &served, &XmlDsig, &settings, later).unwrap();
    assert_eq!(all.len(), 1);
    assert!(!all[0].1.as_ref().unwrap().new);
}
