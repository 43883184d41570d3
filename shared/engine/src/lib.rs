//! The protocols of a dispatch once it is approved, written against small ports so that they
//! run as well on in-memory stores as on AWS.
//!
//! - [`pacing`]: send slots at a shared rate
//! - [`retry`]: waits between colliding writes

pub mod pacing;
pub mod retry;
