//! Send: delivers batches of recipients by email (SES v2) or SMS (SNS).
//!
//! Each recipient is claimed with a conditional write before the provider is called and the
//! result is recorded after, so a message delivered twice by SQS never sends twice. A fault
//! before the provider took the message gives the claim back and the SQS message is retried.
//! A throttle gives the claim back and puts the dispatch in `waiting_for_continuation` until
//! `resume_at`; the scheduled resume function continues it with the recipients not yet sent.
//! An answer that never came leaves the recipient `unknown`, never re-sent automatically.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::{stream, FutureExt, StreamExt};
use shared::channels::{Mailer, SendError, SmsSender};
use shared::completion;
use shared::config::Config;
use shared::documents::Documents;
use shared::model::{now_rfc3339, rfc3339, Channel, Dispatch, DispatchState};
use shared::pacing::Pacer;
use shared::queue::{SendBatch, SendItem};
use shared::store::Store;
use shared::template::MessageTemplate;
use shared::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Recipients of one message sent at once (the pacer still spaces them).
const ITEM_CONCURRENCY: usize = 8;
/// Queue messages of one invocation handled at once.
const RECORD_CONCURRENCY: usize = 4;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
    pub mailer: Mailer,
    pub sms: SmsSender,
    email_pace: Pacer,
    sms_pace: Pacer,
    /// Compiled templates by dispatch; a dispatch's package does not change after approval.
    templates: Mutex<HashMap<String, Arc<MessageTemplate>>>,
    /// Each dispatch's state as last read, and when: a pause takes effect within a second.
    live: Mutex<HashMap<String, (tokio::time::Instant, DispatchState)>>,
    /// The SES account's quota as last read, and the emails sent since.
    quota: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    read_at: Option<tokio::time::Instant>,
    quota: Option<shared::channels::Quota>,
    sent_since: u64,
}

/// How long the account's quota is trusted before it is read again.
const QUOTA_FRESH_FOR: Duration = Duration::from_secs(60);

impl Deps {
    pub fn new(config: Config, clients: &shared::aws::Clients) -> Deps {
        Deps {
            store: Store::from_config(clients, &config),
            docs: Documents::from_config(clients, &config),
            mailer: Mailer::new(clients.sesv2.clone()),
            sms: SmsSender::new(clients.sns.clone()),
            email_pace: Pacer::per_second(config.email_rate_per_second),
            sms_pace: Pacer::per_second(config.sms_rate_per_second),
            templates: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            quota: Mutex::new(QuotaState::default()),
            config,
        }
    }

    async fn template(&self, dispatch_id: &str) -> Result<Arc<MessageTemplate>> {
        if let Some(t) = self.templates.lock().await.get(dispatch_id) {
            return Ok(t.clone());
        }
        let package = self.docs.package(dispatch_id).await?;
        let t = Arc::new(
            MessageTemplate::compile(package.template)
                .map_err(|e| Error::Malformed(format!("package of {dispatch_id}: {e}")))?,
        );
        self.templates
            .lock()
            .await
            .insert(dispatch_id.to_string(), t.clone());
        Ok(t)
    }
}

/// How long a read of a dispatch's state is trusted before sending the next recipient.
const STATE_FRESH_FOR: Duration = Duration::from_secs(1);

impl Deps {
    /// Whether the dispatch is still sending, read again at most once a second. A failed read
    /// keeps the last answer: a pause is an operator's wish, not a fault to stop on.
    async fn still_sending(&self, dispatch_id: &str) -> bool {
        if let Some((at, state)) = self.live.lock().await.get(dispatch_id) {
            if at.elapsed() < STATE_FRESH_FOR {
                return *state == DispatchState::Sending;
            }
        }
        match self.store.get_dispatch(dispatch_id).await {
            Ok(Some(d)) => {
                self.live.lock().await.insert(
                    dispatch_id.to_string(),
                    (tokio::time::Instant::now(), d.state),
                );
                d.state == DispatchState::Sending
            }
            _ => true,
        }
    }
}

impl Deps {
    /// Whether the account's 24-hour quota leaves room for one more email; takes it if so.
    /// Reads the quota at most once a minute and paces this instance at its share of the
    /// account's rate. Without a quota from the service, the configured rate applies.
    async fn take_email_allowance(&self) -> bool {
        let mut q = self.quota.lock().await;
        if q.read_at.is_none_or(|t| t.elapsed() >= QUOTA_FRESH_FOR) {
            q.quota = self.mailer.quota().await;
            q.read_at = Some(tokio::time::Instant::now());
            q.sent_since = 0;
            let share = q
                .quota
                .map(|a| a.max_send_rate / self.config.sender_concurrency as f64)
                .filter(|r| *r > 0.0)
                .unwrap_or(f64::INFINITY);
            self.email_pace
                .set_per_second(self.config.email_rate_per_second.min(share));
        }
        match q.quota {
            Some(a) if a.max_24_hour_send > 0.0 => {
                let left = a.max_24_hour_send - a.sent_last_24_hours - q.sent_since as f64;
                if left < 1.0 {
                    return false;
                }
                q.sent_since += 1;
                true
            }
            _ => true,
        }
    }
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
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub failed: u64,
    pub unknown: u64,
    pub retry: u64,
    pub throttled: u64,
    pub quota_reached: u64,
    /// The provider's words when it throttled.
    pub throttle_reason: Option<String>,
}

impl Tally {
    fn add(&mut self, o: ItemOutcome) {
        match o {
            ItemOutcome::Sent => self.sent += 1,
            ItemOutcome::Failed => self.failed += 1,
            ItemOutcome::Unknown => self.unknown += 1,
            ItemOutcome::Retry => self.retry += 1,
            ItemOutcome::Throttled => self.throttled += 1,
            ItemOutcome::QuotaReached => self.quota_reached += 1,
            ItemOutcome::Skipped | ItemOutcome::SetAside => {}
        }
    }
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
    let results: Vec<(String, Result<(String, Tally)>)> = stream::iter(event.records)
        .map(|record| {
            async move {
                let id = record.message_id.unwrap_or_default();
                let result =
                    match serde_json::from_str::<SendBatch>(record.body.as_deref().unwrap_or("")) {
                        Ok(batch) => send_batch(deps, &batch)
                            .await
                            .map(|t| (batch.dispatch_id, t)),
                        Err(e) => Err(Error::Malformed(format!("send message: {e}"))),
                    };
                (id, result)
            }
            .boxed()
        })
        .buffer_unordered(RECORD_CONCURRENCY)
        .collect()
        .await;

    let mut failures = Vec::new();
    let mut per_dispatch: BTreeMap<String, Tally> = BTreeMap::new();
    for (id, result) in results {
        let retry = match result {
            Ok((dispatch_id, t)) => {
                let sum = per_dispatch.entry(dispatch_id).or_default();
                sum.sent += t.sent;
                sum.failed += t.failed;
                sum.unknown += t.unknown;
                sum.throttled += t.throttled;
                sum.quota_reached += t.quota_reached;
                if sum.throttle_reason.is_none() {
                    sum.throttle_reason = t.throttle_reason;
                }
                // Throttled recipients are pending again and continue with the dispatch; only
                // faults make the queue deliver the message again.
                t.retry > 0
            }
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "send message failed");
                true
            }
        };
        if retry && !id.is_empty() {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            failures.push(f);
        }
    }
    for (dispatch_id, t) in per_dispatch {
        if t.quota_reached > 0 {
            let reason = t.throttle_reason.as_deref().unwrap_or(QUOTA_USED_UP);
            pause(deps, &dispatch_id, reason, deps.config.quota_recheck_secs).await;
        } else if t.throttled > 0 {
            let reason = t.throttle_reason.as_deref().unwrap_or("throttled");
            pause(deps, &dispatch_id, reason, deps.config.throttle_pause_secs).await;
        }
        if t.sent + t.failed + t.unknown == 0 {
            continue;
        }
        // Counters only move for recipients this invocation moved, so redelivery cannot count
        // twice. A lost update is mended by the scheduled reconciliation.
        match deps
            .store
            .add_results(&dispatch_id, t.sent, t.failed, t.unknown)
            .await
        {
            Ok(d) => {
                if let Err(e) = completion::complete_if_done(&deps.store, &deps.docs, &d).await {
                    tracing::error!(dispatch = %dispatch_id, error = %e, "completion left to the schedule");
                }
            }
            Err(e) => {
                tracing::error!(dispatch = %dispatch_id, error = %e, "counters left to reconciliation")
            }
        }
    }
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = failures;
    Ok(resp)
}

const QUOTA_USED_UP: &str = "the account's 24-hour sending quota is used up";

/// Stops sending for a while after a throttle. A dispatch already waiting stays as it is.
async fn pause(deps: &Deps, dispatch_id: &str, reason: &str, secs: u64) {
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64);
    let extra = [
        ("resume_at", shared::store::s(rfc3339(until))),
        ("pause_reason", shared::store::s(reason)),
    ];
    match deps
        .store
        .transition(
            dispatch_id,
            DispatchState::Sending,
            DispatchState::WaitingForContinuation,
            &extra,
        )
        .await
    {
        Ok(_) => {
            tracing::warn!(dispatch = %dispatch_id, %reason, resume_at = %rfc3339(until), "throttled; waiting for continuation")
        }
        Err(Error::Conflict(_)) => {}
        Err(e) => {
            tracing::error!(dispatch = %dispatch_id, error = %e, "could not record the pause; the schedule will continue the dispatch")
        }
    }
}

/// Sends one queue message's recipients.
pub async fn send_batch(deps: &Deps, batch: &SendBatch) -> Result<Tally> {
    let d = deps
        .store
        .get_dispatch(&batch.dispatch_id)
        .await?
        .ok_or_else(|| Error::NotFound(batch.dispatch_id.clone()))?;
    match d.state {
        DispatchState::Sending => {}
        DispatchState::WaitingForContinuation | DispatchState::Paused => {
            // The recipients stay pending; they are handed out again when sending continues.
            tracing::info!(dispatch = %d.id, state = %d.state, "not sending now; message set aside");
            return Ok(Tally::default());
        }
        s if s.is_final() => {
            tracing::info!(dispatch = %d.id, state = %s, "dispatch is over; message dropped");
            return Ok(Tally::default());
        }
        s => {
            return Err(Error::Conflict(format!(
                "dispatch {} is {s}, not sending",
                d.id
            )));
        }
    }
    let template = deps.template(&d.id).await?;
    let outcomes: Vec<(ItemOutcome, Option<String>)> = stream::iter(batch.items.iter().cloned())
        .map(|item| {
            let template = template.clone();
            let d = &d;
            async move {
                match send_one(deps, d, &template, &item).await {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(dispatch = %d.id, recipient = %item.recipient_id, error = %e, "recipient will be retried");
                        (ItemOutcome::Retry, None)
                    }
                }
            }
            .boxed()
        })
        .buffer_unordered(ITEM_CONCURRENCY)
        .collect()
        .await;
    let mut tally = Tally::default();
    for (o, why) in outcomes {
        tally.add(o);
        if tally.throttle_reason.is_none() {
            tally.throttle_reason = why;
        }
    }
    Ok(tally)
}

async fn send_one(
    deps: &Deps,
    d: &Dispatch,
    t: &MessageTemplate,
    item: &SendItem,
) -> Result<(ItemOutcome, Option<String>)> {
    if !deps.store.claim(&d.id, &item.key).await? {
        return Ok((ItemOutcome::Skipped, None));
    }
    let sent = match item.channel {
        Channel::Email => match t.render_email(&item.fields) {
            Ok(m) => {
                deps.email_pace.wait().await;
                if !deps.still_sending(&d.id).await {
                    record_with_retry(|| deps.store.release(&d.id, &item.key)).await?;
                    return Ok((ItemOutcome::SetAside, None));
                }
                if !deps.take_email_allowance().await {
                    record_with_retry(|| deps.store.release(&d.id, &item.key)).await?;
                    return Ok((ItemOutcome::QuotaReached, Some(QUOTA_USED_UP.to_string())));
                }
                deps.mailer.send(&item.address, &m).await
            }
            Err(e) => Err(SendError::Permanent {
                code: "render_failed".into(),
                message: e.to_string(),
            }),
        },
        Channel::Sms => match t.render_sms(&item.fields) {
            Ok(m) => {
                deps.sms_pace.wait().await;
                if !deps.still_sending(&d.id).await {
                    record_with_retry(|| deps.store.release(&d.id, &item.key)).await?;
                    return Ok((ItemOutcome::SetAside, None));
                }
                deps.sms.send(&item.address, &m).await
            }
            Err(e) => Err(SendError::Permanent {
                code: "render_failed".into(),
                message: e.to_string(),
            }),
        },
    };
    match sent {
        Ok(message_id) => {
            let at = now_rfc3339();
            record_with_retry(|| deps.store.record_sent(&d.id, &item.key, &message_id, &at))
                .await?;
            Ok((ItemOutcome::Sent, None))
        }
        Err(SendError::Permanent { code, message }) => {
            let reason = format!("{code}: {message}");
            record_with_retry(|| deps.store.record_failed(&d.id, &item.key, &reason)).await?;
            Ok((ItemOutcome::Failed, None))
        }
        Err(SendError::Unknown(why)) => {
            let reason = format!("no answer from the provider ({why}); not re-sent automatically");
            record_with_retry(|| deps.store.record_unknown(&d.id, &item.key, &reason)).await?;
            Ok((ItemOutcome::Unknown, None))
        }
        Err(SendError::Throttled(why)) => {
            record_with_retry(|| deps.store.release(&d.id, &item.key)).await?;
            Ok((ItemOutcome::Throttled, Some(why)))
        }
        Err(e @ SendError::Transient(_)) => {
            tracing::warn!(dispatch = %d.id, recipient = %item.recipient_id, error = %e, "not sent; claim given back");
            record_with_retry(|| deps.store.release(&d.id, &item.key)).await?;
            Ok((ItemOutcome::Retry, None))
        }
    }
}

/// A result that the provider already acted on must be written; a few tries with backoff.
async fn record_with_retry<F, Fut>(write: F) -> Result<bool>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let mut delay = Duration::from_millis(100);
    let mut last = None;
    for _ in 0..4 {
        match write().await {
            Ok(done) => return Ok(done),
            Err(e) if e.is_retryable() => {
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Malformed("no attempt made".into())))
}
