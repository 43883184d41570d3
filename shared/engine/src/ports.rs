//! The ports of the engine: one small trait per capability the protocols need, with the
//! types that cross them. The AWS adapters implement them on DynamoDB, S3, SES and SNS;
//! [`crate::memory`] implements them in memory for fast tests of the protocols.

use async_trait::async_trait;
use domain::audit::AuditEntry;
use domain::keys::RecipientKey;
use domain::model::{Channel, Dispatch, DispatchState, Recipient};
use domain::notice::Event;
use domain::queue::SendBatch;
use domain::Result;
use intake::template::{
    FrozenFile, LetterLayout, RenderedEmail, RenderedLetter, RenderedSms, TemplateSource,
};
use std::time::Duration;

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Indices (into the keys asked for) of the recipients now held under the token.
    pub held: Vec<usize>,
}

/// What becomes of a claimed recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        message_id: String,
        at: String,
    },
    /// A letter produced: its document.
    Created {
        document: String,
        at: String,
    },
    Failed {
        reason: String,
    },
    Unknown {
        reason: String,
    },
    /// Not sent: back to pending, to be sent later.
    Release,
}

impl Outcome {
    /// The recipient state the outcome writes.
    pub fn state(&self) -> domain::model::RecipientState {
        use domain::model::RecipientState;
        match self {
            Outcome::Sent { .. } => RecipientState::Sent,
            Outcome::Created { .. } => RecipientState::Created,
            Outcome::Failed { .. } => RecipientState::Failed,
            Outcome::Unknown { .. } => RecipientState::Unknown,
            Outcome::Release => RecipientState::Pending,
        }
    }
}

/// Results as written: how many of each final state the dispatch's counters received, and
/// how many recipients were no longer held under the token (another party moved them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub sent: u64,
    pub created: u64,
    pub failed: u64,
    pub unknown: u64,
    pub released: u64,
    pub lost: u64,
}

/// A fresh claim token.
pub fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The recipients of dispatches being sent to: claimed before a send, their results written
/// after, each write together with the dispatch's counters. Neither touches the dispatch's
/// own record, which every sender of a dispatch would share: the sender reads the
/// dispatch's state instead ([`DispatchBook::state`]).
#[async_trait]
pub trait RecipientLedger: Send + Sync {
    /// Claims pending recipients of a sending dispatch under `token` (at most
    /// [`domain::limits::MAX_RECIPIENTS_PER_WRITE`]). Recipients that are not pending are
    /// left out.
    async fn claim(&self, dispatch_id: &str, keys: &[RecipientKey], token: &str)
        -> Result<Claimed>;

    /// Writes the results of recipients claimed under `token`, and the dispatch's counters,
    /// at once. A write whose earlier attempt was applied is not applied twice.
    async fn record(
        &self,
        dispatch_id: &str,
        token: &str,
        results: &[(RecipientKey, Outcome)],
    ) -> Result<Recorded>;

    /// Marks pending recipients whose queue message went to the dead-letter queue and
    /// counts them on the dispatch; returns how many were newly marked.
    async fn mark_stuck(&self, dispatch_id: &str, keys: &[RecipientKey]) -> Result<u64>;
}

/// The dispatch records: read, moved from state to state, and stamped.
#[async_trait]
pub trait DispatchBook: Send + Sync {
    async fn dispatch(&self, id: &str) -> Result<Option<Dispatch>>;

    /// Only the dispatch's state: what a sender looks at before and while it sends.
    async fn state(&self, id: &str) -> Result<Option<DispatchState>> {
        Ok(self.dispatch(id).await?.map(|d| d.state))
    }

    /// Moves a dispatch from `from` to `to`, setting the `stamps` fields (the dispatch's own
    /// text fields, such as `completed_at`), and returns it after; a conflict when it is no
    /// longer in `from` or may not go to `to`.
    async fn transition(
        &self,
        id: &str,
        from: DispatchState,
        to: DispatchState,
        stamps: &[(&str, String)],
    ) -> Result<Dispatch>;

    /// Sets text fields of an existing dispatch, whatever its state.
    async fn stamp(&self, id: &str, stamps: &[(&str, String)]) -> Result<()>;
}

/// Every recipient of a dispatch, for the documents that show them all.
#[async_trait]
pub trait RecipientRoll: Send + Sync {
    /// One page of a dispatch's key shard, in storage order, after the sort key `after`: a
    /// pass over a dispatch reads it a page at a time, never whole.
    async fn page(&self, d: &Dispatch, shard: u32, after: Option<String>) -> Result<RecipientPage>;
}

/// A page of recipients with their storage keys.
#[derive(Debug, Default)]
pub struct RecipientPage {
    pub recipients: Vec<(RecipientKey, Recipient)>,
    /// The sort key to continue after, when the shard has more.
    pub next: Option<String>,
}

/// Who did what to a dispatch.
#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// Adds an entry; a failure is logged, never failing the action it records.
    async fn append(&self, dispatch_id: &str, actor: &str, action: &str, outcome: &str);

    /// The trail, oldest first.
    async fn trail(&self, dispatch_id: &str) -> Result<Vec<AuditEntry>>;
}

/// What sending reports of itself, for dashboards and alarms.
pub trait Metrics: Send + Sync {
    /// One invocation's sends for one dispatch.
    fn sends(&self, figures: &crate::metrics::SendFigures);
}

/// Documents written for operators (reports, histories).
#[async_trait]
pub trait ReportDocuments: Send + Sync {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()>;

    /// Puts a document written to local disk, read from there as it goes.
    async fn put_file(&self, key: &str, path: &std::path::Path, content_type: &str) -> Result<()>;
}

/// Histories that receipts made stale since they were written.
#[async_trait]
pub trait StaleHistories: Send + Sync {
    /// Up to `limit` dispatches whose history is stale, each with the time of the mark.
    async fn stale(&self, limit: i32) -> Result<Vec<(String, String)>>;

    /// Clears a dispatch's mark unless a newer one replaced `since`; whether it was cleared.
    async fn refreshed(&self, dispatch_id: &str, since: &str) -> Result<bool>;
}

/// Send slots at a rate shared by every sender instance, one schedule per channel.
#[async_trait]
pub trait SendSlots: Send + Sync {
    /// Takes `count` consecutive slots `interval` apart on the channel's schedule and returns
    /// when the first one is, in milliseconds since the Unix epoch. Runs taken by different
    /// callers never overlap.
    async fn take(&self, channel: Channel, count: u32, interval: Duration) -> Result<i64>;
}

/// Why a send did not go through, sorted by what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider asks us to slow down or stop for now: the recipient goes back to pending.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The provider refuses the account or the sender, whoever the recipient (access denied,
    /// an unverified sender identity, sending paused, a suspended account): the recipient goes
    /// back to pending and the dispatch waits for an operator.
    #[error("blocked: {0}")]
    Blocked(String),
    /// The request did not reach the provider or the provider failed: safe to try again.
    #[error("transient: {0}")]
    Transient(String),
    /// The request may have reached the provider, but no answer came back.
    #[error("no answer: {0}")]
    Unknown(String),
    /// The provider refused this message for good.
    #[error("{code}: {message}")]
    Permanent { code: String, message: String },
}

/// The sending quota of the email account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub max_send_rate: f64,
    pub max_24_hour_send: f64,
    pub sent_last_24_hours: f64,
}

/// A file an email carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: std::sync::Arc<Vec<u8>>,
}

/// Email delivery.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends one email with its attachments (to `to`, blind-copied to the message's Bcc);
    /// the provider's message id on success.
    async fn send_email(
        &self,
        to: &str,
        message: &RenderedEmail,
        attachments: &[Attachment],
    ) -> Result<String, SendError>;

    /// The account's quota, when the provider tells it; `None` when it does not, and the
    /// configured rate applies.
    async fn quota(&self) -> Option<Quota>;
}

/// SMS delivery.
#[async_trait]
pub trait Texter: Send + Sync {
    /// Sends one SMS; the provider's message id on success.
    async fn send_sms(&self, to: &str, message: &RenderedSms) -> Result<String, SendError>;
}

/// Letter production: each letter typeset and filed as a document of the dispatch.
#[async_trait]
pub trait LetterPress: Send + Sync {
    /// Typesets one recipient's letter in the dispatch's layout and files it; the
    /// document's key on success. Filing the same recipient's letter again replaces it
    /// with the same letter, so a retry never makes a second one.
    async fn produce(
        &self,
        dispatch_id: &str,
        recipient: &RecipientKey,
        address: &str,
        layout: &LetterLayout,
        letter: &RenderedLetter,
    ) -> Result<String, SendError>;

    /// Typesets one recipient's letter in the dispatch's layout without filing it: the
    /// PDF, for an email that carries it.
    async fn typeset(
        &self,
        dispatch_id: &str,
        address: &str,
        layout: &LetterLayout,
        letter: &RenderedLetter,
    ) -> Result<Vec<u8>, SendError>;
}

/// The frozen packages of approved dispatches.
#[async_trait]
pub trait Packages: Send + Sync {
    /// The template texts a dispatch was validated and approved with.
    async fn template(&self, dispatch_id: &str) -> Result<TemplateSource>;

    /// A file frozen beside the package (the email attachment), checked against its hash.
    async fn file(&self, file: &FrozenFile) -> Result<Vec<u8>>;
}

/// The deployment's signing keys.
#[async_trait]
pub trait SigningKeys: Send + Sync {
    /// The key one-click unsubscribe links are signed with.
    async fn unsubscribe_key(&self) -> Result<Vec<u8>>;
}

/// The end of a dispatch, looked at after results were written.
#[async_trait]
pub trait Completion: Send + Sync {
    /// Completes a sending dispatch that has nothing outstanding and writes its history;
    /// the dispatch after, or `None` when it is not complete or another caller got there.
    async fn complete_if_done(&self, d: &Dispatch) -> Result<Option<Dispatch>>;
}

/// The send queue, for the recipients of a message that an invocation had no time left for:
/// they go back as a new message rather than the whole message coming again.
#[async_trait]
pub trait SendQueue: Send + Sync {
    async fn requeue(&self, batch: &SendBatch) -> Result<()>;
}

/// Operator notifications: best effort, never failing the step that made them.
#[async_trait]
pub trait Notices: Send + Sync {
    async fn notify(&self, event: Event, d: &Dispatch, detail: Option<&str>);
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::model::RecipientState;

    #[test]
    fn outcomes_name_their_states() {
        assert_eq!(Outcome::Release.state(), RecipientState::Pending);
        assert_eq!(
            Outcome::Unknown { reason: "x".into() }.state(),
            RecipientState::Unknown
        );
    }
}
