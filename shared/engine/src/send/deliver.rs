//! Rendering and sending the recipients a sender holds, each at its slot of the channel's
//! shared rate.

use super::{ItemOutcome, Prepared, Sender, QUOTA_USED_UP};
use crate::pacing::{instant_of, slot_interval};
use crate::ports::{Attachment, Outcome, SendError};
use domain::limits::MAX_RECIPIENTS_PER_WRITE;
use domain::model::{now_rfc3339, Channel};
use domain::queue::SendItem;
use domain::{Deadline, Result};
use futures::{stream, FutureExt, StreamExt};
use intake::template::{
    LetterLayout, RenderedEmail, RenderedLetter, RenderedSms, LETTER_ATTACHMENT_NAME,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Sends of one message in flight at once: all of them (at most 99), each waiting for its
/// own slot, so that a slow answer to one send does not make the next ones late.
const ITEM_CONCURRENCY: usize = MAX_RECIPIENTS_PER_WRITE;
/// Extra attempts at a send that failed without reaching the provider (5xx, connection).
const TRANSIENT_RETRIES: u32 = 2;
/// A send this much behind its slot is late: it goes out through the channel's catch-up gate
/// instead of at once, so that late sends keep the slots' spacing rather than bunching.
const MAX_LATE: Duration = Duration::from_millis(15);
/// How long before its slot a send looks at the dispatch's state.
const LOOK_AHEAD: Duration = Duration::from_millis(100);

enum Rendered {
    /// An email, with the recipient's own letter when it carries one.
    Email(RenderedEmail, Option<RenderedLetter>),
    Sms(RenderedSms),
    Letter(RenderedLetter),
}

impl Rendered {
    fn channel(&self) -> Channel {
        match self {
            Rendered::Email(..) => Channel::Email,
            Rendered::Sms(_) => Channel::Sms,
            Rendered::Letter(_) => Channel::Letter,
        }
    }
}

/// The channels, each with its own schedule, in the order of [`lane`].
const CHANNELS: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Letter];

fn lane(c: Channel) -> usize {
    match c {
        Channel::Email => 0,
        Channel::Sms => 1,
        Channel::Letter => 2,
    }
}

/// What became of a recipient: for the tally, the provider's words when it throttled, and
/// what the ledger records.
pub(super) type Delivered = (ItemOutcome, Option<String>, Outcome);

fn now_nanos() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

/// Whether a slot (Unix nanoseconds) comes before the invocation must stop.
fn in_time(slot: i64, stop_at: Deadline) -> bool {
    slot <= stop_at.unix_ms().saturating_mul(1_000_000)
}

/// How a wait for a send slot ended.
enum SlotWait {
    /// The slot has come: send.
    Now,
    /// The slot comes after the invocation must stop.
    TooLate,
    /// The dispatch is no longer sending.
    NotSending,
}

/// Runs of new slots a message's late sends of one channel may take together before the
/// rest of them go back on the queue.
const RETAKES: u32 = 4;

/// Late sends of one channel within one message.
///
/// A send that comes to its slot more than [`MAX_LATE`] late (a slow answer of the store put
/// its run in the past, or the machine was starved) must not go at once: it would share a
/// moment with another sender's slot and put more than the rate into that second. Taking a
/// new slot per late send keeps the rate but costs a write per send exactly when the store
/// is slow. So the first late send takes one new run for every send of the message that is
/// late with it (its slot at or before now), and they go at those slots in order: one write
/// for the lot. When even that run comes too late, another is taken. After [`RETAKES`] runs
/// (a machine too starved to keep any schedule) the rest go late, one slot interval apart,
/// rather than at once or after more writes.
struct CatchUp {
    channel: Channel,
    every: Duration,
    /// Slots (Unix nanoseconds) of this message's sends still waiting for theirs.
    waiting: std::sync::Mutex<std::collections::BTreeSet<i64>>,
    /// New slots taken for late sends and not yet handed out, and the runs taken.
    reserve: tokio::sync::Mutex<(std::collections::VecDeque<i64>, u32)>,
    /// After the runs: the earliest moment of the next late send.
    spaced: std::sync::Mutex<i64>,
}

impl CatchUp {
    fn new(channel: Channel, every: Duration) -> CatchUp {
        CatchUp {
            channel,
            every,
            waiting: std::sync::Mutex::new(Default::default()),
            reserve: tokio::sync::Mutex::new((Default::default(), 0)),
            spaced: std::sync::Mutex::new(i64::MIN),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<i64>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A send that will wait for slot `at`.
    fn expect(&self, at: i64) {
        self.waiting().insert(at);
    }

    /// The send of slot `at` no longer waits for it.
    fn gone(&self, at: i64) {
        self.waiting().remove(&at);
    }

    /// A new slot for the send of slot `at`, late at `now`, and whether it is one of a run
    /// of the shared schedule (else the message has taken its runs and it goes late, spaced).
    async fn late(&self, slots: &dyn crate::ports::SendSlots, at: i64, now: i64) -> (i64, bool) {
        let mut reserve = self.reserve.lock().await;
        let (queue, runs) = &mut *reserve;
        // New slots that have passed meanwhile stay unused.
        while queue
            .front()
            .is_some_and(|s| now - *s > MAX_LATE.as_nanos() as i64)
        {
            queue.pop_front();
        }
        if queue.is_empty() && *runs < RETAKES {
            let late_with_it = {
                let waiting = self.waiting();
                let behind = waiting.range(..=now + MAX_LATE.as_nanos() as i64).count();
                behind + usize::from(!waiting.contains(&at))
            };
            let count = u32::try_from(late_with_it.max(1)).unwrap_or(u32::MAX);
            match slots.take(self.channel, count, self.every).await {
                Ok(start_ms) => {
                    let every = self.every.as_nanos() as i64;
                    queue.extend((0..count as i64).map(|n| start_ms * 1_000_000 + every * n));
                    *runs += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no new send slots for late sends; they go late, spaced");
                    *runs = RETAKES;
                }
            }
        }
        self.gone(at);
        match queue.pop_front() {
            Some(slot) => (slot, true),
            None => {
                let mut spaced = self
                    .spaced
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let go = (*spaced).max(now);
                *spaced = go.saturating_add(self.every.as_nanos() as i64);
                (go, false)
            }
        }
    }
}

/// A recipient's message, the dispatch's letter layout and the dispatch's attachment.
type Message<'a> = (
    &'a Rendered,
    Option<&'a LetterLayout>,
    Option<&'a Attachment>,
);

fn later() -> Delivered {
    (ItemOutcome::Later, None, Outcome::Release)
}

impl Sender {
    /// Renders and sends claimed recipients, each at its slot of the channel's shared rate.
    pub(super) async fn deliver(
        &self,
        dispatch_id: &str,
        template: &Prepared,
        held: &[&SendItem],
        stop_at: Deadline,
    ) -> Vec<(Delivered, Option<Duration>)> {
        let email = template.source().email.as_ref();
        let attach_letter = email.is_some_and(|e| e.attach_letter);
        // Every destination of an email (each Bcc too) counts against the rate.
        let destinations = email.map_or(1, |e| 1 + e.bcc.len() as u32);
        let mut out: Vec<Option<Delivered>> = vec![None; held.len()];
        let mut answers: Vec<Option<Duration>> = vec![None; held.len()];
        let mut plans: Vec<(usize, Rendered)> = Vec::new();
        for (i, item) in held.iter().enumerate() {
            let rendered = match item.channel {
                Channel::Email => template.render_email(&item.fields).and_then(|m| {
                    let letter = if attach_letter {
                        Some(template.render_letter(&item.fields)?)
                    } else {
                        None
                    };
                    Ok(Rendered::Email(m, letter))
                }),
                Channel::Sms => template.render_sms(&item.fields).map(Rendered::Sms),
                Channel::Letter => template.render_letter(&item.fields).map(Rendered::Letter),
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
        let mut counts = [0u32; 3];
        for (_, r) in &plans {
            counts[lane(r.channel())] += 1;
        }
        let every = [
            slot_interval(if counts[0] > 0 {
                self.email_rate_now().await
            } else {
                self.settings.email_rate_per_second
            }) * destinations,
            slot_interval(self.settings.sms_rate_per_second),
            slot_interval(self.settings.letter_rate_per_second),
        ];
        let mut starts: [Option<i64>; 3] = [None; 3];
        for (k, channel) in CHANNELS.into_iter().enumerate() {
            if counts[k] == 0 {
                continue;
            }
            // A store that does not answer before the invocation must stop leaves no slots.
            match tokio::time::timeout(
                stop_at.remaining(),
                self.ports.slots.take(channel, counts[k], every[k]),
            )
            .await
            {
                Ok(Ok(t)) => starts[k] = Some(t),
                Ok(Err(e)) => {
                    tracing::warn!(dispatch = %dispatch_id, error = %e, "no send slots; claims given back")
                }
                Err(_) => {
                    tracing::warn!(dispatch = %dispatch_id, "no send slots before the invocation must stop; claims given back")
                }
            }
        }
        let mut next = [0u32; 3];
        let mut scheduled = Vec::new();
        for (i, r) in plans {
            let k = lane(r.channel());
            let slot = starts[k].map(|t| {
                next[k] += 1;
                t * 1_000_000 + every[k].as_nanos() as i64 * (next[k] - 1) as i64
            });
            match slot {
                // Slots past the deadline stay unused: the rate is never exceeded, and the
                // recipients go back on the queue before anything was waited for.
                Some(at) if !in_time(at, stop_at) => out[i] = Some(later()),
                Some(at) => scheduled.push((i, r, at)),
                None => out[i] = Some((ItemOutcome::Retry, None, Outcome::Release)),
            }
        }
        let stop = AtomicBool::new(false);
        let gates = [
            CatchUp::new(Channel::Email, every[0]),
            CatchUp::new(Channel::Sms, every[1]),
            CatchUp::new(Channel::Letter, every[2]),
        ];
        for (_, r, at) in &scheduled {
            gates[lane(r.channel())].expect(*at);
        }
        let layout = template.source().letter.as_ref().map(|l| &l.layout);
        let attachment = template.attachment.as_ref();
        let sent: Vec<(usize, (Delivered, Option<Duration>))> = stream::iter(scheduled)
            .map(|(i, r, at)| {
                let stop = &stop;
                let item = held[i];
                let gate = &gates[lane(r.channel())];
                async move {
                    (
                        i,
                        self.send_one(
                            dispatch_id,
                            item,
                            (&r, layout, attachment),
                            stop,
                            (at, gate),
                            stop_at,
                        )
                        .await,
                    )
                }
                .boxed()
            })
            .buffer_unordered(ITEM_CONCURRENCY)
            .collect()
            .await;
        for (i, (d, answered)) in sent {
            out[i] = Some(d);
            answers[i] = answered;
        }
        out.into_iter()
            .zip(answers)
            .map(|(d, a)| (d.unwrap_or((ItemOutcome::Retry, None, Outcome::Release)), a))
            .collect()
    }

    /// One recipient's email as it goes out: with its own unsubscribe link, and the files
    /// it carries.
    async fn email_for(
        &self,
        dispatch_id: &str,
        item: &SendItem,
        m: &RenderedEmail,
        letter: (Option<&RenderedLetter>, Option<&LetterLayout>),
        attachment: Option<&Attachment>,
    ) -> Result<(RenderedEmail, Vec<Attachment>), SendError> {
        let mut m = m.clone();
        if m.one_click_unsubscribe {
            m.unsubscribe_url = Some(self.unsubscribe_link(dispatch_id, &item.address).await?);
        }
        let files = self
            .attachments(dispatch_id, item, letter, attachment)
            .await?;
        Ok((m, files))
    }

    /// The files an email carries: the dispatch's attachment, and the recipient's own
    /// letter typeset for them (at their postal address, or their email address when the
    /// list has none).
    async fn attachments(
        &self,
        dispatch_id: &str,
        item: &SendItem,
        (letter, layout): (Option<&RenderedLetter>, Option<&LetterLayout>),
        attachment: Option<&Attachment>,
    ) -> Result<Vec<Attachment>, SendError> {
        let mut files: Vec<Attachment> = attachment.into_iter().cloned().collect();
        if let Some(letter) = letter {
            let Some(layout) = layout else {
                return Err(SendError::Permanent {
                    code: "render_failed".into(),
                    message: "the dispatch's package has no letter layout".into(),
                });
            };
            let address = item.postal.as_deref().unwrap_or(&item.address);
            let pdf = self
                .ports
                .press
                .typeset(dispatch_id, address, layout, letter)
                .await?;
            files.push(Attachment {
                name: LETTER_ATTACHMENT_NAME.into(),
                content_type: "application/pdf".into(),
                bytes: std::sync::Arc::new(pdf),
            });
        }
        Ok(files)
    }

    async fn interval_for(&self, message: &Rendered) -> Duration {
        match message {
            Rendered::Email(m, _) => slot_interval(self.email_rate_now().await) * m.destinations(),
            Rendered::Sms(_) => slot_interval(self.settings.sms_rate_per_second),
            Rendered::Letter(_) => slot_interval(self.settings.letter_rate_per_second),
        }
    }

    /// One new slot for a message on its channel, in Unix nanoseconds.
    async fn new_slot(&self, message: &Rendered) -> Result<i64> {
        let every = self.interval_for(message).await;
        Ok(self.ports.slots.take(message.channel(), 1, every).await? * 1_000_000)
    }

    /// Waits for a send slot (Unix nanoseconds). Shortly before the slot it looks at the
    /// dispatch, so that a pause made while the send waited still stops it, and a read does
    /// not make the send late. A send more than [`MAX_LATE`] behind its slot gets a new one
    /// from the channel's [`CatchUp`], or goes back on the queue.
    async fn wait_for_slot(
        &self,
        dispatch_id: &str,
        mut at: i64,
        gate: &CatchUp,
        stop_at: Deadline,
    ) -> SlotWait {
        loop {
            if !in_time(at, stop_at) {
                gate.gone(at);
                return SlotWait::TooLate;
            }
            tokio::time::sleep_until(instant_of(at - LOOK_AHEAD.as_nanos() as i64)).await;
            if !self.still_sending(dispatch_id).await {
                gate.gone(at);
                return SlotWait::NotSending;
            }
            tokio::time::sleep_until(instant_of(at)).await;
            let now = now_nanos();
            if now - at <= MAX_LATE.as_nanos() as i64 {
                gate.gone(at);
                return SlotWait::Now;
            }
            let Ok(late) = tokio::time::timeout(
                stop_at.remaining(),
                gate.late(self.ports.slots.as_ref(), at, now),
            )
            .await
            else {
                // The store took the rest of the invocation's time for a new slot.
                gate.gone(at);
                return SlotWait::TooLate;
            };
            match late {
                (next, true) => {
                    tracing::debug!(
                        late_ms = (now - at) / 1_000_000,
                        "behind the send schedule; a new slot from the message's run"
                    );
                    at = next;
                }
                (go, false) => {
                    if !in_time(go, stop_at) {
                        return SlotWait::TooLate;
                    }
                    tokio::time::sleep_until(instant_of(go)).await;
                    return SlotWait::Now;
                }
            }
        }
    }

    /// Sends one recipient's message at its slot: what became of it, and how long the
    /// provider took to answer its last attempt, if one was made.
    async fn send_one(
        &self,
        dispatch_id: &str,
        item: &SendItem,
        message: Message<'_>,
        stop: &AtomicBool,
        slot: (i64, &CatchUp),
        stop_at: Deadline,
    ) -> (Delivered, Option<Duration>) {
        let mut answered = None;
        let d = self
            .send_timed(
                dispatch_id,
                item,
                message,
                stop,
                slot,
                stop_at,
                &mut answered,
            )
            .await;
        (d, answered)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_timed(
        &self,
        dispatch_id: &str,
        item: &SendItem,
        (message, layout, attachment): Message<'_>,
        stop: &AtomicBool,
        (slot, gate): (i64, &CatchUp),
        stop_at: Deadline,
        answered: &mut Option<Duration>,
    ) -> Delivered {
        if stop.load(Ordering::Relaxed) {
            // An earlier send of this message was throttled: this one waits with the dispatch.
            return (ItemOutcome::SetAside, None, Outcome::Release);
        }
        match self.wait_for_slot(dispatch_id, slot, gate, stop_at).await {
            SlotWait::Now => {}
            SlotWait::NotSending => return (ItemOutcome::SetAside, None, Outcome::Release),
            SlotWait::TooLate => return later(),
        }
        if stop.load(Ordering::Relaxed) {
            return (ItemOutcome::SetAside, None, Outcome::Release);
        }
        // The wait may have outlasted its look at the dispatch (a late send waited for the
        // store to give it a new slot): looked at again, from the sighting while it is fresh.
        if !self.still_sending(dispatch_id).await {
            return (ItemOutcome::SetAside, None, Outcome::Release);
        }
        // Taken last, so that only a send that goes out uses the quota.
        let allowance = match message {
            Rendered::Email(m, _) => m.destinations(),
            _ => 0,
        };
        if allowance > 0 && !self.take_email_allowance(allowance).await {
            stop.store(true, Ordering::Relaxed);
            return (
                ItemOutcome::QuotaReached,
                Some(QUOTA_USED_UP.to_string()),
                Outcome::Release,
            );
        }
        let mut attempt = 0;
        let result = loop {
            let asked = std::time::Instant::now();
            let r = match message {
                Rendered::Email(m, letter) => {
                    match self
                        .email_for(dispatch_id, item, m, (letter.as_ref(), layout), attachment)
                        .await
                    {
                        Ok((m, files)) => {
                            self.ports
                                .mailer
                                .send_email(&item.address, &m, &files)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
                Rendered::Sms(m) => self.ports.texter.send_sms(&item.address, m).await,
                Rendered::Letter(m) => match layout {
                    Some(layout) => {
                        self.ports
                            .press
                            .produce(dispatch_id, &item.key, &item.address, layout, m)
                            .await
                    }
                    None => Err(SendError::Permanent {
                        code: "render_failed".into(),
                        message: "the dispatch's package has no letter layout".into(),
                    }),
                },
            };
            *answered = Some(asked.elapsed());
            match r {
                Err(SendError::Transient(why)) if attempt < TRANSIENT_RETRIES => {
                    attempt += 1;
                    tracing::warn!(dispatch = %dispatch_id, recipient = %item.recipient_id, attempt, error = %why, "not sent; trying again");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    // A new attempt takes a slot of its own, so the rate still holds.
                    let slot = match self.new_slot(message).await {
                        Ok(at) => at,
                        Err(e) => break Err(SendError::Transient(e.to_string())),
                    };
                    match self.wait_for_slot(dispatch_id, slot, gate, stop_at).await {
                        SlotWait::Now => {}
                        SlotWait::NotSending => {
                            return (ItemOutcome::SetAside, None, Outcome::Release)
                        }
                        // No time left for another attempt: the provider has not taken the
                        // message, so it waits for a later invocation.
                        SlotWait::TooLate => return later(),
                    }
                    if !self.still_sending(dispatch_id).await {
                        return (ItemOutcome::SetAside, None, Outcome::Release);
                    }
                }
                other => break other,
            }
        };
        match result {
            // A letter is produced rather than sent; the tally counts it with the sends.
            Ok(document) if matches!(message, Rendered::Letter(_)) => (
                ItemOutcome::Sent,
                None,
                Outcome::Created {
                    document,
                    at: now_rfc3339(),
                },
            ),
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
                    reason: format!(
                        "no answer from the provider ({why}); not re-sent automatically"
                    ),
                },
            ),
            Err(SendError::Throttled(why)) => {
                stop.store(true, Ordering::Relaxed);
                (ItemOutcome::Throttled, Some(why), Outcome::Release)
            }
            Err(SendError::Blocked(why)) => {
                stop.store(true, Ordering::Relaxed);
                (ItemOutcome::Blocked, Some(why), Outcome::Release)
            }
            Err(e @ SendError::Transient(_)) => {
                tracing::warn!(dispatch = %dispatch_id, recipient = %item.recipient_id, error = %e, "not sent; claim given back");
                (ItemOutcome::Retry, None, Outcome::Release)
            }
        }
    }
}
