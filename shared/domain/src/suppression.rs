//! The suppression list: addresses that must not be sent to again.

use serde::{Deserialize, Serialize};

/// An address on the suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// Email address (lower case) or phone number (E.164).
    pub address: String,
    /// "bounced", "complained" or "opted_out".
    pub reason: String,
    pub detail: Option<String>,
    pub at: String,
    pub message_id: String,
}

/// The form in which an address is kept on the suppression list and looked up.
pub fn suppression_key(address: &str) -> String {
    address.trim().to_lowercase()
}
