//! Domain model: dispatches, recipients, channels and the state machines that govern them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

mod dispatch;
mod recipient;

pub use dispatch::{Attempt, Counts, Dispatch, DispatchState};
pub use recipient::{calls_for_follow_up, follow_up_of, Reach, Receipt, Recipient, RecipientState};

/// Delivery channel of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    /// A printed letter, produced as a PDF for the print shop or a digital mailbox.
    Letter,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Letter => "letter",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;
    /// Accepts the words operators put in a "preferred delivery method" column.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let is = |names: &[&str]| names.iter().any(|n| s.eq_ignore_ascii_case(n));
        if is(&["email", "e-mail", "mail"]) {
            Ok(Channel::Email)
        } else if is(&["sms", "text", "phone", "mobile"]) {
            Ok(Channel::Sms)
        } else if is(&["letter", "post", "postal", "print", "paper", "brev"]) {
            Ok(Channel::Letter)
        } else {
            Err(format!(
                "unknown channel '{}' (expected email, sms or letter)",
                s.to_lowercase()
            ))
        }
    }
}

pub(crate) fn first_attempt() -> u32 {
    1
}

/// Current time as RFC 3339 in UTC, the one time format stored and shown.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A time as RFC 3339.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Seconds since a stored RFC 3339 time; very large when the time cannot be read.
pub fn age_secs(stamp: &str) -> i64 {
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .map(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds())
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
