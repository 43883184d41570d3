//! Fan-out: turns one key shard of an approved dispatch into send-queue messages (many
//! recipients each), so that a list of any size is never enqueued inside an HTTP request.
//! Works in bounded pages and hands the rest of a shard to a continuation message. Also
//! applies a rejection to the recipients not yet sent.

use adapters::dynamodb::Store;
use adapters::sqs;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use domain::config::Config;
use domain::model::{DispatchState, RecipientState};
use domain::queue::{FanOut, FanOutAction, SendBatch, SendItem};
use domain::{Error, Result};
use futures::{stream, FutureExt, StreamExt, TryStreamExt};

/// Pages of a shard handled by one message before continuing in a new one.
pub const PAGES_PER_MESSAGE: usize = 10;
/// Recipients read per page.
pub const PAGE_SIZE: i32 = 1000;
/// Time kept free before the deadline: a page left unread then goes to the continuation.
pub const MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Deps {
    pub config: Config,
    pub store: Store,
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

/// Handles one invocation's messages. A shard not done when less than [`MARGIN`] is left
/// before `deadline` continues in a new message.
pub async fn handle(
    deps: &Deps,
    event: SqsEvent,
    deadline: domain::Deadline,
) -> Result<SqsBatchResponse, Error> {
    let mut failures = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let result = match serde_json::from_str::<FanOut>(record.body.as_deref().unwrap_or("")) {
            Ok(work) => fan_out(deps, &work, deadline).await,
            Err(e) => Err(Error::Malformed(format!("fan-out message: {e}"))),
        };
        if let Err(e) = result {
            // Malformed messages fail too: after the queue's receive limit they land in the
            // dead-letter queue, where they stay visible.
            tracing::error!(message_id = %id, error = %e, "fan-out failed");
            failures.push(id);
        }
    }
    Ok(sqs::batch_response(failures))
}

pub async fn fan_out(deps: &Deps, work: &FanOut, deadline: domain::Deadline) -> Result<()> {
    let d = deps
        .store
        .get_dispatch(&work.dispatch_id)
        .await?
        .ok_or_else(|| Error::NotFound(work.dispatch_id.clone()))?;
    match (work.action, d.state) {
        (FanOutAction::Send, DispatchState::Approved) => {
            match deps
                .store
                .transition(&d.id, DispatchState::Approved, DispatchState::Sending, &[])
                .await
            {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        (FanOutAction::Send, DispatchState::Sending)
        | (FanOutAction::Reject, DispatchState::Rejected | DispatchState::Cancelled) => {}
        (action, state) => {
            tracing::info!(dispatch = %d.id, ?action, %state, "nothing to fan out in this state");
            return Ok(());
        }
    }
    let mut after = work.after.clone();
    // At least one page per message, so that a fan-out moves on however short the time.
    for page_no in 0..PAGES_PER_MESSAGE {
        if page_no > 0 && deadline.remaining() < MARGIN {
            break;
        }
        let page = match work.action {
            FanOutAction::Send => {
                deps.store
                    .query_sendable(&d.id, work.shard, after.clone(), PAGE_SIZE)
                    .await?
            }
            FanOutAction::Reject => {
                deps.store
                    .query_shard(
                        &d.id,
                        work.shard,
                        Some(RecipientState::Pending),
                        after.clone(),
                        PAGE_SIZE,
                    )
                    .await?
            }
        };
        match work.action {
            FanOutAction::Send => enqueue(deps, &d.id, page.recipients).await?,
            FanOutAction::Reject => reject(deps, &d, page.recipients).await?,
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
    // More of this shard is left: continue in a new message.
    let rest = FanOut {
        after,
        ..work.clone()
    };
    let body = serde_json::to_string(&rest).map_err(|e| Error::Malformed(e.to_string()))?;
    sqs::send_all(&deps.sqs, &deps.config.fanout_queue_url, vec![body]).await
}

async fn enqueue(
    deps: &Deps,
    dispatch_id: &str,
    recipients: Vec<(domain::keys::RecipientKey, domain::model::Recipient)>,
) -> Result<()> {
    let items: Vec<SendItem> = recipients
        .into_iter()
        .filter_map(|(key, r)| {
            Some(SendItem {
                key,
                recipient_id: r.recipient_id,
                channel: r.channel?,
                address: r.address?,
                fields: r.fields,
                postal: r.postal,
            })
        })
        .collect();
    let bodies = SendBatch::pack(dispatch_id, items, deps.config.recipients_per_message)
        .map_err(|e| Error::Malformed(e.to_string()))?;
    sqs::send_all(&deps.sqs, &deps.config.send_queue_url, bodies).await
}

async fn reject(
    deps: &Deps,
    d: &domain::model::Dispatch,
    recipients: Vec<(domain::keys::RecipientKey, domain::model::Recipient)>,
) -> Result<()> {
    let how = d.state.as_str();
    let id = d.id.as_str();
    stream::iter(recipients)
        .map(|(key, _)| async move { deps.store.reject_pending(id, &key, how).await }.boxed())
        .buffer_unordered(8)
        .try_collect::<Vec<bool>>()
        .await?;
    Ok(())
}
