//! In-memory implementations of the ports, for fast tests of the protocols. They keep the
//! rules the AWS adapters keep (a claim only of a pending recipient of a sending dispatch, a
//! result only under the claim's token, counters moving with the records, runs of send
//! slots that never overlap, transitions only from the state asked for) and let a test
//! script the providers' answers.

use crate::pacing::earliest_start;
use crate::ports::{
    AuditTrail, Claimed, DispatchBook, Mailer, Notices, Outcome, Packages, Quota, RecipientLedger,
    RecipientPage, RecipientRoll, Recorded, ReportDocuments, SendError, SendQueue, SendSlots,
    StaleHistories, Texter,
};
use async_trait::async_trait;
use domain::audit::AuditEntry;
use domain::keys::RecipientKey;
use domain::limits::within_one_write;
use domain::model::{now_rfc3339, Channel, Dispatch, DispatchState, Recipient, RecipientState};
use domain::notice::Event;
use domain::queue::SendBatch;
use domain::{Error, Result};
use intake::template::{LetterLayout, RenderedEmail, RenderedLetter, RenderedSms, TemplateSource};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding the lock has failed already; carry on with the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
struct Held {
    recipient: Recipient,
    token: Option<String>,
    stuck: bool,
}

/// Dispatches and their recipients.
#[derive(Default)]
pub struct MemoryStore {
    dispatches: Mutex<HashMap<String, Dispatch>>,
    recipients: Mutex<HashMap<(String, RecipientKey), Held>>,
    /// Writes of results that fail before they are applied, as a store that did not answer.
    failing_records: Mutex<u32>,
    /// Writes of results that are applied but whose answer is lost.
    unanswered_records: Mutex<u32>,
    /// Writes of results that collide with other transactions and are not applied.
    colliding_records: Mutex<u32>,
    audit: Mutex<HashMap<String, Vec<AuditEntry>>>,
    /// Stale histories: dispatch id and the time of the mark.
    stale: Mutex<BTreeMap<String, String>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    pub fn put_dispatch(&self, d: Dispatch) {
        lock(&self.dispatches).insert(d.id.clone(), d);
    }

    pub fn put_recipient(&self, key: RecipientKey, r: Recipient) {
        lock(&self.recipients).insert(
            (r.dispatch_id.clone(), key),
            Held {
                recipient: r,
                token: None,
                stuck: false,
            },
        );
    }

    pub fn set_state(&self, id: &str, state: DispatchState) {
        if let Some(d) = lock(&self.dispatches).get_mut(id) {
            d.state = state;
        }
    }

    pub fn get(&self, id: &str) -> Option<Dispatch> {
        lock(&self.dispatches).get(id).cloned()
    }

    pub fn recipient(&self, dispatch_id: &str, key: &RecipientKey) -> Option<Recipient> {
        lock(&self.recipients)
            .get(&(dispatch_id.to_string(), key.clone()))
            .map(|h| h.recipient.clone())
    }

    /// Whether a recipient is marked as stuck in the dead-letter queue.
    pub fn is_stuck(&self, dispatch_id: &str, key: &RecipientKey) -> bool {
        lock(&self.recipients)
            .get(&(dispatch_id.to_string(), key.clone()))
            .is_some_and(|h| h.stuck)
    }

    /// Marks a dispatch's history as stale, as a receipt after its completion does.
    pub fn mark_history_stale(&self, dispatch_id: &str, since: &str) {
        lock(&self.stale).insert(dispatch_id.to_string(), since.to_string());
    }

    /// The next `n` result writes fail as if the store had not answered.
    pub fn fail_next_records(&self, n: u32) {
        *lock(&self.failing_records) = n;
    }

    /// The next `n` result writes collide with other writers (DynamoDB's transaction
    /// conflicts, beyond the store's own retries) and are not applied.
    pub fn collide_next_records(&self, n: u32) {
        *lock(&self.colliding_records) = n;
    }

    /// The next `n` result writes are applied, but their answers are lost.
    pub fn lose_next_record_answers(&self, n: u32) {
        *lock(&self.unanswered_records) = n;
    }
}

#[async_trait]
impl RecipientLedger for MemoryStore {
    /// As one transaction: the claims under one hold of the store. As the DynamoDB ledger,
    /// it does not look at the dispatch.
    async fn claim(
        &self,
        dispatch_id: &str,
        keys: &[RecipientKey],
        token: &str,
    ) -> Result<Claimed> {
        within_one_write(keys.len(), "recipients in one claim")?;
        let mut all = lock(&self.recipients);
        let mut held = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let Some(h) = all.get_mut(&(dispatch_id.to_string(), key.clone())) else {
                continue;
            };
            if h.recipient.state == RecipientState::Sending && h.token.as_deref() == Some(token) {
                // An earlier attempt of this claim was applied.
                held.push(i);
            } else if h.recipient.state == RecipientState::Pending {
                let now = now_rfc3339();
                h.recipient.state = RecipientState::Sending;
                h.recipient.claimed_at = Some(now.clone());
                h.recipient.updated_at = now;
                h.token = Some(token.to_string());
                held.push(i);
            }
        }
        Ok(Claimed { held })
    }

    /// As one transaction: every result and the dispatch's counters, or nothing. A write
    /// whose earlier attempt was applied (the recipients carry the token in the states it
    /// asked for) is answered with its counts and not applied again.
    async fn record(
        &self,
        dispatch_id: &str,
        token: &str,
        results: &[(RecipientKey, Outcome)],
    ) -> Result<Recorded> {
        within_one_write(results.len(), "results in one write")?;
        if take_one(&self.failing_records) {
            return Err(store_silent());
        }
        if take_one(&self.colliding_records) {
            return Err(Error::Conflict(format!(
                "writing {} results of {dispatch_id} kept colliding",
                results.len()
            )));
        }
        let mut dispatches = lock(&self.dispatches);
        let mut all = lock(&self.recipients);
        let ours = |h: &Held| h.token.as_deref() == Some(token);
        let applied_before = results.iter().any(|(key, outcome)| {
            all.get(&(dispatch_id.to_string(), key.clone()))
                .is_some_and(|h| ours(h) && h.recipient.state == outcome.state())
        });
        let mut done = Recorded::default();
        let mut writes = Vec::new();
        for (key, outcome) in results {
            let held = all
                .get(&(dispatch_id.to_string(), key.clone()))
                .is_some_and(|h| h.recipient.state == RecipientState::Sending && ours(h));
            if !held && !applied_before {
                done.lost += 1;
                continue;
            }
            match outcome {
                Outcome::Sent { .. } => done.sent += 1,
                Outcome::Created { .. } => done.created += 1,
                Outcome::Failed { .. } => done.failed += 1,
                Outcome::Unknown { .. } => done.unknown += 1,
                Outcome::Release => done.released += 1,
            }
            if held {
                writes.push((key, outcome));
            }
        }
        if applied_before {
            return Ok(done);
        }
        let counted = done.sent + done.created + done.failed + done.unknown > 0;
        let Some(d) = dispatches.get_mut(dispatch_id) else {
            if counted {
                return Err(Error::Conflict(format!(
                    "writing {} results of {dispatch_id} kept colliding",
                    writes.len()
                )));
            }
            return Ok(done);
        };
        let now = now_rfc3339();
        for (key, outcome) in writes {
            let Some(h) = all.get_mut(&(dispatch_id.to_string(), key.clone())) else {
                continue;
            };
            let r = &mut h.recipient;
            r.state = outcome.state();
            r.updated_at = now.clone();
            match outcome {
                Outcome::Sent { message_id, at }
                | Outcome::Created {
                    document: message_id,
                    at,
                } => {
                    r.message_id = Some(message_id.clone());
                    r.sent_at = Some(at.clone());
                }
                Outcome::Failed { reason } | Outcome::Unknown { reason } => {
                    r.reason = Some(reason.clone());
                }
                Outcome::Release => r.claimed_at = None,
            }
        }
        if counted {
            d.counts.sent += done.sent;
            d.counts.created += done.created;
            d.counts.failed += done.failed;
            d.counts.unknown += done.unknown;
            d.updated_at = now;
        }
        drop(all);
        if take_one(&self.unanswered_records) {
            // Applied, but the answer is lost on its way back.
            return Err(store_silent());
        }
        Ok(done)
    }

    async fn mark_stuck(&self, dispatch_id: &str, keys: &[RecipientKey]) -> Result<u64> {
        let mut dispatches = lock(&self.dispatches);
        let mut all = lock(&self.recipients);
        let mut marked = 0;
        for key in keys {
            if let Some(h) = all.get_mut(&(dispatch_id.to_string(), key.clone())) {
                if h.recipient.state == RecipientState::Pending && !h.stuck {
                    h.stuck = true;
                    h.recipient.updated_at = now_rfc3339();
                    marked += 1;
                }
            }
        }
        if let Some(d) = dispatches.get_mut(dispatch_id) {
            d.counts.stuck += marked;
        }
        Ok(marked)
    }
}

/// Takes one from a counter of faults to come; whether there was one.
fn take_one(counter: &Mutex<u32>) -> bool {
    let mut n = lock(counter);
    if *n > 0 {
        *n -= 1;
        true
    } else {
        false
    }
}

fn store_silent() -> Error {
    Error::Aws {
        op: "record",
        source: "the store did not answer".into(),
    }
}

/// A dispatch with text fields set by name, as a store sets the attributes of its item.
fn stamped(d: &Dispatch, stamps: &[(&str, String)]) -> Result<Dispatch> {
    let mut v = serde_json::to_value(d).map_err(|e| Error::Malformed(e.to_string()))?;
    for (field, value) in stamps {
        v[*field] = serde_json::Value::String(value.clone());
    }
    v["updated_at"] = serde_json::Value::String(now_rfc3339());
    serde_json::from_value(v).map_err(|e| Error::Malformed(format!("stamps: {e}")))
}

#[async_trait]
impl DispatchBook for MemoryStore {
    async fn dispatch(&self, id: &str) -> Result<Option<Dispatch>> {
        Ok(self.get(id))
    }

    async fn transition(
        &self,
        id: &str,
        from: DispatchState,
        to: DispatchState,
        stamps: &[(&str, String)],
    ) -> Result<Dispatch> {
        if !from.can_become(to) {
            return Err(Error::Conflict(format!(
                "a dispatch cannot go from {from} to {to}"
            )));
        }
        let mut all = lock(&self.dispatches);
        let d = all
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        if d.state != from {
            return Err(Error::Conflict(format!("dispatch '{id}' is not {from}")));
        }
        let mut next = stamped(d, stamps)?;
        next.state = to;
        *d = next.clone();
        Ok(next)
    }

    async fn stamp(&self, id: &str, stamps: &[(&str, String)]) -> Result<()> {
        let mut all = lock(&self.dispatches);
        let d = all
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        *d = stamped(d, stamps)?;
        Ok(())
    }
}

#[async_trait]
impl RecipientRoll for MemoryStore {
    async fn page(&self, d: &Dispatch, shard: u32, after: Option<String>) -> Result<RecipientPage> {
        let mut all: Vec<(RecipientKey, Recipient)> = lock(&self.recipients)
            .iter()
            .filter(|((id, key), _)| *id == d.id && key.shard == shard)
            .filter(|((_, key), _)| after.as_ref().is_none_or(|a| key.sk > *a))
            .map(|((_, key), h)| (key.clone(), h.recipient.clone()))
            .collect();
        all.sort_by(|a, b| a.0.sk.cmp(&b.0.sk));
        let next = (all.len() > MEMORY_PAGE).then(|| all[MEMORY_PAGE - 1].0.sk.clone());
        all.truncate(MEMORY_PAGE);
        Ok(RecipientPage {
            recipients: all,
            next,
        })
    }
}

/// Recipients in one page of the in-memory store: small, so that tests cross pages.
pub const MEMORY_PAGE: usize = 3;

#[async_trait]
impl AuditTrail for MemoryStore {
    async fn append(&self, dispatch_id: &str, actor: &str, action: &str, outcome: &str) {
        lock(&self.audit)
            .entry(dispatch_id.to_string())
            .or_default()
            .push(AuditEntry {
                at: now_rfc3339(),
                actor: actor.to_string(),
                action: action.to_string(),
                outcome: outcome.to_string(),
            });
    }

    async fn trail(&self, dispatch_id: &str) -> Result<Vec<AuditEntry>> {
        Ok(lock(&self.audit)
            .get(dispatch_id)
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl StaleHistories for MemoryStore {
    async fn stale(&self, limit: i32) -> Result<Vec<(String, String)>> {
        Ok(lock(&self.stale)
            .iter()
            .take(limit.max(0) as usize)
            .map(|(id, since)| (id.clone(), since.clone()))
            .collect())
    }

    async fn refreshed(&self, dispatch_id: &str, since: &str) -> Result<bool> {
        let mut stale = lock(&self.stale);
        if stale.get(dispatch_id).map(String::as_str) == Some(since) {
            stale.remove(dispatch_id);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// Every figure sending reported, in order.
#[derive(Default)]
pub struct MemoryMetrics {
    figures: Mutex<Vec<crate::metrics::SendFigures>>,
}

impl MemoryMetrics {
    pub fn figures(&self) -> Vec<crate::metrics::SendFigures> {
        lock(&self.figures).clone()
    }
}

impl crate::ports::Metrics for MemoryMetrics {
    fn sends(&self, figures: &crate::metrics::SendFigures) {
        lock(&self.figures).push(figures.clone());
    }
}

/// Documents by key, with their content type.
#[derive(Default)]
pub struct MemoryDocuments {
    docs: Mutex<HashMap<String, (Vec<u8>, String)>>,
}

impl MemoryDocuments {
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, String)> {
        lock(&self.docs).get(key).cloned()
    }
}

#[async_trait]
impl ReportDocuments for MemoryDocuments {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        lock(&self.docs).insert(key.to_string(), (body, content_type.to_string()));
        Ok(())
    }

    async fn put_file(&self, key: &str, path: &std::path::Path, content_type: &str) -> Result<()> {
        let body = std::fs::read(path).map_err(|e| Error::Malformed(e.to_string()))?;
        self.put(key, body, content_type).await
    }
}

/// One channel's schedule of send slots, with every run taken.
#[derive(Default)]
pub struct MemorySlots {
    next_at: Mutex<HashMap<Channel, i64>>,
    runs: Mutex<Vec<(Channel, i64, i64)>>,
}

impl MemorySlots {
    /// Every run taken so far: channel, start and end in Unix milliseconds.
    pub fn runs(&self) -> Vec<(Channel, i64, i64)> {
        lock(&self.runs).clone()
    }
}

#[async_trait]
impl SendSlots for MemorySlots {
    async fn take(&self, channel: Channel, count: u32, interval: Duration) -> Result<i64> {
        let span = (interval.as_nanos() as u64 * count as u64).div_ceil(1_000_000) as i64;
        let mut next = lock(&self.next_at);
        let at = next.entry(channel).or_insert(0);
        let start = (*at).max(earliest_start());
        *at = start + span;
        lock(&self.runs).push((channel, start, start + span));
        Ok(start)
    }
}

/// An email's address and its attachments' names and sizes.
pub type Attached = (String, Vec<(String, usize)>);

/// A provider whose answers a test scripts per address; every other send is accepted.
#[derive(Default)]
pub struct ScriptedProvider {
    answers: Mutex<HashMap<String, VecDeque<SendError>>>,
    sent: Mutex<Vec<(String, String, i64)>>,
    quota: Mutex<Option<Quota>>,
    /// Per email sent or tried: the address and its attachments' names and sizes.
    attached: Mutex<Vec<Attached>>,
}

impl ScriptedProvider {
    /// The next sends to `address` answer these errors, in order, then succeed.
    pub fn answer(&self, address: &str, errors: impl IntoIterator<Item = SendError>) {
        lock(&self.answers)
            .entry(address.to_string())
            .or_default()
            .extend(errors);
    }

    /// The account's quota the provider reports.
    pub fn set_quota(&self, quota: Quota) {
        *lock(&self.quota) = Some(quota);
    }

    /// Every email tried: its address and its attachments' names and sizes.
    pub fn attached(&self) -> Vec<Attached> {
        lock(&self.attached).clone()
    }

    /// Every accepted send: address, text, and when (Unix milliseconds).
    pub fn sent(&self) -> Vec<(String, String, i64)> {
        lock(&self.sent).clone()
    }

    fn send(&self, to: &str, text: &str) -> Result<String, SendError> {
        if let Some(e) = lock(&self.answers)
            .get_mut(to)
            .and_then(VecDeque::pop_front)
        {
            return Err(e);
        }
        let at = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let mut sent = lock(&self.sent);
        sent.push((to.to_string(), text.to_string(), at));
        Ok(format!("m-{}", sent.len()))
    }
}

#[async_trait]
impl Mailer for ScriptedProvider {
    async fn send_email(
        &self,
        to: &str,
        m: &RenderedEmail,
        attachments: &[crate::ports::Attachment],
    ) -> Result<String, SendError> {
        lock(&self.attached).push((
            to.to_string(),
            attachments
                .iter()
                .map(|a| (a.name.clone(), a.bytes.len()))
                .collect(),
        ));
        self.send(to, &m.text)
    }

    async fn quota(&self) -> Option<Quota> {
        *lock(&self.quota)
    }
}

#[async_trait]
impl Texter for ScriptedProvider {
    async fn send_sms(&self, to: &str, m: &RenderedSms) -> Result<String, SendError> {
        self.send(to, &m.text)
    }
}

/// A letter "produced" by the scripted provider: its address (first line) is the
/// destination, and the letter's subject and text the message.
#[async_trait]
impl crate::ports::LetterPress for ScriptedProvider {
    async fn produce(
        &self,
        dispatch_id: &str,
        recipient: &RecipientKey,
        address: &str,
        _layout: &LetterLayout,
        letter: &RenderedLetter,
    ) -> Result<String, SendError> {
        self.send(address, &format!("{}\n{}", letter.subject, letter.text))
            .map(|_| format!("dispatches/{dispatch_id}/letters/{}.pdf", recipient.sk))
    }

    /// The "PDF" is the letter's address, subject and text.
    async fn typeset(
        &self,
        _dispatch_id: &str,
        address: &str,
        _layout: &LetterLayout,
        letter: &RenderedLetter,
    ) -> Result<Vec<u8>, SendError> {
        Ok(format!("{address}\n{}\n{}", letter.subject, letter.text).into_bytes())
    }
}

/// Frozen packages by dispatch.
#[derive(Default)]
pub struct MemoryPackages {
    templates: Mutex<HashMap<String, TemplateSource>>,
    files: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryPackages {
    pub fn put(&self, dispatch_id: &str, template: TemplateSource) {
        lock(&self.templates).insert(dispatch_id.to_string(), template);
    }

    /// A frozen file, by its key.
    pub fn put_file(&self, key: &str, bytes: Vec<u8>) {
        lock(&self.files).insert(key.to_string(), bytes);
    }
}

#[async_trait]
impl Packages for MemoryPackages {
    async fn template(&self, dispatch_id: &str) -> Result<TemplateSource> {
        lock(&self.templates)
            .get(dispatch_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("package of {dispatch_id}")))
    }

    async fn file(&self, file: &intake::template::FrozenFile) -> Result<Vec<u8>> {
        lock(&self.files)
            .get(&file.key)
            .cloned()
            .ok_or_else(|| Error::NotFound(file.key.clone()))
    }
}

/// Notifications as sent: event, dispatch id and detail.
#[derive(Default)]
pub struct MemoryNotices {
    sent: Mutex<Vec<(Event, String, Option<String>)>>,
}

impl MemoryNotices {
    pub fn sent(&self) -> Vec<(Event, String, Option<String>)> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl Notices for MemoryNotices {
    async fn notify(&self, event: Event, d: &Dispatch, detail: Option<&str>) {
        lock(&self.sent).push((event, d.id.clone(), detail.map(str::to_string)));
    }
}

/// The send queue: messages put back, in order; a test hands them to the sender again.
#[derive(Default)]
pub struct MemoryQueue {
    queued: Mutex<Vec<SendBatch>>,
}

impl MemoryQueue {
    /// The messages put back so far, taken out.
    pub fn take(&self) -> Vec<SendBatch> {
        std::mem::take(&mut *lock(&self.queued))
    }
}

#[async_trait]
impl SendQueue for MemoryQueue {
    async fn requeue(&self, batch: &SendBatch) -> Result<()> {
        lock(&self.queued).push(batch.clone());
        Ok(())
    }
}

/// A signing key that is always the same.
pub struct FixedKey(pub Vec<u8>);

#[async_trait]
impl crate::ports::SigningKeys for FixedKey {
    async fn unsubscribe_key(&self) -> Result<Vec<u8>> {
        Ok(self.0.clone())
    }
}
