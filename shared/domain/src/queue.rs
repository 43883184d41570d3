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
}

/// Send work: a batch of recipients of one dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBatch {
    pub dispatch_id: String,
    pub items: Vec<SendItem>,
}
