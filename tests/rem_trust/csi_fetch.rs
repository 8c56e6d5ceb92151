// SPDX-License-Identifier: GPL-3.0-or-later
//! The CSI of each granted REM peer fetched over HTTPS from the supply point of its
//! Trusted List entry, on both store backends: verified against the peer's identity in
//! the list and stored with its history; a bad one (foreign or broken signature, not
//! XML-safe, unsigned, expired, older, the server failing or down) is refused and the last
//! good copy stays; the peers view says whom `rem.mode = "auto"` sends REM to; the refresh
//! of `pec serve` does the same on its own.

use std::time::Duration;

use pec::crypto::xmldsig::{sign_enveloped, Enveloped, SignSpec};
use pec::crypto::{DigestAlg, PemSigner};
use pec::message::time::Instant;
use pec::rem::csi::{self, CsiError, REM_BASELINE};
use pec::rem::trust::XmlDsig;
use pec::rem_sync::{load_peers, sync_all, sync_csi, HttpFetch, SyncError, TrustSettings};

use super::backends;
use super::backends::Backend;
use super::csi::our_settings;
use super::https::{kit_list, Https};
use super::lists::SignedKit;

fn at(s: &str) -> Instant {
    Instant::parse_cli(s).unwrap()
}

/// RB-REMS's CSI, sequence `seq`, valid until `next_update`, with `profile`; signed with
/// the `pec.example.it` test key, RB-REMS's identity in [`kit_list`].
pub fn b_csi(kit: &SignedKit, seq: u64, next_update: &str, profile: &str) -> String {
    let mut s = our_settings(kit.signer.clone(), kit.other.clone());
    s.sequence = seq;
    s.erds_domain = "mx.rb-rems.rem".into();
    s.issued_at = at("2026-12-01T00:00:00Z");
    s.next_update = at(next_update);
    let text = csi::write(&s).replace(
        &format!("<ERDSProfileSupported>{REM_BASELINE}<"),
        &format!("<ERDSProfileSupported>{profile}<"),
    );
    let signer =
        PemSigner::from_files(&kit.pki.it_key, &kit.pki.it_cert, None, DigestAlg::Sha256).unwrap();
    let spec = SignSpec {
        signature_id: Some("csi-signature".into()),
        enveloped: Enveloped::Filter2Subtract,
        ..SignSpec::default()
    };
    sign_enveloped(&text, &signer, &spec).unwrap()
}

struct Fixture {
    kit: SignedKit,
    https: Https,
    settings: TrustSettings,
    fetch: HttpFetch,
}

fn fixture() -> Option<Fixture> {
    let kit = SignedKit::new()?;
    let https = Https::start(&kit);
    // SA-REMS's supply point on the server, RB-REMS's too; RC-REMS's server is down.
    let list = kit.sign(&kit_list(&kit, &https.url("/a.xml"), &https.url("/b.xml")));
    https.set("/tl.xml", Ok(list));
    let settings = TrustSettings {
        tl_urls: vec![https.url("/tl.xml")],
        signer_files: vec![kit.pki.it_cert.clone()],
        refresh: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
        tls_ca_file: Some(https.ca_file.clone()),
    };
    let fetch = HttpFetch {
        timeout: settings.timeout,
        tls_ca_file: settings.tls_ca_file.clone(),
    };
    Some(Fixture {
        kit,
        https,
        settings,
        fetch,
    })
}

both!(a_peers_csi_is_fetched_over_https_verified_and_kept_with_its_history);

fn a_peers_csi_is_fetched_over_https_verified_and_kept_with_its_history(b: &Backend) {
    let Some(f) = fixture() else { return };
    let store = &*b.store;
    let now = at("2026-12-06T12:00:00Z");
    let b_url = f.https.url("/b.xml");
    let a_url = f.https.url("/a.xml");
    for (_, r) in sync_all(store, &f.fetch, &XmlDsig, &f.settings, now).unwrap() {
        r.unwrap();
    }
    let peers = || load_peers(store, &XmlDsig, &f.settings).unwrap();
    let sync = |now| {
        let (view, _) = peers();
        sync_csi(store, &f.fetch, &view, now).unwrap()
    };
    let outcome = |results: &[(String, Result<_, SyncError>)], url: &str| -> String {
        match &results.iter().find(|(u, _)| u == url).unwrap().1 {
            Ok(pec::rem_sync::CsiSynced { new, .. }) => format!("ok new={new}"),
            Err(e) => e.to_string(),
        }
    };

    // Nothing served yet: each of the three granted services fails on its own; nothing is
    // stored and nobody speaks the REM baseline, though all three are trusted.
    let r = sync(now);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(
        r.iter()
            .all(|(_, o)| matches!(o, Err(SyncError::Fetch { .. }))),
        "{r:?}"
    );
    assert!(outcome(&r, &b_url).contains("404"), "{r:?}");
    assert!(store.peer_csis().unwrap().is_empty());
    let (view, left_out) = peers();
    assert!(left_out.is_empty(), "{left_out:?}");
    assert_eq!(view.trusted_at(now).count(), 3);
    assert_eq!(view.rem_baseline_at(now).count(), 0);

    // RB-REMS's CSI, signed with its identity: stored. SA-REMS's server answers one signed
    // by someone else's key: refused.
    let v1 = b_csi(&f.kit, 1, "2027-06-01T00:00:00Z", REM_BASELINE);
    f.https.set("/b.xml", Ok(v1.clone()));
    f.https.set("/a.xml", Ok(v1.clone()));
    let r = sync(now);
    assert_eq!(outcome(&r, &b_url), "ok new=true");
    match &r.iter().find(|(u, _)| *u == a_url).unwrap().1 {
        Err(SyncError::CsiRefused {
            error: CsiError::NotThePeer,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let current = store.peer_csis().unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].xml, v1);
    assert_eq!(current[0].version.source, b_url);
    assert_eq!(current[0].version.service, "RB-REMS provider");
    assert_eq!(current[0].version.profile, REM_BASELINE);
    assert_eq!(
        current[0].version.next_update,
        Some(at("2027-06-01T00:00:00Z"))
    );
    let (view, left_out) = peers();
    assert!(left_out.is_empty(), "{left_out:?}");
    let rem: Vec<&str> = view
        .rem_baseline_at(now)
        .map(|p| p.service.name.as_str())
        .collect();
    assert_eq!(rem, ["RB-REMS provider"]);
    let peer_b = view.by_mail_host("mx.rb-rems.rem", now).unwrap();
    assert_eq!(view.csi_of(peer_b).unwrap().sequence, 1);
    // Unchanged: checked later, not new.
    let later = at("2026-12-07T12:00:00Z");
    assert_eq!(outcome(&sync(later), &b_url), "ok new=false");
    let current = store.peer_csis().unwrap();
    assert_eq!(
        (current[0].version.fetched_at, current[0].version.checked_at),
        (now, later)
    );

    // Bad documents, each refused with the last good copy staying: tampered after signing,
    // not XML-safe, unsigned, past its CSINextUpdate, the server failing, the server hanging
    // up (RC-REMS's server, down, failed above).
    let bad: Vec<(Result<String, u16>, &str)> = vec![
        (
            Ok(v1.replace("mx.rb-rems.rem", "mx.evil.rem")),
            "csi: signature",
        ),
        (
            Ok(v1.replacen("?>", "?><!DOCTYPE x [<!ENTITY e \"x\">]>", 1)),
            "document type",
        ),
        (
            Ok(csi::write(&{
                let mut s = our_settings(f.kit.signer.clone(), f.kit.other.clone());
                s.sequence = 5;
                s
            })),
            "no signature",
        ),
        (
            Ok(b_csi(&f.kit, 6, "2026-12-02T00:00:00Z", REM_BASELINE)),
            "is past",
        ),
        (Err(500), "fetch "),
        // The connection closed without an answer.
        (Err(0), "fetch "),
    ];
    for (answer, want) in bad {
        f.https.set("/b.xml", answer);
        let o = outcome(&sync(later), &b_url);
        assert!(o.contains(want), "{want}: {o}");
        let current = store.peer_csis().unwrap();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].xml, v1, "{want}");
        let (view, _) = peers();
        assert_eq!(view.rem_baseline_at(later).count(), 1, "{want}");
    }
    // After its own CSINextUpdate the stored copy no longer says anything, though the
    // list still grants the service.
    let (view, _) = peers();
    let summer = at("2027-07-01T00:00:00Z");
    assert_eq!(view.trusted_at(summer).count(), 3);
    assert_eq!(view.rem_baseline_at(summer).count(), 0);

    // Version 2 says another profile: stored beside version 1, current, and RB-REMS no
    // longer counts as speaking the REM baseline.
    let v2 = b_csi(
        &f.kit,
        2,
        "2027-06-01T00:00:00Z",
        "http://example.org/other",
    );
    f.https.set("/b.xml", Ok(v2.clone()));
    assert_eq!(outcome(&sync(later), &b_url), "ok new=true");
    let history: Vec<u64> = store
        .peer_csi_history()
        .unwrap()
        .iter()
        .map(|v| v.sequence)
        .collect();
    assert_eq!(history, [2, 1]);
    let (view, _) = peers();
    assert_eq!(view.rem_baseline_at(later).count(), 0);
    let peer_b = view.by_mail_host("mx.rb-rems.rem", later).unwrap();
    assert!(!view.csi_of(peer_b).unwrap().rem_baseline);
    // Version 1 served again (a rollback): refused.
    f.https.set("/b.xml", Ok(v1.clone()));
    assert!(outcome(&sync(later), &b_url).contains("older than the stored 2"));
    assert_eq!(store.peer_csis().unwrap()[0].version.sequence, 2);
    // Another process sees the same.
    let (again, _) = load_peers(&*b.reopen(), &XmlDsig, &f.settings).unwrap();
    let peer_b = again.by_mail_host("mx.rb-rems.rem", later).unwrap();
    assert_eq!(again.csi_of(peer_b).unwrap().sequence, 2);
}

/// The refresh of `pec serve` ([`pec::rem_sync::run`]): its first pass stores the list and
/// RB-REMS's CSI and hands the roles a peers view in which RB-REMS speaks the REM baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_refresh_fetches_the_csi_and_updates_the_peers_view() {
    let Some(f) = fixture() else { return };
    let b = Backend::sqlite();
    // Valid from the real clock's now on (the refresh reads it).
    f.https.set(
        "/b.xml",
        Ok(b_csi(&f.kit, 1, "2030-01-01T00:00:00Z", REM_BASELINE)),
    );
    let handle = std::sync::Arc::new(pec::rem::trust::PeersHandle::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pec::rem_sync::run(
        b.store.clone(),
        handle.clone(),
        f.settings.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let speaks = || {
        let now = pec::message::time::Clock::now(&pec::message::time::SystemClock);
        handle
            .current()
            .rem_baseline_at(now)
            .map(|p| p.service.name.clone())
            .collect::<Vec<_>>()
    };
    while speaks().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh did not load RB-REMS's csi"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(speaks(), ["RB-REMS provider"]);
    assert_eq!(b.store.peer_csis().unwrap().len(), 1);
    let _ = stop.send(());
    task.await.unwrap();
}
