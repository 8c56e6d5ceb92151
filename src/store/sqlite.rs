//! SQLite implementation of [`super::Store`] (WAL mode).
