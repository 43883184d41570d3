//! Who did what to a dispatch, when, and with what outcome.

use serde::{Deserialize, Serialize};

/// The actor of what the system does by itself (validation, automatic completion).
pub const SYSTEM: &str = "system";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: String,
    pub actor: String,
    /// What was done: "validated", "approved", "closed", ...
    pub action: String,
    /// How it ended: the dispatch state it led to, or why it was refused.
    pub outcome: String,
}
