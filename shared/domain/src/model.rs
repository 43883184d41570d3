//! Domain model: dispatches, recipients, channels and the state machines that govern them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Delivery channel of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
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
        } else {
            Err(format!(
                "unknown channel '{}' (expected email or sms)",
                s.to_lowercase()
            ))
        }
    }
}

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

/// State of one recipient. Every row of the list ends in exactly one of these, with a reason
/// where it was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// The row failed validation and will never be sent to.
    Invalid,
    /// Valid and waiting to be sent.
    Pending,
    /// Claimed by a sender; the provider call is in progress.
    Sending,
    /// The provider accepted the message.
    Sent,
    /// The provider refused the message permanently.
    Failed,
    /// The provider call ended without an answer (timeout after the request left): the
    /// message may or may not have been accepted. Never re-sent automatically; an operator
    /// decides.
    Unknown,
    /// The dispatch was rejected before this recipient was sent to.
    Rejected,
    /// The row is valid but the dispatch's exclusions leave it out (e.g. the address is on
    /// the suppression list after a hard bounce or a complaint).
    Excluded,
}

impl RecipientState {
    pub const ALL: [RecipientState; 8] = [
        RecipientState::Invalid,
        RecipientState::Pending,
        RecipientState::Sending,
        RecipientState::Sent,
        RecipientState::Failed,
        RecipientState::Unknown,
        RecipientState::Rejected,
        RecipientState::Excluded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Invalid => "invalid",
            RecipientState::Pending => "pending",
            RecipientState::Sending => "sending",
            RecipientState::Sent => "sent",
            RecipientState::Failed => "failed",
            RecipientState::Unknown => "unknown",
            RecipientState::Rejected => "rejected",
            RecipientState::Excluded => "excluded",
        }
    }

    /// The legal transitions of a recipient. `Sending -> Pending` is the release of a claim
    /// after a throttle or a transient fault, when the provider did not take the message.
    /// `Failed`/`Unknown -> Pending` is an operator's resend, the one way out of a final
    /// state; `Pending -> Excluded` an operator's removal before approval.
    pub fn can_become(self, next: RecipientState) -> bool {
        use RecipientState::*;
        matches!(
            (self, next),
            (Pending, Sending)
                | (Pending, Rejected)
                | (Pending, Excluded)
                | (Sending, Sent)
                | (Sending, Failed)
                | (Sending, Unknown)
                | (Sending, Pending)
                | (Failed, Pending)
                | (Unknown, Pending)
        )
    }

    /// Whether an operator may send to the recipient again: the provider refused the
    /// message, or never said whether it took it.
    pub fn may_be_resent(self) -> bool {
        matches!(self, RecipientState::Failed | RecipientState::Unknown)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RecipientState::Invalid
                | RecipientState::Sent
                | RecipientState::Failed
                | RecipientState::Unknown
                | RecipientState::Rejected
                | RecipientState::Excluded
        )
    }
}

impl fmt::Display for RecipientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecipientState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecipientState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown recipient state '{s}'"))
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
}

impl Counts {
    /// Valid recipients that have not reached a final state yet.
    pub fn outstanding(&self) -> u64 {
        self.valid
            .saturating_sub(self.sent + self.failed + self.unknown)
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

fn first_attempt() -> u32 {
    1
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

/// One row of the list as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub dispatch_id: String,
    /// The id from the list's id column; empty when the row had none.
    pub recipient_id: String,
    /// Line in the source file (header is line 1) or row number in the sheet.
    pub line: u64,
    pub channel: Option<Channel>,
    /// Normalised address: the email address, or the phone number in E.164.
    pub address: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub state: RecipientState,
    /// Why the recipient was not sent to (invalid, failed, rejected).
    pub reason: Option<String>,
    pub message_id: Option<String>,
    pub sent_at: Option<String>,
    /// When a sender claimed the recipient (while `sending`).
    pub claimed_at: Option<String>,
    pub updated_at: String,
    /// What the provider reported after accepting the message (see [`Receipt`]).
    #[serde(default)]
    pub receipt: Option<Receipt>,
    /// When the provider's event happened.
    #[serde(default)]
    pub receipt_at: Option<String>,
    /// The provider's words: bounce type and diagnostic, complaint type, carrier status.
    #[serde(default)]
    pub receipt_detail: Option<String>,
    /// The dispatch's send attempt this recipient was last handed out in: 1, or the attempt
    /// of the resend that gave it back to the senders.
    #[serde(default = "first_attempt")]
    pub send_attempt: u32,
    /// Why the attempt before the last one did not reach the recipient (after a resend).
    #[serde(default)]
    pub previous_reason: Option<String>,
}

impl Recipient {
    /// A pending recipient of a row, with no channel, address or fields yet.
    pub fn pending(dispatch_id: &str, recipient_id: &str, line: u64) -> Recipient {
        Recipient {
            dispatch_id: dispatch_id.to_string(),
            recipient_id: recipient_id.to_string(),
            line,
            channel: None,
            address: None,
            fields: BTreeMap::new(),
            state: RecipientState::Pending,
            reason: None,
            message_id: None,
            sent_at: None,
            claimed_at: None,
            updated_at: now_rfc3339(),
            receipt: None,
            receipt_at: None,
            receipt_detail: None,
            send_attempt: 1,
            previous_reason: None,
        }
    }
}

/// A delivery event from the provider, recorded on a recipient that was sent to. A later
/// event replaces an earlier one only when it says more: delayed < delivered < the
/// failures < complained; repeats and late arrivals of a weaker event change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Receipt {
    /// Delivery is delayed; the provider keeps trying.
    Delayed,
    /// The recipient's server or the carrier accepted the message.
    Delivered,
    /// The provider refused the message after accepting the request (virus, policy).
    Rejected,
    /// The message could not be rendered by the provider.
    RenderingFailed,
    /// The recipient's server refused the message.
    Bounced,
    /// The carrier could not deliver the SMS (unreachable, blocked, expired, opted out).
    Undelivered,
    /// The recipient marked the message as spam.
    Complained,
}

impl Receipt {
    pub const ALL: [Receipt; 7] = [
        Receipt::Delayed,
        Receipt::Delivered,
        Receipt::Rejected,
        Receipt::RenderingFailed,
        Receipt::Bounced,
        Receipt::Undelivered,
        Receipt::Complained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Receipt::Delayed => "delayed",
            Receipt::Delivered => "delivered",
            Receipt::Rejected => "rejected",
            Receipt::RenderingFailed => "rendering_failed",
            Receipt::Bounced => "bounced",
            Receipt::Undelivered => "undelivered",
            Receipt::Complained => "complained",
        }
    }

    /// Strength of the event: a stored receipt is replaced only by a stronger one.
    pub fn rank(self) -> u64 {
        match self {
            Receipt::Delayed => 1,
            Receipt::Delivered => 2,
            Receipt::Rejected
            | Receipt::RenderingFailed
            | Receipt::Bounced
            | Receipt::Undelivered => 3,
            Receipt::Complained => 4,
        }
    }

    /// Whether the message reached the recipient.
    pub fn reached(self) -> bool {
        matches!(self, Receipt::Delivered | Receipt::Complained)
    }
}

impl FromStr for Receipt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Receipt::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown receipt '{s}'"))
    }
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
mod tests {
    use super::*;

    #[test]
    fn dispatch_states_round_trip_through_their_names() {
        for st in DispatchState::ALL {
            assert_eq!(st.as_str().parse::<DispatchState>().unwrap(), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert!("paused_forever".parse::<DispatchState>().is_err());
    }

    #[test]
    fn dispatch_lifecycle_allows_only_the_forward_path() {
        use DispatchState::*;
        assert!(Validating.can_become(AwaitingApproval));
        assert!(Validating.can_become(ValidationFailed));
        assert!(AwaitingApproval.can_become(Approved));
        assert!(AwaitingApproval.can_become(Rejected));
        assert!(Approved.can_become(Sending));
        assert!(Sending.can_become(WaitingForContinuation));
        assert!(WaitingForContinuation.can_become(Sending));
        assert!(!WaitingForContinuation.can_become(Completed));
        assert!(Sending.can_become(Paused));
        assert!(WaitingForContinuation.can_become(Paused));
        assert!(Paused.can_become(Sending));
        assert!(!Paused.can_become(Completed));
        assert!(!AwaitingApproval.can_become(Paused));
        assert!(Sending.can_become(Completed));
        assert!(Sending.can_become(CompletedWithErrors));
        // A few that must never happen.
        assert!(!Validating.can_become(Approved));
        assert!(!ValidationFailed.can_become(Approved));
        // Repeat: before approval, a corrected package is validated again.
        assert!(ValidationFailed.can_become(Validating));
        assert!(AwaitingApproval.can_become(Validating));
        assert!(!Approved.can_become(Validating));
        assert!(!Sending.can_become(Validating));
        assert!(!Rejected.can_become(Approved));
        assert!(!Completed.can_become(Sending));
        // Rejecting stops a dispatch before or while it sends, not after.
        for from in [
            AwaitingApproval,
            Approved,
            Sending,
            WaitingForContinuation,
            Paused,
        ] {
            assert!(from.can_become(Rejected), "{from}");
        }
        assert!(!CompletedWithErrors.can_become(Rejected));
        assert!(!ValidationFailed.can_become(Rejected));
        // Started through the API: only its package's arrival moves it on.
        assert!(AwaitingUpload.can_become(Validating));
        assert!(!AwaitingUpload.can_become(AwaitingApproval));
        assert!(!AwaitingUpload.can_become(Approved));
        // Cancelling withdraws a dispatch before approval only.
        for from in [AwaitingUpload, ValidationFailed, AwaitingApproval] {
            assert!(from.can_become(Cancelled), "{from}");
        }
        for from in [Validating, Approved, Sending, Paused, Completed] {
            assert!(!from.can_become(Cancelled), "{from}");
        }
        assert!(!Approved.can_become(Approved));
        // Every final state is a dead end.
        for from in DispatchState::ALL.into_iter().filter(|s| s.is_final()) {
            for to in DispatchState::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn recipient_transitions_never_leave_a_final_state() {
        use RecipientState::*;
        assert!(Pending.can_become(Sending));
        assert!(Sending.can_become(Sent));
        assert!(Sending.can_become(Failed));
        assert!(Sending.can_become(Pending));
        assert!(
            !Pending.can_become(Sent),
            "a send always goes through a claim"
        );
        assert!(!Invalid.can_become(Pending));
        // Only an operator's resend leads out of a final state, and only back to pending.
        for from in RecipientState::ALL.into_iter().filter(|s| s.is_final()) {
            for to in RecipientState::ALL {
                let resend = from.may_be_resent() && to == Pending;
                assert_eq!(from.can_become(to), resend, "{from} -> {to}");
            }
        }
        assert!(Failed.may_be_resent() && Unknown.may_be_resent());
        assert!(!Sent.may_be_resent() && !Rejected.may_be_resent() && !Invalid.may_be_resent());
        assert!(Pending.can_become(Excluded), "removed before approval");
        assert!(!Sent.can_become(Excluded));
    }

    #[test]
    fn channels_parse_from_operator_words() {
        assert_eq!("E-mail".parse::<Channel>().unwrap(), Channel::Email);
        assert_eq!(" SMS ".parse::<Channel>().unwrap(), Channel::Sms);
        assert!("fax".parse::<Channel>().is_err());
    }

    #[test]
    fn outstanding_counts_only_valid_recipients_without_a_result() {
        let c = Counts {
            total: 10,
            valid: 8,
            invalid: 2,
            sent: 4,
            failed: 1,
            unknown: 1,
            stuck: 0,
            excluded: 0,
        };
        assert_eq!(c.outstanding(), 2);
    }

    #[test]
    fn only_a_dispatch_without_any_loss_or_exclusion_closes_by_itself() {
        let mut d = Dispatch::arrived("d", "incoming/d/", 1);
        d.state = DispatchState::Sending;
        d.counts = Counts {
            total: 2,
            valid: 2,
            sent: 2,
            ..Counts::default()
        };
        assert_eq!(d.final_state(), DispatchState::Completed);
        d.counts.invalid = 1;
        assert_eq!(d.final_state(), DispatchState::CompletedWithErrors);
        d.counts.invalid = 0;
        d.counts.excluded = 1;
        assert_eq!(d.final_state(), DispatchState::CompletedWithErrors);
    }
}
