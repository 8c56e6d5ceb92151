//! Builders for every generated message (spec §2–§3).
