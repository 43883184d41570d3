//! Messages on the work queues and the sending of them.

use crate::error::{Error, Result};
use crate::model::Channel;
use crate::store::RecipientKey;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A function's answer to an SQS batch: the messages named come again, the rest are deleted.
/// An empty id is left out, since the service would fail the whole batch over it.
pub fn batch_response(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = failed
        .into_iter()
        .filter(|id| !id.is_empty())
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    resp
}

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

/// Starts fan-out of a whole dispatch: one message per key shard on the fan-out queue.
pub async fn fan_out_all(
    sqs: &aws_sdk_sqs::Client,
    fanout_queue_url: &str,
    dispatch: &crate::model::Dispatch,
    action: FanOutAction,
) -> Result<()> {
    let bodies = FanOut::all_shards(&dispatch.id, dispatch.shards, action);
    send_all(sqs, fanout_queue_url, bodies).await
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

/// Sends message bodies to a queue, ten per call, retrying entries the queue did not take.
pub async fn send_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    bodies: Vec<String>,
) -> Result<()> {
    for chunk in bodies.chunks(10) {
        let mut pending: Vec<(String, &String)> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), b))
            .collect();
        for attempt in 0..5 {
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id.clone())
                        .message_body(body.as_str())
                        .build()
                        .map_err(|e| Error::Malformed(e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(Error::aws("SendMessageBatch"))?;
            let failed: Vec<String> = out.failed().iter().map(|f| f.id().to_string()).collect();
            if failed.is_empty() {
                break;
            }
            if attempt == 4 {
                return Err(Error::Aws {
                    op: "SendMessageBatch",
                    source: format!("{} messages were not accepted", failed.len()).into(),
                });
            }
            pending.retain(|(id, _)| failed.contains(id));
            tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
        }
    }
    Ok(())
}
