//! A dispatch: its states and how they may change, its counters, its record.

use super::*;

/// Lifecycle of a dispatch. Every change goes through [`DispatchState::can_become`] and is
/// enforced in the store by a conditional write on the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchState {
    /// Started through the API by someone with the create permission; waiting for its
    /// package to be uploaded.
    AwaitingUpload,
    /// The package arrived and the list is being checked.
    Validating,
    /// The package or list cannot be sent; the reasons are recorded.
    ValidationFailed,
    /// The list is valid; a second person must approve.
    AwaitingApproval,
    /// Approved; recipients are being handed to the senders.
    Approved,
    /// Senders are delivering.
    Sending,
    /// The provider asked us to slow down: sending stops until `resume_at`, then continues
    /// by itself with the recipients not yet sent.
    WaitingForContinuation,
    /// An operator stopped sending; resuming continues with the recipients not yet sent.
    Paused,
    /// Every row was sent to: the dispatch closed by itself ("completed (automatic)").
    Completed,
    /// Every recipient has a final state, but some failed, were invalid or excluded; an
    /// operator reviews them and closes the dispatch.
    CompletedWithErrors,
    /// An operator closed a dispatch that completed with errors ("closed (manual)").
    Closed,
    /// The approver refused the dispatch; nothing (more) was sent.
    Rejected,
    /// Withdrawn before approval by someone with the create permission; nothing was sent.
    Cancelled,
}

impl DispatchState {
    pub const ALL: [DispatchState; 13] = [
        DispatchState::AwaitingUpload,
        DispatchState::Validating,
        DispatchState::ValidationFailed,
        DispatchState::AwaitingApproval,
        DispatchState::Approved,
        DispatchState::Sending,
        DispatchState::WaitingForContinuation,
        DispatchState::Paused,
        DispatchState::Completed,
        DispatchState::CompletedWithErrors,
        DispatchState::Closed,
        DispatchState::Rejected,
        DispatchState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DispatchState::AwaitingUpload => "awaiting_upload",
            DispatchState::Validating => "validating",
            DispatchState::ValidationFailed => "validation_failed",
            DispatchState::AwaitingApproval => "awaiting_approval",
            DispatchState::Approved => "approved",
            DispatchState::Sending => "sending",
            DispatchState::WaitingForContinuation => "waiting_for_continuation",
            DispatchState::Paused => "paused",
            DispatchState::Completed => "completed",
            DispatchState::CompletedWithErrors => "completed_with_errors",
            DispatchState::Closed => "closed",
            DispatchState::Rejected => "rejected",
            DispatchState::Cancelled => "cancelled",
        }
    }

    /// The legal transitions. Anything else is refused.
    pub fn can_become(self, next: DispatchState) -> bool {
        use DispatchState::*;
        matches!(
            (self, next),
            (AwaitingUpload, Validating)
                | (Validating, ValidationFailed)
                | (Validating, AwaitingApproval)
                // Repeat: a corrected package uploaded before approval is validated again.
                | (ValidationFailed, Validating)
                | (AwaitingApproval, Validating)
                | (AwaitingApproval, Approved)
                | (AwaitingApproval, Rejected)
                // Rejecting while sending stops it: who was sent to stays sent, the rest
                // are rejected.
                | (Approved, Rejected)
                | (Sending, Rejected)
                | (WaitingForContinuation, Rejected)
                | (Paused, Rejected)
                | (Approved, Sending)
                | (Sending, WaitingForContinuation)
                | (WaitingForContinuation, Sending)
                | (Sending, Paused)
                | (WaitingForContinuation, Paused)
                | (Paused, Sending)
                | (Sending, Completed)
                | (Sending, CompletedWithErrors)
                | (CompletedWithErrors, Closed)
                // Withdrawn before approval.
                | (AwaitingUpload, Cancelled)
                | (ValidationFailed, Cancelled)
                | (AwaitingApproval, Cancelled)
        )
    }

    pub fn is_final(self) -> bool {
        // A failed validation is not final: a corrected package may be uploaded (repeat).
        matches!(
            self,
            DispatchState::Completed
                | DispatchState::Closed
                | DispatchState::Rejected
                | DispatchState::Cancelled
        )
    }

    /// Sending is over: every recipient has its result and only receipts still arrive.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DispatchState::Completed | DispatchState::CompletedWithErrors | DispatchState::Closed
        )
    }
}

impl fmt::Display for DispatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DispatchState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DispatchState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown dispatch state '{s}'"))
    }
}

/// Counts kept on the dispatch record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Data rows in the list.
    pub total: u64,
    pub valid: u64,
    pub invalid: u64,
    pub sent: u64,
    pub failed: u64,
    /// Sends whose outcome the provider never reported.
    pub unknown: u64,
    /// Recipients whose queue message went to the dead-letter queue after the queue's receive
    /// limit: still pending, waiting for an operator (a redrive of the dead-letter queue).
    #[serde(default)]
    pub stuck: u64,
    /// Valid rows left out by the dispatch's exclusions (not counted in `valid`).
    #[serde(default)]
    pub excluded: u64,
    /// Letters produced (typeset and filed).
    #[serde(default)]
    pub created: u64,
}

impl Counts {
    /// Valid recipients that have not reached a final state yet.
    pub fn outstanding(&self) -> u64 {
        self.valid
            .saturating_sub(self.sent + self.created + self.failed + self.unknown)
    }
}

/// One dispatch as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    pub id: String,
    pub title: String,
    pub state: DispatchState,
    pub created_at: String,
    pub updated_at: String,
    pub counts: Counts,
    /// File-level problems (why validation failed), empty otherwise.
    pub problems: Vec<String>,
    /// Where the package was uploaded.
    pub source_prefix: String,
    /// Number of key shards the recipients are spread over.
    pub shards: u32,
    pub report_key: Option<String>,
    pub sample_key: Option<String>,
    pub package_key: Option<String>,
    pub history_key: Option<String>,
    /// Who started the dispatch through the API (`POST /dispatches`), and when; none for a
    /// package uploaded without being started there.
    #[serde(default)]
    pub started_by: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    /// What was validated, and so what an approval approves: the SHA-256 of the list file and
    /// of the templates (as in the frozen package).
    #[serde(default)]
    pub list_sha256: Option<String>,
    #[serde(default)]
    pub template_sha256: Option<String>,
    /// Archived: kept, but left out of the dispatch list unless asked for.
    #[serde(default)]
    pub archived_by: Option<String>,
    #[serde(default)]
    pub archived_at: Option<String>,
    #[serde(default)]
    pub cancelled_by: Option<String>,
    #[serde(default)]
    pub cancelled_at: Option<String>,
    /// The approver the approval was forwarded to: only they may approve.
    #[serde(default)]
    pub forwarded_to: Option<String>,
    #[serde(default)]
    pub forwarded_by: Option<String>,
    pub approved_by: Option<String>,
    pub approved_at: Option<String>,
    pub rejected_by: Option<String>,
    pub rejected_at: Option<String>,
    pub completed_at: Option<String>,
    /// While waiting for continuation: when sending continues, and why it stopped.
    pub resume_at: Option<String>,
    pub pause_reason: Option<String>,
    /// How the dispatch ended: "automatic" (everyone sent) or "manual" (closed by an
    /// operator after errors).
    #[serde(default)]
    pub completion: Option<String>,
    #[serde(default)]
    pub closed_by: Option<String>,
    #[serde(default)]
    pub closed_at: Option<String>,
    /// Validation attempt: 1, then one more for every repeat with a corrected package.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// When the package being validated was uploaded (the bucket notification's time);
    /// a notification no newer than this is a repeat delivery, not a new upload.
    #[serde(default)]
    pub uploaded_at: Option<String>,
    /// Earlier validation attempts, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Send attempt: 1, then one more for every resend of failed recipients.
    #[serde(default = "first_attempt")]
    pub send_attempt: u32,
}

/// The outcome of an earlier validation attempt, kept when a corrected package replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub state: DispatchState,
    pub uploaded_at: Option<String>,
    pub finished_at: String,
    pub counts: Counts,
    pub problems: Vec<String>,
    /// Copies of that attempt's report, summary and sample.
    pub report_key: Option<String>,
    pub summary_key: Option<String>,
    pub sample_key: Option<String>,
}

impl Dispatch {
    /// The final state a finished dispatch takes.
    pub fn final_state(&self) -> DispatchState {
        if self.counts.failed + self.counts.unknown + self.counts.invalid + self.counts.excluded
            == 0
        {
            DispatchState::Completed
        } else {
            DispatchState::CompletedWithErrors
        }
    }

    /// A dispatch whose package has just arrived.
    pub fn arrived(id: &str, source_prefix: &str, shards: u32) -> Dispatch {
        let now = now_rfc3339();
        Dispatch {
            id: id.to_string(),
            title: id.to_string(),
            state: DispatchState::Validating,
            created_at: now.clone(),
            updated_at: now,
            counts: Counts::default(),
            problems: vec![],
            source_prefix: source_prefix.to_string(),
            shards,
            report_key: None,
            sample_key: None,
            package_key: None,
            history_key: None,
            started_by: None,
            started_at: None,
            list_sha256: None,
            template_sha256: None,
            archived_by: None,
            archived_at: None,
            cancelled_by: None,
            cancelled_at: None,
            forwarded_to: None,
            forwarded_by: None,
            approved_by: None,
            approved_at: None,
            rejected_by: None,
            rejected_at: None,
            completed_at: None,
            resume_at: None,
            pause_reason: None,
            completion: None,
            closed_by: None,
            closed_at: None,
            attempt: 1,
            uploaded_at: None,
            attempts: vec![],
            send_attempt: 1,
        }
    }
}
