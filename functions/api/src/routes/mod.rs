//! The routes, grouped by concern.

pub mod approval;
pub mod dispatches;
pub mod documents;
pub mod lifecycle;
pub mod print;
pub mod recipients;
pub mod senders;
pub mod steps;
pub mod unsubscribe;
