//! The domain of mass dispatch, free of any service: what a dispatch and a recipient are and
//! how their states may change, the upload package's manifest, who may do what, the work
//! queues' messages, the settings, and the library's errors.
//!
//! - [`model`]: dispatches, recipients, receipts and their state machines
//! - [`keys`]: where a recipient is stored (key shard, sort key)
//! - [`manifest`]: the upload package format
//! - [`identity`]: verified callers and their permissions
//! - [`ids`]: ids as types, checked where they come in
//! - [`audit`]: entries of a dispatch's audit trail
//! - [`suppression`]: addresses that must not be sent to again
//! - [`unsubscribe`]: signed one-click unsubscribe links
//! - [`notice`]: what operators are told, and when
//! - [`queue`]: messages on the work queues
//! - [`limits`]: the services' limits that shape batches
//! - [`config`]: typed settings, read once at start-up
//! - [`deadline`]: when an invocation must be over
//! - [`error`]: the errors every layer speaks

pub mod audit;
pub mod config;
pub mod deadline;
pub mod error;
pub mod identity;
pub mod ids;
pub mod job;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod model;
pub mod notice;
pub mod print;
pub mod queue;
pub mod suppression;
pub mod unsubscribe;

pub use deadline::Deadline;
pub use error::{Error, Result};
