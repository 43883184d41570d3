//! What operators are told about a dispatch, and when.

use crate::model::Counts;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Validation finished and the list can be sent.
    ValidationPassed,
    /// Validation finished with a file-level problem or nothing to send.
    ValidationFailed,
    /// A validated dispatch waits for a second person's approval.
    ApprovalRequested,
    /// The provider throttled the dispatch; it continues by itself at `resume_at`.
    WaitingForContinuation,
    /// The provider refuses the account or the sender; the dispatch is paused until an
    /// operator mends the configuration and resumes.
    Blocked,
    /// Every recipient has a final state.
    Completed,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::ValidationPassed => "validation_passed",
            Event::ValidationFailed => "validation_failed",
            Event::ApprovalRequested => "approval_requested",
            Event::WaitingForContinuation => "waiting_for_continuation",
            Event::Blocked => "blocked",
            Event::Completed => "completed",
        }
    }

    pub fn headline(self) -> &'static str {
        match self {
            Event::ValidationPassed => "validation passed",
            Event::ValidationFailed => "validation failed",
            Event::ApprovalRequested => "approval requested",
            Event::WaitingForContinuation => "waiting for continuation",
            Event::Blocked => "sending blocked",
            Event::Completed => "completed",
        }
    }
}

/// What a notification says.
#[derive(Debug, Serialize)]
pub struct Notice<'a> {
    pub event: Event,
    pub dispatch_id: &'a str,
    pub title: &'a str,
    pub state: &'a str,
    pub counts: &'a Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    pub at: String,
}
