//! Receipts against the emulator: SES and SMS event notifications (the JSON in `events/`)
//! published to the stack's receipts topic reach the receipts function through the queue
//! the topic feeds, are recorded on the recipients they name, put hard bounces, complaints
//! and opt-outs on the suppression list that the next dispatch's validation applies, and
//! refresh the history of a dispatch that has already completed.

use adapters::dynamodb::Store;
use domain::config::vars;
use domain::model::{Receipt, Recipient, RecipientState};
use local::runtime::Options;
use local::Local;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MANIFEST: &str = r#"{
  "title": "Receipts test",
  "list": "list.csv",
  "channel": "column",
  "email": {"from": "Sender <notices@example.org>", "subject": "Hello {{ name }}", "text": "email.txt"},
  "sms": {"text": "sms.txt"},
  "phone_region": "DK"
}"#;

/// Six email recipients (a–f) and two SMS recipients (s1, s2).
const LIST: &str = "recipient_id,name,email,phone,channel
a,Anna,a@example.net,,email
b,Bo,b@example.net,,email
c,Carl,c@example.net,,email
d,Dorte,d@example.net,,email
e,Eva,e@example.net,,email
f,Finn,f@example.net,,email
s1,Sif,,20300001,sms
s2,Sune,,20300002,sms
";

fn event(name: &str) -> Value {
    let path = local::emulator::repo_root().join("events").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// An SES event from `events/` for one of our messages, at `at`.
fn ses(name: &str, message_id: &str, address: &str, at: &str) -> Value {
    let mut e = event(name);
    e["mail"]["messageId"] = json!(message_id);
    e["mail"]["destination"] = json!([address]);
    e["mail"]["timestamp"] = json!(at);
    for (obj, list) in [
        ("bounce", "bouncedRecipients"),
        ("complaint", "complainedRecipients"),
        ("deliveryDelay", "delayedRecipients"),
    ] {
        if let Some(first) = e[obj][list].get_mut(0) {
            first["emailAddress"] = json!(address);
        }
    }
    for obj in ["delivery", "bounce", "complaint", "deliveryDelay"] {
        if e[obj].is_object() {
            e[obj]["timestamp"] = json!(at);
        }
    }
    e
}

/// An SMS event from `events/` for one of our messages.
fn sms(name: &str, message_id: &str, number: &str) -> Value {
    let mut e = event(name);
    e["messageId"] = json!(message_id);
    e["destinationPhoneNumber"] = json!(number);
    e["eventTimestamp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() * 1000);
    e
}

async fn upload(local: &Local, id: &str) {
    for (name, body) in [
        ("list.csv", LIST.as_bytes()),
        ("email.txt", b"Dear {{ name }}".as_slice()),
        ("sms.txt", b"Hi {{ name }}".as_slice()),
        ("manifest.json", MANIFEST.as_bytes()),
    ] {
        local.upload(id, name, body.to_vec()).await.unwrap();
    }
}

async fn publish(local: &Local, event: &Value) {
    local
        .system
        .clients
        .sns
        .publish()
        .topic_arn(local.system.stack.output("ReceiptsTopicArn").unwrap())
        .message(event.to_string())
        .send()
        .await
        .unwrap();
}

fn store(local: &Local) -> Store {
    Store::from_config(&local.system.clients, &local.system.config)
}

async fn recipients(local: &Local, id: &str) -> BTreeMap<String, Recipient> {
    let d = store(local).get_dispatch(id).await.unwrap().unwrap();
    store(local)
        .all_recipients(id, d.shards)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.recipient_id.clone(), r))
        .collect()
}

/// Polls until `check` holds, or fails with the last value seen.
async fn eventually<T: std::fmt::Debug, F, Fut>(
    what: &str,
    mut look: F,
    check: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = look().await;
        if check(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what} did not happen; last seen: {v:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn send_and_finish(local: &Local, id: &str, ended_in: &str) -> Value {
    let portal = local.portal();
    portal
        .wait_for(id, &["awaiting_approval"], Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    let (status, body) = portal
        .post(&format!("/dispatches/{id}/approve"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let d = portal
        .wait_for(
            id,
            &["completed", "completed_with_errors"],
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(d["state"], ended_in, "{d}");
    d
}

/// The history CSV as rows keyed by recipient id, column name to value.
async fn history(local: &Local, id: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let (status, body) = local
        .portal()
        .get(&format!("/dispatches/{id}/history"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        documents::history::HISTORY_COLUMNS
    );
    reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[0] == "recipient")
        .map(|r| {
            let row: BTreeMap<String, String> = headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            (row["recipient_id"].clone(), row)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_are_recorded_suppress_addresses_and_refresh_the_history() {
    let local = Local::start(Options {
        overrides: vec![
            (vars::EMAIL_RATE_PER_SECOND, "100".to_string()),
            (vars::SMS_RATE_PER_SECOND, "100".to_string()),
        ],
        tick_every: Duration::from_millis(500),
        ..Options::default()
    })
    .await
    .unwrap();

    // Everyone sent to: the dispatch closes by itself.
    upload(&local, "first").await;
    let d = send_and_finish(&local, "first", "completed").await;
    assert_eq!(d["completion"], "automatic", "{d}");
    let sent = recipients(&local, "first").await;
    assert!(sent.values().all(|r| r.state == RecipientState::Sent));
    let mid = |id: &str| sent[id].message_id.clone().unwrap();
    let before = history(&local, "first").await;
    assert!(before.values().all(|r| r["receipt"].is_empty()));

    // The providers report, after completion.
    let t0 = "2026-11-22T10:00:00.000Z";
    let later = "2026-11-22T10:30:00.000Z";
    for e in [
        ses("ses-delivery.json", &mid("a"), "a@example.net", t0),
        ses("ses-bounce.json", &mid("b"), "b@example.net", t0),
        ses("ses-delivery.json", &mid("c"), "c@example.net", t0),
        ses("ses-complaint.json", &mid("c"), "c@example.net", later),
        ses("ses-reject.json", &mid("d"), "d@example.net", t0),
        ses("ses-rendering-failure.json", &mid("e"), "e@example.net", t0),
        ses("ses-delivery-delay.json", &mid("f"), "f@example.net", t0),
        sms("sms-delivered.json", &mid("s1"), "+4520300001"),
        sms("sms-opted-out.json", &mid("s2"), "+4520300002"),
        // A weaker event after a stronger one and a repeat change nothing.
        ses("ses-delivery-delay.json", &mid("a"), "a@example.net", later),
        ses("ses-bounce.json", &mid("b"), "b@example.net", t0),
    ] {
        publish(&local, &e).await;
    }
    // An event for a message this system never sent, from long ago, is dropped.
    publish(
        &local,
        &ses(
            "ses-delivery.json",
            "not-ours",
            "x@example.net",
            "2020-01-01T00:00:00.000Z",
        ),
    )
    .await;

    let expected = BTreeMap::from([
        ("a", Receipt::Delivered),
        ("b", Receipt::Bounced),
        ("c", Receipt::Complained),
        ("d", Receipt::Rejected),
        ("e", Receipt::RenderingFailed),
        ("f", Receipt::Delayed),
        ("s1", Receipt::Delivered),
        ("s2", Receipt::Undelivered),
    ]);
    let got = eventually(
        "every receipt recorded",
        || recipients(&local, "first"),
        |rs| expected.iter().all(|(id, r)| rs[*id].receipt == Some(*r)),
    )
    .await;
    assert_eq!(got["a"].receipt_at.as_deref(), Some(t0));
    assert_eq!(got["c"].receipt_at.as_deref(), Some(later));
    assert_eq!(
        got["b"].receipt_detail.as_deref(),
        Some("Permanent/General: smtp; 550 5.1.1 user unknown")
    );
    assert_eq!(got["d"].receipt_detail.as_deref(), Some("Bad content"));
    assert!(got["s2"]
        .receipt_detail
        .as_deref()
        .unwrap()
        .starts_with("OPTED_OUT"));
    // Receipts do not change what was sent.
    assert!(got.values().all(|r| r.state == RecipientState::Sent));

    // The completed dispatch's history is written again with the receipts.
    let rows = eventually(
        "the history refreshed",
        || history(&local, "first"),
        |h| h["c"]["receipt"] == "complained" && h["s2"]["receipt"] == "undelivered",
    )
    .await;
    assert_eq!(rows["a"]["receipt"], "delivered");
    assert_eq!(rows["a"]["receipt_date"], t0);
    assert_eq!(rows["a"]["reachable"], "yes");
    assert_eq!(rows["a"]["external_id"], mid("a"));
    assert_eq!(rows["a"]["shipment_state"], "delivered");
    assert_eq!(rows["b"]["reachable"], "no");
    assert_eq!(rows["b"]["shipment_state"], "bounced");
    assert_eq!(
        rows["b"]["shipment_error"],
        "Permanent/General: smtp; 550 5.1.1 user unknown"
    );
    assert_eq!(rows["f"]["shipment_state"], "delayed");
    assert_eq!(rows["f"]["shipment_error"], "");
    assert!(!rows["s1"]["shipment_date"].is_empty());
    let (status, summary) = local
        .portal()
        .get("/dispatches/first/history/summary")
        .await
        .unwrap();
    assert_eq!(status, 200, "{summary}");
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["receipts"]["delivered"], 2, "{summary}");
    assert_eq!(summary["receipts"]["bounced"], 1, "{summary}");
    assert_eq!(summary["completion"], "automatic");
    let actions: Vec<&str> = summary["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["start", "upload", "validate", "approve", "completed"],
        "{summary}"
    );

    // The next dispatch to the same people leaves out the bounced, the complainer and the
    // opted-out number, says why, and waits for a manual close.
    upload(&local, "second").await;
    let d = send_and_finish(&local, "second", "completed_with_errors").await;
    assert_eq!(d["counts"]["excluded"], 3, "{d}");
    assert_eq!(d["counts"]["valid"], 5, "{d}");
    assert_eq!(d["counts"]["sent"], 5, "{d}");
    let second = recipients(&local, "second").await;
    for id in ["b", "c", "s2"] {
        assert_eq!(second[id].state, RecipientState::Excluded, "{id}");
        assert!(
            second[id]
                .reason
                .as_deref()
                .unwrap()
                .starts_with("suppressed: the address is on the suppression list"),
            "{:?}",
            second[id].reason
        );
    }
    let (_, report) = local
        .portal()
        .get("/dispatches/second/report")
        .await
        .unwrap();
    assert_eq!(report.matches(",suppressed,").count(), 3, "{report}");
    assert!(report.contains("3,b,email,suppressed,the address is on the suppression list: bounced on 2026-11-22T10:00:00.000Z"), "{report}");
    let mut per_address: BTreeMap<String, usize> = BTreeMap::new();
    for m in local.emulator.sent_emails().await.unwrap() {
        for to in m.to {
            *per_address.entry(to).or_default() += 1;
        }
    }
    for s in local.emulator.sent_sms().await.unwrap() {
        *per_address.entry(s.to).or_default() += 1;
    }
    assert_eq!(per_address["b@example.net"], 1);
    assert_eq!(per_address["c@example.net"], 1);
    assert_eq!(per_address["+4520300002"], 1);
    assert_eq!(per_address["a@example.net"], 2);
    assert_eq!(per_address["+4520300001"], 2);

    // A closed dispatch cannot be closed again; one completed by itself cannot be closed.
    let (status, body) = local
        .portal()
        .post("/dispatches/second/close")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "closed");
    assert_eq!(body["completion"], "manual");
    assert!(body["closed_at"].is_string());
    let job = local
        .portal()
        .wait_for_job(
            body["history_job"]["link"].as_str().unwrap(),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    let (status, _) = local
        .portal()
        .post("/dispatches/second/close")
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (status, _) = local
        .portal()
        .post("/dispatches/first/close")
        .await
        .unwrap();
    assert_eq!(status, 409);
    let rows = history(&local, "second").await;
    assert_eq!(rows["b"]["reachable"], "no");
    assert_eq!(rows["b"]["shipment_state"], "excluded");
    assert!(rows["b"]["shipment_error"].starts_with("suppressed:"));
    let (_, summary) = local
        .portal()
        .get("/dispatches/second/history/summary")
        .await
        .unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    let last = summary["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "closed", "{summary}");
    assert_eq!(summary["state"], "closed");

    // The dispatch's own exclusions: a status code (90, dead) and missing consent leave valid
    // rows out with the reason, next to an address the suppression list holds.
    let manifest = MANIFEST.replace(
        r#""phone_region": "DK""#,
        r#""phone_region": "DK",
  "exclusions": {"status_column": "status", "excluded_codes": ["80", "90"], "consent_column": "consent"}"#,
    );
    for (name, body) in [
        (
            "list.csv",
            "recipient_id,name,email,phone,channel,status,consent
g,Gry,g@example.net,,email,01,yes
h,Hans,h@example.net,,email,90,yes
i,Ida,i@example.net,,email,01,
b,Bo,b@example.net,,email,01,ja
"
            .as_bytes(),
        ),
        ("email.txt", b"Dear {{ name }}".as_slice()),
        ("sms.txt", b"Hi {{ name }}".as_slice()),
        ("manifest.json", manifest.as_bytes()),
    ] {
        local.upload("third", name, body.to_vec()).await.unwrap();
    }
    let d = send_and_finish(&local, "third", "completed_with_errors").await;
    assert_eq!(d["counts"]["excluded"], 3, "{d}");
    assert_eq!(d["counts"]["sent"], 1, "{d}");
    let third = recipients(&local, "third").await;
    assert_eq!(third["g"].state, RecipientState::Sent);
    let reasons: BTreeMap<&str, &str> = ["h", "i", "b"]
        .into_iter()
        .map(|id| {
            assert_eq!(third[id].state, RecipientState::Excluded, "{id}");
            (
                id,
                third[id]
                    .reason
                    .as_deref()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("b", "suppressed"),
            ("h", "excluded_status"),
            ("i", "no_consent")
        ])
    );
    let emails = local.emulator.sent_emails().await.unwrap();
    for (address, times) in [
        ("g@example.net", 1),
        ("h@example.net", 0),
        ("i@example.net", 0),
    ] {
        assert_eq!(
            emails
                .iter()
                .filter(|m| m.to.iter().any(|t| t == address))
                .count(),
            times,
            "{address}"
        );
    }

    // A receipt that cannot be read is not lost: after the queue's receive limit it waits in
    // the dead-letter queue.
    let sqs = &local.system.clients.sqs;
    sqs.send_message()
        .queue_url(local.system.stack.output("ReceiptsQueueUrl").unwrap())
        .message_body("this is not an event")
        .send()
        .await
        .unwrap();
    let dlq = local
        .system
        .stack
        .output("ReceiptsDeadLetterQueueUrl")
        .unwrap()
        .to_string();
    let bodies = eventually(
        "the unreadable receipt in the dead-letter queue",
        || async {
            sqs.receive_message()
                .queue_url(&dlq)
                .wait_time_seconds(1)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap()
                .messages()
                .iter()
                .filter_map(|m| m.body().map(String::from))
                .collect::<Vec<_>>()
        },
        |b| !b.is_empty(),
    )
    .await;
    assert_eq!(bodies, ["this is not an event"]);
    local.system.stop().await;
}

/// A hard bounce of an email follows the recipient up on the next channel of the dispatch's
/// fallback order, once: here the letter, produced as a new send attempt after the dispatch
/// had completed; the history row shows both. A complaint, a delivered message and a
/// recipient with no later channel get no follow-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hard_bounce_is_followed_up_once_by_letter_and_the_history_shows_both() {
    let local = Local::start(Options {
        overrides: vec![
            (vars::EMAIL_RATE_PER_SECOND, "100".to_string()),
            (vars::LETTER_RATE_PER_SECOND, "100".to_string()),
        ],
        tick_every: Duration::from_millis(500),
        ..Options::default()
    })
    .await
    .unwrap();
    let id = "bounce-to-letter";
    let manifest = r#"{"title": "Follow-ups", "list": "list.csv", "channel": "column",
      "fallback": ["email", "letter"],
      "email": {"from": "Sender <notices@example.org>", "subject": "Hello {{ name }}", "text": "email.txt"},
      "letter": {"subject": "Hello", "text": "letter.md", "sender": "Town Hall", "home_country": "DK"}}"#;
    let list = "recipient_id,name,email,address,postcode,city\n\
        a,Anna,a@example.net,Storegade 1,8000,Aarhus C\n\
        b,Bo,b@example.net,Storegade 2,8000,Aarhus C\n\
        c,Carl,c@example.net,,,\n";
    for (name, body) in [
        ("list.csv", list.as_bytes()),
        ("email.txt", b"Dear {{ name }}".as_slice()),
        ("letter.md", b"Dear {{ name }}, by post.".as_slice()),
        ("manifest.json", manifest.as_bytes()),
    ] {
        local.upload(id, name, body.to_vec()).await.unwrap();
    }
    let d = send_and_finish(&local, id, "completed").await;
    assert_eq!(d["counts"]["sent"], 3, "{d}");
    let before = recipients(&local, id).await;
    assert_eq!(before["a"].fallbacks.len(), 1, "a letter can reach Anna");
    assert!(
        before["c"].fallbacks.is_empty(),
        "Carl has no postal address"
    );
    let now = domain::model::now_rfc3339();

    // Anna's email bounces for good (twice: the provider repeats itself); Bo complains
    // (he got it); Carl's bounces, but nothing else can reach him.
    let a_id = before["a"].message_id.clone().unwrap();
    let bounce = ses("ses-bounce.json", &a_id, "a@example.net", &now);
    publish(&local, &bounce).await;
    publish(&local, &bounce).await;
    let b_id = before["b"].message_id.clone().unwrap();
    publish(
        &local,
        &ses("ses-complaint.json", &b_id, "b@example.net", &now),
    )
    .await;
    let c_id = before["c"].message_id.clone().unwrap();
    publish(
        &local,
        &ses("ses-bounce.json", &c_id, "c@example.net", &now),
    )
    .await;

    let after = eventually(
        "Anna's letter",
        || recipients(&local, id),
        |r| r["a"].state == RecipientState::Created,
    )
    .await;
    let a = &after["a"];
    assert_eq!(a.channel, Some(domain::model::Channel::Letter));
    assert_eq!(
        a.address.as_deref(),
        Some("Anna\nStoregade 1\n8000 Aarhus C")
    );
    assert_eq!(a.send_attempt, 2);
    assert!(a.followed_up_at.is_some());
    let previous = a.previous_reason.clone().unwrap_or_default();
    assert!(
        previous.starts_with("email to a@example.net: bounced (Permanent"),
        "{previous}"
    );
    let document = a.message_id.clone().expect("the letter's document");
    assert!(
        document.starts_with(&format!("dispatches/{id}/letters/")),
        "{document}"
    );
    assert_eq!(after["b"].state, RecipientState::Sent);
    assert_eq!(after["b"].channel, Some(domain::model::Channel::Email));
    assert_eq!(after["c"].state, RecipientState::Sent);
    assert_eq!(after["c"].channel, Some(domain::model::Channel::Email));

    // The dispatch completes again, counting Anna as created; the history shows both
    // attempts on her row.
    let d = eventually(
        "the dispatch completed again with the letter",
        || async { local.portal().dispatch(id).await.unwrap() },
        |d| {
            d.as_ref()
                .is_some_and(|d| d["state"] == "completed" && d["counts"]["created"] == 1)
        },
    )
    .await
    .unwrap();
    assert_eq!(d["counts"]["sent"], 2, "{d}");
    assert_eq!(d["counts"]["created"], 1, "{d}");
    let rows = eventually(
        "the history with the letter",
        || history(&local, id),
        |h| h.get("a").is_some_and(|r| r["state"] == "created"),
    )
    .await;
    assert_eq!(rows["a"]["channel"], "letter");
    assert_eq!(rows["a"]["send_attempt"], "2");
    assert!(rows["a"]["previous_attempt"].starts_with("email to a@example.net: bounced"));

    // Once: the same bounce again changes nothing, and the audit has one follow-up.
    publish(&local, &bounce).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, audit) = local
        .portal()
        .get(&format!("/dispatches/{id}/audit"))
        .await
        .unwrap();
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let follow_ups: Vec<&Value> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "follow_up")
        .collect();
    assert_eq!(follow_ups.len(), 1, "{audit}");
    assert!(
        follow_ups[0]["outcome"]
            .as_str()
            .unwrap()
            .contains("send attempt 2 by letter"),
        "{audit}"
    );
    let letters = local
        .system
        .clients
        .s3
        .list_objects_v2()
        .bucket(&local.system.config.reports_bucket)
        .prefix(format!("dispatches/{id}/letters/"))
        .send()
        .await
        .unwrap();
    assert_eq!(letters.contents().len(), 1, "one letter, Anna's");
    let last = recipients(&local, id).await;
    assert_eq!(last["a"].state, RecipientState::Created);
    assert_eq!(last["a"].send_attempt, 2);
}
