// SPDX-License-Identifier: GPL-3.0-or-later
//! Operations queries of the SQLite store: the health figures of `pec status` and of the
//! metrics endpoint, and the PEC domains added with `pec domain add`.

use rusqlite::{params, OptionalExtension};

use super::{db, SqliteStore};
use crate::store::{Health, LastSeal, StoreError};

impl SqliteStore {
    /// The health figures (a few indexed counts; cheap enough to sample every few seconds).
    pub fn health(&self) -> Result<Health, StoreError> {
        let conn = self.lock();
        let count = |sql: &str| -> Result<u64, StoreError> {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(db("health"))
        };
        let pending_timers = count(
            "SELECT COUNT(*) FROM tracking
             WHERE state IN ('sent', 'taken-in-charge') AND notice24_id IS NULL",
        )?;
        let quarantined = count("SELECT COUNT(*) FROM quarantine")?;
        let log_records = count("SELECT COUNT(*) FROM events")?;
        let oldest_record_at = conn
            .query_row("SELECT MIN(at) FROM events", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map_err(db("health: oldest record"))?;
        let last_seal = conn
            .query_row(
                "SELECT day, from_at, sealed_at, tst IS NOT NULL FROM seals
                 ORDER BY day DESC LIMIT 1",
                [],
                |r| {
                    Ok(LastSeal {
                        day: r.get(0)?,
                        from_at: r.get(1)?,
                        sealed_at: r.get(2)?,
                        timestamped: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(db("health: last seal"))?;
        let index = conn
            .query_row(
                "SELECT fetched_at, source, providers FROM provider_index WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    ))
                },
            )
            .optional()
            .map_err(db("health: index"))?;
        Ok(Health {
            pending_timers,
            quarantined,
            last_seal,
            index,
            log_records,
            oldest_record_at,
        })
    }

    /// The PEC domains added with `pec domain add`, sorted.
    pub fn extra_domains(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT domain FROM domains ORDER BY domain")
            .map_err(db("domains"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db("domains"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db("domains"))
    }

    /// Adds a PEC domain (lower-cased); `false` when it was already there.
    pub fn add_domain(&self, domain: &str, at: i64) -> Result<bool, StoreError> {
        let domain = domain.to_ascii_lowercase();
        self.write("add domain", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO domains (domain, added_at) VALUES (?1, ?2)",
                params![domain, at],
            )
            .map(|n| n == 1)
            .map_err(db("add domain"))
        })
    }

    /// Removes a PEC domain added with [`SqliteStore::add_domain`]; `false` when absent.
    pub fn remove_domain(&self, domain: &str) -> Result<bool, StoreError> {
        let domain = domain.to_ascii_lowercase();
        self.write("remove domain", |tx| {
            tx.execute("DELETE FROM domains WHERE domain = ?1", params![domain])
                .map(|n| n == 1)
                .map_err(db("remove domain"))
        })
    }
}
