//! Sending: claim, send, record.
//!
//! The recipients of a queue message are claimed in one conditional write before the
//! provider is called and their results are written in one after, so a message delivered
//! twice never sends twice. Sends are spaced by a rate shared by every sender instance
//! ([`SendSlots`]). A fault before the provider took a message is retried with backoff a few
//! times, then the claim is given back and the message comes again (after the queue's
//! receive limit it goes to the dead-letter queue and the dispatch counts the recipients
//! stuck there). A throttle gives the claims back and puts the dispatch in
//! `waiting_for_continuation` until `resume_at`; the scheduled resume continues it with the
//! recipients not yet sent. An answer that never came leaves the recipient `unknown`, never
//! re-sent automatically.

mod deliver;
mod tally;

pub use tally::{ChannelTally, ItemOutcome, Tally, MAX_ANSWER_SAMPLES};

use crate::pacing::slot_interval;
use crate::ports::{
    new_token, Attachment, Completion, DispatchBook, Mailer, Notices, Outcome, Packages, Quota,
    RecipientLedger, Recorded, SendQueue, SendSlots, Texter,
};
use domain::config::Config;
use domain::keys::RecipientKey;
use domain::limits::MAX_RECIPIENTS_PER_WRITE;
use domain::model::{rfc3339, DispatchState};
use domain::notice::Event;
use domain::queue::{SendBatch, SendItem};
use domain::Deadline;
use domain::{Error, Result};
use futures::{stream, FutureExt, StreamExt};
use intake::template::MessageTemplate;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Queue messages of one invocation handled at once.
const RECORD_CONCURRENCY: usize = 4;
/// How long the account's quota is trusted before it is read again.
const QUOTA_FRESH_FOR: Duration = Duration::from_secs(60);
/// How long a reading of a dispatch's state is trusted before the next send: an operator's
/// pause takes effect within about this long. Only a read refreshes it (a claim does not look
/// at the dispatch), and the sends of one instance share one read, so an instance reads the
/// dispatch at most once per this long while it sends.
const STATE_FRESH_FOR: Duration = Duration::from_secs(2);

const QUOTA_USED_UP: &str = "the account's 24-hour sending quota is used up";

/// How long before its deadline a sender stops retrying a result write: the answer to the
/// queue must still be made.
const RECORD_UNTIL: Duration = Duration::from_secs(1);

/// How long before its deadline an invocation stops sending: what follows the last send
/// (writing results, with retries; completion; the answer) must fit in it. A quarter of the
/// time the invocation has, between 3 and 20 seconds.
pub fn margin_for(remaining: Duration) -> Duration {
    (remaining / 4).clamp(Duration::from_secs(3), Duration::from_secs(20))
}

/// What the sender works with.
#[derive(Clone)]
pub struct SendPorts {
    pub ledger: Arc<dyn RecipientLedger>,
    pub dispatches: Arc<dyn DispatchBook>,
    pub slots: Arc<dyn SendSlots>,
    pub mailer: Arc<dyn Mailer>,
    pub texter: Arc<dyn Texter>,
    pub press: Arc<dyn crate::ports::LetterPress>,
    pub packages: Arc<dyn Packages>,
    pub completion: Arc<dyn Completion>,
    pub notices: Arc<dyn Notices>,
    pub queue: Arc<dyn SendQueue>,
    pub metrics: Arc<dyn crate::ports::Metrics>,
    pub keys: Arc<dyn crate::ports::SigningKeys>,
}

/// The settings sending follows, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SendSettings {
    pub email_rate_per_second: f64,
    pub sms_rate_per_second: f64,
    pub letter_rate_per_second: f64,
    pub throttle_pause_secs: u64,
    pub quota_recheck_secs: u64,
    pub max_receives: u32,
    /// The API's public address, under which unsubscribe links point.
    pub public_api_url: Option<String>,
}

impl From<&Config> for SendSettings {
    fn from(c: &Config) -> SendSettings {
        SendSettings {
            email_rate_per_second: c.email_rate_per_second,
            sms_rate_per_second: c.sms_rate_per_second,
            letter_rate_per_second: c.letter_rate_per_second,
            throttle_pause_secs: c.throttle_pause_secs,
            quota_recheck_secs: c.quota_recheck_secs,
            max_receives: c.max_receives,
            public_api_url: c.public_api_url.clone(),
        }
    }
}

/// Dispatches whose attachment a sender process keeps at once.
const KEPT_ATTACHMENTS: usize = 4;

/// A dispatch's compiled templates and the file its emails carry.
pub(super) struct Prepared {
    pub template: MessageTemplate,
    pub attachment: Option<Attachment>,
}

impl std::ops::Deref for Prepared {
    type Target = MessageTemplate;
    fn deref(&self) -> &MessageTemplate {
        &self.template
    }
}

/// A sender: the ports, the settings, and what one instance remembers between messages.
pub struct Sender {
    ports: SendPorts,
    settings: SendSettings,
    /// Compiled templates and attachments by dispatch; a dispatch's package does not
    /// change after approval.
    templates: Mutex<HashMap<String, Arc<Prepared>>>,
    /// The key unsubscribe links are signed with, once read.
    signing_key: Mutex<Option<Arc<Vec<u8>>>>,
    /// Each dispatch's state as last seen, and when: a pause takes effect within seconds.
    live: Mutex<HashMap<String, (tokio::time::Instant, DispatchState)>>,
    /// Held while the dispatch is read for a new sighting: the sends that found the sighting
    /// stale at once wait for that one read instead of each making their own.
    reading: Mutex<()>,
    /// The account's quota as last read, and the emails sent since.
    quota: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    read_at: Option<tokio::time::Instant>,
    quota: Option<Quota>,
    sent_since: u64,
}

/// One queue message as it reached the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue's id of the message ("" when it gave none).
    pub message_id: String,
    /// How many times the queue has handed the message out.
    pub receives: u32,
    pub body: String,
}

/// Whether the provider's refusal speaks of its daily quota rather than its rate: such a
/// dispatch waits as long as for a quota it read itself.
fn is_daily_quota(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("daily") || r.contains("24 hour") || r.contains("24-hour")
}

impl Sender {
    pub fn new(ports: SendPorts, settings: SendSettings) -> Sender {
        Sender {
            ports,
            settings,
            templates: Mutex::new(HashMap::new()),
            signing_key: Mutex::new(None),
            live: Mutex::new(HashMap::new()),
            reading: Mutex::new(()),
            quota: Mutex::new(QuotaState::default()),
        }
    }

    /// Handles the messages of one invocation; returns the ids of those that must come
    /// again. Each message stands alone: one that cannot be read or sent never fails the
    /// others. Nothing is claimed or sent that cannot be done before `deadline` less
    /// [`margin_for`]; the recipients left go back on the queue as a new message.
    pub async fn handle(&self, deliveries: Vec<Delivery>, deadline: Deadline) -> Vec<String> {
        let started = std::time::Instant::now();
        let stop_at = deadline.less(margin_for(deadline.remaining()));
        let results: Vec<(Delivery, Option<SendBatch>, Result<Tally>)> = stream::iter(deliveries)
            .map(|d| {
                async move {
                    match serde_json::from_str::<SendBatch>(&d.body) {
                        Ok(batch) => {
                            let r = self.send_batch(&batch, stop_at, deadline).await;
                            (d, Some(batch), r)
                        }
                        Err(e) => (d, None, Err(Error::Malformed(format!("send message: {e}")))),
                    }
                }
                .boxed()
            })
            .buffer_unordered(RECORD_CONCURRENCY)
            .collect()
            .await;

        let mut failures = Vec::new();
        let mut per_dispatch: BTreeMap<String, Tally> = BTreeMap::new();
        let mut stuck: BTreeMap<String, Vec<RecipientKey>> = BTreeMap::new();
        for (delivery, batch, result) in results {
            let (id, receives) = (delivery.message_id, delivery.receives);
            let (retry, not_done) = match result {
                Ok(mut t) => {
                    let mut not_done = std::mem::take(&mut t.retry);
                    let later = std::mem::take(&mut t.later);
                    if let Some(b) = &batch {
                        per_dispatch
                            .entry(b.dispatch_id.clone())
                            .or_default()
                            .merge(t);
                        if !later.is_empty() {
                            if let Err(e) = self.requeue(b, &later).await {
                                // The whole message comes again instead; what was sent is
                                // no longer pending and is not sent twice.
                                tracing::warn!(message_id = %id, error = %e, "recipients not put back on the queue; the message comes again");
                                not_done.extend(later);
                            }
                        }
                    }
                    // Throttled recipients are pending again and continue with the dispatch;
                    // only faults make the queue deliver the message again.
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
            if receives >= self.settings.max_receives {
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
            match self.ports.ledger.mark_stuck(&dispatch_id, &keys).await {
                Ok(n) => {
                    tracing::error!(dispatch = %dispatch_id, recipients = n, "recipients left in the dead-letter queue")
                }
                Err(e) => {
                    tracing::error!(dispatch = %dispatch_id, error = %e, "could not mark the stuck recipients")
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        for (dispatch_id, t) in per_dispatch {
            self.ports
                .metrics
                .sends(&crate::metrics::SendFigures::of(&dispatch_id, &t, seconds));
            self.after(&dispatch_id, t).await;
        }
        failures
    }

    /// What follows a dispatch's sends in this invocation: a wait after a throttle, and
    /// completion when the results may have been its last.
    async fn after(&self, dispatch_id: &str, t: Tally) {
        if t.blocked > 0 {
            let reason = t
                .blocked_reason
                .as_deref()
                .unwrap_or("the provider refused");
            self.block(dispatch_id, reason).await;
        } else if t.quota_reached > 0 || t.throttle_reason.as_deref().is_some_and(is_daily_quota) {
            let reason = t.throttle_reason.as_deref().unwrap_or(QUOTA_USED_UP);
            self.pause(dispatch_id, reason, self.settings.quota_recheck_secs)
                .await;
        } else if t.throttled > 0 {
            let reason = t.throttle_reason.as_deref().unwrap_or("throttled");
            self.pause(dispatch_id, reason, self.settings.throttle_pause_secs)
                .await;
        }
        if t.sent + t.failed + t.unknown == 0 {
            return;
        }
        // The counters moved with the records; one read tells whether the dispatch is done.
        let done = match self.ports.dispatches.dispatch(dispatch_id).await {
            Ok(Some(d)) => self.ports.completion.complete_if_done(&d).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match done {
            Ok(Some(d)) => {
                self.ports
                    .notices
                    .notify(Event::Completed, &d, d.completion.as_deref())
                    .await
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(dispatch = %dispatch_id, error = %e, "completion left to the schedule")
            }
        }
    }

    /// Stops sending until an operator resumes: the provider refuses the account or the
    /// sender, which waiting does not mend. The recipients stay pending; nobody is failed.
    async fn block(&self, dispatch_id: &str, reason: &str) {
        let stamps = [
            (
                "pause_reason",
                format!(
                    "the provider refuses this account or sender ({reason}); mend the configuration, then resume"
                ),
            ),
            ("paused_by", domain::audit::SYSTEM.to_string()),
            ("paused_at", domain::model::now_rfc3339()),
        ];
        // A throttle met by another sender may have made the dispatch wait meanwhile; a wait
        // would end in the same refusal, so that dispatch is paused too.
        let mut paused = Err(Error::Conflict(String::new()));
        for from in [
            DispatchState::Sending,
            DispatchState::WaitingForContinuation,
        ] {
            paused = self
                .ports
                .dispatches
                .transition(dispatch_id, from, DispatchState::Paused, &stamps)
                .await;
            if !matches!(paused, Err(Error::Conflict(_))) {
                break;
            }
        }
        match paused {
            Ok(d) => {
                tracing::error!(dispatch = %dispatch_id, %reason, "the provider refuses the account; paused until an operator resumes");
                self.ports
                    .notices
                    .notify(Event::Blocked, &d, d.pause_reason.as_deref())
                    .await;
            }
            Err(Error::Conflict(_)) => {
                tracing::warn!(dispatch = %dispatch_id, %reason, "the provider refuses the account; the dispatch is no longer sending")
            }
            Err(e) => {
                tracing::error!(dispatch = %dispatch_id, error = %e, "could not record the block; the next sends meet it again")
            }
        }
    }

    /// Stops sending for a while after a throttle. A dispatch already waiting stays as it is.
    async fn pause(&self, dispatch_id: &str, reason: &str, secs: u64) {
        let until = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64));
        let stamps = [
            ("resume_at", until.clone()),
            ("pause_reason", reason.to_string()),
        ];
        match self
            .ports
            .dispatches
            .transition(
                dispatch_id,
                DispatchState::Sending,
                DispatchState::WaitingForContinuation,
                &stamps,
            )
            .await
        {
            Ok(d) => {
                tracing::warn!(dispatch = %dispatch_id, %reason, resume_at = %until, "throttled; waiting for continuation");
                let detail = format!("{reason}; sending continues at {until}");
                self.ports
                    .notices
                    .notify(Event::WaitingForContinuation, &d, Some(&detail))
                    .await;
            }
            Err(Error::Conflict(_)) => {}
            Err(e) => {
                tracing::error!(dispatch = %dispatch_id, error = %e, "could not record the pause; the schedule will continue the dispatch")
            }
        }
    }

    async fn template(&self, dispatch_id: &str) -> Result<Arc<Prepared>> {
        if let Some(t) = self.templates.lock().await.get(dispatch_id) {
            return Ok(t.clone());
        }
        let source = self.ports.packages.template(dispatch_id).await?;
        let attachment = match source.email.as_ref().and_then(|e| e.attachment.as_ref()) {
            Some(file) => Some(Attachment {
                name: file.name.clone(),
                content_type: "application/pdf".into(),
                bytes: Arc::new(self.ports.packages.file(file).await?),
            }),
            None => None,
        };
        let t = Arc::new(Prepared {
            template: MessageTemplate::compile(source)
                .map_err(|e| Error::Malformed(format!("package of {dispatch_id}: {e}")))?,
            attachment,
        });
        let mut cache = self.templates.lock().await;
        // Attachments are megabytes: a process keeps those of a few dispatches only.
        if t.attachment.is_some()
            && cache.values().filter(|p| p.attachment.is_some()).count() >= KEPT_ATTACHMENTS
        {
            cache.retain(|_, p| p.attachment.is_none());
        }
        cache.insert(dispatch_id.to_string(), t.clone());
        Ok(t)
    }

    /// A recipient's one-click unsubscribe link, signed and expiring.
    pub(super) async fn unsubscribe_link(
        &self,
        dispatch_id: &str,
        address: &str,
    ) -> std::result::Result<String, crate::ports::SendError> {
        use domain::unsubscribe::{link, sign, Claim, VALID_FOR_SECS};
        let Some(base) = &self.settings.public_api_url else {
            return Err(crate::ports::SendError::Permanent {
                code: "unsubscribe_unavailable".into(),
                message: "the API's public address (PUBLIC_API_URL) is not configured".into(),
            });
        };
        let key = {
            let mut held = self.signing_key.lock().await;
            match held.as_ref() {
                Some(k) => k.clone(),
                None => {
                    let k = Arc::new(
                        self.ports
                            .keys
                            .unsubscribe_key()
                            .await
                            .map_err(|e| crate::ports::SendError::Transient(e.to_string()))?,
                    );
                    *held = Some(k.clone());
                    k
                }
            }
        };
        let claim = Claim {
            dispatch_id: dispatch_id.to_string(),
            address: address.to_string(),
            expires: time::OffsetDateTime::now_utc().unix_timestamp() + VALID_FOR_SECS,
        };
        Ok(link(base, &sign(&key, &claim)))
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
        let fresh = |last: Option<(tokio::time::Instant, DispatchState)>| {
            last.filter(|(at, _)| at.elapsed() < STATE_FRESH_FOR)
                .map(|(_, state)| state == DispatchState::Sending)
        };
        if let Some(sending) = fresh(self.live.lock().await.get(dispatch_id).copied()) {
            return sending;
        }
        let _reading = self.reading.lock().await;
        let last = self.live.lock().await.get(dispatch_id).copied();
        if let Some(sending) = fresh(last) {
            // Read by another send while this one waited.
            return sending;
        }
        match self.ports.dispatches.state(dispatch_id).await {
            Ok(Some(state)) => {
                self.saw(dispatch_id, state).await;
                state == DispatchState::Sending
            }
            _ => last.is_none_or(|(_, state)| state == DispatchState::Sending),
        }
    }

    /// The email rate now: the configured rate, or the account's when that is lower. Reads
    /// the account's quota at most once a minute.
    async fn email_rate_now(&self) -> f64 {
        let mut q = self.quota.lock().await;
        if q.read_at.is_none_or(|t| t.elapsed() >= QUOTA_FRESH_FOR) {
            q.quota = self.ports.mailer.quota().await;
            q.read_at = Some(tokio::time::Instant::now());
            q.sent_since = 0;
        }
        let configured = self.settings.email_rate_per_second;
        q.quota
            .map(|a| a.max_send_rate)
            .filter(|r| *r > 0.0)
            .map_or(configured, |r| r.min(configured))
    }

    /// Whether the account's 24-hour quota leaves room for one more email; takes it if so.
    /// Without a quota from the provider, only the provider's own refusal stops sending.
    async fn take_email_allowance(&self, sends: u32) -> bool {
        let mut q = self.quota.lock().await;
        match q.quota {
            Some(a) if a.max_24_hour_send > 0.0 => {
                let left = a.max_24_hour_send - a.sent_last_24_hours - q.sent_since as f64;
                if left < f64::from(sends) {
                    return false;
                }
                q.sent_since += u64::from(sends);
                true
            }
            _ => true,
        }
    }

    /// Puts recipients of a message back on the queue as a message of their own.
    async fn requeue(&self, batch: &SendBatch, keys: &[RecipientKey]) -> Result<()> {
        let items: Vec<SendItem> = batch
            .items
            .iter()
            .filter(|i| keys.contains(&i.key))
            .cloned()
            .collect();
        tracing::info!(dispatch = %batch.dispatch_id, recipients = items.len(), "no time left in this invocation; recipients put back on the queue");
        self.ports
            .queue
            .requeue(&SendBatch {
                dispatch_id: batch.dispatch_id.clone(),
                items,
            })
            .await
    }

    /// How many sends could still be made before `stop_at` at the slower channel's rate,
    /// were the schedule free: no more are claimed at once.
    async fn sends_that_fit(&self, stop_at: Deadline) -> usize {
        let rate = self
            .email_rate_now()
            .await
            .min(self.settings.sms_rate_per_second);
        let every = slot_interval(rate).as_nanos().max(1);
        (stop_at.remaining().as_nanos() / every) as usize
    }

    /// Sends one queue message's recipients, those that can be before `stop_at`; the
    /// others are in the tally's `later`. Results are written until `deadline`.
    pub async fn send_batch(
        &self,
        batch: &SendBatch,
        stop_at: Deadline,
        deadline: Deadline,
    ) -> Result<Tally> {
        let mut tally = Tally::default();
        if batch.items.is_empty() {
            return Ok(tally);
        }
        let template = self.template(&batch.dispatch_id).await?;
        let keys = |items: &[SendItem]| items.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
        let mut rest: &[SendItem] = &batch.items;
        while !rest.is_empty() {
            let fit = self.sends_that_fit(stop_at).await;
            if fit == 0 {
                tally.later.extend(keys(rest));
                break;
            }
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_RECIPIENTS_PER_WRITE).min(fit));
            let t = self
                .send_chunk(&batch.dispatch_id, &template, chunk, (stop_at, deadline))
                .await?;
            let stop = t.throttled + t.quota_reached + t.blocked > 0;
            let out_of_time = !t.later.is_empty();
            tally.merge(t);
            if stop {
                break;
            }
            if out_of_time {
                tally.later.extend(keys(tail));
                break;
            }
            rest = tail;
        }
        Ok(tally)
    }

    /// Claims, sends and records up to [`MAX_RECIPIENTS_PER_WRITE`] recipients.
    async fn send_chunk(
        &self,
        dispatch_id: &str,
        template: &Prepared,
        items: &[SendItem],
        (stop_at, deadline): (Deadline, Deadline),
    ) -> Result<Tally> {
        let keys: Vec<_> = items.iter().map(|i| i.key.clone()).collect();
        let token = new_token();
        let claimed = self.ports.ledger.claim(dispatch_id, &keys, &token).await?;
        // The claim does not look at the dispatch (its record would be a hot spot that
        // every claim collides on); the sender does, before it sends anything it claimed.
        if !self.still_sending(dispatch_id).await {
            let back: Vec<_> = claimed
                .held
                .iter()
                .map(|&i| (keys[i].clone(), Outcome::Release))
                .collect();
            self.record(dispatch_id, &token, &back, deadline).await?;
            return self.not_sending(dispatch_id).await;
        }
        let held: Vec<&SendItem> = claimed.held.iter().map(|&i| &items[i]).collect();
        let results = self.deliver(dispatch_id, template, &held, stop_at).await;
        let writes: Vec<_> = held
            .iter()
            .zip(&results)
            .map(|(item, ((_, _, outcome), _))| (item.key.clone(), outcome.clone()))
            .collect();
        let written = self.record(dispatch_id, &token, &writes, deadline).await?;
        if written.lost > 0 {
            tracing::error!(dispatch = %dispatch_id, lost = written.lost, "results not written: claims no longer held");
        }
        let mut tally = Tally::default();
        for (item, ((o, why, _), answered)) in held.iter().zip(results) {
            tally.add(o, (&item.key, item.channel), why);
            if let Some(took) = answered {
                tally.answered(item.channel, took);
            }
        }
        Ok(tally)
    }

    /// The dispatch refused a claim: decides what becomes of the message.
    async fn not_sending(&self, dispatch_id: &str) -> Result<Tally> {
        let d = self
            .ports
            .dispatches
            .dispatch(dispatch_id)
            .await?
            .ok_or_else(|| Error::NotFound(dispatch_id.to_string()))?;
        self.saw(dispatch_id, d.state).await;
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

    /// Results the provider already acted on must be written: a fault of the store or a
    /// collision with other writers is retried with backoff for as long as the invocation
    /// has time (until [`RECORD_UNTIL`] before its deadline; no attempt may run past that,
    /// however long the store's own timeouts). Only then is the write given up: the answer
    /// to the queue is still made in time, and the recipients become `unknown` once their
    /// claims expire. A write whose answer was cut off may have been applied; written again
    /// or not, it is counted once.
    async fn record(
        &self,
        dispatch_id: &str,
        token: &str,
        writes: &[(RecipientKey, Outcome)],
        deadline: Deadline,
    ) -> Result<Recorded> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = deadline.remaining().saturating_sub(RECORD_UNTIL);
            let answer =
                tokio::time::timeout(left, self.ports.ledger.record(dispatch_id, token, writes))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::aws("record results")(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer before the invocation's deadline",
                        )))
                    });
            match answer {
                Ok(done) => return Ok(done),
                Err(e) if e.is_retryable() || matches!(e, Error::Conflict(_)) => {
                    if deadline.remaining() < RECORD_UNTIL + delay {
                        return Err(e);
                    }
                    tracing::warn!(dispatch = %dispatch_id, attempt, error = %e, "results not written yet; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests;
