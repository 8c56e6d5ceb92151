// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec store copy`: moves a SQLite store into an empty PostgreSQL one, in one transaction.
//! Above both backends (neither imports the other): it reads the SQLite file and writes
//! through the PostgreSQL store's connections.
//! The legal log is copied as stored (ids, `prev_hash`, `hash`), so its chain, the purge
//! anchor and the seals verify unchanged on the new store; the chain head is set to the
//! last record copied.

use std::path::Path;

use rusqlite::types::Value;
use tokio_postgres::types::ToSql;

use super::chain::GENESIS;
use super::postgres::{connect, pg};
use super::{PgStore, SqliteStore, StoreError};

/// What was copied: rows per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
}

/// Column types, for typed NULLs: `i` integer, `t` text, `b` bytes.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, char)],
    order: &'static str,
    /// The SQLite query that reads the columns, when they are not all in `name`.
    read: Option<&'static str>,
}

/// Every table of schema version 9, in an order that needs no deferred checks. Tables a
/// later migration adds are appended here with it. Seal claims are transient and not
/// copied; identity columns (`seq`, quarantine `id`) are renumbered in the same order.
const TABLES: &[Table] = &[
    Table {
        name: "events",
        columns: &[
            ("id", 'i'),
            ("pec_id", 't'),
            ("at", 'i'),
            ("kind", 't'),
            ("receipt_type", 't'),
            ("sender", 't'),
            ("recipients", 't'),
            ("subject", 't'),
            ("related_ids", 't'),
            ("provider", 't'),
            ("queue_id", 't'),
            ("outcome", 't'),
            ("reason", 't'),
            ("prev_hash", 'b'),
            ("hash", 'b'),
        ],
        order: "id",
        read: None,
    },
    Table {
        name: "event_recipients",
        columns: &[("address", 't'), ("at", 'i'), ("event_id", 'i')],
        order: "event_id, address",
        read: None,
    },
    Table {
        name: "chain_anchor",
        columns: &[
            ("\"only\"", 'i'),
            ("last_id", 'i'),
            ("last_hash", 'b'),
            ("purged_at", 'i'),
        ],
        order: "\"only\"",
        read: None,
    },
    Table {
        name: "seals",
        columns: &[
            ("day", 't'),
            ("from_at", 'i'),
            ("to_at", 'i'),
            ("count", 'i'),
            ("first_id", 'i'),
            ("last_id", 'i'),
            ("export_sha256", 'b'),
            ("signature", 'b'),
            ("tst", 'b'),
            ("tsa_url", 't'),
            ("sealed_at", 'i'),
        ],
        order: "from_at",
        read: None,
    },
    Table {
        name: "tracking",
        columns: &[
            ("pec_id", 't'),
            ("recipient", 't'),
            ("sent_at", 'i'),
            ("state", 't'),
            ("notice12_claimed_at", 'i'),
            ("notice12_id", 't'),
            ("notice24_claimed_at", 'i'),
            ("notice24_id", 't'),
        ],
        order: "rowid",
        read: None,
    },
    Table {
        name: "pending_acceptance",
        columns: &[
            ("pec_id", 't'),
            ("queue_id", 't'),
            ("at", 'i'),
            ("login", 't'),
            ("provider", 't'),
            ("cert", 't'),
            ("state", 't'),
            ("receipt_id", 't'),
            ("emitted_at", 'i'),
        ],
        order: "rowid",
        read: None,
    },
    Table {
        name: "quarantine",
        columns: &[
            ("pec_id", 't'),
            ("at", 'i'),
            ("reason", 't'),
            ("message", 'b'),
            ("expires_at", 'i'),
        ],
        order: "id",
        read: None,
    },
    Table {
        name: "senders",
        columns: &[("login", 't'), ("address", 't')],
        order: "login, address",
        read: None,
    },
    Table {
        name: "verified",
        columns: &[("pec_id", 't'), ("recipient", 't'), ("at", 'i')],
        order: "rowid",
        read: None,
    },
    Table {
        name: "mailbox_policy",
        columns: &[("mailbox", 't'), ("policy", 't'), ("forward_to", 't')],
        order: "mailbox",
        read: None,
    },
    Table {
        name: "delivery_notices",
        columns: &[
            ("pec_id", 't'),
            ("recipient", 't'),
            ("kind", 't'),
            ("notice_id", 't'),
            ("at", 'i'),
        ],
        order: "rowid",
        read: None,
    },
    Table {
        name: "arrival_notices",
        columns: &[("mailbox", 't'), ("notify", 't'), ("senders", 't')],
        order: "mailbox",
        read: None,
    },
    Table {
        name: "provider_index",
        columns: &[
            ("id", 'i'),
            ("ldif", 't'),
            ("providers", 'i'),
            ("fetched_at", 'i'),
            ("source", 't'),
        ],
        order: "id",
        read: None,
    },
    // Version 7.
    Table {
        name: "log_requests",
        columns: &[
            ("id", 't'),
            ("owner", 't'),
            ("address", 't'),
            ("at", 'i'),
            ("from_at", 'i'),
            ("to_at", 'i'),
            ("problem", 't'),
            ("subject", 't'),
            ("queue_id", 't'),
            ("reply_id", 't'),
            ("replied_at", 'i'),
        ],
        order: "id",
        read: None,
    },
    // Version 8.
    Table {
        name: "domains",
        columns: &[("domain", 't'), ("added_at", 'i')],
        order: "domain",
        read: None,
    },
    // Version 9.
    Table {
        name: "outbox",
        columns: &[
            ("key", 't'),
            ("message_id", 't'),
            ("mail_from", 't'),
            ("rcpt_to", 't'),
            ("data", 'b'),
            ("created_at", 'i'),
            ("attempted_at", 'i'),
            ("injected_at", 'i'),
        ],
        order: "key",
        // Version 11 moved the bytes to `outbox_data` (rows staged before keep theirs).
        read: Some(
            "SELECT o.key, o.message_id, o.mail_from, o.rcpt_to, COALESCE(d.data, o.data),
                    o.created_at, o.attempted_at, o.injected_at
             FROM outbox o LEFT JOIN outbox_data d ON d.key = o.key ORDER BY o.key",
        ),
    },
    Table {
        name: "deliveries",
        columns: &[
            ("message_id", 't'),
            ("recipient", 't'),
            ("done", 'i'),
            ("at", 'i'),
            // Version 10.
            ("owner", 't'),
        ],
        order: "message_id, recipient",
        read: None,
    },
    // Version 14.
    Table {
        name: "mailbox_settings",
        columns: &[
            ("mailbox", 't'),
            ("receipt_type", 't'),
            ("max_recipients", 'i'),
            ("max_total_size", 'i'),
            ("daily_quota", 'i'),
            ("state", 't'),
        ],
        order: "mailbox",
        read: None,
    },
    Table {
        name: "retired_mailboxes",
        columns: &[("mailbox", 't'), ("holder", 't'), ("retired_at", 'i')],
        order: "mailbox",
        read: None,
    },
    Table {
        name: "outages",
        columns: &[
            ("kind", 't'),
            ("reason", 't'),
            ("started_at", 'i'),
            ("ended_at", 'i'),
        ],
        order: "id",
        read: None,
    },
    Table {
        name: "acceptance_senders",
        columns: &[("pec_id", 't'), ("sender", 't'), ("at", 'i')],
        order: "pec_id",
        read: None,
    },
    // Version 15.
    Table {
        name: "received_receipts",
        columns: &[
            ("event_id", 'i'),
            ("pec_id", 't'),
            ("kind", 't'),
            ("message_id", 't'),
            ("at", 'i'),
            ("message", 'b'),
        ],
        order: "event_id",
        read: None,
    },
    // Version 16.
    Table {
        name: "rem_evidences",
        columns: &[
            ("evidence_id", 't'),
            ("event_id", 'i'),
            ("message_id", 't'),
            ("event", 't'),
            ("reason", 't'),
            ("recipient", 't'),
            ("issuer", 't'),
            ("at", 'i'),
            ("direction", 't'),
            ("xml", 'b'),
            ("sha256", 'b'),
        ],
        order: "event_id",
        read: None,
    },
    Table {
        name: "sender_identities",
        columns: &[
            ("mailbox", 't'),
            ("attributes", 't'),
            ("level", 't'),
            ("policy", 't'),
            ("proofing", 't'),
            ("set_at", 'i'),
            ("set_by", 't'),
        ],
        order: "mailbox",
        read: None,
    },
    Table {
        name: "sender_identity_changes",
        columns: &[
            ("mailbox", 't'),
            ("action", 't'),
            ("at", 'i'),
            ("changed_by", 't'),
            ("value", 't'),
        ],
        order: "id",
        read: None,
    },
    Table {
        name: "acceptance_auth",
        columns: &[("pec_id", 't'), ("auth_at", 'i')],
        order: "pec_id",
        read: None,
    }, // Version 17.
    Table {
        name: "rem_trusted_lists",
        columns: &[
            ("source", 't'),
            ("territory", 't'),
            ("sequence", 'i'),
            ("issued_at", 'i'),
            ("next_update", 'i'),
            ("fetched_at", 'i'),
            ("checked_at", 'i'),
            ("xml", 't'),
        ],
        order: "id",
        read: None,
    },
    // Version 18.
    Table {
        name: "rem_waits",
        columns: &[
            ("message_id", 't'),
            ("recipient", 't'),
            ("which", 't'),
            ("started_at", 'i'),
            ("claimed_at", 'i'),
            ("notice_id", 't'),
            ("settled_at", 'i'),
        ],
        order: "id",
        read: None,
    },
];

/// One SQLite value as a typed PostgreSQL parameter.
fn param(value: Value, kind: char, what: &str) -> Result<Box<dyn ToSql + Sync + Send>, StoreError> {
    let wrong = |v: &Value| StoreError::Corrupt(format!("{what}: unexpected value {v:?}"));
    Ok(match (kind, value) {
        ('i', Value::Integer(i)) => Box::new(Some(i)),
        ('i', Value::Null) => Box::new(None::<i64>),
        ('t', Value::Text(s)) => Box::new(Some(s)),
        ('t', Value::Null) => Box::new(None::<String>),
        ('b', Value::Blob(b)) => Box::new(Some(b)),
        ('b', Value::Null) => Box::new(None::<Vec<u8>>),
        (_, v) => return Err(wrong(&v)),
    })
}

/// Copies the SQLite store at `source` (brought to the current schema first) into `dest`,
/// which must hold no legal-log record, tracking row or pending acceptance yet. One
/// transaction: on any error nothing is copied.
pub fn copy_from_sqlite(source: &Path, dest: &PgStore) -> Result<CopyReport, StoreError> {
    // Opening migrates the file to this program's schema version.
    drop(SqliteStore::open(source)?);
    let conn = rusqlite::Connection::open_with_flags(
        source,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Database(format!("open \"{}\": {e}", source.display())))?;
    let sdb = |what: String| move |e: rusqlite::Error| StoreError::Database(format!("{what}: {e}"));
    // Read everything first (one consistent snapshot), then write in one transaction.
    let tx_read = conn
        .unchecked_transaction()
        .map_err(sdb("read snapshot".into()))?;
    let mut data: Vec<(&'static Table, Vec<Vec<Value>>)> = Vec::new();
    for table in TABLES {
        let cols: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        let sql = table.read.map(str::to_string).unwrap_or_else(|| {
            format!(
                "SELECT {} FROM {} ORDER BY {}",
                cols.join(", "),
                table.name,
                table.order
            )
        });
        let mut stmt = tx_read
            .prepare(&sql)
            .map_err(sdb(format!("read {}", table.name)))?;
        let rows = stmt
            .query_map([], |r| {
                (0..cols.len())
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sdb(format!("read {}", table.name)))?;
        data.push((table, rows));
    }
    drop(tx_read);

    let pool = dest.pool.clone();
    dest.call(async move {
        let mut client = connect(&pool).await?;
        let tx = client.transaction().await.map_err(pg("copy: begin"))?;
        let head = tx
            .query_one(
                "SELECT last_id FROM chain_head WHERE \"only\" = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg("copy: lock the chain head"))?;
        let busy: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM tracking)
                     OR EXISTS (SELECT 1 FROM pending_acceptance)",
                &[],
            )
            .await
            .map_err(pg("copy: check the destination"))?
            .get(0);
        if busy || head.get::<_, i64>(0) != 0 {
            return Err(StoreError::Database(
                "copy: the PostgreSQL store is not empty (it already has legal-log records, \
                 tracking rows or pending acceptances)"
                    .into(),
            ));
        }
        let mut report = CopyReport::default();
        for (table, rows) in data {
            let cols: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
            // The small tables that already have rows in a new database (none today) are
            // replaced.
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                table.name,
                cols.join(", "),
                placeholders.join(", ")
            );
            let stmt = tx
                .prepare(&sql)
                .await
                .map_err(pg(&format!("copy {}", table.name)))?;
            let mut copied = 0u64;
            for row in rows {
                let params = row
                    .into_iter()
                    .zip(table.columns)
                    .map(|(v, (c, k))| param(v, *k, &format!("{}.{c}", table.name)))
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                copied += tx
                    .execute(&stmt, &refs)
                    .await
                    .map_err(pg(&format!("copy {}", table.name)))?;
            }
            report.tables.push((table.name, copied));
        }
        // The chain head: the last record, else the purge anchor, else the genesis.
        let tail = tx
            .query_opt("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1", &[])
            .await
            .map_err(pg("copy: read the last record"))?;
        let anchor = tx
            .query_opt(
                "SELECT last_id, last_hash FROM chain_anchor WHERE \"only\" = 1",
                &[],
            )
            .await
            .map_err(pg("copy: read the anchor"))?;
        let (id, hash): (i64, Vec<u8>) = match (tail, anchor) {
            (Some(r), _) => (
                r.get(0),
                r.get::<_, Option<Vec<u8>>>(1).ok_or_else(|| {
                    StoreError::Corrupt("copy: the last record has no hash".into())
                })?,
            ),
            (None, Some(a)) => (a.get(0), a.get(1)),
            (None, None) => (0, GENESIS.to_vec()),
        };
        tx.execute(
            "UPDATE chain_head SET last_id = $1, last_hash = $2 WHERE \"only\" = 1",
            &[&id, &hash],
        )
        .await
        .map_err(pg("copy: set the chain head"))?;
        tx.commit().await.map_err(pg("copy: commit"))?;
        Ok(report)
    })
}
