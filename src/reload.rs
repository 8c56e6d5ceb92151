// SPDX-License-Identifier: GPL-3.0-or-later
//! Atomic configuration swap for `pec serve` (SIGHUP): each role's front end (milter,
//! content filter, LMTP proxy) asks a [`Current`] cell for the role object at the start of
//! every transaction, so a reload replaces the whole object at once. A transaction in
//! progress finishes with the object it started with.
//!
//! What a reload can change and what needs a restart is listed by [`restart_only`].

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::smtp::lmtp::{LmtpHandler, Reply, Transaction as LmtpTransaction};
use crate::smtp::server::{FilterHandler, FilterReply, Transaction};
use crate::BoxFuture;

/// The role object in use, swapped whole by a reload.
pub struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    pub fn new(value: Arc<T>) -> Self {
        Current(RwLock::new(value))
    }

    /// The object in use now.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces it; transactions that already hold the old one finish with it.
    pub fn set(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

impl<T: FilterHandler> FilterHandler for Current<T> {
    fn handle<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, FilterReply> {
        let current = self.get();
        Box::pin(async move { current.handle(tx).await })
    }
}

impl<T: LmtpHandler> LmtpHandler for Current<T> {
    fn deliver<'a>(&'a self, tx: &'a LmtpTransaction) -> BoxFuture<'a, Vec<Reply>> {
        let current = self.get();
        Box::pin(async move { current.deliver(tx).await })
    }
}

/// The keys whose change a reload cannot apply (listeners are bound, the store and the
/// index refresh are opened once; `[signing]` is applied: the key is re-opened and checked,
/// see [`crate::wiring::reopen_signer`]): `(key, old value, new value)` for each that
/// differs between `running` and `new`. A reload applies everything else and keeps these
/// at their running values until a restart.
pub fn restart_only(running: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |key: &str, differs: bool| {
        if differs {
            changed.push(key.to_string());
        }
    };
    check("store", running.store != new.store);
    check("index", running.index != new.index);
    check("access.listen", running.access.listen != new.access.listen);
    check("filter.listen", running.filter.listen != new.filter.listen);
    check(
        "filter.max_size",
        running.filter.max_size != new.filter.max_size,
    );
    check(
        "delivery.listen",
        running.delivery.listen != new.delivery.listen,
    );
    check("log", running.log != new.log);
    check("metrics", running.metrics != new.metrics);
    check("serve", running.serve != new.serve);
    changed
}

/// `new` with the restart-only keys of [`restart_only`] put back to their `running`
/// values: what a reload applies. It still carries the settings checked for `new`: check
/// the mix with [`Config::rechecked`].
pub fn applicable(running: &Config, new: &Config) -> Config {
    let mut c = new.clone();
    c.store = running.store.clone();
    c.index = running.index.clone();
    c.access.listen = running.access.listen.clone();
    c.filter.listen = running.filter.listen.clone();
    c.filter.max_size = running.filter.max_size.clone();
    c.delivery.listen = running.delivery.listen.clone();
    c.log = running.log.clone();
    c.metrics = running.metrics.clone();
    c.serve = running.serve.clone();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_applies_all_but_the_restart_only_keys() {
        let running = crate::config::parse(crate::config::example(), "sample").unwrap();
        let text = crate::config::example()
            .replacen("max_recipients = 500", "max_recipients = 7", 1)
            .replacen(
                "listen = \"inet:127.0.0.1:10030\"",
                "listen = \"inet:127.0.0.1:10031\"",
                1,
            )
            .replacen("path = \"/var/lib/pec/pec.db\"", "path = \"/tmp/x.db\"", 1);
        let new = crate::config::parse(&text, "new").unwrap();
        assert_eq!(restart_only(&running, &new), ["store", "access.listen"]);
        let applied = applicable(&running, &new);
        assert_eq!(applied.access.max_recipients, 7);
        assert_eq!(applied.access.listen, running.access.listen);
        assert_eq!(applied.store, running.store);
        assert!(restart_only(&running, &applied).is_empty());
    }

    #[test]
    fn the_mix_of_a_reload_is_checked_again() {
        let running = crate::config::parse(crate::config::example(), "sample").unwrap();
        // Valid alone (its filter.max_size follows), but filter.max_size needs a restart.
        let text = crate::config::example()
            .replacen(
                "max_total_size = \"100MB\"",
                "max_total_size = \"170MB\"",
                1,
            )
            .replacen(
                "hard_size_limit = \"150MB\"",
                "hard_size_limit = \"170MB\"",
                1,
            )
            .replacen("max_size = \"160MB\"", "max_size = \"170MB\"", 1);
        let new = crate::config::parse(&text, "new").unwrap();
        assert_eq!(new.settings().unwrap().access.max_total_size, 170_000_000);
        let e = applicable(&running, &new).rechecked().unwrap_err();
        assert_eq!(e.key, "filter.max_size");
        let same = applicable(&running, &running).rechecked().unwrap();
        assert_eq!(same.settings(), running.settings());
    }
}
