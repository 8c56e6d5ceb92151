// SPDX-License-Identifier: GPL-3.0-or-later
//! Reception-point classification (src/message/classify.rs) on arbitrary messages.
//!
//! Two paths: the whole of `classify_with` (S/MIME extraction and OpenSSL's CMS parser,
//! which reject nearly everything a fuzzer makes), and the formal checks that run once a
//! signature verified, which the fuzzer cannot reach by signing: there the input is taken
//! as the top-level header followed by the signed entity, and handed to
//! `classify_verified` as if its signature had verified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pec::crypto::verify::{ChainStatus, SmimeForm, Verified, VerifyOptions};
use pec::index::ProviderInfo;
use pec::message::classify::{classify_verified, classify_with, Classification};
use pec::message::mime;
use pec::message::time::Instant;

fuzz_target!(|data: &[u8]| {
    let at = Instant::from_unix(1_750_000_000);
    let c = classify_with(data, &VerifyOptions::without_index(at));
    assert!(matches!(c, Classification::NotPec { .. }) || c.verified().is_some());

    let (_, signed_entity) = mime::split_header_body(data);
    let verified = Verified {
        signer_der: Vec::new(),
        signer_sha1: String::new(),
        signer_subject: "CN=fuzz".into(),
        signer_email: Some("posta-certificata@pec.example.it".into()),
        not_before: Instant::from_unix(0),
        not_after: Instant::from_unix(4_000_000_000),
        signing_time: None,
        digest: "sha256".into(),
        content: signed_entity.to_vec().into(),
        provider: Some(ProviderInfo {
            name: "PEC Example".into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        }),
        trusted: true,
        chain: ChainStatus::NotChecked,
        revocation: pec::crypto::revocation::RevocationStatus::NotChecked,
        form: SmimeForm::MultipartSigned,
    };
    let c = classify_verified(data, verified);
    assert!(!matches!(c, Classification::NotPec { .. }));
    if let Some(m) = c.pec() {
        // A message classified as PEC always carries a daticert that passed its checks.
        assert!(m.daticert.check_for_tipo().is_ok());
    }
});
