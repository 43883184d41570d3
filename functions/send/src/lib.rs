//! Send: delivers batches of recipients by email (SES v2) or SMS (SNS).
//!
//! The recipients of a queue message are claimed in one conditional transaction before the
//! provider is called and their results are written in one after, so a message delivered
//! twice by SQS never sends twice. Sends are spaced by a rate shared by every sender instance
//! (one DynamoDB item per channel). A fault before the provider took a message is retried
//! with backoff a few times, then the claim is given back and the SQS message comes again
//! (after the queue's receive limit it lands in the dead-letter queue and the dispatch counts
//! the recipients stuck there). A throttle gives the claims back and puts the dispatch in
//! `waiting_for_continuation` until `resume_at`; the scheduled resume function continues it
//! with the recipients not yet sent. An answer that never came leaves the recipient
//! `unknown`, never re-sent automatically.

use adapters::channels::{Mailer, SendError, SmsSender};
use adapters::completion;
use adapters::dynamodb::claims::{self, Outcome};
use adapters::dynamodb::rates::SharedRate;
use adapters::dynamodb::Store;
use adapters::s3::Documents;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use domain::config::Config;
use domain::limits::MAX_RECIPIENTS_PER_WRITE;
use domain::model::{now_rfc3339, rfc3339, Channel, DispatchState};
use domain::queue::{SendBatch, SendItem};
use domain::{Error, Result};
use engine::pacing::{instant_of, slot_interval};
use futures::{stream, FutureExt, StreamExt};
use intake::template::MessageTemplate;
use intake::template::{RenderedEmail, RenderedSms};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Sends of one message in flight at once: all of them (at most 99), each waiting for its
/// own slot, so that a slow answer to one send does not make the next ones late.
const ITEM_CONCURRENCY: usize = MAX_RECIPIENTS_PER_WRITE;
/// Queue messages of one invocation handled at once.
const RECORD_CONCURRENCY: usize = 4;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
    pub mailer: Mailer,
    pub sms: SmsSender,
    pub notifier: adapters::notify::Notifier,
    email_rate: SharedRate,
    sms_rate: SharedRate,
    /// Compiled templates by dispatch; a dispatch's package does not change after approval.
    templates: Mutex<HashMap<String, Arc<MessageTemplate>>>,
    /// Each dispatch's state as last seen, and when: a pause takes effect within seconds.
    live: Mutex<HashMap<String, (tokio::time::Instant, DispatchState)>>,
    /// The SES account's quota as last read, and the emails sent since.
    quota: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    read_at: Option<tokio::time::Instant>,
    quota: Option<adapters::channels::Quota>,
    sent_since: u64,
}

/// How long the account's quota is trusted before it is read again.
const QUOTA_FRESH_FOR: Duration = Duration::from_secs(60);
/// How long a sighting of a dispatch's state is trusted before the next send: an operator's
/// pause takes effect within this long. A claim counts as a sighting (it only succeeds while
/// the dispatch is sending), so a sender reads the dispatch at most once per this long.
const STATE_FRESH_FOR: Duration = Duration::from_secs(5);
/// Extra attempts at a send that failed without reaching the provider (5xx, connection).
const TRANSIENT_RETRIES: u32 = 2;

impl Deps {
    pub fn new(config: Config, clients: &adapters::clients::Clients) -> Deps {
        let store = Store::from_config(clients, &config);
        Deps {
            email_rate: SharedRate::new(store.clone(), "email"),
            sms_rate: SharedRate::new(store.clone(), "sms"),
            store,
            docs: Documents::from_config(clients, &config),
            mailer: Mailer::new(clients.sesv2.clone(), config.ses_configuration_set.clone()),
            sms: SmsSender::new(clients.sns.clone()),
            notifier: adapters::notify::Notifier::from_config(clients, &config),
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

    async fn saw(&self, dispatch_id: &str, state: DispatchState) {
        self.live.lock().await.insert(
            dispatch_id.to_string(),
            (tokio::time::Instant::now(), state),
        );
    }

    /// Whether the dispatch is still sending, read again when the last sighting is older
    /// than [`STATE_FRESH_FOR`]. A failed read keeps the last answer: a pause is an
    /// operator's wish, not a fault to stop on.
    async fn still_sending(&self, dispatch_id: &str) -> bool {
        if let Some((at, state)) = self.live.lock().await.get(dispatch_id) {
            if at.elapsed() < STATE_FRESH_FOR {
                return *state == DispatchState::Sending;
            }
        }
        match self.store.get_dispatch(dispatch_id).await {
            Ok(Some(d)) => {
                self.saw(dispatch_id, d.state).await;
                d.state == DispatchState::Sending
            }
            _ => true,
        }
    }

    /// The email rate now: the configured rate, or the account's when that is lower. Reads
    /// the account's quota at most once a minute.
    async fn email_rate_now(&self) -> f64 {
        let mut q = self.quota.lock().await;
        if q.read_at.is_none_or(|t| t.elapsed() >= QUOTA_FRESH_FOR) {
            q.quota = self.mailer.quota().await;
            q.read_at = Some(tokio::time::Instant::now());
            q.sent_since = 0;
        }
        q.quota
            .map(|a| a.max_send_rate)
            .filter(|r| *r > 0.0)
            .map_or(self.config.email_rate_per_second, |r| {
                r.min(self.config.email_rate_per_second)
            })
    }

    /// Whether the account's 24-hour quota leaves room for one more email; takes it if so.
    /// Without a quota from the service, only the provider's own refusal stops sending.
    async fn take_email_allowance(&self) -> bool {
        let mut q = self.quota.lock().await;
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
    pub throttled: u64,
    pub quota_reached: u64,
    /// The provider's words when it throttled.
    pub throttle_reason: Option<String>,
    /// Recipients given back for the message to come again.
    pub retry: Vec<domain::keys::RecipientKey>,
}

impl Tally {
    fn add(&mut self, o: ItemOutcome, key: &domain::keys::RecipientKey) {
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

    fn merge(&mut self, t: Tally) {
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

/// How many times SQS has handed out a message, as it says.
fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
    let results: Vec<(String, u32, Option<SendBatch>, Result<Tally>)> = stream::iter(event.records)
        .map(|record| {
            async move {
                let id = record.message_id.clone().unwrap_or_default();
                let receives = receive_count(&record);
                match serde_json::from_str::<SendBatch>(record.body.as_deref().unwrap_or("")) {
                    Ok(batch) => {
                        let r = send_batch(deps, &batch).await;
                        (id, receives, Some(batch), r)
                    }
                    Err(e) => (
                        id,
                        receives,
                        None,
                        Err(Error::Malformed(format!("send message: {e}"))),
                    ),
                }
            }
            .boxed()
        })
        .buffer_unordered(RECORD_CONCURRENCY)
        .collect()
        .await;

    let mut failures = Vec::new();
    let mut per_dispatch: BTreeMap<String, Tally> = BTreeMap::new();
    let mut stuck: BTreeMap<String, Vec<domain::keys::RecipientKey>> = BTreeMap::new();
    for (id, receives, batch, result) in results {
        let (retry, not_done) = match result {
            Ok(mut t) => {
                let not_done = std::mem::take(&mut t.retry);
                if let Some(b) = &batch {
                    per_dispatch
                        .entry(b.dispatch_id.clone())
                        .or_default()
                        .merge(t);
                }
                // Throttled recipients are pending again and continue with the dispatch; only
                // faults make the queue deliver the message again.
                (!not_done.is_empty(), not_done)
            }
            Err(e) => {
                tracing::error!(message_id = %id, receives, error = %e, "send message failed");
                let keys = batch
                    .as_ref()
                    .map(|b| b.items.iter().map(|i| i.key.clone()).collect())
                    .unwrap_or_default();
                (true, keys)
            }
        };
        if !retry || id.is_empty() {
            continue;
        }
        if receives >= deps.config.max_receives {
            // This was the last delivery the queue allows: the message goes to the
            // dead-letter queue and its recipients stay pending there.
            match &batch {
                Some(b) => stuck
                    .entry(b.dispatch_id.clone())
                    .or_default()
                    .extend(not_done),
                None => {
                    tracing::error!(message_id = %id, "unreadable send message goes to the dead-letter queue")
                }
            }
        }
        failures.push(id);
    }
    for (dispatch_id, keys) in stuck {
        match deps.store.mark_stuck(&dispatch_id, &keys).await {
            Ok(n) => {
                tracing::error!(dispatch = %dispatch_id, recipients = n, "recipients left in the dead-letter queue")
            }
            Err(e) => {
                tracing::error!(dispatch = %dispatch_id, error = %e, "could not mark the stuck recipients")
            }
        }
    }
    for (dispatch_id, t) in per_dispatch {
        if t.quota_reached > 0 || t.throttle_reason.as_deref().is_some_and(is_daily_quota) {
            let reason = t.throttle_reason.as_deref().unwrap_or(QUOTA_USED_UP);
            pause(deps, &dispatch_id, reason, deps.config.quota_recheck_secs).await;
        } else if t.throttled > 0 {
            let reason = t.throttle_reason.as_deref().unwrap_or("throttled");
            pause(deps, &dispatch_id, reason, deps.config.throttle_pause_secs).await;
        }
        if t.sent + t.failed + t.unknown == 0 {
            continue;
        }
        // The counters moved with the records; one read tells whether the dispatch is done.
        match deps.store.get_dispatch(&dispatch_id).await {
            Ok(Some(d)) => match completion::complete_if_done(&deps.store, &deps.docs, &d).await {
                Ok(Some(done)) => {
                    deps.notifier
                        .notify(
                            adapters::notify::Event::Completed,
                            &done,
                            done.completion.as_deref(),
                        )
                        .await
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(dispatch = %dispatch_id, error = %e, "completion left to the schedule")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::error!(dispatch = %dispatch_id, error = %e, "completion left to the schedule")
            }
        }
    }
    Ok(adapters::sqs::batch_response(failures))
}

const QUOTA_USED_UP: &str = "the account's 24-hour sending quota is used up";

/// Whether the provider's refusal speaks of its daily quota rather than its rate: such a
/// dispatch waits as long as for a quota it read itself.
fn is_daily_quota(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("daily") || r.contains("24 hour") || r.contains("24-hour")
}

/// Stops sending for a while after a throttle. A dispatch already waiting stays as it is.
async fn pause(deps: &Deps, dispatch_id: &str, reason: &str, secs: u64) {
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64);
    let extra = [
        ("resume_at", adapters::dynamodb::s(rfc3339(until))),
        ("pause_reason", adapters::dynamodb::s(reason)),
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
        Ok(d) => {
            tracing::warn!(dispatch = %dispatch_id, %reason, resume_at = %rfc3339(until), "throttled; waiting for continuation");
            let detail = format!("{reason}; sending continues at {}", rfc3339(until));
            deps.notifier
                .notify(
                    adapters::notify::Event::WaitingForContinuation,
                    &d,
                    Some(&detail),
                )
                .await;
        }
        Err(Error::Conflict(_)) => {}
        Err(e) => {
            tracing::error!(dispatch = %dispatch_id, error = %e, "could not record the pause; the schedule will continue the dispatch")
        }
    }
}

/// Sends one queue message's recipients.
pub async fn send_batch(deps: &Deps, batch: &SendBatch) -> Result<Tally> {
    let mut tally = Tally::default();
    if batch.items.is_empty() {
        return Ok(tally);
    }
    let template = deps.template(&batch.dispatch_id).await?;
    for chunk in batch.items.chunks(MAX_RECIPIENTS_PER_WRITE) {
        let t = send_chunk(deps, &batch.dispatch_id, &template, chunk).await?;
        let stop = t.throttled + t.quota_reached > 0;
        tally.merge(t);
        if stop {
            break;
        }
    }
    Ok(tally)
}

/// Claims, sends and records up to [`MAX_RECIPIENTS_PER_WRITE`] recipients.
async fn send_chunk(
    deps: &Deps,
    dispatch_id: &str,
    template: &MessageTemplate,
    items: &[SendItem],
) -> Result<Tally> {
    let keys: Vec<_> = items.iter().map(|i| i.key.clone()).collect();
    let token = claims::new_token();
    let claimed = deps.store.claim_many(dispatch_id, &keys, &token).await?;
    if claimed.dispatch_not_sending {
        let back: Vec<_> = claimed
            .held
            .iter()
            .map(|&i| (keys[i].clone(), Outcome::Release))
            .collect();
        record(deps, dispatch_id, &token, &back).await?;
        return not_sending(deps, dispatch_id).await;
    }
    deps.saw(dispatch_id, DispatchState::Sending).await;
    let held: Vec<&SendItem> = claimed.held.iter().map(|&i| &items[i]).collect();
    let results = deliver(deps, dispatch_id, template, &held).await;
    let writes: Vec<_> = held
        .iter()
        .zip(&results)
        .map(|(item, (_, _, outcome))| (item.key.clone(), outcome.clone()))
        .collect();
    let written = record(deps, dispatch_id, &token, &writes).await?;
    if written.lost > 0 {
        tracing::error!(dispatch = %dispatch_id, lost = written.lost, "results not written: claims no longer held");
    }
    let mut tally = Tally::default();
    for (item, (o, why, _)) in held.iter().zip(results) {
        tally.add(o, &item.key);
        if tally.throttle_reason.is_none() {
            tally.throttle_reason = why;
        }
    }
    Ok(tally)
}

/// The dispatch refused a claim: decides what becomes of the message.
async fn not_sending(deps: &Deps, dispatch_id: &str) -> Result<Tally> {
    let d = deps
        .store
        .get_dispatch(dispatch_id)
        .await?
        .ok_or_else(|| Error::NotFound(dispatch_id.to_string()))?;
    deps.saw(dispatch_id, d.state).await;
    match d.state {
        DispatchState::WaitingForContinuation | DispatchState::Paused => {
            // The recipients stay pending; they are handed out again when sending continues.
            tracing::info!(dispatch = %d.id, state = %d.state, "not sending now; message set aside");
            Ok(Tally::default())
        }
        s if s.is_final() => {
            tracing::info!(dispatch = %d.id, state = %s, "dispatch is over; message dropped");
            Ok(Tally::default())
        }
        s => Err(Error::Conflict(format!(
            "dispatch {} is {s}, not sending",
            d.id
        ))),
    }
}

enum Rendered {
    Email(RenderedEmail),
    Sms(RenderedSms),
}

type Delivered = (ItemOutcome, Option<String>, Outcome);

/// Renders and sends claimed recipients, each at its slot of the channel's shared rate.
async fn deliver(
    deps: &Deps,
    dispatch_id: &str,
    template: &MessageTemplate,
    held: &[&SendItem],
) -> Vec<Delivered> {
    let mut out: Vec<Option<Delivered>> = vec![None; held.len()];
    let mut plans: Vec<(usize, Rendered)> = Vec::new();
    for (i, item) in held.iter().enumerate() {
        let rendered = match item.channel {
            Channel::Email => template.render_email(&item.fields).map(Rendered::Email),
            Channel::Sms => template.render_sms(&item.fields).map(Rendered::Sms),
        };
        match rendered {
            Ok(r) => plans.push((i, r)),
            Err(e) => {
                out[i] = Some((
                    ItemOutcome::Failed,
                    None,
                    Outcome::Failed {
                        reason: format!("render_failed: {e}"),
                    },
                ))
            }
        }
    }
    let emails = plans
        .iter()
        .filter(|(_, r)| matches!(r, Rendered::Email(_)))
        .count() as u32;
    let sms = plans.len() as u32 - emails;
    let email_every = slot_interval(if emails > 0 {
        deps.email_rate_now().await
    } else {
        deps.config.email_rate_per_second
    });
    let sms_every = slot_interval(deps.config.sms_rate_per_second);
    let mut email_start = None;
    let mut sms_start = None;
    for (n, rate, every, start) in [
        (emails, &deps.email_rate, email_every, &mut email_start),
        (sms, &deps.sms_rate, sms_every, &mut sms_start),
    ] {
        if n == 0 {
            continue;
        }
        match rate.take(n, every).await {
            Ok(t) => *start = Some(t),
            Err(e) => {
                tracing::warn!(dispatch = %dispatch_id, error = %e, "no send slots; claims given back")
            }
        }
    }
    let (mut next_email, mut next_sms) = (0u32, 0u32);
    let mut scheduled = Vec::new();
    for (i, r) in plans {
        let slot = match &r {
            Rendered::Email(_) => email_start.map(|t| {
                next_email += 1;
                t * 1_000_000 + email_every.as_nanos() as i64 * (next_email - 1) as i64
            }),
            Rendered::Sms(_) => sms_start.map(|t| {
                next_sms += 1;
                t * 1_000_000 + sms_every.as_nanos() as i64 * (next_sms - 1) as i64
            }),
        };
        match slot {
            Some(at) => scheduled.push((i, r, at)),
            None => out[i] = Some((ItemOutcome::Retry, None, Outcome::Release)),
        }
    }
    let stop = AtomicBool::new(false);
    let sent: Vec<(usize, Delivered)> = stream::iter(scheduled)
        .map(|(i, r, at)| {
            let stop = &stop;
            let item = held[i];
            async move { (i, send_one(deps, dispatch_id, item, &r, stop, at).await) }.boxed()
        })
        .buffer_unordered(ITEM_CONCURRENCY)
        .collect()
        .await;
    for (i, d) in sent {
        out[i] = Some(d);
    }
    out.into_iter()
        .map(|d| d.unwrap_or((ItemOutcome::Retry, None, Outcome::Release)))
        .collect()
}

/// A send this much behind its slot takes a new one rather than catching up: late sends that
/// catch up would bunch together and exceed the rate.
const MAX_LATE: Duration = Duration::from_millis(15);
/// New slots a send takes after missing its slot before it goes late anyway.
const NEW_SLOTS: usize = 2;
/// How long before its slot a send looks at the dispatch's state.
const LOOK_AHEAD: Duration = Duration::from_millis(100);

impl Deps {
    fn rate_for(&self, message: &Rendered) -> &SharedRate {
        match message {
            Rendered::Email(_) => &self.email_rate,
            Rendered::Sms(_) => &self.sms_rate,
        }
    }

    async fn interval_for(&self, message: &Rendered) -> Duration {
        match message {
            Rendered::Email(_) => slot_interval(self.email_rate_now().await),
            Rendered::Sms(_) => slot_interval(self.config.sms_rate_per_second),
        }
    }

    /// Waits for a send slot (Unix nanoseconds). A slot missed by more than [`MAX_LATE`] is
    /// replaced by a new one, up to [`NEW_SLOTS`] times; a sender that keeps missing them (a
    /// starved machine) then sends late rather than not at all.
    async fn wait_for_slot(&self, message: &Rendered, mut at: i64) -> Result<()> {
        for _ in 0..NEW_SLOTS {
            tokio::time::sleep_until(instant_of(at)).await;
            let late = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 - at;
            if late <= MAX_LATE.as_nanos() as i64 {
                return Ok(());
            }
            tracing::debug!(
                late_ms = late / 1_000_000,
                "send slot missed; taking a new one"
            );
            let every = self.interval_for(message).await;
            at = self.rate_for(message).take(1, every).await? * 1_000_000;
        }
        tokio::time::sleep_until(instant_of(at)).await;
        Ok(())
    }
}

async fn send_one(
    deps: &Deps,
    dispatch_id: &str,
    item: &SendItem,
    message: &Rendered,
    stop: &AtomicBool,
    slot: i64,
) -> Delivered {
    if stop.load(Ordering::Relaxed) {
        // An earlier send of this message was throttled: this one waits with the dispatch.
        return (ItemOutcome::SetAside, None, Outcome::Release);
    }
    // Look at the dispatch shortly before the slot, so that a pause made while this send
    // waited for its slot still stops it, and a read does not make the send late.
    tokio::time::sleep_until(instant_of(slot - LOOK_AHEAD.as_nanos() as i64)).await;
    if stop.load(Ordering::Relaxed) || !deps.still_sending(dispatch_id).await {
        return (ItemOutcome::SetAside, None, Outcome::Release);
    }
    if let Err(e) = deps.wait_for_slot(message, slot).await {
        tracing::warn!(dispatch = %dispatch_id, error = %e, "no send slot; claim given back");
        return (ItemOutcome::Retry, None, Outcome::Release);
    }
    if stop.load(Ordering::Relaxed) {
        return (ItemOutcome::SetAside, None, Outcome::Release);
    }
    // Taken last, so that only a send that goes out uses the quota.
    if matches!(message, Rendered::Email(_)) && !deps.take_email_allowance().await {
        stop.store(true, Ordering::Relaxed);
        return (
            ItemOutcome::QuotaReached,
            Some(QUOTA_USED_UP.to_string()),
            Outcome::Release,
        );
    }
    let mut attempt = 0;
    let result = loop {
        let r = match message {
            Rendered::Email(m) => deps.mailer.send(&item.address, m).await,
            Rendered::Sms(m) => deps.sms.send(&item.address, m).await,
        };
        match r {
            Err(SendError::Transient(why)) if attempt < TRANSIENT_RETRIES => {
                attempt += 1;
                tracing::warn!(dispatch = %dispatch_id, recipient = %item.recipient_id, attempt, error = %why, "not sent; trying again");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                // A new attempt takes a slot of its own, so the rate still holds.
                let every = deps.interval_for(message).await;
                let slot = match deps.rate_for(message).take(1, every).await {
                    Ok(at) => at * 1_000_000,
                    Err(e) => break Err(SendError::Transient(e.to_string())),
                };
                if let Err(e) = deps.wait_for_slot(message, slot).await {
                    break Err(SendError::Transient(e.to_string()));
                }
            }
            other => break other,
        }
    };
    match result {
        Ok(message_id) => (
            ItemOutcome::Sent,
            None,
            Outcome::Sent {
                message_id,
                at: now_rfc3339(),
            },
        ),
        Err(SendError::Permanent { code, message }) => (
            ItemOutcome::Failed,
            None,
            Outcome::Failed {
                reason: format!("{code}: {message}"),
            },
        ),
        Err(SendError::Unknown(why)) => (
            ItemOutcome::Unknown,
            None,
            Outcome::Unknown {
                reason: format!("no answer from the provider ({why}); not re-sent automatically"),
            },
        ),
        Err(SendError::Throttled(why)) => {
            stop.store(true, Ordering::Relaxed);
            (ItemOutcome::Throttled, Some(why), Outcome::Release)
        }
        Err(e @ SendError::Transient(_)) => {
            tracing::warn!(dispatch = %dispatch_id, recipient = %item.recipient_id, error = %e, "not sent; claim given back");
            (ItemOutcome::Retry, None, Outcome::Release)
        }
    }
}

/// Results the provider already acted on must be written: retried with backoff for a while.
async fn record(
    deps: &Deps,
    dispatch_id: &str,
    token: &str,
    writes: &[(domain::keys::RecipientKey, Outcome)],
) -> Result<claims::Recorded> {
    let mut delay = Duration::from_millis(100);
    let mut last = None;
    for _ in 0..8 {
        match deps.store.record_many(dispatch_id, token, writes).await {
            Ok(done) => return Ok(done),
            Err(e) if e.is_retryable() => {
                tracing::warn!(dispatch = %dispatch_id, error = %e, "results not written yet; trying again");
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Malformed("no attempt made".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_over_the_daily_quota_is_told_from_one_over_the_rate() {
        assert!(is_daily_quota(
            "LimitExceededException: Daily message quota exceeded."
        ));
        assert!(is_daily_quota(
            "Throttling: exceeded the 24-hour sending limit"
        ));
        assert!(!is_daily_quota(
            "TooManyRequestsException: Maximum sending rate exceeded."
        ));
    }
}
