//! The protocols of a dispatch once it is approved, written against small ports so that they
//! run as well on in-memory stores as on AWS.
//!
//! - [`ports`]: one trait per capability the protocols need (a recipient ledger, the
//!   dispatch records, send slots, a mailer, a texter, the packages, completion, notices,
//!   the recipient roll, the audit trail, report documents, stale histories)
//! - [`send`]: claim, send, record
//! - [`completion`]: the end of a dispatch and its history
//! - [`pacing`]: send slots at a shared rate
//! - [`retry`]: waits between colliding writes
//! - [`metrics`]: what sending reports of itself (embedded metric format)
//! - [`memory`]: the ports in memory, for tests

pub mod completion;
pub mod memory;
pub mod metrics;
pub mod pacing;
pub mod ports;
pub mod retry;
pub mod send;
