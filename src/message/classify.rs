//! What an incoming message is (spec §5.2, §10).
