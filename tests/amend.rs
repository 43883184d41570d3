//! An operator's amendments over real HTTP with real tokens, against the emulator: resend
//! to the failed recipients as a new audited attempt, removal of recipients before approval,
//! a repeated validation, the list downloaded with a status per recipient, and the audit
//! trail in the history CSV.
//!
//! Longer than 500 lines on purpose: one concern's end-to-end scenarios against the
//! emulator, each a test of its own, share the setup at the top of this file.

use local::emulator::Emulator;
use local::runtime::Options;
use local::Local;
use mass_dispatch::proxy::{Fault, FaultProxy};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const MANIFEST: &str = r#"{
  "title": "Amendments",
  "list": "list.csv",
  "channel": "email",
  "email": {"from": "Town <notices@example.org>", "subject": "Hello {{ name }}", "text": "email.txt"}
}"#;

const LIST: &str = "recipient_id,name,email,note\n\
1,Ann,ann@example.net,first\n\
2,Bo,bo@example.net,=2+2\n\
3,Cy,cy@example.net,\n\
4,Di,di@example.net,last\n\
5,Ed,not-an-address,\n";

async fn upload_package(local: &Local, id: &str) {
    local
        .upload_files(
            id,
            &[
                ("list.csv", LIST.as_bytes()),
                ("email.txt", b"Dear {{ name }}"),
                ("manifest.json", MANIFEST.as_bytes()),
            ],
        )
        .await
        .unwrap();
}

async fn wait(local: &Local, id: &str, states: &[&str]) -> Value {
    local
        .portal()
        .wait_for(id, states, Duration::from_secs(90), |_| {})
        .await
        .unwrap()
}

/// Emails the emulator accepted, per address.
async fn mail_count(local: &Local) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in local.emulator.sent_emails().await.unwrap() {
        for to in m.to {
            *out.entry(to).or_insert(0) += 1;
        }
    }
    out
}

async fn audit_actions(local: &Local, id: &str) -> Vec<(String, String, String)> {
    let (status, body) = local
        .portal()
        .get(&format!("/dispatches/{id}/audit"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let entries = v
        .as_array()
        .or_else(|| v["audit"].as_array())
        .cloned()
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_string(),
                e["action"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The recipients of a dispatch by id.
async fn recipients(local: &Local, id: &str) -> BTreeMap<String, Value> {
    let (status, body) = local
        .portal()
        .get(&format!("/dispatches/{id}/recipients?limit=1000"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["recipient_id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// The history CSV: recipient rows by id, and the audit rows (actor, action, outcome).
async fn history(
    local: &Local,
    id: &str,
) -> (BTreeMap<String, BTreeMap<String, String>>, Vec<[String; 3]>) {
    let mut body = String::new();
    for _ in 0..100 {
        let (status, b) = local
            .portal()
            .get(&format!("/dispatches/{id}/history"))
            .await
            .unwrap();
        if status == 200 {
            body = b;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let mut rows = BTreeMap::new();
    let mut audit = Vec::new();
    for r in reader.records() {
        let r = r.unwrap();
        let row: BTreeMap<String, String> = headers
            .iter()
            .zip(r.iter())
            .map(|(h, v)| (h.to_string(), v.to_string()))
            .collect();
        match row["record"].as_str() {
            "recipient" => {
                rows.insert(row["recipient_id"].clone(), row);
            }
            "audit" => audit.push([
                row["actor"].clone(),
                row["action"].clone(),
                row["outcome"].clone(),
            ]),
            other => panic!("a history row of kind '{other}'"),
        }
    }
    (rows, audit)
}

/// The provider refuses the messages to Bo and Di, once each; the fault's number.
fn refuse_bo_and_di(proxy: &FaultProxy) -> usize {
    proxy.add(
        |s| {
            s.is_send_email()
                && (s.body.contains("bo@example.net") || s.body.contains("di@example.net"))
        },
        Fault::Refuse("MessageRejected"),
        0,
        Some(2),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resend_sends_again_only_to_the_failed_recipients_as_a_new_audited_attempt() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    let local = Local::on(
        emulator,
        Options {
            endpoint: Some(proxy.url.clone()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let refused = refuse_bo_and_di(&proxy);
    let id = "resend";
    upload_package(&local, id).await;
    wait(&local, id, &["awaiting_approval"]).await;
    let approver = local.portal();

    // Resend is for a dispatch that completed with errors, not before.
    let (status, body) = approver
        .post(&format!("/dispatches/{id}/resend"))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");

    let (status, body) = approver
        .post(&format!("/dispatches/{id}/approve"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let d = wait(&local, id, &["completed_with_errors"]).await;
    assert_eq!(proxy.injected(refused), 2);
    assert_eq!(d["counts"]["sent"], 2, "{d}");
    assert_eq!(d["counts"]["failed"], 2, "{d}");
    assert_eq!(d["counts"]["invalid"], 1, "{d}");
    assert_eq!(d["send_attempt"], 1);
    let before = mail_count(&local).await;
    assert_eq!(before.get("ann@example.net"), Some(&1));
    assert_eq!(before.get("cy@example.net"), Some(&1));
    assert_eq!(before.get("bo@example.net"), None);
    let rs = recipients(&local, id).await;
    assert_eq!(rs["2"]["state"], "failed");
    assert!(
        rs["2"]["reason"]
            .as_str()
            .unwrap()
            .contains("MessageRejected"),
        "{}",
        rs["2"]
    );

    // Bad choices are refused and change nothing.
    let path = format!("/dispatches/{id}/resend");
    let (status, body) = approver
        .post_json(&path, &json!({"recipient_ids": ["1"]}))
        .await
        .unwrap();
    assert_eq!(status, 409, "a sent recipient is not resent: {body}");
    assert!(
        body["detail"].as_str().unwrap().contains("1 (sent)"),
        "{body}"
    );
    let (status, body) = approver
        .post_json(&path, &json!({"recipient_ids": ["2", "99"]}))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("99"), "{body}");
    let (status, body) = approver
        .post_json(&path, &json!({"states": ["sent"]}))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = approver
        .post_json(&path, &json!({"recipient_ids": ["5"]}))
        .await
        .unwrap();
    assert_eq!(status, 409, "an invalid row is not resent: {body}");
    let (status, body) = local.operator().post(&path).await.unwrap();
    assert_eq!(status, 403, "resending needs the send permission: {body}");

    // The resend: every failed recipient, nobody else, by a job the portal follows.
    let (status, body) = approver.post(&path).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let job = &body["job"];
    assert_eq!(job["kind"], "resend", "{body}");
    assert_eq!(job["states"], json!(["failed"]), "{body}");
    assert_eq!(job["state"], "queued", "{body}");
    assert_eq!(job["requested_by"], "approver", "{body}");
    let link = job["link"].as_str().unwrap().to_string();
    assert_eq!(
        link,
        format!("/dispatches/{id}/jobs/{}", job["id"].as_str().unwrap())
    );
    let mut job = Value::Null;
    for _ in 0..200 {
        let (status, text) = approver.get(&link).await.unwrap();
        assert_eq!(status, 200, "{text}");
        job = serde_json::from_str(&text).unwrap();
        if job["state"] == "succeeded" || job["state"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["done"], 2, "{job}");
    assert_eq!(job["skipped"], 0, "{job}");
    assert_eq!(job["send_attempt"], 2, "{job}");
    assert_eq!(job["looked_at"], 5, "every record was looked at: {job}");
    assert!(job["finished_at"].is_string(), "{job}");
    let (status, text) = approver
        .get(&format!("/dispatches/{id}/jobs/nothing-here"))
        .await
        .unwrap();
    assert_eq!(status, 404, "{text}");
    let d = wait(&local, id, &["completed", "completed_with_errors"]).await;
    assert_eq!(d["counts"]["sent"], 4, "{d}");
    assert_eq!(d["counts"]["failed"], 0, "{d}");
    assert_eq!(
        d["recipient_states"],
        json!({"invalid": 1, "excluded": 0, "pending": 0, "sent": 4, "created": 0, "failed": 0, "unknown": 0}),
        "{d}"
    );
    assert_eq!(d["progress"], "4 of 4 sent");
    let after = mail_count(&local).await;
    assert_eq!(after.get("bo@example.net"), Some(&1), "{after:?}");
    assert_eq!(after.get("di@example.net"), Some(&1), "{after:?}");
    assert_eq!(
        after.get("ann@example.net"),
        Some(&1),
        "sent ones are not sent again"
    );
    assert_eq!(after.get("cy@example.net"), Some(&1));
    assert_eq!(after.values().sum::<usize>(), 4);

    let rs = recipients(&local, id).await;
    assert_eq!(rs["2"]["state"], "sent");
    assert_eq!(rs["2"]["send_attempt"], 2);
    assert!(
        rs["2"]["previous_reason"]
            .as_str()
            .unwrap()
            .contains("MessageRejected"),
        "{}",
        rs["2"]
    );
    assert_eq!(rs["1"]["send_attempt"], 1);

    // Nothing failed is left to resend.
    let (status, body) = approver.post(&path).await.unwrap();
    assert_eq!(status, 409, "{body}");

    // The audit trail has the resend with its actor, and so has the history CSV.
    let audit = audit_actions(&local, id).await;
    assert!(
        audit
            .iter()
            .any(|(actor, action, outcome)| actor == "approver"
                && action == "resend"
                && outcome.starts_with("send attempt 2: 2 sent again")),
        "{audit:?}"
    );
    for refusal in [
        "refused: only a dispatch that completed with errors can resend",
        "refused: only failed or unknown recipients can be chosen; not 1 (sent)",
        "refused: the dispatch has no recipient 99",
        "refused: there is nobody to resend to",
    ] {
        assert!(
            audit
                .iter()
                .any(|(_, action, outcome)| action == "resend" && outcome.starts_with(refusal)),
            "the refused resend '{refusal}' is audited: {audit:?}"
        );
    }
    let (rows, audit_rows) = history(&local, id).await;
    assert_eq!(rows.len(), 5);
    assert_eq!(rows["2"]["send_attempt"], "2");
    assert_eq!(rows["1"]["send_attempt"], "1");
    assert_eq!(rows["5"]["state"], "invalid");
    for action in ["start", "approve", "resend", "completed"] {
        assert!(
            audit_rows.iter().any(|[_, a, _]| a == action),
            "the history CSV's audit rows lack {action}: {audit_rows:?}"
        );
    }
    local.system.stop().await;
}

/// The resume function with no more time than its margin: a resend job reads one page per
/// invocation and goes on in a new message of the settle queue from where it came to, one
/// shard after another (16 of them), and ends as it would in one go: every record looked at
/// once, the two failed recipients sent again in one attempt, the sent ones left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resend_job_short_of_time_goes_on_a_page_per_invocation_and_ends_the_same() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    let local = Local::on(
        emulator,
        Options {
            endpoint: Some(proxy.url.clone()),
            // As long as the function's margin: only the page every invocation may read.
            timeouts: vec![("ResumeFunction", resume::MARGIN)],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    refuse_bo_and_di(&proxy);
    let id = "resend-paged";
    upload_package(&local, id).await;
    wait(&local, id, &["awaiting_approval"]).await;
    let approver = local.portal();
    let (status, body) = approver
        .post(&format!("/dispatches/{id}/approve"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let d = wait(&local, id, &["completed_with_errors"]).await;
    assert_eq!(d["counts"]["failed"], 2, "{d}");
    let store = adapters::dynamodb::Store::from_config(&local.system.clients, &local.system.config);
    let shards = u64::from(store.get_dispatch(id).await.unwrap().unwrap().shards);
    assert!(shards > 1, "a dispatch of {shards} shards");
    let settle_sends = || {
        local
            .emulator
            .allowed_to("ResumeFunction")
            .unwrap()
            .get("sqs:SendMessage")
            .copied()
            .unwrap_or(0)
    };
    let before = settle_sends();

    let (status, body) = approver
        .post(&format!("/dispatches/{id}/resend"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let link = body["job"]["link"].as_str().unwrap().to_string();
    let mut job = Value::Null;
    for _ in 0..600 {
        let (status, text) = approver.get(&link).await.unwrap();
        assert_eq!(status, 200, "{text}");
        job = serde_json::from_str(&text).unwrap();
        if job["state"] == "succeeded" || job["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["looked_at"], 5, "every record looked at once: {job}");
    assert_eq!(job["done"], 2, "{job}");
    assert_eq!(job["skipped"], 0, "{job}");
    assert_eq!(
        job["send_attempt"], 2,
        "one attempt across the invocations: {job}"
    );
    // A continuation per shard after the first, each a message of the resume function.
    let continued = settle_sends() - before;
    assert!(
        continued >= shards - 1,
        "the job went on in {continued} messages for {shards} shards"
    );

    // The invalid row keeps it "with errors".
    let d = wait(&local, id, &["completed_with_errors"]).await;
    assert_eq!(d["counts"]["sent"], 4, "{d}");
    assert_eq!(d["counts"]["failed"], 0, "{d}");
    assert_eq!(d["send_attempt"], 2, "{d}");
    let mails = mail_count(&local).await;
    for address in ["ann", "bo", "cy", "di"] {
        assert_eq!(
            mails.get(&format!("{address}@example.net")),
            Some(&1),
            "{mails:?}"
        );
    }
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_recipients_are_never_sent_and_the_download_shows_every_status() {
    let local = Local::start(Options::default()).await.unwrap();
    let id = "remove";
    upload_package(&local, id).await;
    let d = wait(&local, id, &["awaiting_approval"]).await;
    assert_eq!(d["counts"]["valid"], 4);
    let operator = local.operator();
    let approver = local.portal();
    let remove = format!("/dispatches/{id}/remove");

    // Repeat: the package is validated again, as a new attempt.
    let (status, body) = approver
        .post(&format!("/dispatches/{id}/repeat"))
        .await
        .unwrap();
    assert_eq!(status, 403, "repeating needs the create permission: {body}");
    let (status, body) = operator
        .post(&format!("/dispatches/{id}/repeat"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let d = local
        .portal()
        .wait_for(id, &["awaiting_approval"], Duration::from_secs(90), |_| {})
        .await
        .unwrap();
    let mut d = d;
    for _ in 0..200 {
        if d["attempt"] == 2 && d["state"] == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        d = local.portal().dispatch(id).await.unwrap().unwrap();
    }
    assert_eq!(d["attempt"], 2, "{d}");
    assert_eq!(d["state"], "awaiting_approval", "{d}");
    assert_eq!(d["attempts"][0]["state"], "awaiting_approval", "{d}");

    // Removal: by id, only pending recipients, only with the create permission.
    let (status, body) = approver
        .post_json(&remove, &json!({"recipient_ids": ["2"]}))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = operator
        .post_json(&remove, &json!({"recipient_ids": ["5"]}))
        .await
        .unwrap();
    assert_eq!(status, 409, "an invalid row is not pending: {body}");
    let (status, body) = operator
        .post_json(&remove, &json!({"recipient_ids": ["42"]}))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = operator.post(&remove).await.unwrap();
    assert_eq!(status, 400, "removal names its recipients: {body}");
    let (status, body) = operator
        .post_json(&remove, &json!({"recipient_ids": ["2", "2"]}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], json!(["2"]));
    assert_eq!(body["dispatch"]["counts"]["valid"], 3, "{body}");
    assert_eq!(body["dispatch"]["counts"]["excluded"], 1, "{body}");
    assert_eq!(
        body["dispatch"]["recipient_states"],
        json!({"invalid": 1, "excluded": 1, "pending": 3, "sent": 0, "created": 0, "failed": 0, "unknown": 0}),
        "{body}"
    );
    let (status, body) = operator
        .post_json(&remove, &json!({"recipient_ids": ["2"]}))
        .await
        .unwrap();
    assert_eq!(status, 409, "removed already: {body}");

    // An approval of what was reviewed before the removal is stale.
    let (status, body) = approver
        .post_json(&format!("/dispatches/{id}/approve"), &json!({"valid": 4}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    let (status, body) = approver
        .post_json(&format!("/dispatches/{id}/approve"), &json!({"valid": 3}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let (status, body) = operator
        .post_json(&remove, &json!({"recipient_ids": ["3"]}))
        .await
        .unwrap();
    assert_eq!(status, 409, "no removal after approval: {body}");
    let (status, body) = operator
        .post(&format!("/dispatches/{id}/repeat"))
        .await
        .unwrap();
    assert_eq!(status, 409, "no repeat after approval: {body}");

    let d = wait(&local, id, &["completed", "completed_with_errors"]).await;
    assert_eq!(d["counts"]["sent"], 3, "{d}");
    let mails = mail_count(&local).await;
    assert_eq!(
        mails.get("bo@example.net"),
        None,
        "a removed recipient is never sent to"
    );
    assert_eq!(mails.values().sum::<usize>(), 3);
    let rs = recipients(&local, id).await;
    assert_eq!(rs["2"]["state"], "excluded");
    assert!(
        rs["2"]["reason"]
            .as_str()
            .unwrap()
            .contains("removed from the list by operator"),
        "{}",
        rs["2"]
    );

    // The download: the list as uploaded, every row, with each recipient's status.
    let (status, bytes) = approver
        .get_bytes(&format!("/dispatches/{id}/download"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "recipient_id,name,email,note,dispatch_status,dispatch_reason"
    );
    assert_eq!(lines[1], "1,Ann,ann@example.net,first,sent,");
    assert!(
        lines[2]
            .starts_with("2,Bo,bo@example.net,'=2+2,excluded,removed from the list by operator"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "3,Cy,cy@example.net,,sent,");
    assert!(
        lines[5].starts_with("5,Ed,not-an-address,,invalid,"),
        "{}",
        lines[5]
    );
    assert_eq!(lines.len(), 6);

    let (status, bytes) = approver
        .get_bytes(&format!("/dispatches/{id}/download?format=xlsx"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let mut sheet = intake::list::ListReader::open("download.xlsx", bytes, None).unwrap();
    assert_eq!(
        sheet.headers(),
        [
            "recipient_id",
            "name",
            "email",
            "note",
            "dispatch_status",
            "dispatch_reason"
        ]
    );
    let mut statuses = BTreeMap::new();
    while let Some(row) = sheet.next_row() {
        let row = row.unwrap();
        statuses.insert(
            row.cell(0).unwrap_or_default().to_string(),
            row.cell(4).unwrap_or_default().to_string(),
        );
    }
    assert_eq!(
        statuses,
        BTreeMap::from(
            [
                ("1", "sent"),
                ("2", "excluded"),
                ("3", "sent"),
                ("4", "sent"),
                ("5", "invalid")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        )
    );
    let (status, _) = approver
        .get_bytes(&format!("/dispatches/{id}/download?format=pdf"))
        .await
        .unwrap();
    assert_eq!(status, 400);

    // The same download as a job, for a list of any size: the job's result is a link to
    // the same file.
    let (status, body) = approver
        .post(&format!("/dispatches/{id}/download"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["job"]["kind"], "download", "{body}");
    assert_eq!(body["job"]["format"], "csv", "{body}");
    let job = approver
        .wait_for_job(
            body["job"]["link"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["done"], 5, "rows written: {job}");
    assert_eq!(job["looked_at"], 5, "records read: {job}");
    assert!(job.get("result_key").is_none(), "{job}");
    let link = job["result"].as_str().expect("a link to the file");
    assert!(link.contains("X-Amz-Expires=900"), "{link}");
    let via_job = reqwest::get(link).await.unwrap().text().await.unwrap();
    assert_eq!(via_job, text, "the job wrote the file the request did");
    let (status, body) = approver
        .post(&format!("/dispatches/{id}/download?format=pdf"))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");

    // A list changed in the package folder after validation is not passed off as the
    // validated one.
    local
        .system
        .clients
        .s3
        .put_object()
        .bucket(&local.system.config.uploads_bucket)
        .key(format!("incoming/{id}/list.csv"))
        .body(
            b"recipient_id,name,email\n9,Zed,zed@example.net\n"
                .to_vec()
                .into(),
        )
        .send()
        .await
        .unwrap();
    let (status, bytes) = approver
        .get_bytes(&format!("/dispatches/{id}/download"))
        .await
        .unwrap();
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&bytes));
    let (status, body) = approver
        .post(&format!("/dispatches/{id}/download"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let job = approver
        .wait_for_job(
            body["job"]["link"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["outcome"]
            .as_str()
            .unwrap()
            .contains("not the one validated"),
        "{job}"
    );
    assert!(job["result"].is_null(), "{job}");

    // Close after review; the history CSV ends with the audit trail, every action in it.
    let (status, body) = approver
        .post(&format!("/dispatches/{id}/close"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "closed", "{body}");
    // The history is written again with the close in it by a job.
    let job = &body["history_job"];
    assert_eq!(job["kind"], "history", "{body}");
    assert_eq!(job["requested_by"], "approver", "{body}");
    let job = approver
        .wait_for_job(job["link"].as_str().unwrap(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["looked_at"], 5, "{job}");
    let (rows, audit_rows) = history(&local, id).await;
    assert_eq!(rows.len(), 5);
    assert_eq!(rows["2"]["state"], "excluded");
    for (actor, action) in [
        ("operator", "start"),
        ("operator", "repeat"),
        ("operator", "remove"),
        ("approver", "approve"),
        ("approver", "closed"),
    ] {
        assert!(
            audit_rows.iter().any(|[a, x, _]| a == actor && x == action),
            "the history CSV lacks {actor}'s {action}: {audit_rows:?}"
        );
    }
    assert!(
        audit_rows
            .iter()
            .any(|[_, x, o]| x == "approve" && o.starts_with("refused")),
        "the refused approval is in the history too: {audit_rows:?}"
    );
    local.system.stop().await;
}
