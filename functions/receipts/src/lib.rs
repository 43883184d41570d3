//! Receipts: records what SES and AWS End User Messaging SMS report about messages they
//! accepted (delivered, bounced, complained, rejected, rendering failure, delayed;
//! delivered or undelivered SMS) on the recipient, found by the provider's message id.
//! Hard bounces, complaints and SMS opt-outs go on the suppression list. A receipt for a
//! dispatch that has finished marks its history stale; the scheduled function writes it
//! again.
//!
//! Triggered by the receipts queue, which the receipts SNS topic feeds.

use adapters::dynamodb::followup::{failure_words, FollowedUp};
use adapters::dynamodb::Store;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use domain::config::Config;
use domain::model::{
    age_secs, calls_for_follow_up, follow_up_of, now_rfc3339, Recipient, RecipientState,
};
use domain::queue::{SendBatch, SendItem};
use domain::{Error, Result};
use intake::events::{parse, Event, Parsed};
use std::collections::BTreeMap;

/// An event whose message is not (yet) found is retried while the message is younger than
/// this: the sender records the message id right after the provider accepted it, and the
/// index follows the table within a moment. Older events are for messages this system did
/// not send (or no longer keeps) and are dropped with a log line.
pub const UNMATCHED_RETRY_SECS: i64 = 15 * 60;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    /// For follow-ups on the next channel: they go to the send queue.
    pub sqs: aws_sdk_sqs::Client,
}

impl Deps {
    pub fn new(config: Config, clients: &adapters::clients::Clients) -> Deps {
        Deps {
            store: Store::from_config(clients, &config),
            sqs: clients.sqs.clone(),
            config,
        }
    }
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Recorded on the recipient of this dispatch.
    Recorded { dispatch_id: String },
    /// The recipient of this dispatch already holds a receipt as strong (a repeat, a late
    /// weaker event, or a retry after the history mark failed).
    Unchanged { dispatch_id: String },
    /// Nothing to record (why).
    Ignored(String),
    /// No recipient has this message id, and the event is too old to wait for one.
    Unmatched,
}

impl Handled {
    /// The dispatch whose recipient the event is about.
    fn dispatch(&self) -> Option<&str> {
        match self {
            Handled::Recorded { dispatch_id } | Handled::Unchanged { dispatch_id } => {
                Some(dispatch_id)
            }
            _ => None,
        }
    }
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
    let mut failures = Vec::new();
    // Queue messages by the dispatch they are about: each dispatch is looked at once per
    // batch, after all its receipts are written.
    let mut by_dispatch: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        match handle_body(deps, record.body.as_deref().unwrap_or("")).await {
            Ok(handled) => {
                tracing::debug!(message_id = %id, ?handled, "receipt handled");
                if let Some(d) = handled.dispatch() {
                    by_dispatch.entry(d.to_string()).or_default().push(id);
                }
            }
            Err(e) => {
                // Retried by the queue; after its receive limit the message waits in the
                // dead-letter queue, where an alarm reports it.
                tracing::error!(message_id = %id, error = %e, "receipt not recorded");
                failures.push(id);
            }
        }
    }
    for (dispatch_id, messages) in by_dispatch {
        if let Err(e) = mark_if_finished(deps, &dispatch_id).await {
            // The receipts come again; recorded already, they mark the history then.
            tracing::error!(dispatch = %dispatch_id, error = %e, "history not marked stale");
            failures.extend(messages);
        }
    }
    Ok(adapters::sqs::batch_response(failures))
}

/// A receipt changed a recipient of a dispatch that has finished: its history is stale.
async fn mark_if_finished(deps: &Deps, dispatch_id: &str) -> Result<()> {
    let finished = deps
        .store
        .get_dispatch(dispatch_id)
        .await?
        .is_some_and(|d| d.state.is_finished());
    if finished {
        deps.store
            .mark_history_stale(dispatch_id, &now_rfc3339())
            .await?;
    }
    Ok(())
}

async fn handle_body(deps: &Deps, body: &str) -> Result<Handled> {
    let event = match parse(body).map_err(Error::Malformed)? {
        Parsed::Event(e) => e,
        Parsed::Ignored(why) => return Ok(Handled::Ignored(why)),
    };
    record(deps, &event).await
}

/// Records one event: suppression first (it holds whatever became of the recipient), then
/// the recipient's receipt.
pub async fn record(deps: &Deps, event: &Event) -> Result<Handled> {
    if !event.suppress.is_empty() {
        deps.store.suppress(&event.suppress).await?;
        tracing::info!(provider_message = %event.message_id, addresses = event.suppress.len(),
            reason = %event.suppress[0].reason, "suppressed");
    }
    let Some(at) = deps.store.recipient_by_message(&event.message_id).await? else {
        if let Some(d) = deps.store.followed_up_message(&event.message_id).await? {
            return Ok(Handled::Ignored(format!(
                "the message's recipient in dispatch {d} was followed up on its next channel"
            )));
        }
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
    let dispatch_id = at.dispatch_id.clone();
    // Read before the receipt is recorded: whether the message had been delivered.
    let before = if deps.config.fallback_within_secs > 0
        && calls_for_follow_up(event.receipt, event.detail.as_deref())
    {
        deps.store.recipient_at(&at.dispatch_id, &at.key).await?
    } else {
        None
    };
    let recorded = deps.store.record_receipt(&at, event).await?;
    if let Some(r) = before {
        follow_up(deps, &at, &r, event).await?;
    }
    if recorded {
        Ok(Handled::Recorded { dispatch_id })
    } else {
        Ok(Handled::Unchanged { dispatch_id })
    }
}

/// A failed delivery followed up on the recipient's next channel, once: the recipient goes
/// back to the senders there as its next send attempt, audited. Tried again with the
/// receipt until the hand-out to the senders is made.
async fn follow_up(
    deps: &Deps,
    at: &adapters::dynamodb::receipts::Located,
    r: &Recipient,
    event: &Event,
) -> Result<()> {
    let within = i64::try_from(deps.config.fallback_within_secs).unwrap_or(i64::MAX);
    let recipient = if r.state == RecipientState::Pending && r.followed_up_at.is_some() {
        // Followed up before the hand-out failed: hand it out again (a claim is
        // conditional, so a second message sends nothing twice).
        r.clone()
    } else {
        let Some(next) = follow_up_of(r, &event.at, within) else {
            return Ok(());
        };
        let why = failure_words(r, event.receipt.as_str(), event.detail.as_deref());
        match deps
            .store
            .follow_up(&at.dispatch_id, &at.key, r, next, &why)
            .await?
        {
            FollowedUp::Started { recipient, attempt } => {
                deps.store
                    .audit_or_log(
                        &at.dispatch_id,
                        "receipts",
                        "follow_up",
                        &format!(
                            "recipient {}: {why}; send attempt {attempt} by {} to {}",
                            recipient.recipient_id, next.channel, next.address
                        ),
                    )
                    .await;
                tracing::info!(dispatch = %at.dispatch_id, recipient = %recipient.recipient_id,
                    channel = %next.channel, "failed delivery followed up on the next channel");
                *recipient
            }
            FollowedUp::Not(why) => {
                tracing::info!(dispatch = %at.dispatch_id, recipient = %r.recipient_id, %why, "no follow-up");
                return Ok(());
            }
        }
    };
    let (Some(channel), Some(address)) = (recipient.channel, recipient.address.clone()) else {
        return Err(Error::Malformed(format!(
            "recipient {} was followed up without a channel",
            recipient.recipient_id
        )));
    };
    let item = SendItem {
        key: at.key.clone(),
        recipient_id: recipient.recipient_id.clone(),
        channel,
        address,
        fields: recipient.fields.clone(),
        postal: recipient.postal.clone(),
    };
    let bodies = SendBatch::pack(&at.dispatch_id, vec![item], 1)
        .map_err(|e| Error::Malformed(e.to_string()))?;
    adapters::sqs::send_all(&deps.sqs, &deps.config.send_queue_url, bodies).await
}
