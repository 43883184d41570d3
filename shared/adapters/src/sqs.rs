//! Messages on the work queues and the sending of them.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use domain::error::{Error, Result};
use domain::queue::{FanOut, FanOutAction};

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

/// How many times SQS has handed out a message, as it says (1 when it does not say).
pub fn receive_count(record: &aws_lambda_events::event::sqs::SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Puts settle work (the resume function's: hand-outs, continuations, jobs, completions) on
/// the settle queue.
pub async fn send_settle(
    sqs: &aws_sdk_sqs::Client,
    settle_queue_url: &str,
    work: &[domain::queue::Settle],
) -> Result<()> {
    let bodies = work
        .iter()
        .map(|w| serde_json::to_string(w).map_err(|e| Error::Malformed(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    send_all(sqs, settle_queue_url, bodies).await
}

/// Hands job `job_id` of a dispatch to the worker, from `(shard, after)`: its first message
/// (`(0, None)`), or the one that continues it where it came to.
pub async fn send_job(
    sqs: &aws_sdk_sqs::Client,
    settle_queue_url: &str,
    dispatch_id: &str,
    job_id: &str,
    (shard, after): (u32, Option<String>),
) -> Result<()> {
    let work = domain::queue::Settle {
        dispatch_id: dispatch_id.to_string(),
        work: domain::queue::SettleWork::Job {
            job_id: job_id.to_string(),
            shard,
            after,
        },
    };
    send_settle(sqs, settle_queue_url, &[work]).await
}

/// Starts fan-out of a whole dispatch: one message per key shard on the fan-out queue.
pub async fn fan_out_all(
    sqs: &aws_sdk_sqs::Client,
    fanout_queue_url: &str,
    dispatch: &domain::model::Dispatch,
    action: FanOutAction,
) -> Result<()> {
    let bodies = FanOut::all_shards(&dispatch.id, dispatch.shards, action);
    send_all(sqs, fanout_queue_url, bodies).await
}

/// Sends message bodies to a queue, up to ten and 256 KiB per call, retrying entries the
/// queue did not take.
pub async fn send_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    bodies: Vec<String>,
) -> Result<()> {
    for call in domain::queue::batch_calls(&bodies) {
        let chunk = &bodies[call];
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

/// The send queue, for recipients a sender puts back.
pub struct SendQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl SendQueue {
    pub fn new(sqs: aws_sdk_sqs::Client, url: impl Into<String>) -> SendQueue {
        SendQueue {
            sqs,
            url: url.into(),
        }
    }
}

#[async_trait::async_trait]
impl engine::ports::SendQueue for SendQueue {
    async fn requeue(&self, batch: &domain::queue::SendBatch) -> Result<()> {
        let body = serde_json::to_string(batch).map_err(|e| Error::Malformed(e.to_string()))?;
        send_all(&self.sqs, &self.url, vec![body]).await
    }
}

/// Completion handed to the settle queue: a sender whose results may have been a dispatch's
/// last does not read the whole dispatch itself (its invocation is short and its temporary
/// disk small); it sends the dispatch to the resume function, which completes it and writes
/// its history. The answer is always `None`: the completion, and its notice, come from there.
pub struct SettleHandOff {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SettleHandOff {
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: String) -> SettleHandOff {
        SettleHandOff { sqs, queue_url }
    }
}

#[async_trait::async_trait]
impl engine::ports::Completion for SettleHandOff {
    async fn complete_if_done(
        &self,
        d: &domain::model::Dispatch,
    ) -> Result<Option<domain::model::Dispatch>> {
        if d.state != domain::model::DispatchState::Sending || d.counts.outstanding() > 0 {
            return Ok(None);
        }
        let work = domain::queue::Settle {
            dispatch_id: d.id.clone(),
            work: domain::queue::SettleWork::Sending { pass: None },
        };
        send_settle(&self.sqs, &self.queue_url, &[work]).await?;
        Ok(None)
    }
}
