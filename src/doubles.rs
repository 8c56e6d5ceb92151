// SPDX-License-Identifier: GPL-3.0-or-later
//! Test doubles for the outside systems (style rule 7): a store that can be told to fail, a scripted
//! antivirus and a recording injector. Tests inject them through constructors; nothing in
//! the service uses them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::antivirus::{Antivirus, AvError, ScanVerdict};
use crate::message::build::Certification;
use crate::message::time::Instant;
use crate::smtp::{InjectError, Injector};
use crate::store::{
    Accepted, ArrivalNotice, DueNotice, LogEvent, LogQuery, LogRequest, LoggedEvent, MailboxPolicy,
    Refused, SqliteStore, Store, StoreError, StoredIndex, TimeoutClaim, Tracking, TrackingState,
};
use crate::store::{DeliveryMark, Effect, Outbound, Staged};
use crate::store::{Evidence, IdentityChange, SenderIdentity, StoredEvidence};
use crate::store::{MailboxSettings, Outage, Retired, StoredTrustedList, TrustedListVersion};
use crate::store::{RemDue, RemWaitClaim, RemWaitState};
use crate::BoxFuture;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The store of the role tests: the real [`SqliteStore`] on a file of its own in a
/// temporary directory (removed on drop), behind a switch: with `fail` set every call
/// fails, to test the fail-closed paths.
#[derive(Debug)]
pub struct TestStore {
    store: SqliteStore,
    dir: PathBuf,
    pub fail: AtomicBool,
}

impl TestStore {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pec-test-store-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        // A leftover of a killed run with the same pid would hold old data.
        let _ = std::fs::remove_dir_all(&dir);
        let store = std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Database(format!("create {}: {e}", dir.display())))
            .and_then(|()| SqliteStore::open(&dir.join("pec.db")))
            .unwrap_or_else(|e| panic!("test store in {}: {e}", dir.display()));
        TestStore {
            store,
            dir,
            fail: AtomicBool::new(false),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::Database("test double set to fail".into()))
        } else {
            Ok(())
        }
    }

    /// The SQLite store underneath, with the legal log's own operations (kept receipts,
    /// quarantine listing, purge); never set to fail.
    pub fn log_store(&self) -> &SqliteStore {
        &self.store
    }

    /// Every event, oldest first.
    pub fn all_events(&self) -> Vec<LogEvent> {
        self.store
            .search_events(&LogQuery::default())
            .unwrap_or_else(|e| panic!("test store: {e}"))
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Each method: fail when told to, else the SQLite store's.
macro_rules! checked {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
            self.check()?;
            self.store.$name($($arg),*)
        })*
    };
}

impl Store for TestStore {
    checked! {
        fn sender_allowed(&self, login: &str, address: &str) -> bool;
        fn allow_sender(&self, login: &str, address: &str) -> ();
        fn record_accepted(&self, accepted: &Accepted) -> ();
        fn pending_acceptance(&self, pec_id: &str) -> Option<Accepted>;
        fn acceptance_emitted(&self, pec_id: &str, receipt_id: &str, at: Instant) -> bool;
        fn record_refused(&self, refused: &Refused) -> ();
        fn log(&self, event: &LogEvent) -> ();
        fn events_for(&self, pec_id: &str) -> Vec<LogEvent>;
        fn tracking_for(&self, pec_id: &str) -> Vec<Tracking>;
        fn quarantined(&self, pec_id: &str) -> Vec<Vec<u8>>;
        fn record_verified(&self, pec_id: &str, recipients: &[String], event: &LogEvent) -> ();
        fn is_verified(&self, pec_id: &str, recipient: &str) -> bool;
        fn update_tracking(&self, pec_id: &str, recipient: &str, state: TrackingState) -> bool;
        fn record_quarantine(&self, event: &LogEvent, message: &[u8]) -> ();
        fn mailbox_policy(&self, mailbox: &str) -> Option<MailboxPolicy>;
        fn set_mailbox_policy(&self, mailbox: &str, policy: &MailboxPolicy) -> ();
        fn envelope_certification(&self, pec_id: &str) -> Option<Certification>;
        fn delivery_notice(&self, pec_id: &str, recipient: &str) -> Option<String>;
        fn claim_delivery_notice(&self, recipient: &str, event: &LogEvent) -> bool;
        fn set_arrival_notice(&self, mailbox: &str, notice: Option<&ArrivalNotice>) -> ();
        fn arrival_notice(&self, mailbox: &str) -> Option<ArrivalNotice>;
        fn mailbox_settings(&self, mailbox: &str) -> MailboxSettings;
        fn set_mailbox_settings(&self, mailbox: &str, settings: &MailboxSettings) -> ();
        fn accepted_since(&self, sender: &str, since: Instant) -> u64;
        fn retire_mailbox(&self, retired: &Retired) -> bool;
        fn retired_mailbox(&self, mailbox: &str) -> Option<Retired>;
        fn suspend_provider(&self, outage: &Outage, event: &LogEvent) -> bool;
        fn resume_provider(&self, event: &LogEvent) -> Option<Outage>;
        fn provider_suspension(&self) -> Option<Outage>;
        fn outages(&self, from: Instant, to: Instant) -> Vec<Outage>;
        fn claim_timeouts(&self, claim: &TimeoutClaim) -> Vec<DueNotice>;
        fn release_timeout(&self, due: &DueNotice) -> ();
        fn stored_index(&self) -> Option<StoredIndex>;
        fn replace_index(&self, index: &StoredIndex) -> ();
        fn store_trusted_list(&self, list: &StoredTrustedList) -> bool;
        fn trusted_lists(&self) -> Vec<StoredTrustedList>;
        fn trusted_list_history(&self) -> Vec<TrustedListVersion>;
        fn search_events(&self, query: &LogQuery) -> Vec<LoggedEvent>;
        fn record_receipt_received(
            &self,
            event: &LogEvent,
            updates: &[(String, TrackingState)],
            kept: Option<&[u8]>
        ) -> usize;
        fn claim_log_request(
            &self,
            request: &LogRequest,
            limit: u32,
            since: Instant,
            event: &LogEvent
        ) -> bool;
        fn log_request(&self, id: &str) -> Option<(LogRequest, bool)>;
        fn log_request_answered(&self, event: &LogEvent) -> bool;
        fn stage_outbound(&self, out: &Outbound, effect: &Effect) -> Staged;
        fn outbound(&self, key: &str) -> Option<Outbound>;
        fn outbound_injected(&self, key: &str, at: Instant) -> ();
        fn claim_unsent(&self, attempted_before: Instant, now: Instant, limit: usize) -> Vec<Outbound>;
        fn begin_deliveries(
            &self,
            message_id: &str,
            recipients: &[String],
            owner: &str,
            at: Instant
        ) -> Vec<Option<DeliveryMark>>;
        fn deliveries_done(&self, message_id: &str, recipients: &[String], at: Instant) -> ();
        fn purge_outbox(&self, before: Instant) -> u64;
        fn record_evidence(&self, evidence: &Evidence, event: &LogEvent) -> bool;
        fn evidence(&self, id: &str) -> Option<StoredEvidence>;
        fn evidences_for(&self, message_id: &str) -> Vec<StoredEvidence>;
        fn set_sender_identity(&self, mailbox: &str, identity: &SenderIdentity) -> ();
        fn sender_identity(&self, mailbox: &str) -> Option<SenderIdentity>;
        fn clear_sender_identity(&self, mailbox: &str, at: Instant, by: &str) -> bool;
        fn sender_identity_changes(&self, mailbox: &str) -> Vec<IdentityChange>;
        fn claim_rem_waits(&self, claim: &RemWaitClaim) -> Vec<RemDue>;
        fn release_rem_wait(&self, due: &RemDue) -> ();
        fn settle_rem_wait(&self, due: &RemDue, at: Instant) -> bool;
        fn rem_waits_for(&self, message_id: &str) -> Vec<RemWaitState>;
    }
}

/// An antivirus that finds a virus wherever `marker` occurs, or is unreachable.
#[derive(Debug, Clone)]
pub struct MarkerAntivirus {
    pub marker: Vec<u8>,
    pub virus_name: String,
    pub unreachable: bool,
}

impl MarkerAntivirus {
    /// Finds `Eicar-Test-Signature` wherever the EICAR test string's start occurs.
    pub fn eicar() -> Self {
        MarkerAntivirus {
            marker: b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR".to_vec(),
            virus_name: "Eicar-Test-Signature".into(),
            unreachable: false,
        }
    }
}

impl Antivirus for MarkerAntivirus {
    fn scan<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<ScanVerdict, AvError>> {
        Box::pin(async move {
            if self.unreachable {
                return Err(AvError::Unreachable {
                    addr: "test".into(),
                    reason: "test double set to fail".into(),
                });
            }
            Ok(
                if crate::message::mime::find(data, &self.marker).is_some() {
                    ScanVerdict::Infected(self.virus_name.clone())
                } else {
                    ScanVerdict::Clean
                },
            )
        })
    }
}

/// One message handed to a [`RecordingInjector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message: Vec<u8>,
}

/// Records every injection; `fail_with` makes it fail instead.
#[derive(Debug, Default)]
pub struct RecordingInjector {
    pub sent: Mutex<Vec<Injected>>,
    pub fail_with: Mutex<Option<InjectError>>,
}

impl RecordingInjector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn messages(&self) -> Vec<Injected> {
        lock(&self.sent).clone()
    }
}

impl Injector for RecordingInjector {
    fn inject<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            if let Some(e) = lock(&self.fail_with).as_ref() {
                return Err(match e {
                    InjectError::Temporary { addr, reason } => InjectError::Temporary {
                        addr: addr.clone(),
                        reason: reason.clone(),
                    },
                    InjectError::Permanent { addr, reason } => InjectError::Permanent {
                        addr: addr.clone(),
                        reason: reason.clone(),
                    },
                });
            }
            lock(&self.sent).push(Injected {
                mail_from: mail_from.to_string(),
                rcpt_to: rcpt_to.to_vec(),
                message: message.to_vec(),
            });
            Ok(())
        })
    }
}

/// A signer whose token is unavailable: it has a certificate but every signature fails,
/// like a PKCS#11 token that was unplugged or a network HSM that is down.
pub struct UnavailableSigner {
    pub certificate: Vec<u8>,
}

impl crate::crypto::Signer for UnavailableSigner {
    fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }
    fn chain_der(&self) -> &[Vec<u8>] {
        &[]
    }
    fn digest(&self) -> crate::crypto::DigestAlg {
        crate::crypto::DigestAlg::Sha256
    }
    fn sign(
        &self,
        _digest: crate::crypto::DigestAlg,
        _data: &[u8],
    ) -> Result<Vec<u8>, crate::crypto::SignError> {
        Err(crate::crypto::SignError::Pkcs11(
            "token not present (CKR_TOKEN_NOT_PRESENT)".into(),
        ))
    }
}
