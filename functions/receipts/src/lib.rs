//! Receipts: records what SES and AWS End User Messaging SMS report about messages they
//! accepted (delivered, bounced, complained, rejected, rendering failure, delayed;
//! delivered or undelivered SMS) on the recipient, found by the provider's message id.
//! Hard bounces, complaints and SMS opt-outs go on the suppression list. A receipt for a
//! dispatch that has finished marks its history stale; the scheduled function writes it
//! again.
//!
//! Triggered by the receipts queue, which the receipts SNS topic feeds.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use shared::config::Config;
use shared::model::{age_secs, now_rfc3339};
use shared::receipts::{parse, Event, Parsed};
use shared::store::Store;
use shared::{Error, Result};
use std::collections::HashMap;

/// An event whose message is not (yet) found is retried while the message is younger than
/// this: the sender records the message id right after the provider accepted it, and the
/// index follows the table within a moment. Older events are for messages this system did
/// not send (or no longer keeps) and are dropped with a log line.
pub const UNMATCHED_RETRY_SECS: i64 = 15 * 60;

pub struct Deps {
    pub config: Config,
    pub store: Store,
}

impl Deps {
    pub fn new(config: Config, clients: &shared::aws::Clients) -> Deps {
        Deps {
            store: Store::from_config(clients, &config),
            config,
        }
    }
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Recorded on the recipient of this dispatch.
    Recorded { dispatch_id: String },
    /// The recipient already holds a receipt as strong (a repeat or a late weaker event).
    Unchanged,
    /// Nothing to record (why).
    Ignored(String),
    /// No recipient has this message id, and the event is too old to wait for one.
    Unmatched,
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
    let mut failures = Vec::new();
    // Dispatch states read in this batch: one read per dispatch, not per receipt.
    let mut finished: HashMap<String, bool> = HashMap::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let result = handle_body(deps, record.body.as_deref().unwrap_or(""), &mut finished).await;
        match result {
            Ok(handled) => tracing::debug!(message_id = %id, ?handled, "receipt handled"),
            Err(e) => {
                // Retried by the queue; after its receive limit the message waits in the
                // dead-letter queue, where an alarm reports it.
                tracing::error!(message_id = %id, error = %e, "receipt not recorded");
                if !id.is_empty() {
                    let mut f = BatchItemFailure::default();
                    f.item_identifier = id;
                    failures.push(f);
                }
            }
        }
    }
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = failures;
    Ok(resp)
}

async fn handle_body(
    deps: &Deps,
    body: &str,
    finished: &mut HashMap<String, bool>,
) -> Result<Handled> {
    let event = match parse(body).map_err(Error::Malformed)? {
        Parsed::Event(e) => e,
        Parsed::Ignored(why) => return Ok(Handled::Ignored(why)),
    };
    record(deps, &event, finished).await
}

/// Records one event: suppression first (it holds whatever became of the recipient), then
/// the recipient's receipt, then the history mark.
pub async fn record(
    deps: &Deps,
    event: &Event,
    finished: &mut HashMap<String, bool>,
) -> Result<Handled> {
    if !event.suppress.is_empty() {
        deps.store.suppress(&event.suppress).await?;
        tracing::info!(provider_message = %event.message_id, addresses = event.suppress.len(),
            reason = %event.suppress[0].reason, "suppressed");
    }
    let Some(at) = deps.store.recipient_by_message(&event.message_id).await? else {
        let age = age_secs(event.sent_at.as_deref().unwrap_or(&event.at));
        if age < UNMATCHED_RETRY_SECS {
            return Err(Error::NotFound(format!(
                "the recipient of message {} (not indexed yet?)",
                event.message_id
            )));
        }
        tracing::warn!(provider_message = %event.message_id, receipt = event.receipt.as_str(),
            "no recipient has this message id; receipt dropped");
        return Ok(Handled::Unmatched);
    };
    if !deps.store.record_receipt(&at, event).await? {
        return Ok(Handled::Unchanged);
    }
    let done = match finished.get(&at.dispatch_id) {
        Some(done) => *done,
        None => {
            let done = deps
                .store
                .get_dispatch(&at.dispatch_id)
                .await?
                .is_some_and(|d| d.state.is_finished());
            finished.insert(at.dispatch_id.clone(), done);
            done
        }
    };
    if done {
        deps.store
            .mark_history_stale(&at.dispatch_id, &now_rfc3339())
            .await?;
    }
    Ok(Handled::Recorded {
        dispatch_id: at.dispatch_id,
    })
}
