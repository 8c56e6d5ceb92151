// SPDX-License-Identifier: GPL-3.0-or-later
//! The provider index: LDAP (against a real slapd when PEC_E2E_LDAP is set), sync into the store, LDIF.
//!
//! One test binary per group (link time): each former test file is a module.

mod ldap;
mod ldif;
mod sync;
