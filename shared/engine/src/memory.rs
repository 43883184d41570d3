//! In-memory implementations of the ports, for fast tests of the protocols. They keep the
//! rules the AWS adapters keep (a claim only of a pending recipient of a sending dispatch, a
//! result only under the claim's token, counters moving with the records, runs of send
//! slots that never overlap) and let a test script the providers' answers.

use crate::pacing::earliest_start;
use crate::ports::{
    Claimed, Completion, DispatchBook, Mailer, Notices, Outcome, Packages, Quota, RecipientLedger,
    Recorded, SendError, SendSlots, Texter,
};
use async_trait::async_trait;
use domain::keys::RecipientKey;
use domain::model::{now_rfc3339, Channel, Dispatch, DispatchState, Recipient, RecipientState};
use domain::notice::Event;
use domain::{Error, Result};
use intake::template::{RenderedEmail, RenderedSms, TemplateSource};
use std::collections::{HashMap, VecDeque};
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

    /// The next `n` result writes fail as if the store had not answered.
    pub fn fail_next_records(&self, n: u32) {
        *lock(&self.failing_records) = n;
    }
}

#[async_trait]
impl RecipientLedger for MemoryStore {
    async fn claim(
        &self,
        dispatch_id: &str,
        keys: &[RecipientKey],
        token: &str,
    ) -> Result<Claimed> {
        let sending = lock(&self.dispatches)
            .get(dispatch_id)
            .is_some_and(|d| d.state == DispatchState::Sending);
        if !sending {
            return Ok(Claimed {
                held: vec![],
                dispatch_not_sending: true,
            });
        }
        let mut all = lock(&self.recipients);
        let mut held = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let Some(h) = all.get_mut(&(dispatch_id.to_string(), key.clone())) else {
                continue;
            };
            if h.recipient.state == RecipientState::Pending {
                h.recipient.state = RecipientState::Sending;
                h.recipient.claimed_at = Some(now_rfc3339());
                h.token = Some(token.to_string());
                held.push(i);
            } else if h.recipient.state == RecipientState::Sending
                && h.token.as_deref() == Some(token)
            {
                held.push(i);
            }
        }
        Ok(Claimed {
            held,
            dispatch_not_sending: false,
        })
    }

    async fn record(
        &self,
        dispatch_id: &str,
        token: &str,
        results: &[(RecipientKey, Outcome)],
    ) -> Result<Recorded> {
        {
            let mut failing = lock(&self.failing_records);
            if *failing > 0 {
                *failing -= 1;
                return Err(Error::Aws {
                    op: "record",
                    source: "the store did not answer".into(),
                });
            }
        }
        let mut all = lock(&self.recipients);
        let mut done = Recorded::default();
        for (key, outcome) in results {
            let Some(h) = all.get_mut(&(dispatch_id.to_string(), key.clone())) else {
                done.lost += 1;
                continue;
            };
            if h.recipient.state != RecipientState::Sending || h.token.as_deref() != Some(token) {
                done.lost += 1;
                continue;
            }
            let r = &mut h.recipient;
            r.state = outcome.state();
            r.updated_at = now_rfc3339();
            match outcome {
                Outcome::Sent { message_id, at } => {
                    r.message_id = Some(message_id.clone());
                    r.sent_at = Some(at.clone());
                    done.sent += 1;
                }
                Outcome::Failed { reason } => {
                    r.reason = Some(reason.clone());
                    done.failed += 1;
                }
                Outcome::Unknown { reason } => {
                    r.reason = Some(reason.clone());
                    done.unknown += 1;
                }
                Outcome::Release => {
                    r.claimed_at = None;
                    h.token = None;
                    done.released += 1;
                }
            }
        }
        if let Some(d) = lock(&self.dispatches).get_mut(dispatch_id) {
            d.counts.sent += done.sent;
            d.counts.failed += done.failed;
            d.counts.unknown += done.unknown;
        }
        Ok(done)
    }

    async fn mark_stuck(&self, dispatch_id: &str, keys: &[RecipientKey]) -> Result<u64> {
        let mut all = lock(&self.recipients);
        let mut marked = 0;
        for key in keys {
            if let Some(h) = all.get_mut(&(dispatch_id.to_string(), key.clone())) {
                if h.recipient.state == RecipientState::Pending && !h.stuck {
                    h.stuck = true;
                    marked += 1;
                }
            }
        }
        if let Some(d) = lock(&self.dispatches).get_mut(dispatch_id) {
            d.counts.stuck += marked;
        }
        Ok(marked)
    }
}

#[async_trait]
impl DispatchBook for MemoryStore {
    async fn dispatch(&self, id: &str) -> Result<Option<Dispatch>> {
        Ok(self.get(id))
    }

    async fn wait_for_continuation(
        &self,
        id: &str,
        resume_at: &str,
        reason: &str,
    ) -> Result<Dispatch> {
        let mut all = lock(&self.dispatches);
        match all.get_mut(id) {
            Some(d) if d.state == DispatchState::Sending => {
                d.state = DispatchState::WaitingForContinuation;
                d.resume_at = Some(resume_at.to_string());
                d.pause_reason = Some(reason.to_string());
                Ok(d.clone())
            }
            Some(d) => Err(Error::Conflict(format!("dispatch '{id}' is {}", d.state))),
            None => Err(Error::NotFound(id.to_string())),
        }
    }
}

#[async_trait]
impl Completion for MemoryStore {
    /// Completes a sending dispatch when its counters say nothing is outstanding.
    async fn complete_if_done(&self, d: &Dispatch) -> Result<Option<Dispatch>> {
        let mut all = lock(&self.dispatches);
        match all.get_mut(&d.id) {
            Some(now) if now.state == DispatchState::Sending && now.counts.outstanding() == 0 => {
                now.state = now.final_state();
                now.completed_at = Some(now_rfc3339());
                Ok(Some(now.clone()))
            }
            _ => Ok(None),
        }
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

/// A provider whose answers a test scripts per address; every other send is accepted.
#[derive(Default)]
pub struct ScriptedProvider {
    answers: Mutex<HashMap<String, VecDeque<SendError>>>,
    sent: Mutex<Vec<(String, String, i64)>>,
    quota: Mutex<Option<Quota>>,
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
    async fn send_email(&self, to: &str, m: &RenderedEmail) -> Result<String, SendError> {
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

/// Frozen packages by dispatch.
#[derive(Default)]
pub struct MemoryPackages {
    templates: Mutex<HashMap<String, TemplateSource>>,
}

impl MemoryPackages {
    pub fn put(&self, dispatch_id: &str, template: TemplateSource) {
        lock(&self.templates).insert(dispatch_id.to_string(), template);
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
