//! Whole dispatches on the emulator: upload a package, validate, approve over HTTP, send,
//! complete. Every claim is checked against what the emulator itself holds: the mail SES
//! accepted, the SMS SNS accepted, the stored recipient records and the S3 documents.
//!
//! Longer than 500 lines on purpose: one concern's end-to-end scenarios against the
//! emulator, each a test of its own, share the setup at the top of this file.

use domain::model::RecipientState;
use local::runtime::Options;
use local::Local;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What one row of a generated list should come to.
#[derive(Debug, Clone)]
enum Expect {
    Email {
        to: String,
        subject: String,
        greeting: String,
    },
    Sms {
        to: String,
        text: String,
    },
    Invalid {
        code: &'static str,
    },
}

#[derive(Debug, Clone)]
struct Row {
    /// Cells: id, first name, email, phone, channel, town.
    id: String,
    first: String,
    email: String,
    phone: String,
    channel: String,
    town: String,
    expect: Expect,
}

const HEADERS: [&str; 6] = [
    "Recipient ID",
    "First Name",
    "E-mail",
    "Mobile",
    "Preferred Channel",
    "Town",
];

const MANIFEST: &str = r#"{
  "title": "Water outage notice",
  "list": "LIST",
  "channel": "column",
  "columns": {"id": "recipient id", "email": "E_mail", "phone": "mobile", "channel": "preferred channel"},
  "email": {"from": "Utility <notices@example.org>", "subject": "Water outage in {{ town }}", "text": "email.txt"},
  "sms": {"text": "sms.txt"},
  "phone_region": "DK"
}"#;
const EMAIL_TEXT: &str = "Dear {{ first_name }},\nthe water in {{ town }} is off on Monday.";
const SMS_TEXT: &str = "{{ first_name }}: water off in {{ town }} on Monday";

/// 230 rows: valid email and SMS recipients and 20 rows that break one rule each.
fn rows() -> Vec<Row> {
    let towns = ["Århus", "Odense", "Aalborg", "Køge", "Vejle"];
    let mut rows = Vec::new();
    for i in 0..230u32 {
        let id = format!("{}", 500_000 + i);
        let first = format!("Name{i}");
        let town = towns[i as usize % towns.len()].to_string();
        let (email, phone, channel, expect) = if i % 3 == 0 {
            let phone = format!("20{:06}", 123_000 + i);
            (
                String::new(),
                phone.clone(),
                "sms".to_string(),
                Expect::Sms {
                    to: format!("+45{phone}"),
                    text: format!("{first}: water off in {town} on Monday"),
                },
            )
        } else {
            let to = format!("person{i}@example.net");
            (
                to.clone(),
                String::new(),
                "email".to_string(),
                Expect::Email {
                    to,
                    subject: format!("Water outage in {town}"),
                    greeting: format!("Dear {first},"),
                },
            )
        };
        rows.push(Row {
            id,
            first,
            email,
            phone,
            channel,
            town,
            expect,
        });
    }
    // Twenty broken rows, spread through the list.
    let breaks: [(usize, &str); 20] = [
        (5, "invalid_email"),
        (17, "invalid_email"),
        (23, "missing_address"),
        (31, "invalid_phone"),
        (44, "invalid_phone"),
        (52, "missing_value"),
        (60, "missing_value"),
        (71, "duplicate_id"),
        (88, "duplicate_id"),
        (95, "unknown_channel"),
        (103, "missing_id"),
        (118, "invalid_email"),
        (126, "duplicate_address"),
        (139, "invalid_phone"),
        (150, "unknown_channel"),
        (163, "missing_value"),
        (177, "missing_id"),
        (190, "invalid_email"),
        (204, "duplicate_address"),
        (219, "missing_address"),
    ];
    for (i, code) in breaks {
        let prev = rows[i - 1].clone();
        let r = &mut rows[i];
        match code {
            "invalid_email" => {
                r.channel = "email".into();
                r.email = format!("broken{i}@@example.net");
            }
            "missing_address" => {
                r.channel = "email".into();
                r.email.clear();
            }
            "invalid_phone" => {
                r.channel = "sms".into();
                r.phone = "12345".into();
            }
            "missing_value" => r.first.clear(),
            "duplicate_id" => r.id = prev.id.clone(),
            "unknown_channel" => r.channel = "pigeon".into(),
            "missing_id" => r.id.clear(),
            "duplicate_address" => {
                // Same address as the row before, on the same channel.
                r.channel = prev.channel.clone();
                r.email = prev.email.clone();
                r.phone = prev.phone.clone();
                assert!(matches!(
                    prev.expect,
                    Expect::Email { .. } | Expect::Sms { .. }
                ));
            }
            _ => unreachable!(),
        }
        r.expect = Expect::Invalid { code };
    }
    rows
}

/// A CSV as Excel saves it on Danish Windows: semicolons, CRLF, Windows-1252 text.
fn csv_bytes(rows: &[Row]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(b';')
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(HEADERS).unwrap();
    for r in rows {
        w.write_record([&r.id, &r.first, &r.email, &r.phone, &r.channel, &r.town])
            .unwrap();
    }
    let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    assert!(!unmappable);
    bytes.into_owned()
}

/// An XLSX as a spreadsheet user makes it: ids and phone numbers typed as numbers.
fn xlsx_bytes(rows: &[Row]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    for (c, h) in HEADERS.iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    for (i, r) in rows.iter().enumerate() {
        let row = (i + 1) as u32;
        let cells = [&r.id, &r.first, &r.email, &r.phone, &r.channel, &r.town];
        for (c, v) in cells.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            match v.parse::<f64>() {
                Ok(n) if c == 0 || c == 3 => ws.write_number(row, c as u16, n).unwrap(),
                _ => ws.write_string(row, c as u16, v.as_str()).unwrap(),
            };
        }
    }
    book.save_to_buffer().unwrap()
}

fn fast() -> Options {
    Options {
        overrides: vec![
            (domain::config::vars::EMAIL_RATE_PER_SECOND, "200".into()),
            (domain::config::vars::SMS_RATE_PER_SECOND, "200".into()),
        ],
        senders: Some(3),
        ..Options::default()
    }
}

async fn upload_package(local: &Local, id: &str, list_name: &str, list: Vec<u8>) {
    local.upload(id, list_name, list).await.unwrap();
    upload_template_and_manifest(local, id, list_name).await;
}

/// The message templates and, last, the manifest naming `list_name`.
async fn upload_template_and_manifest(local: &Local, id: &str, list_name: &str) {
    local
        .upload(id, "email.txt", EMAIL_TEXT.as_bytes().to_vec())
        .await
        .unwrap();
    local
        .upload(id, "sms.txt", SMS_TEXT.as_bytes().to_vec())
        .await
        .unwrap();
    local
        .upload(
            id,
            "manifest.json",
            MANIFEST.replace("LIST", list_name).into_bytes(),
        )
        .await
        .unwrap();
}

/// Waits for a dispatch to fail validation.
async fn validation_failed(portal: &local::portal::Portal, id: &str) -> Value {
    portal
        .wait_for(id, &["validation_failed"], Duration::from_secs(60), |_| {})
        .await
        .unwrap()
}

async fn run_dispatch(list_name: &str, list: Vec<u8>) {
    let rows = rows();
    let local = Local::start(fast()).await.expect("local environment");
    let portal = local.portal();
    let id = "water-outage";
    upload_package(&local, id, list_name, list).await;

    let d = portal
        .wait_for(
            id,
            &["awaiting_approval", "validation_failed"],
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap();
    let invalid: Vec<(u64, &str)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.expect {
            Expect::Invalid { code } => Some((i as u64 + 2, code)),
            _ => None,
        })
        .collect();
    assert_eq!(d["state"], "awaiting_approval", "{d}");
    assert_eq!(d["counts"]["total"], 230);
    assert_eq!(d["counts"]["invalid"], invalid.len() as u64);
    assert_eq!(d["counts"]["valid"], 230 - invalid.len() as u64);

    // The report is a link that works for a while (an answer of Lambda holds at most 6 MB),
    // offered as a file to save.
    let (status, location) = portal
        .location(&format!("/dispatches/{id}/report"))
        .await
        .unwrap();
    assert_eq!(status, 303);
    let location = location.expect("a Location");
    assert!(location.contains("X-Amz-Expires=900"), "{location}");
    assert!(
        location.contains(&format!("{id}-report.csv")),
        "the link names the file: {location}"
    );
    // The report names each broken row by its line and rule.
    let (status, report) = portal
        .get(&format!("/dispatches/{id}/report"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(report.as_bytes());
    let reported: BTreeSet<(u64, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].parse().unwrap(), r[3].to_string())
        })
        .collect();
    let expected: BTreeSet<(u64, String)> =
        invalid.iter().map(|(l, c)| (*l, c.to_string())).collect();
    assert_eq!(reported, expected);

    // The sample shows, per channel, the first valid recipient's message and three more
    // chosen at random among the other valid ones, in list order.
    let (status, sample) = portal
        .get(&format!("/dispatches/{id}/sample"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let sample: Value = serde_json::from_str(&sample).unwrap();
    assert_eq!(
        sample["sms"][0]["message"]["text"],
        "Name0: water off in Århus on Monday"
    );
    assert_eq!(sample["sms"][0]["chosen"], "first");
    assert_eq!(sample["sms"][0]["segments"]["encoding"], "gsm7");
    assert_eq!(sample["sms"][0]["segments"]["segments"], 1);
    assert_eq!(
        sample["email"][0]["message"]["subject"],
        "Water outage in Odense"
    );
    let by_id: BTreeMap<&str, &Row> = rows
        .iter()
        .filter(|r| !matches!(r.expect, Expect::Invalid { .. }))
        .map(|r| (r.id.as_str(), r))
        .collect();
    for channel in ["email", "sms"] {
        let list = sample[channel].as_array().unwrap();
        assert_eq!(list.len(), 4, "{channel}: first + 3 random");
        let lines: Vec<u64> = list.iter().map(|s| s["line"].as_u64().unwrap()).collect();
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
        for s in &list[1..] {
            assert_eq!(s["chosen"], "random");
            // Every sampled message is the one that recipient will get.
            let row = by_id[s["recipient_id"].as_str().unwrap()];
            match &row.expect {
                Expect::Email { to, subject, .. } => {
                    assert_eq!(s["to"], to.as_str());
                    assert_eq!(s["message"]["subject"], subject.as_str());
                }
                Expect::Sms { to, text } => {
                    assert_eq!(s["to"], to.as_str());
                    assert_eq!(s["message"]["text"], text.as_str());
                }
                Expect::Invalid { .. } => panic!("an invalid row was sampled: {s}"),
            }
        }
    }

    // Nothing is sent before approval.
    assert!(local.emulator.sent_emails().await.unwrap().is_empty());
    assert!(local.emulator.sent_sms().await.unwrap().is_empty());

    let (status, body) = portal
        .post(&format!("/dispatches/{id}/approve"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let (status, body) = portal
        .post(&format!("/dispatches/{id}/approve"))
        .await
        .unwrap();
    assert_eq!(status, 409, "a second approval must be refused: {body}");
    assert_eq!(body["status"], 409);

    let d = portal
        .wait_for(
            id,
            &["completed", "completed_with_errors"],
            Duration::from_secs(300),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(
        d["state"], "completed_with_errors",
        "invalid rows make the dispatch incomplete"
    );
    assert_eq!(d["counts"]["sent"], 230 - invalid.len() as u64);
    assert_eq!(d["counts"]["failed"], 0);

    // Exactly the valid recipients, each once, with their own message.
    let mut want_mail = BTreeMap::new();
    let mut want_sms = BTreeMap::new();
    for r in &rows {
        match &r.expect {
            Expect::Email {
                to,
                subject,
                greeting,
            } => {
                want_mail.insert(to.clone(), (subject.clone(), greeting.clone()));
            }
            Expect::Sms { to, text } => {
                want_sms.insert(to.clone(), text.clone());
            }
            Expect::Invalid { .. } => {}
        }
    }
    let mails = local.emulator.sent_emails().await.unwrap();
    assert_eq!(
        mails.len(),
        want_mail.len(),
        "one email per valid email recipient"
    );
    let mut got_mail = BTreeMap::new();
    for m in &mails {
        assert_eq!(m.to.len(), 1);
        assert_eq!(m.from, "Utility <notices@example.org>");
        got_mail.insert(m.to[0].clone(), m.clone());
    }
    assert_eq!(
        got_mail.keys().collect::<Vec<_>>(),
        want_mail.keys().collect::<Vec<_>>()
    );
    for (to, (subject, greeting)) in &want_mail {
        let m = &got_mail[to];
        assert_eq!(&m.subject, subject, "subject for {to}");
        assert!(
            m.body.starts_with(greeting.as_str()),
            "body for {to}: {}",
            m.body
        );
    }
    let sms = local.emulator.sent_sms().await.unwrap();
    assert_eq!(sms.len(), want_sms.len(), "one SMS per valid SMS recipient");
    let got_sms: BTreeMap<String, String> =
        sms.iter().map(|s| (s.to.clone(), s.text.clone())).collect();
    assert_eq!(got_sms, want_sms);

    // The sender's embedded-metric lines (CloudWatch's input) account for every send, by
    // channel, with the provider's answer times.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&local.system.metrics_file)
        .expect("metrics lines")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a metric line is JSON"))
        .filter(|l: &serde_json::Value| l["Dispatch"] == id)
        .collect();
    let by_channel = |channel: &str, metric: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l["Channel"] == channel)
            .map(|l| l[metric].as_u64().expect("a count"))
            .sum()
    };
    assert_eq!(by_channel("email", "Sent"), want_mail.len() as u64);
    assert_eq!(by_channel("sms", "Sent"), want_sms.len() as u64);
    let answers: Vec<f64> = lines
        .iter()
        .filter(|l| l["Channel"] == "email")
        .flat_map(|l| l["ProviderSeconds"].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_f64().expect("seconds"))
        .collect();
    assert!(!answers.is_empty() && answers.iter().all(|s| *s > 0.0 && *s < 30.0));
    let dispatch_sent: u64 = lines
        .iter()
        .filter(|l| l["Channel"].is_null())
        .map(|l| l["Sent"].as_u64().expect("a count"))
        .sum();
    assert_eq!(dispatch_sent, (want_mail.len() + want_sms.len()) as u64);

    // Every row is stored in exactly one final state; sent ones carry the provider's id.
    let store = adapters::dynamodb::Store::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &local.system.config.table_name,
    );
    let provider_ids: BTreeSet<String> = mails
        .iter()
        .map(|m| m.id.clone())
        .chain(sms.iter().map(|s| s.id.clone()))
        .collect();
    let stored = store
        .all_recipients(id, local.system.config.key_shards)
        .await
        .unwrap();
    assert_eq!(stored.len(), 230);
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.line, i as u64 + 2);
        match rows[i].expect {
            Expect::Invalid { code } => {
                assert_eq!(r.state, RecipientState::Invalid, "line {}", r.line);
                assert!(
                    r.reason.as_deref().unwrap_or("").starts_with(code),
                    "line {}: {:?}",
                    r.line,
                    r.reason
                );
            }
            _ => {
                assert_eq!(r.state, RecipientState::Sent, "line {}", r.line);
                assert!(
                    provider_ids.contains(r.message_id.as_deref().unwrap_or("")),
                    "line {}",
                    r.line
                );
            }
        }
    }

    // The history document has one row per recipient of the list.
    let mut history = String::new();
    for _ in 0..50 {
        let (status, body) = portal
            .get(&format!("/dispatches/{id}/history"))
            .await
            .unwrap();
        if status == 200 {
            history = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut reader = csv::Reader::from_reader(history.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        documents::history::HISTORY_COLUMNS
    );
    let lines: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let (lines, audit): (Vec<_>, Vec<_>) = lines.into_iter().partition(|r| &r[0] == "recipient");
    assert_eq!(lines.len(), 230);
    // After the recipients, the audit trail: the approval and the completion among it.
    assert!(audit.iter().all(|r| &r[0] == "audit"));
    for action in ["approve", "completed"] {
        assert!(
            audit
                .iter()
                .any(|r| &r[17] == action && !r[15].is_empty() && !r[16].is_empty()),
            "the history's audit rows have the {action}"
        );
    }
    for (i, rec) in lines.iter().enumerate() {
        match rows[i].expect {
            Expect::Invalid { code } => {
                assert_eq!(&rec[13], "invalid");
                assert_eq!(&rec[5], "no", "an invalid row is not reachable");
                assert!(
                    rec[12].starts_with(code),
                    "history line {}: {}",
                    i + 2,
                    &rec[12]
                );
            }
            _ => {
                assert_eq!(&rec[13], "sent");
                assert_eq!(&rec[11], "sent", "no receipt yet");
                assert_eq!(&rec[5], "yes");
                assert!(
                    provider_ids.contains(&rec[7]),
                    "history line {} has the provider's id",
                    i + 2
                );
                assert!(
                    !rec[8].is_empty(),
                    "history line {} has the send time",
                    i + 2
                );
            }
        }
    }
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xlsx_list_is_validated_approved_and_sent_to_exactly_the_valid_recipients() {
    run_dispatch("recipients.xlsx", xlsx_bytes(&rows())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_list_is_validated_approved_and_sent_to_exactly_the_valid_recipients() {
    run_dispatch("recipients.csv", csv_bytes(&rows())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_problems_fail_validation_with_their_reasons_and_send_nothing() {
    let local = Local::start(fast()).await.expect("local environment");
    let portal = local.portal();

    // The manifest names a list that was never uploaded.
    upload_template_and_manifest(&local, "no-list", "people.xlsx").await;
    // The template uses a field the list does not have.
    let list =
        b"Recipient ID,First Name,E-mail,Mobile,Preferred Channel\n1,Ann,ann@example.net,,email\n"
            .to_vec();
    upload_package(&local, "no-town", "list.csv", list.clone()).await;
    // The manifest itself is broken.
    local
        .upload(
            "bad-manifest",
            "manifest.json",
            b"{\"title\": \"x\"".to_vec(),
        )
        .await
        .unwrap();

    let d = validation_failed(&portal, "no-list").await;
    assert_eq!(
        d["problems"],
        serde_json::json!([
            "the package has no recipient list 'people.xlsx'; upload it before manifest.json"
        ])
    );
    let d = validation_failed(&portal, "no-town").await;
    assert_eq!(
        d["problems"],
        serde_json::json!([
            "the template uses merge fields that are not columns of the list: town"
        ])
    );
    let d = validation_failed(&portal, "bad-manifest").await;
    assert!(
        d["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("manifest.json is not valid"),
        "{d}"
    );

    // A failed validation cannot be approved.
    let (status, body) = portal.post("/dispatches/no-town/approve").await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["detail"],
        "dispatch 'no-town' is not awaiting_approval"
    );
    let (status, _) = portal.post("/dispatches/nobody/approve").await.unwrap();
    assert_eq!(status, 404);
    assert!(local.emulator.sent_emails().await.unwrap().is_empty());
    assert!(local.emulator.sent_sms().await.unwrap().is_empty());

    // A list whose content is not what its name says is refused as a whole.
    upload_package(&local, "mislabelled", "people.xlsx", list.clone()).await;
    let d = validation_failed(&portal, "mislabelled").await;
    assert_eq!(
        d["problems"],
        serde_json::json!([
            "'people.xlsx' is named as a recipient list of its kind but holds text (CSV); save it again in the format its name says"
        ])
    );

    // The example file names the columns the list must have, as CSV and as XLSX.
    let expected_columns = [
        "recipient id",
        "preferred channel",
        "E_mail",
        "mobile",
        "first_name",
        "town",
    ];
    let (status, example) = portal.get("/dispatches/no-town/example").await.unwrap();
    assert_eq!(status, 200);
    let header: Vec<String> =
        intake::list::ListReader::open("example.csv", example.into_bytes(), None)
            .unwrap()
            .headers()
            .to_vec();
    assert_eq!(header, expected_columns);
    let (status, xlsx) = portal
        .get_bytes("/dispatches/no-town/example?format=xlsx")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let reader = intake::list::ListReader::open("example.xlsx", xlsx, None).unwrap();
    assert_eq!(reader.headers(), expected_columns);
    let (status, _) = portal
        .get("/dispatches/no-town/example?format=pdf")
        .await
        .unwrap();
    assert_eq!(status, 400);

    // Repeat: a corrected list uploaded with the manifest again is validated again; the
    // failed attempt stays in the dispatch's attempts.
    let corrected = b"Recipient ID,First Name,E-mail,Mobile,Preferred Channel,Town\n\
        1,Ann,ann@example.net,,email,Odense\n\
        2,Bo,not-an-address,,email,Vejle\n\
        3,Cy,cy@example.net,,email,Koge\n"
        .to_vec();
    upload_package(&local, "no-town", "list.csv", corrected).await;
    let d = portal
        .wait_for(
            "no-town",
            &["awaiting_approval"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(d["attempt"], 2);
    assert_eq!(d["counts"]["total"], 3);
    assert_eq!(d["counts"]["invalid"], 1);
    assert_eq!(d["attempts"][0]["attempt"], 1);
    assert_eq!(d["attempts"][0]["state"], "validation_failed");
    assert_eq!(
        d["attempts"][0]["problems"],
        serde_json::json!([
            "the template uses merge fields that are not columns of the list: town"
        ])
    );
    // And again, with the bad row mended and a recipient removed.
    let again = b"Recipient ID,First Name,E-mail,Mobile,Preferred Channel,Town\n\
        1,Ann,ann@example.net,,email,Odense\n\
        2,Bo,bo@example.net,,email,Vejle\n"
        .to_vec();
    upload_package(&local, "no-town", "list.csv", again).await;
    // Until the validator takes the upload, the dispatch still shows attempt 2.
    let mut d = Value::Null;
    for _ in 0..120 {
        d = portal.dispatch("no-town").await.unwrap().unwrap();
        if d["attempt"] == 3 && d["state"] == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(d["attempt"], 3, "{d}");
    assert_eq!(d["state"], "awaiting_approval", "{d}");
    assert_eq!(d["counts"]["total"], 2);
    assert_eq!(d["counts"]["invalid"], 0);
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["state"], "awaiting_approval");
    assert_eq!(attempts[1]["counts"]["invalid"], 1);
    // The earlier attempt's report is kept; a file-level failure has none.
    let (status, old_report) = portal
        .get("/dispatches/no-town/attempts/2/report")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        old_report.contains("3,2,E_mail,invalid_email,"),
        "{old_report}"
    );
    let (status, _) = portal
        .get("/dispatches/no-town/attempts/1/report")
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (_, report) = portal.get("/dispatches/no-town/report").await.unwrap();
    assert_eq!(report.lines().count(), 1, "only the header: {report}");
    // Only the last list's recipients are stored: the earlier attempts' were deleted.
    let store = adapters::dynamodb::Store::from_config(&local.system.clients, &local.system.config);
    let stored = store
        .all_recipients("no-town", d["shards"].as_u64().unwrap() as u32)
        .await
        .unwrap();
    let ids: Vec<&str> = stored.iter().map(|r| r.recipient_id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);
    // Approving sends to exactly those.
    let (status, body) = portal.post("/dispatches/no-town/approve").await.unwrap();
    assert_eq!(status, 202, "{body}");
    portal
        .wait_for("no-town", &["completed"], Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    let mut to: Vec<String> = local
        .emulator
        .sent_emails()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|m| m.to)
        .collect();
    to.sort();
    assert_eq!(to, ["ann@example.net", "bo@example.net"]);
    // A dispatch past approval is not validated again.
    upload_package(&local, "no-town", "list.csv", list).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = portal.dispatch("no-town").await.unwrap().unwrap();
    assert_eq!(
        (d["state"].as_str(), d["attempt"].as_u64()),
        (Some("completed"), Some(3))
    );
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_dispatch_sends_nothing_and_records_why_for_every_recipient() {
    let local = Local::start(fast()).await.expect("local environment");
    let portal = local.portal();
    let rows = rows();
    upload_package(&local, "rejected", "list.csv", csv_bytes(&rows[..40])).await;
    portal
        .wait_for(
            "rejected",
            &["awaiting_approval"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    let (status, body) = portal.post("/dispatches/rejected/reject").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected");

    let store = adapters::dynamodb::Store::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &local.system.config.table_name,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = store
            .all_recipients("rejected", local.system.config.key_shards)
            .await
            .unwrap();
        assert_eq!(stored.len(), 40);
        if stored.iter().all(|r| r.state.is_final()) {
            for (i, r) in stored.iter().enumerate() {
                let want = match rows[i].expect {
                    Expect::Invalid { .. } => RecipientState::Invalid,
                    _ => RecipientState::Rejected,
                };
                assert_eq!(r.state, want, "line {}", r.line);
                assert!(r.reason.is_some(), "line {} records why", r.line);
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recipients were not all given a final state"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = portal.post("/dispatches/rejected/approve").await.unwrap();
    assert_eq!(status, 409, "a rejected dispatch cannot be approved");
    assert!(local.emulator.sent_emails().await.unwrap().is_empty());
    assert!(local.emulator.sent_sms().await.unwrap().is_empty());
    local.system.stop().await;
}
