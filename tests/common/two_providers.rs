// SPDX-License-Identifier: GPL-3.0-or-later
//! Two providers for the in-process reception tests: the test PKI (`it` is provider A,
//! pec.example.it; `net` is provider B, pec.example.net; `outsider` is in no index), the
//! index both share, and a reception point (`AfterQueue`) with the in-memory store, a
//! recording injector in place of Postfix's reinjection listener and the marker antivirus.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pec::antivirus::Antivirus;
use pec::crypto::testing::make_test_pki;
use pec::crypto::{DigestAlg, PemSigner, Signer};
use pec::doubles::{Injected, MarkerAntivirus, RecordingInjector, TestStore};
use pec::index::{IndexHandle, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::message::build::{Builder, Certification, Generated, Issuer, OriginalInfo};
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::kind::RecipientType;
use pec::message::time::{FixedClock, Instant};
use pec::reception::{AfterQueue, Local, Reception};
use pec::smtp::{FilterReply, Transaction};
use pec::store::{Accepted, MailboxPolicy, Store};

pub const MARKER: &[u8] = b"PEC-TEST-VIRUS-MARKER";
pub const A_ID: &str = "opec1.20250603101112.1.1.a@pec.example.it";
pub const B_ID: &str = "opec1.20250603101112.1.1.b@pec.example.net";

pub fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

pub fn now() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:20Z").unwrap()
}

pub struct Pki {
    _dir: tempfile::TempDir,
    pub it: Arc<PemSigner>,
    pub net: Arc<PemSigner>,
    pub outsider: Arc<PemSigner>,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = make_test_pki(&dir.path().join("pki")).unwrap();
        let open = |k: &Path, c: &Path| {
            Arc::new(PemSigner::from_files(k, c, None, DigestAlg::Sha256).unwrap())
        };
        Pki {
            it: open(&p.it_key, &p.it_cert),
            net: open(&p.net_key, &p.net_cert),
            outsider: open(&p.outsider_key, &p.outsider_cert),
            _dir: dir,
        }
    })
}

#[derive(Clone, Copy, PartialEq)]
pub enum Provider {
    A,
    B,
}

impl Provider {
    pub fn domain(self) -> &'static str {
        match self {
            Provider::A => "pec.example.it",
            Provider::B => "pec.example.net",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Provider::A => "PEC Example IT S.p.A.",
            Provider::B => "PEC Example NET S.p.A.",
        }
    }
    pub fn mail_receipt(self) -> String {
        format!("ricevute@{}", self.domain())
    }
    pub fn signer(self) -> Arc<PemSigner> {
        match self {
            Provider::A => pki().it.clone(),
            Provider::B => pki().net.clone(),
        }
    }
    pub fn issuer(self) -> Issuer {
        Issuer {
            provider_name: self.name().into(),
            service_address: format!("posta-certificata@{}", self.domain()),
            envelope_sender_header: true,
        }
    }
    pub fn info(self) -> ProviderInfo {
        ProviderInfo {
            name: self.name().into(),
            mail_receipt: self.mail_receipt(),
            managed_domains: vec![self.domain().into()],
        }
    }
    /// Builds a message as this provider would.
    pub fn build(self, f: impl FnOnce(&Builder<'_>) -> Generated) -> Generated {
        let issuer = self.issuer();
        let signer = self.signer();
        let ids = SequentialIds::new("opec1.gen", self.domain());
        f(&Builder {
            issuer: &issuer,
            signer: &*signer,
            ids: &ids,
        })
    }
}

/// The index both providers share.
pub fn index() -> ProviderIndex {
    ProviderIndex::from_records(
        [Provider::A, Provider::B]
            .into_iter()
            .map(|p| ProviderRecord {
                info: p.info(),
                certificates: vec![p.signer().certificate_der().to_vec()],
            })
            .collect(),
    )
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/originals")
            .join(name),
    )
    .unwrap()
}

pub struct Rx {
    pub aq: AfterQueue,
    /// The reception point's index: refreshed by [`IndexHandle::replace`].
    pub index: Arc<IndexHandle>,
    pub store: Arc<TestStore>,
    pub inj: Arc<RecordingInjector>,
    pub we: Provider,
}

pub fn rx(we: Provider) -> Rx {
    rx_with(we, Arc::new(index()), MailboxPolicy::Anomaly, now())
}

pub fn rx_with(we: Provider, index: Arc<ProviderIndex>, default: MailboxPolicy, at: Instant) -> Rx {
    let av: Arc<dyn Antivirus> = Arc::new(MarkerAntivirus {
        marker: MARKER.to_vec(),
        virus_name: "PEC-Test-Virus".into(),
        unreachable: false,
    });
    rx_full(we, index, default, at, av, vec![we.domain().into()])
}

pub fn rx_full(
    we: Provider,
    index: Arc<ProviderIndex>,
    default: MailboxPolicy,
    at: Instant,
    antivirus: Arc<dyn Antivirus>,
    domains: Vec<String>,
) -> Rx {
    let store = Arc::new(TestStore::new());
    let inj = Arc::new(RecordingInjector::new());
    let signer: Arc<dyn Signer> = we.signer();
    let handle = Arc::new(IndexHandle::from(index));
    let aq = AfterQueue::new(
        store.clone(),
        inj.clone(),
        we.issuer(),
        signer,
        Arc::new(SequentialIds::new("opec1.rx", we.domain())),
        Reception {
            chain: None,
            index: handle.clone(),
            antivirus,
            domains,
            mail_receipt: we.mail_receipt(),
            default_policy: default,
        },
    )
    .with_clock(Arc::new(FixedClock::new(at)));
    Rx {
        aq,
        index: handle,
        store,
        inj,
        we,
    }
}

impl Rx {
    pub fn tx(from: &str, rcpt: &[&str], data: &[u8]) -> Transaction {
        Transaction {
            mail_from: from.into(),
            rcpt_to: rcpt.iter().map(|s| s.to_string()).collect(),
            data: data.to_vec().into(),
            queue_id: Some("4TESTQ".into()),
            client: None,
        }
    }
    pub async fn run(&self, from: &str, rcpt: &[&str], data: &[u8]) -> FilterReply {
        self.aq.filter(&Self::tx(from, rcpt, data)).await
    }
    /// What the reception point decided for the local recipients.
    pub async fn local(&self, from: &str, rcpt: &[&str], data: &[u8]) -> Local {
        let outcome = self
            .aq
            .process(&Self::tx(from, rcpt, data), None)
            .await
            .unwrap();
        outcome.local.expect("a local decision")
    }
    pub fn sent(&self) -> Vec<Injected> {
        self.inj.messages()
    }
    /// Classifies an injected message as the other provider would.
    pub fn classify(&self, m: &Injected) -> Classification {
        classify(&m.message, index().trust(), now())
    }
}

/// The value of the first top-level header `name`, unfolded.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .split("\r\n")
        .find(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
}

/// Names of the top-level header fields of `raw`, after checking that the header block is
/// well formed: CRLF line ends only, every line a `name: value` field or a continuation.
pub fn header_names(raw: &[u8]) -> Vec<String> {
    let end = find(raw, b"\r\n\r\n").expect("a header block");
    let head = &raw[..end + 2];
    let mut names = Vec::new();
    for line in head.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").expect("CRLF line ends only");
        assert!(!line.contains(&b'\r'), "bare CR in {line:?}");
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        let colon = line.iter().position(|b| *b == b':').expect("a field");
        let name = &line[..colon];
        assert!(
            !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic()),
            "bad field name {:?}",
            String::from_utf8_lossy(line)
        );
        names.push(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    names
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// B's envelope B_ID from bob to A's alice, tracked in B's store.
pub fn our_envelope_b_to_a(store: &TestStore) -> Certification {
    let info = OriginalInfo::parse(&fixture("ordinary.eml")).unwrap();
    let cert = Certification::for_submission(
        &info,
        "bob@pec.example.net",
        &[("alice@pec.example.it".into(), RecipientType::Certificato)],
        B_ID,
    );
    store
        .record_accepted(&Accepted {
            auth_at: None,
            pec_id: B_ID.into(),
            queue_id: None,
            at: at(),
            cert: cert.clone(),
            login: "bob@pec.example.net".into(),
            provider: Provider::B.name().into(),
        })
        .unwrap();
    cert
}
