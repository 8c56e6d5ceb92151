//! After-queue content filter: emits acceptance receipts for our own envelopes after queue
//! (and, later, the reception point of spec §5.2).
