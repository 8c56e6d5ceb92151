//! The provider index in LDIF form (spec §7.1 schema), as exported by the national index.
