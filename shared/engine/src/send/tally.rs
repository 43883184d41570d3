//! What became of the recipients of the messages one invocation handled.

use domain::keys::RecipientKey;

/// What became of one recipient in this invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Another delivery of the message got it first, or it is already final.
    Skipped,
    Sent,
    Failed,
    Unknown,
    /// Not sent, claim given back: the message must come again.
    Retry,
    /// Not sent, claim given back: the provider asked us to slow down.
    Throttled,
    /// Not sent, claim given back: the dispatch stopped sending (paused, waiting).
    SetAside,
    /// Not sent, claim given back: the account's 24-hour quota is used up.
    QuotaReached,
}

/// What one message's sends came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub failed: u64,
    pub unknown: u64,
    pub throttled: u64,
    pub quota_reached: u64,
    /// The provider's words when it throttled.
    pub throttle_reason: Option<String>,
    /// Recipients given back for the message to come again.
    pub retry: Vec<RecipientKey>,
}

impl Tally {
    pub(super) fn add(&mut self, o: ItemOutcome, key: &RecipientKey) {
        match o {
            ItemOutcome::Sent => self.sent += 1,
            ItemOutcome::Failed => self.failed += 1,
            ItemOutcome::Unknown => self.unknown += 1,
            ItemOutcome::Retry => self.retry.push(key.clone()),
            ItemOutcome::Throttled => self.throttled += 1,
            ItemOutcome::QuotaReached => self.quota_reached += 1,
            ItemOutcome::Skipped | ItemOutcome::SetAside => {}
        }
    }

    pub(super) fn merge(&mut self, t: Tally) {
        self.sent += t.sent;
        self.failed += t.failed;
        self.unknown += t.unknown;
        self.throttled += t.throttled;
        self.quota_reached += t.quota_reached;
        if self.throttle_reason.is_none() {
            self.throttle_reason = t.throttle_reason;
        }
        self.retry.extend(t.retry);
    }
}
