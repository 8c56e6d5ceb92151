// SPDX-License-Identifier: GPL-3.0-or-later
//! [`Store`] on both backends: each method is one read, or one write transaction of the
//! backend ([`Backend::write`]).

use super::legal::{append, append_event, chain_row, lock_head, search};
use super::outbox::{self as ops, tracking_forward};
use super::{all, args, exec, one, opt, to_i64, Arg, Backend, Conn};
use crate::message::build::Certification;
use crate::message::kind::ReceiptType;
use crate::message::time::Instant;
use crate::store::codec::{
    decode_cert, decode_policy, parse_state, policy_columns, timeout_columns,
};
use crate::store::outbox::received_record;
use crate::store::{
    Accepted, ArrivalNotice, CsiVersion, DeliveryMark, DueNotice, Effect, EventKind, LogEvent,
    LogQuery, LogRequest, LoggedEvent, MailboxPolicy, MailboxSettings, MailboxState, Outage,
    OutageKind, Outbound, Refused, Retired, Staged, Store, StoreError, StoredCsi, StoredIndex,
    StoredTrustedList, TimeoutClaim, Tracking, TrackingState, TrustedListVersion,
};
use crate::store::{Evidence, IdentityChange, RecipientProtocol, SenderIdentity, StoredEvidence};
use crate::store::{RemDue, RemWaitClaim, RemWaitState};

/// A setting as an SQL integer (`None`: NULL).
fn setting(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// An [`Outage`] from `kind, reason, started_at, ended_at`.
fn outage_row(r: &super::Row) -> Result<Outage, StoreError> {
    let kind: String = r.get(0)?;
    Ok(Outage {
        kind: OutageKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("outages row: unknown kind \"{kind}\"")))?,
        reason: r.get(1)?,
        start: Instant::from_unix(r.get(2)?),
        end: r.get::<Option<i64>>(3)?.map(Instant::from_unix),
    })
}

const OUTAGE_COLUMNS: &str = "kind, reason, started_at, ended_at";

const TRUSTED_LIST_COLUMNS: &str = "t.source, t.territory, t.sequence, t.issued_at, \
     t.next_update, t.fetched_at, t.checked_at, t.id";

const CSI_COLUMNS: &str = "t.source, t.service, t.sequence, t.issued_at, t.next_update, \
     t.profile, t.fetched_at, t.checked_at, t.id";

/// A [`CsiVersion`] from [`CSI_COLUMNS`].
fn csi_version(r: &super::Row) -> Result<CsiVersion, StoreError> {
    Ok(CsiVersion {
        source: r.get(0)?,
        service: r.get(1)?,
        sequence: u64::try_from(r.get::<i64>(2)?).unwrap_or(0),
        issued_at: Instant::from_unix(r.get(3)?),
        next_update: r.get::<Option<i64>>(4)?.map(Instant::from_unix),
        profile: r.get(5)?,
        fetched_at: Instant::from_unix(r.get(6)?),
        checked_at: Instant::from_unix(r.get(7)?),
    })
}

/// A [`TrustedListVersion`] from [`TRUSTED_LIST_COLUMNS`].
fn trusted_list_version(r: &super::Row) -> Result<TrustedListVersion, StoreError> {
    Ok(TrustedListVersion {
        source: r.get(0)?,
        territory: r.get(1)?,
        sequence: u64::try_from(r.get::<i64>(2)?).unwrap_or(0),
        issued_at: Instant::from_unix(r.get(3)?),
        next_update: r.get::<Option<i64>>(4)?.map(Instant::from_unix),
        fetched_at: Instant::from_unix(r.get(5)?),
        checked_at: Instant::from_unix(r.get(6)?),
    })
}

/// Keeps a version of a document kept by source and sequence (a Trusted List, a peer's
/// CSI): one not seen before is inserted by `insert` with `values`; one already stored
/// only has its `checked_at` moved (its first text stays). True when it is new.
fn keep_version(
    c: &dyn Conn,
    what: &str,
    table: &str,
    (source, sequence, checked_at): (&str, i64, Instant),
    insert: &str,
    values: &[Arg<'_>],
) -> Result<bool, StoreError> {
    let moved = exec(
        c,
        what,
        &format!("UPDATE {table} SET checked_at = $3 WHERE source = $1 AND sequence = $2"),
        args![source, sequence, checked_at.unix()],
    )?;
    if moved > 0 {
        return Ok(false);
    }
    exec(c, what, insert, values)?;
    Ok(true)
}

/// The current version of each source of `table` (its highest sequence): `columns` (of
/// `t`), then its text; by source.
fn current_versions(
    c: &dyn Conn,
    what: &str,
    table: &str,
    columns: &str,
) -> Result<Vec<super::Row>, StoreError> {
    all(
        c,
        what,
        &format!(
            "SELECT {columns}, t.xml FROM {table} t
             WHERE t.sequence = (SELECT MAX(sequence) FROM {table} u WHERE u.source = t.source)
             ORDER BY t.source"
        ),
        &[],
    )
}

/// Every version of `table`, `columns` (of `t`) without the text: by source, newest first.
fn version_history(
    c: &dyn Conn,
    what: &str,
    table: &str,
    columns: &str,
) -> Result<Vec<super::Row>, StoreError> {
    all(
        c,
        what,
        &format!("SELECT {columns} FROM {table} t ORDER BY t.source, t.sequence DESC"),
        &[],
    )
}

impl<B: Backend> Store for B {
    /// The rule: `login` may send as `address` when the `senders` table maps that pair;
    /// a login with no mapping at all may send only as the address equal to the login
    /// (ASCII case-insensitive). A mapping therefore replaces the default: a login with
    /// mappings that does not list itself cannot send as itself. Addresses are compared in
    /// lower case; logins exactly.
    fn sender_allowed(&self, login: &str, address: &str) -> Result<bool, StoreError> {
        let address = address.to_ascii_lowercase();
        let row = self.read(|c| {
            one(
                c,
                &format!("sender check for login \"{login}\""),
                "SELECT EXISTS (SELECT 1 FROM senders WHERE login = $1 AND address = $2),
                        EXISTS (SELECT 1 FROM senders WHERE login = $1)",
                args![login, &address],
            )
        })?;
        let (mapped, any): (bool, bool) = (row.get(0)?, row.get(1)?);
        Ok(mapped || (!any && login.eq_ignore_ascii_case(&address)))
    }

    /// Idempotent: mapping a pair twice is not an error.
    fn allow_sender(&self, login: &str, address: &str) -> Result<(), StoreError> {
        let address = address.to_ascii_lowercase();
        self.write("allow sender", |c| {
            exec(
                c,
                &format!("allow login \"{login}\" to send as \"{address}\""),
                "INSERT INTO senders (login, address) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                args![login, &address],
            )
            .map(drop)
        })
    }

    fn record_accepted(&self, accepted: &Accepted) -> Result<(), StoreError> {
        self.record_accepted_routed(accepted, &[])
    }

    fn recipient_protocols(
        &self,
        pec_id: &str,
    ) -> Result<Vec<(String, RecipientProtocol)>, StoreError> {
        let rows = self.read(|c| {
            all(
                c,
                &format!("read recipient protocols of \"{pec_id}\""),
                &format!(
                    "SELECT recipient, protocol FROM recipient_protocols WHERE pec_id = $1
                     ORDER BY {}",
                    c.dialect().seq()
                ),
                args![pec_id],
            )
        })?;
        rows.iter()
            .map(|r| {
                let p: String = r.get(1)?;
                let protocol = RecipientProtocol::parse(&p).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "recipient_protocols row: unknown protocol \"{p}\""
                    ))
                })?;
                Ok((r.get(0)?, protocol))
            })
            .collect()
    }

    fn record_accepted_routed(
        &self,
        accepted: &Accepted,
        protocols: &[(String, RecipientProtocol)],
    ) -> Result<(), StoreError> {
        self.write("record accepted", |c| {
            ops::accepted_rows(c, accepted, protocols)
        })
    }

    fn pending_acceptance(&self, pec_id: &str) -> Result<Option<Accepted>, StoreError> {
        let Some(row) = self.read(|c| {
            opt(
                c,
                &format!("read pending acceptance \"{pec_id}\""),
                &format!(
                    "SELECT {}, queue_id, at, login, provider, cert FROM pending_acceptance
                     WHERE pec_id = $1 AND state = 'pending'",
                    c.dialect().seq()
                ),
                args![pec_id],
            )
        })?
        else {
            return Ok(None);
        };
        let auth_at = self.read(|c| ops::auth_at(c, pec_id))?;
        Ok(Some(Accepted {
            auth_at,
            pec_id: pec_id.to_string(),
            queue_id: row.get(1)?,
            at: Instant::from_unix(row.get(2)?),
            cert: decode_cert(row.get(0)?, &row.get::<String>(5)?)?,
            login: row.get(3)?,
            provider: row.get(4)?,
        }))
    }

    fn acceptance_emitted(
        &self,
        pec_id: &str,
        receipt_id: &str,
        at: Instant,
    ) -> Result<bool, StoreError> {
        self.write("acceptance emitted", |c| {
            // The chain head first, as every appending transaction (one lock order).
            let mut head = lock_head(c)?;
            let closed = ops::close_acceptance(c, &mut head, pec_id, receipt_id, at)?;
            Ok(closed)
        })
    }

    /// The outcome is `virus` for [`MessageKind::NonAcceptanceVirus`], `refused` otherwise.
    /// With a quarantined message, a `quarantine` row (expiring 30 calendar months after
    /// `at`) and a [`EventKind::Quarantined`] event are added in the same transaction.
    ///
    /// [`MessageKind::NonAcceptanceVirus`]: crate::message::kind::MessageKind::NonAcceptanceVirus
    /// [`EventKind::Quarantined`]: crate::store::EventKind::Quarantined
    fn record_refused(&self, refused: &Refused) -> Result<(), StoreError> {
        self.write("record refused", |c| {
            let mut head = lock_head(c)?;
            ops::refused(c, &mut head, refused)?;
            Ok(())
        })
    }

    fn log(&self, event: &LogEvent) -> Result<(), StoreError> {
        self.write("log", |c| append_event(c, event))
    }

    fn events_for(&self, pec_id: &str) -> Result<Vec<LogEvent>, StoreError> {
        let rows = self.read(|c| {
            all(
                c,
                &format!("read events of \"{pec_id}\""),
                &format!(
                    "SELECT {} FROM events WHERE pec_id = $1 ORDER BY at, id",
                    crate::store::chain::COLUMNS
                ),
                args![pec_id],
            )
        })?;
        rows.iter().map(|r| chain_row(r)?.0.event()).collect()
    }

    fn tracking_for(&self, pec_id: &str) -> Result<Vec<Tracking>, StoreError> {
        let rows = self.read(|c| {
            let seq = c.dialect().seq();
            all(
                c,
                &format!("read tracking of \"{pec_id}\""),
                &format!(
                    "SELECT {seq}, recipient, sent_at, state FROM tracking
                     WHERE pec_id = $1 ORDER BY {seq}"
                ),
                args![pec_id],
            )
        })?;
        rows.iter()
            .map(|r| {
                let state: String = r.get(3)?;
                let state = parse_state(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "tracking row {}: unknown state \"{state}\"",
                        r.get::<i64>(0).unwrap_or_default()
                    ))
                })?;
                Ok(Tracking {
                    pec_id: pec_id.to_string(),
                    recipient: r.get(1)?,
                    sent_at: Instant::from_unix(r.get(2)?),
                    state,
                })
            })
            .collect()
    }

    fn quarantined(&self, pec_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|c| {
            all(
                c,
                &format!("read quarantine of \"{pec_id}\""),
                "SELECT message FROM quarantine WHERE pec_id = $1 ORDER BY id",
                args![pec_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
    }

    fn record_verified(
        &self,
        pec_id: &str,
        recipients: &[String],
        event: &LogEvent,
    ) -> Result<(), StoreError> {
        self.write("record verified", |c| {
            let mut head = lock_head(c)?;
            ops::verified(c, &mut head, pec_id, recipients, event)?;
            Ok(())
        })
    }

    fn is_verified(&self, pec_id: &str, recipient: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            one(
                c,
                &format!("read verified \"{pec_id}\""),
                "SELECT EXISTS (SELECT 1 FROM verified WHERE pec_id = $1 AND recipient = $2)",
                args![pec_id, &recipient.to_ascii_lowercase()],
            )?
            .get(0)
        })
    }

    fn update_tracking(
        &self,
        pec_id: &str,
        recipient: &str,
        state: TrackingState,
    ) -> Result<bool, StoreError> {
        self.write("update tracking", |c| {
            tracking_forward(c, pec_id, recipient, state)
        })
    }

    fn record_quarantine(&self, event: &LogEvent, message: &[u8]) -> Result<(), StoreError> {
        let pec_id = &event.pec_id;
        self.write("record quarantine", |c| {
            // Every writer of the log holds the head: no other one between look and insert.
            let mut head = lock_head(c)?;
            let held: bool = one(
                c,
                &format!("read quarantine of \"{pec_id}\""),
                "SELECT EXISTS (SELECT 1 FROM quarantine WHERE pec_id = $1 AND message = $2)",
                args![pec_id, message],
            )?
            .get(0)?;
            if held {
                return Ok(());
            }
            let reason = event.reason.as_deref().unwrap_or_default();
            ops::quarantine(c, pec_id, event.at, reason, message)?;
            append(c, &mut head, event)?;
            Ok(())
        })
    }

    fn mailbox_policy(&self, mailbox: &str) -> Result<Option<MailboxPolicy>, StoreError> {
        let row = self.read(|c| {
            opt(
                c,
                &format!("read policy of \"{mailbox}\""),
                "SELECT policy, forward_to FROM mailbox_policy WHERE mailbox = $1",
                args![&mailbox.to_ascii_lowercase()],
            )
        })?;
        row.map(|r| decode_policy(mailbox, r.get(0)?, r.get(1)?))
            .transpose()
    }

    fn set_mailbox_policy(&self, mailbox: &str, policy: &MailboxPolicy) -> Result<(), StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let (label, forward_to) = policy_columns(policy);
        self.write("set mailbox policy", |c| {
            exec(
                c,
                &format!("set policy of \"{mailbox}\""),
                "INSERT INTO mailbox_policy (mailbox, policy, forward_to) VALUES ($1, $2, $3)
                 ON CONFLICT (mailbox) DO UPDATE
                 SET policy = excluded.policy, forward_to = excluded.forward_to",
                args![&mailbox, label, &forward_to],
            )
            .map(drop)
        })
    }

    fn envelope_certification(&self, pec_id: &str) -> Result<Option<Certification>, StoreError> {
        let row = self.read(|c| {
            opt(
                c,
                &format!("read certification of \"{pec_id}\""),
                &format!(
                    "SELECT {}, cert FROM pending_acceptance WHERE pec_id = $1",
                    c.dialect().seq()
                ),
                args![pec_id],
            )
        })?;
        row.map(|r| decode_cert(r.get(0)?, &r.get::<String>(1)?))
            .transpose()
    }

    fn delivery_notice(&self, pec_id: &str, recipient: &str) -> Result<Option<String>, StoreError> {
        let row = self.read(|c| {
            opt(
                c,
                &format!("read delivery notice of \"{pec_id}\""),
                "SELECT notice_id FROM delivery_notices WHERE pec_id = $1 AND recipient = $2",
                args![pec_id, &recipient.to_ascii_lowercase()],
            )
        })?;
        row.map(|r| r.get(0)).transpose()
    }

    /// The insert on the (pec_id, recipient) key decides, inside the transaction that also
    /// appends the event: concurrent claims cannot both win.
    fn claim_delivery_notice(&self, recipient: &str, event: &LogEvent) -> Result<bool, StoreError> {
        self.write("claim delivery notice", |c| {
            let mut head = lock_head(c)?;
            let claimed = ops::claim_notice(c, &mut head, recipient, event)?;
            Ok(claimed)
        })
    }

    fn set_arrival_notice(
        &self,
        mailbox: &str,
        notice: Option<&ArrivalNotice>,
    ) -> Result<(), StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let notice = notice
            .map(|n| {
                let senders: Vec<String> =
                    n.senders.iter().map(|s| s.to_ascii_lowercase()).collect();
                serde_json::to_string(&senders)
                    .map(|senders| (&n.notify, senders))
                    .map_err(|e| StoreError::Database(format!("encode senders: {e}")))
            })
            .transpose()?;
        self.write("set arrival notice", |c| {
            exec(
                c,
                &format!("remove arrival notice of \"{mailbox}\""),
                "DELETE FROM arrival_notices WHERE mailbox = $1",
                args![&mailbox],
            )?;
            if let Some((notify, senders)) = &notice {
                exec(
                    c,
                    &format!("set arrival notice of \"{mailbox}\""),
                    "INSERT INTO arrival_notices (mailbox, notify, senders) VALUES ($1, $2, $3)",
                    args![&mailbox, *notify, senders],
                )?;
            }
            Ok(())
        })
    }

    fn arrival_notice(&self, mailbox: &str) -> Result<Option<ArrivalNotice>, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let Some(row) = self.read(|c| {
            opt(
                c,
                &format!("read arrival notice of \"{mailbox}\""),
                "SELECT notify, senders FROM arrival_notices WHERE mailbox = $1",
                args![&mailbox],
            )
        })?
        else {
            return Ok(None);
        };
        let senders: String = row.get(1)?;
        let senders: Vec<String> = serde_json::from_str(&senders).map_err(|e| {
            StoreError::Corrupt(format!("arrival_notices row \"{mailbox}\": senders: {e}"))
        })?;
        Ok(Some(ArrivalNotice {
            notify: row.get(0)?,
            senders,
        }))
    }

    fn mailbox_settings(&self, mailbox: &str) -> Result<MailboxSettings, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let Some(r) = self.read(|c| {
            opt(
                c,
                &format!("read settings of \"{mailbox}\""),
                "SELECT receipt_type, max_recipients, max_total_size, daily_quota, state
                 FROM mailbox_settings WHERE mailbox = $1",
                args![&mailbox],
            )
        })?
        else {
            return Ok(MailboxSettings::default());
        };
        let corrupt = |what: &str, v: &str| {
            StoreError::Corrupt(format!("mailbox_settings of \"{mailbox}\": {what} \"{v}\""))
        };
        let limit = |i: usize| -> Result<Option<u64>, StoreError> {
            r.get::<Option<i64>>(i)?
                .map(|v| u64::try_from(v).map_err(|_| corrupt("limit", &v.to_string())))
                .transpose()
        };
        let receipt_type = r
            .get::<Option<String>>(0)?
            .map(|t| {
                ReceiptType::ALL
                    .into_iter()
                    .find(|k| k.as_str() == t)
                    .ok_or_else(|| corrupt("receipt_type", &t))
            })
            .transpose()?;
        let state: String = r.get(4)?;
        Ok(MailboxSettings {
            receipt_type,
            max_recipients: limit(1)?,
            max_total_size: limit(2)?,
            daily_quota: limit(3)?,
            state: MailboxState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        })
    }

    fn set_mailbox_settings(
        &self,
        mailbox: &str,
        settings: &MailboxSettings,
    ) -> Result<(), StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        self.write("set mailbox settings", |c| {
            exec(
                c,
                &format!("set settings of \"{mailbox}\""),
                "INSERT INTO mailbox_settings
                     (mailbox, receipt_type, max_recipients, max_total_size, daily_quota, state)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (mailbox) DO UPDATE SET receipt_type = excluded.receipt_type,
                     max_recipients = excluded.max_recipients,
                     max_total_size = excluded.max_total_size,
                     daily_quota = excluded.daily_quota, state = excluded.state",
                args![
                    &mailbox,
                    settings.receipt_type.map(|t| t.as_str()),
                    setting(settings.max_recipients),
                    setting(settings.max_total_size),
                    setting(settings.daily_quota),
                    settings.state.label(),
                ],
            )
            .map(drop)
        })
    }

    fn accepted_since(&self, sender: &str, since: Instant) -> Result<u64, StoreError> {
        let sender = sender.to_ascii_lowercase();
        let n: i64 = self.read(|c| {
            one(
                c,
                &format!("count the acceptances of \"{sender}\""),
                "SELECT COUNT(*) FROM acceptance_senders WHERE sender = $1 AND at >= $2",
                args![&sender, since.unix()],
            )?
            .get(0)
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn retire_mailbox(&self, retired: &Retired) -> Result<bool, StoreError> {
        let mailbox = retired.mailbox.to_ascii_lowercase();
        self.write("retire a mailbox", |c| {
            exec(
                c,
                &format!("retire \"{mailbox}\""),
                "INSERT INTO retired_mailboxes (mailbox, holder, retired_at) VALUES ($1, $2, $3)
                 ON CONFLICT (mailbox) DO NOTHING",
                args![&mailbox, &retired.holder, retired.at.unix()],
            )
            .map(|n| n == 1)
        })
    }

    fn retired_mailbox(&self, mailbox: &str) -> Result<Option<Retired>, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let row = self.read(|c| {
            opt(
                c,
                &format!("read retirement of \"{mailbox}\""),
                "SELECT holder, retired_at FROM retired_mailboxes WHERE mailbox = $1",
                args![&mailbox],
            )
        })?;
        row.map(|r| {
            Ok(Retired {
                mailbox: mailbox.clone(),
                holder: r.get(0)?,
                at: Instant::from_unix(r.get(1)?),
            })
        })
        .transpose()
    }

    /// The open outage is unique (index `outages_open`): of two concurrent suspensions one
    /// fails its insert and records nothing.
    fn suspend_provider(&self, outage: &Outage, event: &LogEvent) -> Result<bool, StoreError> {
        self.write("suspend the service", |c| {
            let mut head = lock_head(c)?;
            let open: bool = one(
                c,
                "read the open outage",
                "SELECT EXISTS (SELECT 1 FROM outages WHERE ended_at IS NULL)",
                &[],
            )?
            .get(0)?;
            if open {
                return Ok(false);
            }
            exec(
                c,
                "open an outage",
                "INSERT INTO outages (kind, reason, started_at) VALUES ($1, $2, $3)",
                args![outage.kind.label(), &outage.reason, outage.start.unix()],
            )?;
            append(c, &mut head, event)?;
            Ok(true)
        })
    }

    fn resume_provider(&self, event: &LogEvent) -> Result<Option<Outage>, StoreError> {
        self.write("resume the service", |c| {
            let mut head = lock_head(c)?;
            let Some(row) = opt(
                c,
                "close the open outage",
                &format!(
                    "UPDATE outages SET ended_at = $1 WHERE ended_at IS NULL
                     RETURNING {OUTAGE_COLUMNS}"
                ),
                args![event.at.unix()],
            )?
            else {
                return Ok(None);
            };
            append(c, &mut head, event)?;
            outage_row(&row).map(Some)
        })
    }

    fn provider_suspension(&self) -> Result<Option<Outage>, StoreError> {
        let row = self.read(|c| {
            opt(
                c,
                "read the open outage",
                &format!("SELECT {OUTAGE_COLUMNS} FROM outages WHERE ended_at IS NULL"),
                &[],
            )
        })?;
        row.as_ref().map(outage_row).transpose()
    }

    fn outages(&self, from: Instant, to: Instant) -> Result<Vec<Outage>, StoreError> {
        let rows = self.read(|c| {
            all(
                c,
                "read the outages",
                &format!(
                    "SELECT {OUTAGE_COLUMNS} FROM outages
                     WHERE started_at < $2 AND (ended_at IS NULL OR ended_at > $1)
                     ORDER BY started_at, id"
                ),
                args![from.unix(), to.unix()],
            )
        })?;
        rows.iter().map(outage_row).collect()
    }

    fn claim_timeouts(&self, claim: &TimeoutClaim) -> Result<Vec<DueNotice>, StoreError> {
        self.write("claim timer notices", |c| ops::claim_timeouts(c, claim))
    }

    fn release_timeout(&self, due: &DueNotice) -> Result<(), StoreError> {
        let (claimed, id, _) = timeout_columns(due.which);
        let (pec_id, recipient) = (&due.pec_id, &due.recipient);
        self.write("release timer notice", |c| {
            exec(
                c,
                &format!("release notice for \"{recipient}\" of \"{pec_id}\""),
                &format!(
                    "UPDATE tracking SET {claimed} = NULL
                     WHERE pec_id = $1 AND recipient = $2 AND {claimed} = $3 AND {id} IS NULL"
                ),
                args![pec_id, recipient, due.claimed_at.unix()],
            )
            .map(drop)
        })
    }

    fn stored_index(&self) -> Result<Option<StoredIndex>, StoreError> {
        let row = self.read(|c| {
            opt(
                c,
                "read the provider index",
                "SELECT ldif, providers, fetched_at, source FROM provider_index WHERE id = 1",
                &[],
            )
        })?;
        row.map(|r| {
            Ok(StoredIndex {
                ldif: r.get(0)?,
                providers: usize::try_from(r.get::<i64>(1)?).unwrap_or(0),
                fetched_at: Instant::from_unix(r.get(2)?),
                source: r.get(3)?,
            })
        })
        .transpose()
    }

    fn replace_index(&self, index: &StoredIndex) -> Result<(), StoreError> {
        self.write("replace the provider index", |c| {
            exec(
                c,
                "replace the provider index",
                "INSERT INTO provider_index (id, ldif, providers, fetched_at, source)
                 VALUES (1, $1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET ldif = excluded.ldif,
                     providers = excluded.providers, fetched_at = excluded.fetched_at,
                     source = excluded.source",
                args![
                    &index.ldif,
                    to_i64(index.providers),
                    index.fetched_at.unix(),
                    &index.source
                ],
            )
            .map(drop)
        })
    }

    fn store_trusted_list(&self, list: &StoredTrustedList) -> Result<bool, StoreError> {
        let v = &list.version;
        let what = format!(
            "store trusted list {} sequence {} from \"{}\"",
            v.territory, v.sequence, v.source
        );
        let sequence = i64::try_from(v.sequence).unwrap_or(i64::MAX);
        self.write("store a trusted list", |c| {
            keep_version(
                c,
                &what,
                "rem_trusted_lists",
                (&v.source, sequence, v.checked_at),
                "INSERT INTO rem_trusted_lists (source, territory, sequence, issued_at,
                     next_update, fetched_at, checked_at, xml)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                args![
                    &v.source,
                    &v.territory,
                    sequence,
                    v.issued_at.unix(),
                    v.next_update.map(Instant::unix),
                    v.fetched_at.unix(),
                    v.checked_at.unix(),
                    &list.xml
                ],
            )
        })
    }

    fn trusted_lists(&self) -> Result<Vec<StoredTrustedList>, StoreError> {
        let rows = self.read(|c| {
            current_versions(
                c,
                "read the trusted lists",
                "rem_trusted_lists",
                TRUSTED_LIST_COLUMNS,
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(StoredTrustedList {
                    version: trusted_list_version(r)?,
                    xml: r.get(8)?,
                })
            })
            .collect()
    }

    fn trusted_list_history(&self) -> Result<Vec<TrustedListVersion>, StoreError> {
        let rows = self.read(|c| {
            version_history(
                c,
                "read the trusted list history",
                "rem_trusted_lists",
                TRUSTED_LIST_COLUMNS,
            )
        })?;
        rows.iter().map(trusted_list_version).collect()
    }

    fn store_peer_csi(&self, csi: &StoredCsi) -> Result<bool, StoreError> {
        let v = &csi.version;
        let what = format!(
            "store the csi of {} sequence {} from \"{}\"",
            v.service, v.sequence, v.source
        );
        let sequence = i64::try_from(v.sequence).unwrap_or(i64::MAX);
        self.write("store a peer's csi", |c| {
            keep_version(
                c,
                &what,
                "rem_peer_csi",
                (&v.source, sequence, v.checked_at),
                "INSERT INTO rem_peer_csi (source, service, sequence, issued_at, next_update,
                     profile, fetched_at, checked_at, xml)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                args![
                    &v.source,
                    &v.service,
                    sequence,
                    v.issued_at.unix(),
                    v.next_update.map(Instant::unix),
                    &v.profile,
                    v.fetched_at.unix(),
                    v.checked_at.unix(),
                    &csi.xml
                ],
            )
        })
    }

    fn peer_csis(&self) -> Result<Vec<StoredCsi>, StoreError> {
        let rows =
            self.read(|c| current_versions(c, "read the peers' csi", "rem_peer_csi", CSI_COLUMNS))?;
        rows.iter()
            .map(|r| {
                Ok(StoredCsi {
                    version: csi_version(r)?,
                    xml: r.get(9)?,
                })
            })
            .collect()
    }

    fn peer_csi_history(&self) -> Result<Vec<CsiVersion>, StoreError> {
        let rows = self.read(|c| {
            version_history(
                c,
                "read the peers' csi history",
                "rem_peer_csi",
                CSI_COLUMNS,
            )
        })?;
        rows.iter().map(csi_version).collect()
    }

    fn search_events(&self, query: &LogQuery) -> Result<Vec<LoggedEvent>, StoreError> {
        self.read(|c| search(c, query))
    }

    fn record_receipt_received(
        &self,
        event: &LogEvent,
        updates: &[(String, TrackingState)],
        kept: Option<&[u8]>,
    ) -> Result<usize, StoreError> {
        self.write("record a received receipt", |c| {
            // The chain head first, as every appending transaction (one lock order: a
            // tracking row locked before the head could deadlock with a writer that holds
            // the head and moves the same row).
            let mut head = lock_head(c)?;
            let mut moved = 0;
            for (recipient, state) in updates {
                moved += usize::from(tracking_forward(c, &event.pec_id, recipient, *state)?);
            }
            append(c, &mut head, &received_record(event, updates, moved))?;
            if let Some(message) = kept {
                // Beside its record: the head is the record just appended.
                let kind = match event.kind {
                    EventKind::Received(r) => r.as_str(),
                    other => other.label(),
                };
                exec(
                    c,
                    &format!("keep the {kind} received for \"{}\"", event.pec_id),
                    "INSERT INTO received_receipts (event_id, pec_id, kind, message_id, at, message)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    args![
                        head.0,
                        &event.pec_id,
                        kind,
                        event.related_ids.first().map(String::as_str),
                        event.at.unix(),
                        message
                    ],
                )?;
            }
            Ok(moved)
        })
    }

    fn claim_log_request(
        &self,
        request: &LogRequest,
        limit: u32,
        since: Instant,
        event: &LogEvent,
    ) -> Result<bool, StoreError> {
        self.write("claim a log request", |c| {
            ops::claim_log_request(c, request, limit, since, event)
        })
    }

    fn log_request(&self, id: &str) -> Result<Option<(LogRequest, bool)>, StoreError> {
        self.read(|c| ops::log_request(c, id))
    }

    fn log_request_answered(&self, event: &LogEvent) -> Result<bool, StoreError> {
        self.write("close a log request", |c| {
            let mut head = lock_head(c)?;
            let closed = ops::request_answered(c, &mut head, event)?;
            Ok(closed)
        })
    }

    fn stage_outbound(&self, out: &Outbound, effect: &Effect) -> Result<Staged, StoreError> {
        self.write("stage a generated message", |c| ops::stage(c, out, effect))
    }

    fn outbound(&self, key: &str) -> Result<Option<Outbound>, StoreError> {
        self.read(|c| ops::get(c, key))
    }

    fn outbound_injected(&self, key: &str, at: Instant) -> Result<(), StoreError> {
        self.write("mark a generated message injected", |c| {
            ops::injected(c, key, at)
        })
    }

    fn claim_unsent(
        &self,
        attempted_before: Instant,
        now: Instant,
        limit: usize,
    ) -> Result<Vec<Outbound>, StoreError> {
        self.write("claim unsent generated messages", |c| {
            ops::claim_unsent(c, attempted_before, now, limit)
        })
    }

    fn begin_deliveries(
        &self,
        message_id: &str,
        recipients: &[String],
        owner: &str,
        at: Instant,
    ) -> Result<Vec<Option<DeliveryMark>>, StoreError> {
        self.write("record delivery intents", |c| {
            ops::begin_deliveries(c, message_id, recipients, owner, at)
        })
    }

    fn deliveries_done(
        &self,
        message_id: &str,
        recipients: &[String],
        at: Instant,
    ) -> Result<(), StoreError> {
        self.write("record deliveries", |c| {
            ops::deliveries_done(c, message_id, recipients, at)
        })
    }

    fn purge_outbox(&self, before: Instant) -> Result<u64, StoreError> {
        self.write("purge the outbox", |c| ops::purge(c, before))
    }

    fn record_evidence(&self, evidence: &Evidence, event: &LogEvent) -> Result<bool, StoreError> {
        self.write("record an evidence", |c| {
            super::rem::record(c, evidence, event)
        })
    }

    fn evidence(&self, id: &str) -> Result<Option<StoredEvidence>, StoreError> {
        self.read(|c| super::rem::get(c, id))
    }

    fn evidences_for(&self, message_id: &str) -> Result<Vec<StoredEvidence>, StoreError> {
        self.read(|c| super::rem::for_message(c, message_id))
    }

    fn claim_rem_waits(&self, claim: &RemWaitClaim) -> Result<Vec<RemDue>, StoreError> {
        self.write("claim rem waits", |c| super::rem::claim_waits(c, claim))
    }

    fn release_rem_wait(&self, due: &RemDue) -> Result<(), StoreError> {
        self.write("release a rem wait", |c| super::rem::release_wait(c, due))
    }

    fn settle_rem_wait(&self, due: &RemDue, at: Instant) -> Result<bool, StoreError> {
        self.write("close a rem wait", |c| {
            super::rem::close_wait(c, due.id, None, at)
        })
    }

    fn rem_waits_for(&self, message_id: &str) -> Result<Vec<RemWaitState>, StoreError> {
        self.read(|c| super::rem::waits_for(c, message_id))
    }

    fn set_sender_identity(
        &self,
        mailbox: &str,
        identity: &SenderIdentity,
    ) -> Result<(), StoreError> {
        self.write("set a sender identity", |c| {
            super::rem::set_identity(c, mailbox, identity)
        })
    }

    fn sender_identity(&self, mailbox: &str) -> Result<Option<SenderIdentity>, StoreError> {
        self.read(|c| super::rem::identity(c, mailbox))
    }

    fn clear_sender_identity(
        &self,
        mailbox: &str,
        at: Instant,
        by: &str,
    ) -> Result<bool, StoreError> {
        self.write("clear a sender identity", |c| {
            super::rem::clear_identity(c, mailbox, at, by)
        })
    }

    fn sender_identity_changes(&self, mailbox: &str) -> Result<Vec<IdentityChange>, StoreError> {
        self.read(|c| super::rem::identity_changes(c, mailbox))
    }
}
