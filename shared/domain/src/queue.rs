//! Messages on the work queues.

use crate::keys::RecipientKey;
use crate::model::Channel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What fan-out does with the pending recipients of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FanOutAction {
    /// Hand them to the senders.
    #[default]
    Send,
    /// Mark them rejected: the dispatch was rejected.
    Reject,
}

/// A pass over a dispatch's records that did not finish in one invocation: where it came to
/// and what it counted so far, carried by the message that continues it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallPass {
    /// The shard being read and the sort key to continue after.
    pub shard: u32,
    #[serde(default)]
    pub after: Option<String>,
    /// When the dispatch last changed as the pass began: a change since means senders are
    /// at work, and the pass's counts are not a recount.
    pub dispatch_updated_at: String,
    /// Claims found expired and made unknown by this pass (not yet added to the counters).
    pub expired: u64,
    pub pending: u64,
    pub sent: u64,
    /// Letters produced.
    #[serde(default)]
    pub created: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Seconds since the most recent change of any record read.
    pub newest_change: i64,
}

/// What the settle function does for one dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "work")]
pub enum SettleWork {
    /// A sending dispatch: complete it when nothing is outstanding, or look at a quiet one
    /// record by record (expired claims, a recount, pending recipients handed out again).
    Sending {
        #[serde(default)]
        pass: Option<StallPass>,
    },
    /// A dispatch waiting for continuation whose time has come: back to sending.
    Continue,
    /// An approved dispatch fan-out never picked up: fanned out again.
    FanOutAgain,
    /// A dispatch rejected lately: its rejection handed out again.
    RejectAgain,
    /// A finished dispatch without its history document.
    WriteHistory,
    /// A finished dispatch whose history receipts made stale since `since`.
    RefreshHistory { since: String },
    /// An operator's job ([`crate::job::Job`]) on the dispatch, continuing at `shard` after
    /// the sort key `after`.
    Job {
        job_id: String,
        #[serde(default)]
        shard: u32,
        #[serde(default)]
        after: Option<String>,
    },
}

/// Settle work: one dispatch and what it needs. The scheduled run sends one per dispatch, so
/// that a large dispatch does not hold up the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    pub dispatch_id: String,
    #[serde(flatten)]
    pub work: SettleWork,
}

/// Fan-out work: one key shard of a dispatch, continuing after `after` when a previous
/// invocation stopped part way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    pub dispatch_id: String,
    pub shard: u32,
    #[serde(default)]
    pub action: FanOutAction,
    #[serde(default)]
    pub after: Option<String>,
}

impl FanOut {
    /// One message per shard: the start of fan-out for a whole dispatch.
    pub fn all_shards(dispatch_id: &str, shards: u32, action: FanOutAction) -> Vec<String> {
        (0..shards)
            .map(|shard| {
                serde_json::json!(FanOut {
                    dispatch_id: dispatch_id.to_string(),
                    shard,
                    action,
                    after: None,
                })
                .to_string()
            })
            .collect()
    }
}

/// One recipient to send to, with everything needed to render the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendItem {
    pub key: RecipientKey,
    pub recipient_id: String,
    pub channel: Channel,
    pub address: String,
    pub fields: BTreeMap<String, String>,
    /// The postal address for a letter attached to an email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal: Option<String>,
}

/// Send work: a batch of recipients of one dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBatch {
    pub dispatch_id: String,
    pub items: Vec<SendItem>,
}

impl SendBatch {
    /// The bodies of the messages that carry `items`: at most `per_message` recipients and
    /// [`MESSAGE_BYTES`] each, in order. One recipient always fits (validation bounds what a
    /// recipient carries well below it).
    pub fn pack(
        dispatch_id: &str,
        items: Vec<SendItem>,
        per_message: usize,
    ) -> serde_json::Result<Vec<String>> {
        let per_message = per_message.max(1);
        let envelope = serde_json::to_string(&SendBatch {
            dispatch_id: dispatch_id.to_string(),
            items: Vec::new(),
        })?
        .len();
        let mut bodies = Vec::new();
        let mut batch: Vec<SendItem> = Vec::new();
        let mut size = envelope;
        for item in items {
            let item_size = serde_json::to_string(&item)?.len() + 1;
            if !batch.is_empty() && (batch.len() == per_message || size + item_size > MESSAGE_BYTES)
            {
                bodies.push(serde_json::to_string(&SendBatch {
                    dispatch_id: dispatch_id.to_string(),
                    items: std::mem::take(&mut batch),
                })?);
                size = envelope;
            }
            size += item_size;
            batch.push(item);
        }
        if !batch.is_empty() {
            bodies.push(serde_json::to_string(&SendBatch {
                dispatch_id: dispatch_id.to_string(),
                items: batch,
            })?);
        }
        Ok(bodies)
    }
}

/// The most one message body may hold, in bytes: SQS takes 256 KiB a message and a batch.
pub const MESSAGE_BYTES: usize = 256 * 1024;

/// Groups message bodies into `SendMessageBatch` calls: at most ten entries and
/// [`MESSAGE_BYTES`] together a call, in order. Each returned range is one call.
pub fn batch_calls(bodies: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut calls = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, body) in bodies.iter().enumerate() {
        if i > start && (i - start == 10 || size + body.len() > MESSAGE_BYTES) {
            calls.push(start..i);
            start = i;
            size = 0;
        }
        size += body.len();
    }
    if start < bodies.len() {
        calls.push(start..bodies.len());
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: usize, value_bytes: usize) -> SendItem {
        SendItem {
            key: RecipientKey {
                shard: 0,
                sk: format!("R#{i}"),
            },
            recipient_id: i.to_string(),
            channel: Channel::Email,
            address: format!("r{i}@example.org"),
            fields: BTreeMap::from([("note".to_string(), "x".repeat(value_bytes))]),
            postal: None,
        }
    }

    #[test]
    fn messages_hold_at_most_their_count_and_their_bytes_and_keep_every_recipient() {
        let small: Vec<SendItem> = (0..25).map(|i| item(i, 10)).collect();
        let bodies = SendBatch::pack("d", small, 10).unwrap();
        assert_eq!(bodies.len(), 3);
        // Large recipients: 100,000 bytes each, so two to a message.
        let large: Vec<SendItem> = (0..5).map(|i| item(i, 100_000)).collect();
        let bodies = SendBatch::pack("d", large, 10).unwrap();
        assert_eq!(bodies.len(), 3);
        let mut ids = Vec::new();
        for b in &bodies {
            assert!(b.len() <= MESSAGE_BYTES, "{}", b.len());
            let batch: SendBatch = serde_json::from_str(b).unwrap();
            ids.extend(batch.items.into_iter().map(|i| i.recipient_id));
        }
        assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn batch_calls_hold_ten_entries_and_their_bytes() {
        let small = vec!["x".repeat(100); 25];
        assert_eq!(batch_calls(&small), [0..10, 10..20, 20..25]);
        let large = vec!["x".repeat(100_000); 5];
        assert_eq!(batch_calls(&large), [0..2, 2..4, 4..5]);
        assert!(batch_calls(&[]).is_empty());
    }
}
