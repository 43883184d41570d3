//! The sending protocol on the in-memory ports: what each answer of the provider and each
//! state of the dispatch makes of a message's recipients.

use super::*;
use crate::completion::{Completer, CompletionPorts};
use crate::memory::{
    MemoryDocuments, MemoryMetrics, MemoryNotices, MemoryPackages, MemoryQueue, MemorySlots,
    MemoryStore, ScriptedProvider,
};
use crate::ports::SendError;
use domain::model::{Channel, Dispatch, Recipient, RecipientState};
use intake::template::{EmailSource, SmsSource, TemplateSource};

struct World {
    sender: Sender,
    store: Arc<MemoryStore>,
    provider: Arc<ScriptedProvider>,
    slots: Arc<MemorySlots>,
    notices: Arc<MemoryNotices>,
    queue: Arc<MemoryQueue>,
    metrics: Arc<MemoryMetrics>,
    packages: Arc<MemoryPackages>,
    batch: SendBatch,
}

const SETTINGS: SendSettings = SendSettings {
    email_rate_per_second: 2000.0,
    sms_rate_per_second: 2000.0,
    letter_rate_per_second: 2000.0,
    throttle_pause_secs: 60,
    quota_recheck_secs: 3600,
    max_receives: 5,
    public_api_url: None,
};

fn address(channel: Channel, i: usize) -> String {
    match channel {
        Channel::Email => format!("r{i}@example.org"),
        Channel::Sms => format!("+4520{i:06}"),
        Channel::Letter => format!("R {i}\nStreet {i}\n8000 Aarhus C"),
    }
}

/// A sending dispatch of `n` recipients, alternating channels when `mixed`.
fn world(n: usize, mixed: bool) -> World {
    world_with(n, mixed, SETTINGS)
}

fn world_with(n: usize, mixed: bool, settings: SendSettings) -> World {
    let slots = Arc::new(MemorySlots::default());
    world_on(n, mixed, settings, slots.clone(), slots)
}

/// A world whose senders take their slots from `taken_from`, which records its runs in `slots`.
fn world_on(
    n: usize,
    mixed: bool,
    settings: SendSettings,
    slots: Arc<MemorySlots>,
    taken_from: Arc<dyn SendSlots>,
) -> World {
    let queue = Arc::new(MemoryQueue::default());
    let store = Arc::new(MemoryStore::new());
    let provider = Arc::new(ScriptedProvider::default());
    let notices = Arc::new(MemoryNotices::default());
    let packages = Arc::new(MemoryPackages::default());
    let metrics = Arc::new(MemoryMetrics::default());
    packages.put(
        "d1",
        TemplateSource {
            letter: None,
            email: Some(EmailSource {
                from: "Town Hall <noreply@example.org>".into(),
                subject: "Hello {{ name }}".into(),
                text: "Dear {{ name }}".into(),
                html: None,
                ..Default::default()
            }),
            sms: Some(SmsSource {
                text: "Hi {{ name }}".into(),
                sender_id: None,
            }),
        }
        .with_letter(),
    );
    let mut d = Dispatch::arrived("d1", "incoming/d1/", 4);
    d.state = DispatchState::Sending;
    d.counts.total = n as u64;
    d.counts.valid = n as u64;
    store.put_dispatch(d);
    let mut items = Vec::new();
    for i in 0..n {
        let channel = if mixed && i % 2 == 1 {
            Channel::Sms
        } else {
            Channel::Email
        };
        let r = Recipient {
            channel: Some(channel),
            address: Some(address(channel, i)),
            fields: BTreeMap::from([("name".to_string(), format!("N{i}"))]),
            ..Recipient::pending("d1", &i.to_string(), i as u64 + 2)
        };
        let key = domain::keys::recipient_key(&r, true, 4);
        items.push(SendItem {
            key: key.clone(),
            recipient_id: r.recipient_id.clone(),
            channel,
            address: address(channel, i),
            fields: r.fields.clone(),
            postal: None,
        });
        store.put_recipient(key, r);
    }
    let sender = Sender::new(
        SendPorts {
            ledger: store.clone(),
            dispatches: store.clone(),
            slots: taken_from,
            mailer: provider.clone(),
            texter: provider.clone(),
            press: provider.clone(),
            packages: packages.clone(),
            completion: Arc::new(Completer::new(CompletionPorts {
                dispatches: store.clone(),
                recipients: store.clone(),
                audit: store.clone(),
                documents: Arc::new(MemoryDocuments::default()),
                stale: store.clone(),
            })),
            notices: notices.clone(),
            queue: queue.clone(),
            metrics: metrics.clone(),
            keys: Arc::new(crate::memory::FixedKey(b"test key".to_vec())),
        },
        settings,
    );
    World {
        sender,
        store,
        provider,
        slots,
        notices,
        queue,
        metrics,
        packages,
        batch: SendBatch {
            dispatch_id: "d1".into(),
            items,
        },
    }
}

impl World {
    /// Handles deliveries in an invocation with all the time it needs.
    async fn run(&self, deliveries: Vec<Delivery>) -> Vec<String> {
        self.run_within(deliveries, Duration::from_secs(900)).await
    }

    /// Handles deliveries in an invocation that has `time`.
    async fn run_within(&self, deliveries: Vec<Delivery>, time: Duration) -> Vec<String> {
        self.sender.handle(deliveries, Deadline::after(time)).await
    }
    fn delivery(&self, id: &str, receives: u32) -> Delivery {
        Delivery {
            message_id: id.into(),
            receives,
            body: serde_json::to_string(&self.batch).unwrap(),
        }
    }

    fn state_of(&self, i: usize) -> Recipient {
        self.store
            .recipient("d1", &self.batch.items[i].key)
            .expect("recipient")
    }

    fn states(&self) -> BTreeMap<RecipientState, usize> {
        let mut out = BTreeMap::new();
        for i in 0..self.batch.items.len() {
            *out.entry(self.state_of(i).state).or_insert(0) += 1;
        }
        out
    }

    fn dispatch(&self) -> Dispatch {
        self.store.get("d1").expect("dispatch")
    }
}

trait WithLetter {
    fn with_letter(self) -> Self;
}

impl WithLetter for TemplateSource {
    fn with_letter(mut self) -> Self {
        self.letter = Some(intake::template::LetterSource {
            subject: "About {{ name }}".into(),
            text: "Dear **{{ name }}**".into(),
            layout: Default::default(),
        });
        self
    }
}

#[tokio::test]
async fn letters_are_produced_once_each_beside_emails_and_sms_and_their_documents_recorded() {
    let mut w = world(30, true);
    for i in (0..30).filter(|i| i % 3 == 2) {
        let mut r = w.state_of(i);
        let item = &mut w.batch.items[i];
        item.channel = Channel::Letter;
        item.address = address(Channel::Letter, i);
        item.fields.insert("name".into(), format!("N*{i}"));
        r.channel = Some(Channel::Letter);
        r.address = Some(item.address.clone());
        r.fields = item.fields.clone();
        w.store.put_recipient(item.key.clone(), r);
    }
    let a = w.run(vec![w.delivery("m", 1)]).await;
    assert!(a.is_empty(), "{a:?}");
    let sent = w.provider.sent();
    assert_eq!(sent.len(), 30);
    let letters: Vec<_> = sent
        .iter()
        .filter(|(to, _, _)| to.starts_with("R "))
        .collect();
    assert_eq!(letters.len(), 10, "{sent:?}");
    // The merge value is filled in as literal text: its `*` escaped, not formatting.
    assert!(
        letters
            .iter()
            .any(|(_, text, _)| text.contains("About N*2\nDear **N\\*2**")),
        "{letters:?}"
    );
    // A letter is created, not sent.
    assert_eq!(
        w.states(),
        BTreeMap::from([(RecipientState::Sent, 20), (RecipientState::Created, 10)])
    );
    assert_eq!(
        (w.dispatch().counts.sent, w.dispatch().counts.created),
        (20, 10)
    );
    let r = w.state_of(2);
    assert_eq!(r.channel, Some(Channel::Letter));
    assert_eq!(
        r.message_id.as_deref(),
        Some(format!("dispatches/d1/letters/{}.pdf", w.batch.items[2].key.sk).as_str())
    );
    assert_eq!(w.dispatch().state, DispatchState::Completed);
}

#[tokio::test]
async fn a_message_delivered_twice_at_once_sends_each_recipient_once() {
    let w = world(40, true);
    let (a, b) = tokio::join!(
        w.run(vec![w.delivery("m", 1)]),
        w.run(vec![w.delivery("m", 1)])
    );
    assert!(a.is_empty() && b.is_empty(), "{a:?} {b:?}");
    let sent = w.provider.sent();
    assert_eq!(sent.len(), 40);
    let distinct: std::collections::BTreeSet<_> = sent.iter().map(|(to, _, _)| to).collect();
    assert_eq!(distinct.len(), 40, "every address once");
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Sent, 40)]));
    let d = w.dispatch();
    assert_eq!(d.counts.sent, 40, "the counters moved with the records");
    assert_eq!(d.state, DispatchState::Completed);
    let completed: Vec<_> = w
        .notices
        .sent()
        .into_iter()
        .filter(|(e, _, _)| *e == Event::Completed)
        .collect();
    assert_eq!(completed.len(), 1, "one completion notice");
    // Each invocation reports what it did; together, every recipient once.
    let figures = w.metrics.figures();
    assert_eq!(figures.len(), 2);
    assert!(figures
        .iter()
        .all(|f| f.dispatch_id == "d1" && f.seconds > 0.0));
    assert_eq!(figures.iter().map(|f| f.sent).sum::<u64>(), 40);
}

#[tokio::test]
async fn messages_render_per_channel_with_the_recipients_fields() {
    let w = world(2, true);
    w.run(vec![w.delivery("m", 1)]).await;
    let mut sent = w.provider.sent();
    sent.sort();
    assert_eq!(sent[0].0, "+4520000001");
    assert_eq!(sent[0].1, "Hi N1");
    assert_eq!(sent[1].0, "r0@example.org");
    assert_eq!(sent[1].1, "Dear N0");
    let r = w.state_of(0);
    assert!(r.message_id.is_some() && r.sent_at.is_some());
    // The figures say what went by which channel, and how long each answer took.
    let figures = w.metrics.figures();
    assert_eq!(figures.len(), 1);
    let channels: Vec<_> = figures[0]
        .channels
        .iter()
        .map(|(c, t)| (*c, t.sent, t.answer_micros.len()))
        .collect();
    assert_eq!(channels, vec![(Channel::Email, 1, 1), (Channel::Sms, 1, 1)]);
}

#[tokio::test]
async fn a_throttle_gives_the_claims_back_and_the_dispatch_waits_for_continuation() {
    let w = world(10, false);
    w.provider.answer(
        &address(Channel::Email, 0),
        [SendError::Throttled(
            "TooManyRequestsException: Maximum sending rate exceeded.".into(),
        )],
    );
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert!(
        again.is_empty(),
        "a throttle does not make the message come again"
    );
    let d = w.dispatch();
    assert_eq!(d.state, DispatchState::WaitingForContinuation);
    assert!(d
        .pause_reason
        .as_deref()
        .unwrap()
        .contains("Maximum sending rate"));
    let resume = time::OffsetDateTime::parse(
        d.resume_at.as_deref().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let wait = resume - time::OffsetDateTime::now_utc();
    assert!(wait > time::Duration::seconds(50) && wait <= time::Duration::seconds(60));
    assert_eq!(w.state_of(0).state, RecipientState::Pending);
    assert_eq!(
        w.states().get(&RecipientState::Sent).copied().unwrap_or(0) as u64,
        d.counts.sent,
        "the counters match the records"
    );
    assert!(
        w.provider.sent().len() < 10,
        "sends after the throttle stopped"
    );
    let figures = w.metrics.figures();
    assert_eq!(figures.len(), 1);
    assert!(figures[0].throttled >= 1, "{figures:?}");
    assert_eq!(figures[0].sent, d.counts.sent);
    assert!(w
        .notices
        .sent()
        .iter()
        .any(|(e, _, _)| *e == Event::WaitingForContinuation));
}

#[tokio::test]
async fn a_refusal_over_the_daily_quota_waits_as_long_as_a_quota_recheck() {
    let w = world(3, false);
    w.provider.answer(
        &address(Channel::Email, 1),
        [SendError::Throttled(
            "LimitExceededException: Daily message quota exceeded.".into(),
        )],
    );
    w.run(vec![w.delivery("m", 1)]).await;
    let d = w.dispatch();
    assert_eq!(d.state, DispatchState::WaitingForContinuation);
    let resume = time::OffsetDateTime::parse(
        d.resume_at.as_deref().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(resume - time::OffsetDateTime::now_utc() > time::Duration::seconds(3500));
}

#[tokio::test]
async fn a_refused_account_pauses_the_dispatch_fails_nobody_and_resumes_when_mended() {
    let w = world(6, false);
    w.provider.answer(
        &address(Channel::Email, 2),
        [SendError::Blocked(
            "AccountSuspendedException: the account's ability to send email is restricted".into(),
        )],
    );
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert!(
        again.is_empty(),
        "set aside with the dispatch, not redelivered"
    );
    let d = w.dispatch();
    assert_eq!(d.state, DispatchState::Paused);
    let reason = d.pause_reason.clone().unwrap();
    assert!(reason.contains("AccountSuspendedException"), "{reason}");
    assert!(reason.contains("resume"), "{reason}");
    assert_eq!(d.counts.failed, 0, "nobody failed");
    assert_eq!(w.state_of(2).state, RecipientState::Pending);
    assert!(w
        .notices
        .sent()
        .iter()
        .any(|(e, _, detail)| *e == Event::Blocked && detail.as_deref() == Some(&reason)));
    // An operator mends the configuration and resumes: the rest is sent, once each.
    w.store.set_state("d1", DispatchState::Sending);
    w.run(vec![w.delivery("m", 1)]).await;
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Sent, 6)]));
    assert_eq!(w.provider.sent().len(), 6);
    assert_eq!(w.dispatch().state, DispatchState::Completed);
}

#[tokio::test]
async fn the_accounts_daily_quota_stops_sending_when_used_up() {
    let w = world(5, false);
    w.provider.set_quota(Quota {
        max_send_rate: 1000.0,
        max_24_hour_send: 100.0,
        sent_last_24_hours: 98.0,
    });
    w.run(vec![w.delivery("m", 1)]).await;
    assert_eq!(w.provider.sent().len(), 2, "only what the quota leaves");
    let d = w.dispatch();
    assert_eq!(d.state, DispatchState::WaitingForContinuation);
    assert_eq!(d.pause_reason.as_deref(), Some(QUOTA_USED_UP));
    assert_eq!(w.states()[&RecipientState::Pending], 3);
}

/// An email with Bcc is as many sends as it has destinations: against the daily quota and
/// on the shared schedule. Its attachments reach the provider, the dispatch's file as frozen.
#[tokio::test]
async fn an_email_with_bcc_takes_a_send_of_the_quota_and_a_slot_per_destination() {
    let w = world(5, false);
    let pdf = b"%PDF-1.7 the guide".to_vec();
    w.packages
        .put_file("dispatches/d1/attachment/x.pdf", pdf.clone());
    w.packages.put(
        "d1",
        TemplateSource {
            email: Some(EmailSource {
                from: "Town Hall <noreply@example.org>".into(),
                subject: "Hello {{ name }}".into(),
                text: "Dear {{ name }}".into(),
                bcc: vec!["archive@example.org".into(), "audit@example.org".into()],
                attachment: Some(intake::template::FrozenFile {
                    name: "guide.pdf".into(),
                    key: "dispatches/d1/attachment/x.pdf".into(),
                    sha256: "x".into(),
                    bytes: pdf.len() as u64,
                }),
                ..Default::default()
            }),
            sms: None,
            letter: None,
        },
    );
    // 7 sends left today: two emails of three destinations each, not a third.
    w.provider.set_quota(Quota {
        max_send_rate: 1000.0,
        max_24_hour_send: 100.0,
        sent_last_24_hours: 93.0,
    });
    w.run(vec![w.delivery("m", 1)]).await;
    assert_eq!(w.provider.sent().len(), 2, "two emails of three sends each");
    assert_eq!(w.dispatch().pause_reason.as_deref(), Some(QUOTA_USED_UP));
    let attached = w.provider.attached();
    assert!(!attached.is_empty());
    for (_, files) in &attached {
        assert_eq!(files, &vec![("guide.pdf".to_string(), pdf.len())]);
    }
    // The five emails' run of slots spans three slots each.
    let runs = w.slots.runs();
    let (_, start, end) = runs[0];
    let one = crate::pacing::slot_interval(1000.0).as_millis() as i64;
    assert!(
        end - start >= 5 * 3 * one - 1,
        "a run of {} ms for five emails of three destinations at {one} ms a slot",
        end - start
    );
}

#[tokio::test]
async fn a_transient_fault_is_tried_again_and_then_sent() {
    let w = world(1, false);
    w.provider.answer(
        &address(Channel::Email, 0),
        [SendError::Transient("503 Service Unavailable".into())],
    );
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert!(again.is_empty());
    assert_eq!(w.state_of(0).state, RecipientState::Sent);
    let runs = w.slots.runs();
    assert_eq!(
        runs.len(),
        2,
        "the second attempt took a slot of its own: {runs:?}"
    );
}

#[tokio::test]
async fn faults_that_persist_give_the_claim_back_and_the_message_comes_again() {
    let w = world(2, false);
    let busy = || SendError::Transient("connection refused".into());
    w.provider
        .answer(&address(Channel::Email, 0), [busy(), busy(), busy()]);
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert_eq!(again, vec!["m".to_string()]);
    assert_eq!(w.state_of(0).state, RecipientState::Pending);
    assert!(
        w.state_of(0).claimed_at.is_none(),
        "the claim was given back"
    );
    assert_eq!(w.state_of(1).state, RecipientState::Sent);
    assert!(!w.store.is_stuck("d1", &w.batch.items[0].key));

    // Delivered again, the message sends only the one given back.
    let again = w.run(vec![w.delivery("m", 2)]).await;
    assert!(again.is_empty());
    assert_eq!(w.provider.sent().len(), 2);
    assert_eq!(w.dispatch().state, DispatchState::Completed);
}

#[tokio::test]
async fn on_the_last_delivery_the_recipients_given_back_are_marked_stuck() {
    let w = world(2, false);
    let busy = || SendError::Transient("connection refused".into());
    w.provider
        .answer(&address(Channel::Email, 1), [busy(), busy(), busy()]);
    let again = w.run(vec![w.delivery("m", SETTINGS.max_receives)]).await;
    assert_eq!(
        again,
        vec!["m".to_string()],
        "it goes to the dead-letter queue"
    );
    assert!(w.store.is_stuck("d1", &w.batch.items[1].key));
    assert!(!w.store.is_stuck("d1", &w.batch.items[0].key));
    assert_eq!(w.dispatch().counts.stuck, 1);
    assert_eq!(w.dispatch().state, DispatchState::Sending, "not complete");
}

#[tokio::test]
async fn no_answer_makes_the_recipient_unknown_and_a_refusal_failed() {
    let w = world(3, false);
    w.provider.answer(
        &address(Channel::Email, 0),
        [SendError::Unknown("operation timed out".into())],
    );
    w.provider.answer(
        &address(Channel::Email, 1),
        [SendError::Permanent {
            code: "MessageRejected".into(),
            message: "Email address is not verified.".into(),
        }],
    );
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert!(again.is_empty(), "neither is sent again automatically");
    let unknown = w.state_of(0);
    assert_eq!(unknown.state, RecipientState::Unknown);
    assert!(unknown
        .reason
        .unwrap()
        .contains("not re-sent automatically"));
    let failed = w.state_of(1);
    assert_eq!(failed.state, RecipientState::Failed);
    assert_eq!(
        failed.reason.as_deref(),
        Some("MessageRejected: Email address is not verified.")
    );
    let d = w.dispatch();
    assert_eq!(
        (d.counts.sent, d.counts.failed, d.counts.unknown),
        (1, 1, 1)
    );
    assert_eq!(d.state, DispatchState::CompletedWithErrors);
}

#[tokio::test]
async fn a_recipient_whose_message_cannot_be_rendered_fails_alone() {
    let mut w = world(2, false);
    w.batch.items[0].fields.clear();
    w.run(vec![w.delivery("m", 1)]).await;
    let r = w.state_of(0);
    assert_eq!(r.state, RecipientState::Failed);
    assert!(r.reason.unwrap().starts_with("render_failed"));
    assert_eq!(w.state_of(1).state, RecipientState::Sent);
}

#[tokio::test]
async fn a_paused_dispatch_sets_its_messages_aside() {
    let w = world(4, false);
    w.store.set_state("d1", DispatchState::Paused);
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert!(again.is_empty(), "set aside, not redelivered");
    assert!(w.provider.sent().is_empty());
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Pending, 4)]));
}

#[tokio::test]
async fn an_unreadable_message_comes_again_without_holding_up_the_others() {
    let w = world(2, false);
    let bad = Delivery {
        message_id: "bad".into(),
        receives: 1,
        body: "{not json".into(),
    };
    let again = w.run(vec![bad, w.delivery("good", 1)]).await;
    assert_eq!(again, vec!["bad".to_string()]);
    assert_eq!(w.provider.sent().len(), 2);
}

#[tokio::test]
async fn results_the_store_did_not_take_are_written_again() {
    let w = world(3, false);
    w.store.fail_next_records(2);
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert!(again.is_empty());
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Sent, 3)]));
    assert_eq!(w.dispatch().counts.sent, 3);
}

#[tokio::test]
async fn results_written_whose_answer_was_lost_are_not_counted_twice() {
    let w = world(5, true);
    w.store.lose_next_record_answers(1);
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert!(again.is_empty());
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Sent, 5)]));
    assert_eq!(w.dispatch().counts.sent, 5, "counted once");
    assert_eq!(w.dispatch().state, DispatchState::Completed);
}

#[tokio::test]
async fn concurrent_messages_take_runs_of_slots_that_never_overlap() {
    let mut w = world(60, true);
    let all = std::mem::take(&mut w.batch.items);
    let batches: Vec<SendBatch> = all
        .chunks(10)
        .map(|c| SendBatch {
            dispatch_id: "d1".into(),
            items: c.to_vec(),
        })
        .collect();
    let deliveries: Vec<Delivery> = batches
        .iter()
        .enumerate()
        .map(|(i, b)| Delivery {
            message_id: format!("m{i}"),
            receives: 1,
            body: serde_json::to_string(b).unwrap(),
        })
        .collect();
    let (half_a, half_b) = deliveries.split_at(3);
    let (a, b) = tokio::join!(w.run(half_a.to_vec()), w.run(half_b.to_vec()));
    assert!(a.is_empty() && b.is_empty());
    assert_eq!(w.provider.sent().len(), 60);
    for channel in [Channel::Email, Channel::Sms] {
        let mut runs: Vec<(i64, i64)> = w
            .slots
            .runs()
            .into_iter()
            .filter(|(c, _, _)| *c == channel)
            .map(|(_, s, e)| (s, e))
            .collect();
        runs.sort();
        // One run per message; a machine under load may make a send late, and a late send
        // takes a run of its own, so more runs are allowed but never fewer.
        assert!(runs.len() >= 6, "{channel}: a run per message: {runs:?}");
        for pair in runs.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{channel}: runs overlap: {pair:?}");
        }
    }
}

/// Slots that are already half a second past when they are handed out: a sender that has
/// fallen behind its schedule (a slow machine, a slow store).
/// Send slots on a store whose answers come late: the first `late` runs start 500 ms in the
/// past by the time the sender has them.
struct PastSlots(Arc<MemorySlots>, std::sync::atomic::AtomicU32);

#[async_trait::async_trait]
impl SendSlots for PastSlots {
    async fn take(&self, channel: Channel, count: u32, interval: Duration) -> domain::Result<i64> {
        let start = self.0.take(channel, count, interval).await?;
        let left = self.1.load(std::sync::atomic::Ordering::SeqCst);
        if left == 0 {
            return Ok(start);
        }
        self.1.store(left - 1, std::sync::atomic::Ordering::SeqCst);
        Ok(start - 500)
    }
}

fn behind(late_runs: u32) -> World {
    let settings = SendSettings {
        email_rate_per_second: 100.0,
        ..SETTINGS
    };
    let slots = Arc::new(MemorySlots::default());
    world_on(
        20,
        false,
        settings,
        slots.clone(),
        Arc::new(PastSlots(slots, late_runs.into())),
    )
}

#[tokio::test]
async fn sends_behind_their_slots_take_one_new_run_together_and_never_go_outside_a_slot() {
    let w = behind(1);
    assert!(w.run(vec![w.delivery("m1", 1)]).await.is_empty());
    let mut sent: Vec<i64> = w.provider.sent().into_iter().map(|(_, _, at)| at).collect();
    assert_eq!(sent.len(), 20, "everyone is sent to");
    // The run that came back in the past, and one new run for all twenty late sends: one
    // write for the lot, not one per send.
    let runs = w.slots.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[1].2 - runs[1].1 >= 204,
        "twenty slots in the new run: {runs:?}"
    );
    // The sends keep the slots' spacing (10.2 ms at 100 per second), never bunched.
    sent.sort();
    let span = sent[19] - sent[0];
    assert!(span >= 19 * 10 - 5, "twenty sends spanned only {span} ms");
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Sent, 20)]));
}

#[tokio::test]
async fn sends_that_stay_behind_go_late_at_the_slots_spacing_after_their_runs() {
    let w = behind(u32::MAX);
    assert!(w.run(vec![w.delivery("m1", 1)]).await.is_empty());
    // The run, then four runs for the late sends, and no more writes after them.
    assert_eq!(w.slots.runs().len(), 5, "{:?}", w.slots.runs());
    let mut sent: Vec<i64> = w.provider.sent().into_iter().map(|(_, _, at)| at).collect();
    assert_eq!(sent.len(), 20, "everyone is sent to");
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Sent, 20)]));
    sent.sort();
    assert!(
        sent[19] - sent[0] >= 19 * 10 - 15,
        "twenty sends bunched into {} ms",
        sent[19] - sent[0]
    );
}

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

#[tokio::test]
async fn an_invocation_sends_only_what_fits_before_its_deadline_and_puts_the_rest_back() {
    // 40 emails at 10 a second take 4 s; the invocation has 6 s, less its margin (3 s).
    let w = world_with(
        40,
        false,
        SendSettings {
            email_rate_per_second: 10.0,
            ..SETTINGS
        },
    );
    let started = tokio::time::Instant::now();
    let again = w
        .run_within(vec![w.delivery("m", 1)], Duration::from_secs(6))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "done before the deadline"
    );
    assert!(
        again.is_empty(),
        "the message is not given back whole: {again:?}"
    );
    let first = w.provider.sent().len();
    assert!(
        (20..=35).contains(&first),
        "{first} sent in about 3 s at 10/s"
    );
    let states = w.states();
    assert_eq!(states.get(&RecipientState::Sent), Some(&first));
    assert_eq!(
        states.get(&RecipientState::Pending),
        Some(&(40 - first)),
        "no claim is left held: {states:?}"
    );
    let back = w.queue.take();
    assert_eq!(back.len(), 1, "the rest goes back as one message");
    assert_eq!(back[0].items.len(), 40 - first);
    // The message put back is sent by a later invocation: everyone once.
    let later = Delivery {
        message_id: "m2".into(),
        receives: 1,
        body: serde_json::to_string(&back[0]).unwrap(),
    };
    assert!(w.run(vec![later]).await.is_empty());
    let sent = w.provider.sent();
    let distinct: std::collections::BTreeSet<_> = sent.iter().map(|(to, _, _)| to).collect();
    assert_eq!((sent.len(), distinct.len()), (40, 40), "every address once");
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Sent, 40)]));
    assert!(w.queue.take().is_empty());
}

#[tokio::test]
async fn an_invocation_with_no_time_left_claims_nothing() {
    let w = world(5, false);
    let again = w
        .run_within(vec![w.delivery("m", 1)], Duration::from_millis(500))
        .await;
    assert!(again.is_empty());
    assert!(w.provider.sent().is_empty());
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Pending, 5)]));
    assert_eq!(w.queue.take()[0].items.len(), 5);
}

#[test]
fn the_margin_is_a_quarter_of_the_time_between_three_and_twenty_seconds() {
    assert_eq!(
        margin_for(Duration::from_secs(120)),
        Duration::from_secs(20)
    );
    assert_eq!(margin_for(Duration::from_secs(20)), Duration::from_secs(5));
    assert_eq!(margin_for(Duration::from_secs(2)), Duration::from_secs(3));
}

#[tokio::test]
async fn results_that_keep_colliding_are_retried_past_eight_attempts_and_never_dropped() {
    // Nine collisions in a row: one more than the sender's eight quick attempts.
    let w = world(10, false);
    w.store.collide_next_records(9);
    let again = w.run(vec![w.delivery("m", 1)]).await;
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(w.provider.sent().len(), 10);
    assert_eq!(w.states(), BTreeMap::from([(RecipientState::Sent, 10)]));
    let d = w.dispatch();
    assert_eq!((d.counts.sent, d.counts.unknown), (10, 0), "counters exact");
}
