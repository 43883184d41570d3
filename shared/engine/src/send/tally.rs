//! What became of the recipients of the messages one invocation handled.

use domain::keys::RecipientKey;
use domain::model::Channel;
use std::collections::BTreeMap;
use std::time::Duration;

/// Answer times kept per channel and tally: CloudWatch takes at most 100 values of a metric
/// in one embedded-metric line.
pub const MAX_ANSWER_SAMPLES: usize = 100;

/// One channel's part of a tally.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChannelTally {
    pub sent: u64,
    pub failed: u64,
    pub unknown: u64,
    pub throttled: u64,
    /// How long the provider took to answer sends, in microseconds (the first
    /// [`MAX_ANSWER_SAMPLES`]).
    pub answer_micros: Vec<u64>,
}

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
    /// Not sent, claim given back: the provider refuses the account or the sender (access
    /// denied, an unverified sender, sending paused, a suspended account).
    Blocked,
    /// Not sent, claim given back: its send slot would come after this invocation must stop;
    /// it goes back on the queue as a new message.
    Later,
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
    pub blocked: u64,
    /// The provider's words when it refused the account or the sender.
    pub blocked_reason: Option<String>,
    /// Recipients given back for the message to come again.
    pub retry: Vec<RecipientKey>,
    /// Recipients this invocation had no time left for, to go back on the queue.
    pub later: Vec<RecipientKey>,
    /// The same outcomes by channel, with the provider's answer times.
    pub channels: BTreeMap<Channel, ChannelTally>,
}

impl Tally {
    /// Counts one recipient's outcome, with the provider's words when it throttled or
    /// refused the account.
    pub(super) fn add(
        &mut self,
        o: ItemOutcome,
        (key, channel): (&RecipientKey, Channel),
        why: Option<String>,
    ) {
        let c = self.channels.entry(channel).or_default();
        match o {
            ItemOutcome::Sent => c.sent += 1,
            ItemOutcome::Failed => c.failed += 1,
            ItemOutcome::Unknown => c.unknown += 1,
            ItemOutcome::Throttled => c.throttled += 1,
            _ => {}
        }
        let slot = match o {
            ItemOutcome::Blocked => &mut self.blocked_reason,
            _ => &mut self.throttle_reason,
        };
        if slot.is_none() {
            *slot = why;
        }
        match o {
            ItemOutcome::Sent => self.sent += 1,
            ItemOutcome::Failed => self.failed += 1,
            ItemOutcome::Unknown => self.unknown += 1,
            ItemOutcome::Retry => self.retry.push(key.clone()),
            ItemOutcome::Later => self.later.push(key.clone()),
            ItemOutcome::Throttled => self.throttled += 1,
            ItemOutcome::QuotaReached => self.quota_reached += 1,
            ItemOutcome::Blocked => self.blocked += 1,
            ItemOutcome::Skipped | ItemOutcome::SetAside => {}
        }
    }

    pub(super) fn merge(&mut self, t: Tally) {
        self.sent += t.sent;
        self.failed += t.failed;
        self.unknown += t.unknown;
        self.throttled += t.throttled;
        self.quota_reached += t.quota_reached;
        self.blocked += t.blocked;
        if self.throttle_reason.is_none() {
            self.throttle_reason = t.throttle_reason;
        }
        if self.blocked_reason.is_none() {
            self.blocked_reason = t.blocked_reason;
        }
        self.retry.extend(t.retry);
        self.later.extend(t.later);
        for (channel, t) in t.channels {
            let c = self.channels.entry(channel).or_default();
            c.sent += t.sent;
            c.failed += t.failed;
            c.unknown += t.unknown;
            c.throttled += t.throttled;
            let room = MAX_ANSWER_SAMPLES.saturating_sub(c.answer_micros.len());
            c.answer_micros
                .extend(t.answer_micros.into_iter().take(room));
        }
    }

    /// Notes how long the provider took to answer one send.
    pub(super) fn answered(&mut self, channel: Channel, took: Duration) {
        let c = self.channels.entry(channel).or_default();
        if c.answer_micros.len() < MAX_ANSWER_SAMPLES {
            c.answer_micros
                .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
    }
}
