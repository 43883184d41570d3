//! The sending engine against the emulator: at most one send per recipient under duplicate
//! and concurrent delivery, a throttling storm that pauses the dispatch and continues it by
//! itself, and a sender that dies between the provider's acceptance and the status write.
//!
//! Longer than 500 lines on purpose: one concern's end-to-end scenarios against the
//! emulator, each a test of its own, share the setup at the top of this file.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use domain::config::vars;
use domain::model::RecipientState;
use local::emulator::Emulator;
use local::runtime::Options;
use local::Local;
use mass_dispatch::proxy::{Fault, FaultProxy};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MANIFEST: &str = r#"{
  "title": "Sending test",
  "list": "list.csv",
  "channel": "column",
  "email": {"from": "Sender <notices@example.org>", "subject": "Hello {{ name }}", "text": "email.txt"},
  "sms": {"text": "sms.txt"},
  "phone_region": "DK"
}"#;

/// `n` recipients, every fourth by SMS. Returns the list and the addresses in list order.
fn list(n: u32) -> (Vec<u8>, Vec<String>) {
    let mut csv = String::from("recipient_id,name,email,phone,channel\n");
    let mut addresses = Vec::new();
    for i in 0..n {
        if i % 4 == 0 {
            let phone = format!("20{:06}", 200_000 + i);
            csv.push_str(&format!("{i},Name{i},,{phone},sms\n"));
            addresses.push(format!("+45{phone}"));
        } else {
            let email = format!("r{i}@example.net");
            csv.push_str(&format!("{i},Name{i},{email},,email\n"));
            addresses.push(email);
        }
    }
    (csv.into_bytes(), addresses)
}

async fn upload(local: &Local, id: &str, n: u32) -> Vec<String> {
    let (csv, addresses) = list(n);
    local
        .upload_files(
            id,
            &[
                ("list.csv", &csv),
                ("email.txt", b"Dear {{ name }}"),
                ("sms.txt", b"Hi {{ name }}"),
                ("manifest.json", MANIFEST.as_bytes()),
            ],
        )
        .await
        .unwrap();
    addresses
}

/// Every address the emulator accepted a message for, with how many times.
async fn delivered(emulator: &Emulator) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for m in emulator.sent_emails().await.unwrap() {
        for to in m.to {
            *seen.entry(to).or_default() += 1;
        }
    }
    for s in emulator.sent_sms().await.unwrap() {
        *seen.entry(s.to).or_default() += 1;
    }
    seen
}

/// The system on its own emulator, every call of the functions going through a fault proxy.
/// Rules added to the proxy before anything is uploaded apply to the whole dispatch.
async fn behind_proxy(options: Options) -> (Local, FaultProxy) {
    let emulator = Emulator::start().await.unwrap();
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    let options = Options {
        endpoint: Some(proxy.url.clone()),
        ..options
    };
    (Local::on(emulator, options).await.unwrap(), proxy)
}

/// Waits for validation to end.
async fn validated(local: &Local, id: &str) {
    local
        .portal()
        .wait_for(id, &["awaiting_approval"], Duration::from_secs(60), |_| {})
        .await
        .unwrap();
}

/// Waits for validation to end and approves through the API.
async fn approve(local: &Local, id: &str) {
    validated(local, id).await;
    let (status, body) = local
        .portal()
        .post(&format!("/dispatches/{id}/approve"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
}

/// Waits for the dispatch to complete, with or without errors.
async fn finished(local: &Local, id: &str) -> serde_json::Value {
    local
        .portal()
        .wait_for(
            id,
            &["completed", "completed_with_errors"],
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap()
}

/// The operator notices of the inbox, looked at a few times until one of `event` about
/// `dispatch` is among them (a notice follows the state change it reports).
async fn notices_until(
    local: &Local,
    inbox: &str,
    dispatch: &str,
    event: &str,
) -> Vec<(String, String, String, serde_json::Value)> {
    let mut notices = Vec::new();
    for _ in 0..20 {
        notices.extend(local.operator_notices(inbox).await.unwrap());
        if notices
            .iter()
            .any(|(id, e, _, _)| id == dispatch && e == event)
        {
            break;
        }
    }
    notices
}

/// The deadline of an invocation that has an hour.
fn an_hour() -> domain::Deadline {
    domain::Deadline::after(Duration::from_secs(3600))
}

fn once_each(addresses: &[String]) -> BTreeMap<String, usize> {
    addresses.iter().map(|a| (a.clone(), 1)).collect()
}

/// The ids of the messages a delivery gave back; each is one of the event's.
fn failed_ids(event: &SqsEvent, response: SqsBatchResponse) -> Vec<String> {
    let ids: Vec<String> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    for id in &ids {
        assert!(
            event
                .records
                .iter()
                .any(|r| r.message_id.as_ref() == Some(id)),
            "{id} is not a message of the delivery"
        );
    }
    ids
}

/// Runs of send slots (start, end) in order of start, after checking that none overlaps the
/// next.
fn never_overlapping(mut runs: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    runs.sort();
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "runs overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    runs
}

/// Quick sends (200 a second) and a quick schedule; `extra` settings come first, so a rate
/// among them replaces the quick one.
fn fast(extra: &[(&'static str, &str)]) -> Options {
    let mut overrides: Vec<(&'static str, String)> =
        extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    overrides.extend([
        (vars::EMAIL_RATE_PER_SECOND, "200".to_string()),
        (vars::SMS_RATE_PER_SECOND, "200".to_string()),
    ]);
    Options {
        overrides,
        tick_every: Duration::from_millis(500),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_delivered_twice_and_concurrently_still_sends_each_recipient_once() {
    // No senders of its own: the test plays the queue and delivers every message three times.
    // The schedule must not hand the waiting recipients out again meanwhile.
    let local = Local::start(Options {
        senders: Some(0),
        ..fast(&[(vars::STALL_SECS, "600")])
    })
    .await
    .unwrap();
    let portal = local.portal();
    let addresses = upload(&local, "twice", 60).await;
    approve(&local, "twice").await;

    // Collect every send message fan-out produced (kept invisible, not deleted). SQS may hand
    // a fan-out message to two invocations at once, so a recipient may be in two messages;
    // that is one more duplicate delivery for the claims to stop.
    let sqs = &local.system.clients.sqs;
    let mut records = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while covered.len() < addresses.len() {
        assert!(
            Instant::now() < deadline,
            "fan-out produced {} of {} recipients",
            covered.len(),
            addresses.len()
        );
        let out = sqs
            .receive_message()
            .queue_url(&local.system.config.send_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            let batch: domain::queue::SendBatch = serde_json::from_str(m.body().unwrap()).unwrap();
            covered.extend(batch.items.iter().map(|i| i.address.clone()));
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            records.push(r);
        }
    }
    assert_eq!(
        covered,
        addresses.iter().cloned().collect(),
        "fan-out hands out every recipient"
    );
    let mut event = SqsEvent::default();
    event.records = records;

    // The send function as it runs: under its own role.
    let deps = send::Deps::new(
        local.system.config.clone(),
        local.system.clients_of("SendFunction").unwrap(),
    );
    let (a, b) = tokio::join!(
        send::handle(&deps, event.clone(), an_hour()),
        send::handle(&deps, event.clone(), an_hour())
    );
    // A delivery may give a message back (its claims released) when a call on the way to the
    // emulator fails; SQS then delivers that message again. The third delivery of every
    // message, and any the test makes of messages given back, play that part.
    let mut given_back = Vec::new();
    for r in [a, b] {
        given_back.extend(failed_ids(&event, r.unwrap()));
    }
    if !given_back.is_empty() {
        println!("concurrent deliveries gave back {given_back:?}; they come again");
    }
    let mut next = event;
    for delivery in 3.. {
        let back = failed_ids(
            &next,
            send::handle(&deps, next.clone(), an_hour()).await.unwrap(),
        );
        if back.is_empty() {
            break;
        }
        assert!(
            delivery < 8,
            "messages {back:?} still given back after {delivery} deliveries"
        );
        next.records
            .retain(|r| r.message_id.as_ref().is_some_and(|id| back.contains(id)));
    }

    // Recipients whose slots all passed before they could go (a loaded machine) went back on
    // the queue as new messages: delivered here, as SQS would.
    let until = Instant::now() + Duration::from_secs(90);
    let d = loop {
        let d = portal.dispatch("twice").await.unwrap().unwrap();
        if d["state"] == "completed" {
            break d;
        }
        assert!(Instant::now() < until, "not completed: {d}");
        let out = sqs
            .receive_message()
            .queue_url(&local.system.config.send_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            continue;
        }
        let mut again = SqsEvent::default();
        for m in out.messages() {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            again.records.push(r);
        }
        println!(
            "{} messages put back on the queue come again",
            again.records.len()
        );
        send::handle(&deps, again, an_hour()).await.unwrap();
    };
    assert_eq!(
        d["counts"]["sent"],
        addresses.len() as u64,
        "each send is counted once"
    );
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttling_storm_pauses_the_dispatch_and_it_continues_by_itself() {
    let (local, proxy) = behind_proxy(fast(&[(vars::THROTTLE_PAUSE_SECS, "2")])).await;
    // SES lets 15 emails through, then throttles the next 25 calls.
    let storm = proxy.add(
        |s| s.is_send_email(),
        Fault::Throttle("TooManyRequestsException"),
        15,
        Some(25),
    );
    // SNS throttles 10 SMS after the first 5 (it answers 400 with code Throttling).
    let sms_storm = proxy.add(
        |s| s.is_sms_publish(),
        Fault::Throttle("Throttling"),
        5,
        Some(10),
    );
    let portal = local.portal();
    let inbox = local.operator_inbox("storm-inbox").await.unwrap();
    let addresses = upload(&local, "storm", 120).await;
    approve(&local, "storm").await;

    let mut states = Vec::new();
    let mut resume_at = None;
    let d = portal
        .wait_for("storm", &["completed"], Duration::from_secs(180), |d| {
            let st = d["state"].as_str().unwrap_or_default().to_string();
            if st == "waiting_for_continuation" && resume_at.is_none() {
                resume_at = d["resume_at"].as_str().map(String::from);
                // SES's or SNS's words, whichever throttled first.
                let reason = d["pause_reason"].as_str().unwrap_or_default();
                assert!(
                    reason.contains("TooManyRequestsException") || reason.contains("Throttling"),
                    "{d}"
                );
            }
            if states.last() != Some(&st) {
                states.push(st);
            }
        })
        .await
        .unwrap();
    assert_eq!(
        proxy.injected(storm),
        25,
        "the whole storm reached the senders"
    );
    assert_eq!(proxy.injected(sms_storm), 10, "and the SMS storm too");
    assert!(
        states.contains(&"waiting_for_continuation".to_string()),
        "states seen: {states:?}"
    );
    assert!(
        resume_at.is_some(),
        "the pause shows when sending continues"
    );
    assert_eq!(d["counts"]["sent"], addresses.len() as u64);
    assert_eq!(d["counts"]["failed"], 0, "a throttle fails nobody");
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    // The operators heard of the wait, with the provider's words, and of the completion.
    // The completion is announced just after the state changes: look a few times.
    let notices = notices_until(&local, &inbox, "storm", "completed").await;
    let waits: Vec<_> = notices
        .iter()
        .filter(|(id, e, _, _)| id == "storm" && e == "waiting_for_continuation")
        .collect();
    assert!(!waits.is_empty(), "{notices:?}");
    let detail: serde_json::Value =
        serde_json::from_str(waits[0].3["Message"].as_str().unwrap()).unwrap();
    assert!(
        detail["detail"]
            .as_str()
            .unwrap()
            .contains("sending continues at"),
        "{detail}"
    );
    assert!(
        notices
            .iter()
            .any(|(id, e, _, _)| id == "storm" && e == "completed"),
        "{notices:?}"
    );
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_that_cannot_record_after_the_provider_accepted_leaves_that_recipient_unknown() {
    let (local, proxy) = behind_proxy(fast(&[
        (vars::CLAIM_EXPIRY_SECS, "3"),
        (vars::STALL_SECS, "2"),
        (vars::RECIPIENTS_PER_MESSAGE, "5"),
    ]))
    .await;
    // The results of the message holding recipient 7 never get written, as if its sender
    // died right after SES accepted the mails.
    let lost = proxy.add(
        |s| {
            s.is_dynamodb("TransactWriteItems")
                && s.body.contains("\"R#7\"")
                && s.body.contains("\"sent\"")
        },
        Fault::ServerError,
        0,
        None,
    );
    let addresses = upload(&local, "lost", 30).await;
    approve(&local, "lost").await;

    let d = finished(&local, "lost").await;
    assert!(proxy.injected(lost) > 0);
    assert_eq!(d["state"], "completed_with_errors");
    // Every recipient of that one message (at most five) is unknown; the rest are sent.
    let unknown = d["counts"]["unknown"].as_u64().unwrap();
    assert!((1..=5).contains(&unknown), "{d}");
    assert_eq!(d["counts"]["sent"], addresses.len() as u64 - unknown);
    let mut unknown_records = 0;

    let store = adapters::dynamodb::Store::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &local.system.config.table_name,
    );
    for r in store
        .all_recipients("lost", local.system.config.key_shards)
        .await
        .unwrap()
    {
        if r.state == RecipientState::Unknown {
            unknown_records += 1;
            assert!(
                r.reason
                    .as_deref()
                    .unwrap_or_default()
                    .contains("not re-sent automatically"),
                "{:?}",
                r.reason
            );
        } else {
            assert_ne!(
                r.recipient_id, "7",
                "recipient 7's result was never written"
            );
            assert_eq!(
                r.state,
                RecipientState::Sent,
                "recipient {}",
                r.recipient_id
            );
        }
    }
    assert_eq!(unknown_records, unknown, "the counter matches the records");
    // The provider got every mail once, the unknown ones too, and nobody got anything twice.
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_errors_during_claims_and_status_writes_lose_and_double_nothing() {
    let (local, proxy) = behind_proxy(fast(&[(vars::STALL_SECS, "5")])).await;
    // Once sending is under way, 20 DynamoDB writes in a row fail with 500 (claims, results
    // with counters, slot reservations alike); the SDK's own retries absorb some, the rest
    // reach the code.
    let storm = proxy.add(
        |s| s.is_dynamodb("TransactWriteItems") || s.is_dynamodb("UpdateItem"),
        Fault::ServerError,
        10,
        Some(20),
    );
    let addresses = upload(&local, "flaky", 80).await;
    approve(&local, "flaky").await;
    let d = finished(&local, "flaky").await;
    assert_eq!(proxy.injected(storm), 20);
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(d["counts"]["sent"], addresses.len() as u64);
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_account_pauses_the_dispatch_and_a_resume_after_the_mend_sends_the_rest() {
    let (local, proxy) = behind_proxy(fast(&[])).await;
    // SES takes 10 emails, then refuses the account once.
    let refusal = proxy.add(
        |s| s.is_send_email(),
        Fault::Refuse("AccountSuspendedException"),
        10,
        Some(1),
    );
    let portal = local.portal();
    let inbox = local.operator_inbox("blocked-inbox").await.unwrap();
    let addresses = upload(&local, "blocked", 60).await;
    approve(&local, "blocked").await;
    let d = portal
        .wait_for("blocked", &["paused"], Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert_eq!(proxy.injected(refusal), 1);
    let reason = d["pause_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("AccountSuspendedException"), "{d}");
    assert_eq!(
        d["counts"]["failed"], 0,
        "a refused account fails nobody: {d}"
    );
    assert!(d["counts"]["sent"].as_u64().unwrap() < addresses.len() as u64);
    // It stays paused: waiting does not mend an account.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = portal.dispatch("blocked").await.unwrap().unwrap();
    assert_eq!(still["state"], "paused");

    // The operator mends the configuration and resumes: the rest goes out, once each.
    let (status, body) = portal.post("/dispatches/blocked/resume").await.unwrap();
    assert_eq!(status, 202, "{body}");
    let d = finished(&local, "blocked").await;
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(d["counts"]["sent"], addresses.len() as u64);
    assert_eq!(d["counts"]["failed"], 0);
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    let notices = notices_until(&local, &inbox, "blocked", "blocked").await;
    assert!(
        notices
            .iter()
            .any(|(id, e, _, _)| id == "blocked" && e == "blocked"),
        "{notices:?}"
    );
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_pause_stops_sending_within_seconds_and_resume_sends_only_the_rest() {
    // 90 emails at 10/s take 9 s: the pause, made after the first 10 sends, comes well before
    // the end even when the pause takes its 2 s and more to reach a sender.
    let options = Options {
        senders: Some(1),
        ..fast(&[
            (vars::EMAIL_RATE_PER_SECOND, "10"),
            (vars::SMS_RATE_PER_SECOND, "10"),
        ])
    };
    let local = Local::start(options).await.unwrap();
    let portal = local.portal();
    let addresses = upload(&local, "pausable", 120).await;
    validated(&local, "pausable").await;
    let (status, body) = portal.post("/dispatches/pausable/pause").await.unwrap();
    assert_eq!(status, 409, "only a sending dispatch can be paused: {body}");
    let (status, _) = portal.post("/dispatches/pausable/approve").await.unwrap();
    assert_eq!(status, 202);

    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered(&local.emulator).await.values().sum::<usize>() < 10 {
        assert!(Instant::now() < deadline, "sending did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = portal.post("/dispatches/pausable/pause").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paused");
    // Within a few seconds (a sender looks at the dispatch at least every 2 s while sending)
    // nothing more goes out, and it stays that way.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = delivered(&local.emulator).await.values().sum::<usize>();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = delivered(&local.emulator).await.values().sum::<usize>();
    assert_eq!(settled, later, "nothing is sent while paused");
    assert!(
        later < addresses.len(),
        "the pause came before the end ({later} sent)"
    );
    let d = portal.dispatch("pausable").await.unwrap().unwrap();
    assert_eq!(d["state"], "paused");

    let (status, body) = portal.post("/dispatches/pausable/resume").await.unwrap();
    assert_eq!(status, 202, "{body}");
    let d = portal
        .wait_for("pausable", &["completed"], Duration::from_secs(120), |_| {})
        .await
        .unwrap();
    assert_eq!(d["counts"]["sent"], addresses.len() as u64);
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_in_the_dead_letter_queue_after_five_receives() {
    let local = Local::start(fast(&[])).await.unwrap();
    let sqs = &local.system.clients.sqs;
    let dlq = local
        .system
        .stack
        .output("SendDeadLetterQueueUrl")
        .unwrap()
        .to_string();
    sqs.send_message()
        .queue_url(&local.system.config.send_queue_url)
        .message_body("{\"dispatch_id\": 42")
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let dead = loop {
        let out = sqs
            .receive_message()
            .queue_url(&dlq)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages().first() {
            break m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the poison message never reached the dead-letter queue"
        );
    };
    assert_eq!(dead.body(), Some("{\"dispatch_id\": 42"));
    let receives = dead
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        })
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        receives >= 5,
        "moved after the redrive limit, received {receives} times"
    );
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accounts_daily_quota_is_honoured_and_the_rest_waits_for_continuation() {
    let (local, proxy) = behind_proxy(Options {
        senders: Some(1),
        ..fast(&[])
    })
    .await;
    // An SES account that may send 50 a day and has sent 10: room for 40 more.
    let account = proxy.add(
        |s| s.is_get_account(),
        Fault::Respond(
            axum::http::StatusCode::OK,
            r#"{"SendQuota":{"Max24HourSend":50.0,"MaxSendRate":1000.0,"SentLast24Hours":10.0},"SendingEnabled":true,"ProductionAccessEnabled":true}"#,
        ),
        0,
        None,
    );
    let portal = local.portal();
    let mut csv = String::from("recipient_id,name,email,phone,channel\n");
    for i in 0..60 {
        csv.push_str(&format!("{i},Name{i},q{i}@example.net,,email\n"));
    }
    local
        .upload("quota", "list.csv", csv.into_bytes())
        .await
        .unwrap();
    local
        .upload("quota", "email.txt", b"Dear {{ name }}".to_vec())
        .await
        .unwrap();
    local
        .upload("quota", "sms.txt", b"Hi {{ name }}".to_vec())
        .await
        .unwrap();
    local
        .upload("quota", "manifest.json", MANIFEST.as_bytes().to_vec())
        .await
        .unwrap();
    approve(&local, "quota").await;

    let d = portal
        .wait_for(
            "quota",
            &["waiting_for_continuation"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert!(
        proxy.injected(account) >= 1,
        "the quota was read from the account"
    );
    assert!(
        d["pause_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("24-hour"),
        "{d}"
    );
    let resume_at = time::OffsetDateTime::parse(
        d["resume_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let wait = resume_at - time::OffsetDateTime::now_utc();
    assert!(
        wait > time::Duration::minutes(50),
        "continues when the quota has room again, in {wait}"
    );
    // Let any send in flight finish, then count: exactly what the quota allowed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = delivered(&local.emulator).await;
    assert_eq!(sent.len(), 40);
    assert!(sent.values().all(|n| *n == 1));
    let d = portal.dispatch("quota").await.unwrap().unwrap();
    assert_eq!(d["counts"]["sent"], 40);
    assert_eq!(d["state"], "waiting_for_continuation");
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_of_send_slots_taken_by_many_senders_at_once_never_overlap() {
    let local = Local::start(Options {
        senders: Some(0),
        ..fast(&[])
    })
    .await
    .unwrap();
    let store = adapters::dynamodb::Store::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &local.system.config.table_name,
    );
    let every = Duration::from_millis(20);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let rate = adapters::dynamodb::rates::SharedRate::new(store.clone(), "email");
            tokio::spawn(async move {
                let mut runs = Vec::new();
                for _ in 0..5 {
                    let start = rate.take(10, every).await.unwrap();
                    runs.push((start, start + 200));
                }
                runs
            })
        })
        .collect();
    let mut runs = Vec::new();
    for t in tasks {
        runs.extend(t.await.unwrap());
    }
    assert_eq!(runs.len(), 30);
    let runs = never_overlapping(runs);
    // Taken back to back: 30 runs of 200 ms make a schedule of six seconds, give or take
    // the gaps while nobody was asking.
    let span = runs.last().unwrap().1 - runs[0].0;
    assert!(span >= 6000, "{span} ms");
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recipients_of_dead_lettered_messages_are_counted_as_stuck_and_stay_pending() {
    // The schedule looks at the dispatch often: it must not hand stuck recipients out again.
    let local = Local::start(fast(&[
        (vars::RECIPIENTS_PER_MESSAGE, "4"),
        (vars::STALL_SECS, "2"),
    ]))
    .await
    .unwrap();
    let portal = local.portal();
    let addresses = upload(&local, "stuck", 12).await;
    validated(&local, "stuck").await;
    // The frozen package disappears before sending: every send message fails until the
    // queue gives up on it.
    let s3 = aws_sdk_s3::Client::new(&local.sdk);
    s3.delete_object()
        .bucket(&local.system.config.reports_bucket)
        .key("dispatches/stuck/package.json")
        .send()
        .await
        .unwrap();
    let (status, _) = portal.post("/dispatches/stuck/approve").await.unwrap();
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(120);
    let d = loop {
        let d = portal.dispatch("stuck").await.unwrap().unwrap();
        if d["counts"]["stuck"].as_u64() == Some(addresses.len() as u64) {
            break d;
        }
        assert!(Instant::now() < deadline, "not all counted as stuck: {d}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(d["state"], "sending", "{d}");
    assert_eq!(d["counts"]["sent"], 0);
    assert!(delivered(&local.emulator).await.is_empty());
    let store = adapters::dynamodb::Store::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &local.system.config.table_name,
    );
    let records = store
        .all_recipients("stuck", local.system.config.key_shards)
        .await
        .unwrap();
    assert_eq!(records.len(), addresses.len());
    assert!(records.iter().all(|r| r.state == RecipientState::Pending));
    // Every message is in the dead-letter queue.
    let dlq = local
        .system
        .stack
        .output("SendDeadLetterQueueUrl")
        .unwrap()
        .to_string();
    // The queue moves a message on when it would hand it out once more.
    let waiting = loop {
        let attrs = local
            .system
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        let waiting: usize = attrs
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if waiting >= 3 || Instant::now() > deadline {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(waiting >= 3, "{waiting} messages in the dead-letter queue");
    // Nothing hands them out again by itself, so nothing is counted twice.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let d = portal.dispatch("stuck").await.unwrap().unwrap();
    assert_eq!(d["counts"]["stuck"], addresses.len() as u64, "{d}");
    assert!(delivered(&local.emulator).await.is_empty());
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_answers_and_dropped_connections_neither_lose_nor_double_anything() {
    let (local, proxy) = behind_proxy(fast(&[])).await;
    // Claim and result transactions that the emulator applied, whose answers never came back:
    // the SDK tries them again and the store recognises its own earlier write.
    let writes = proxy.add(
        |s| s.is_dynamodb("TransactWriteItems"),
        Fault::Reset { forwarded: true },
        3,
        Some(6),
    );
    // One email the emulator accepted, whose answer never came back.
    let mail = proxy.add(
        |s| s.is_send_email(),
        Fault::Reset { forwarded: true },
        10,
        Some(1),
    );
    // A provider that answers five sends slowly (well within the attempt timeout).
    let slow = proxy.add(
        |s| s.is_send_email(),
        Fault::Delay(Duration::from_millis(1500)),
        20,
        Some(5),
    );
    let addresses = upload(&local, "reset", 60).await;
    approve(&local, "reset").await;
    let d = finished(&local, "reset").await;
    assert_eq!(proxy.injected(writes), 6);
    assert_eq!(proxy.injected(mail), 1);
    assert_eq!(proxy.injected(slow), 5);
    assert_eq!(d["state"], "completed_with_errors", "{d}");
    assert_eq!(d["counts"]["unknown"], 1, "{d}");
    assert_eq!(d["counts"]["sent"], addresses.len() as u64 - 1, "{d}");
    let store = adapters::dynamodb::Store::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &local.system.config.table_name,
    );
    let records = store
        .all_recipients("reset", local.system.config.key_shards)
        .await
        .unwrap();
    let unknown: Vec<_> = records
        .iter()
        .filter(|r| r.state == RecipientState::Unknown)
        .collect();
    assert_eq!(unknown.len(), 1);
    assert!(unknown[0]
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains("not re-sent automatically"));
    assert_eq!(
        records
            .iter()
            .filter(|r| r.state == RecipientState::Sent)
            .count(),
        addresses.len() - 1
    );
    // The emulator took every message once, the one whose answer was lost too.
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_slots_are_had_by_every_sender_when_the_store_answers_slower_than_a_slot_lasts() {
    // 150 senders ask at once for single slots 5 ms apart while every DynamoDB answer takes
    // 30 ms more: the schedule is behind the clock by the time many answers arrive. Each
    // sender must still get its slots, and no two runs may overlap.
    let (local, proxy) = behind_proxy(Options {
        senders: Some(0),
        ..fast(&[])
    })
    .await;
    proxy.add(
        |s| s.target.starts_with("DynamoDB"),
        Fault::Delay(Duration::from_millis(30)),
        0,
        None,
    );
    let store = adapters::dynamodb::Store::from_config(&local.system.clients, &local.system.config);
    let every = Duration::from_millis(5);
    let tasks: Vec<_> = (0..150)
        .map(|_| {
            let rate = adapters::dynamodb::rates::SharedRate::new(store.clone(), "email");
            tokio::spawn(async move {
                let mut runs = Vec::new();
                for _ in 0..3 {
                    let asked = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
                    let start = rate.take(1, every).await?;
                    assert!(start as i128 >= asked, "slot at {start}, asked at {asked}");
                    runs.push((start, start + 5));
                }
                Ok::<Vec<(i64, i64)>, domain::Error>(runs)
            })
        })
        .collect();
    let mut runs = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => runs.extend(r),
            Err(e) => refused.push(e.to_string()),
        }
    }
    assert!(
        refused.is_empty(),
        "{} senders got no slot: {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(runs.len(), 450);
    never_overlapping(runs);
    local.system.stop().await;
}

/// A send function with a short timeout and a slow rate: each invocation claims only what it
/// can send before its deadline and puts the rest back on the queue, so no invocation runs
/// into its timeout, nobody is left `sending` or `unknown`, and everyone is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_send_timeout_at_a_slow_rate_leaves_nobody_sending_and_sends_everyone_once() {
    let local = Local::start(Options {
        timeouts: vec![("SendFunction", Duration::from_secs(10))],
        senders: Some(2),
        // One shard and one message of all 40, so that one invocation cannot send them all.
        ..fast(&[
            (vars::EMAIL_RATE_PER_SECOND, "3"),
            (vars::SMS_RATE_PER_SECOND, "3"),
            (vars::KEY_SHARDS, "1"),
            (vars::RECIPIENTS_PER_MESSAGE, "99"),
        ])
    })
    .await
    .unwrap();
    let id = "short-timeout";
    let addresses = upload(&local, id, 40).await;
    approve(&local, id).await;
    let d = finished(&local, id).await;
    let c = &d["counts"];
    assert_eq!(
        (&c["sent"], &c["failed"], &c["unknown"], &c["stuck"]),
        (&40.into(), &0.into(), &0.into(), &0.into()),
        "{d}"
    );
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    let (runs, timed_out) = local.system.invocations.of("SendFunction");
    assert_eq!(timed_out, 0, "no send invocation ran into its timeout");
    // 30 emails at 3 a second take 10 s: more than one 10 s invocation, which sends for 7.5 s.
    assert!(runs >= 2, "{runs} send invocations");
    // What the first could not send it put back on the send queue (under its own role).
    let allowed = local.emulator.allowed_to("SendFunction").unwrap();
    assert!(
        allowed.get("sqs:SendMessage").is_some_and(|n| *n >= 1),
        "the sender put nothing back: {allowed:?}"
    );
}

/// Messages waiting in each of the stack's dead-letter queues, by output name.
async fn dead_lettered(local: &Local) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for queue in [
        "FanoutDeadLetterQueueUrl",
        "SendDeadLetterQueueUrl",
        "NotificationDeadLetterQueueUrl",
    ] {
        let url = local.system.stack.output(queue).unwrap().to_string();
        let attrs = local
            .system
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        let waiting = attrs
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        out.insert(queue, waiting);
    }
    out
}

/// 64 senders on one dispatch, with the emulator's transaction conflicts on and each
/// transaction held longer than by default so that they collide often: every recipient is
/// sent once, the counters are exact, nothing is dead-lettered, and an operator's pause in
/// the middle of it answers 200 and stops the sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_senders_that_collide_send_each_once_count_exactly_and_a_pause_stops_them() {
    let emulator = Emulator::start_with(&[("DYNAMODB_TRANSACTION_HOLD_MS", "50")])
        .await
        .unwrap();
    let local = Local::on(
        emulator,
        Options {
            senders: Some(64),
            ..fast(&[
                (vars::EMAIL_RATE_PER_SECOND, "50"),
                (vars::SMS_RATE_PER_SECOND, "50"),
                (vars::RECIPIENTS_PER_MESSAGE, "5"),
            ])
        },
    )
    .await
    .unwrap();
    let portal = local.portal();
    let id = "sixty-four";
    let addresses = upload(&local, id, 1200).await;
    approve(&local, id).await;

    // Counted from the emulator's log of what the senders were allowed to call: reading
    // every sent message back each time would be a load of its own on the emulator.
    let sends = || {
        let allowed = local.emulator.allowed_to("SendFunction").unwrap();
        ["ses:SendEmail", "sns:Publish"]
            .iter()
            .map(|a| allowed.get(*a).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while sends() < 200 {
        assert!(Instant::now() < deadline, "sending did not get going");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = portal
        .post(&format!("/dispatches/{id}/pause"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paused");
    // A sender looks at the dispatch at least every 5 s while sending; sixty-four of them
    // keep the emulator busy, so its answers take a while longer.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = sends();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = sends();
    assert_eq!(settled, later, "nothing is sent while paused");
    assert!(
        later < addresses.len() as u64,
        "the pause came before the end ({later} sent)"
    );

    let (status, body) = portal
        .post(&format!("/dispatches/{id}/resume"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let d = portal
        .wait_for(id, &["completed"], Duration::from_secs(180), |_| {})
        .await
        .unwrap();
    let c = &d["counts"];
    assert_eq!(
        (&c["sent"], &c["failed"], &c["unknown"], &c["stuck"]),
        (&1200.into(), &0.into(), &0.into(), &0.into()),
        "{d}"
    );
    assert_eq!(delivered(&local.emulator).await, once_each(&addresses));
    // The counters agree with the records.
    let store = adapters::dynamodb::Store::from_config(&local.system.clients, &local.system.config);
    let shards = store.get_dispatch(id).await.unwrap().unwrap().shards;
    let records = store.all_recipients_keyed(id, shards).await.unwrap();
    assert_eq!(records.len(), 1200);
    assert!(
        records.iter().all(|(_, r)| r.state == RecipientState::Sent),
        "every record is sent"
    );
    let conflicts = local.emulator.conflicts().unwrap();
    assert!(
        conflicts.get("TransactWriteItems").is_some_and(|n| *n > 0),
        "the senders' transactions collided: {conflicts:?}"
    );
    assert!(
        dead_lettered(&local).await.values().all(|n| *n == 0),
        "{:?}",
        dead_lettered(&local).await
    );
    local.system.stop().await;
}
