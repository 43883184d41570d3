//! Identity, permissions and four eyes over real HTTP with real signed tokens, against the
//! emulator: the local runtime checks tokens as API Gateway's JWT authorizer does, and the
//! API function reads its caller from the verified claims.
//!
//! Longer than 500 lines on purpose: one concern's end-to-end scenarios against the
//! emulator, each a test of its own, share the setup at the top of this file.

use domain::identity::{CREATE_ROLE, SEND_ROLE};
use local::auth::{LocalIssuer, AUDIENCE, ISSUER};
use local::Local;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MANIFEST: &str = r#"{
  "title": "Approval test",
  "list": "list.csv",
  "channel": "email",
  "email": {"from": "Town <notices@example.org>", "subject": "Hello {{ name }}", "text": "email.txt"}
}"#;

const LIST: &str = "recipient_id,name,email\n1,Ann,ann@example.net\n2,Bo,bo@example.net\n";

/// Uploads a package straight to the bucket, as a tool without the portal would.
async fn put(local: &Local, id: &str, name: &str, body: &[u8]) {
    local
        .system
        .clients
        .s3
        .put_object()
        .bucket(&local.system.config.uploads_bucket)
        .key(format!("incoming/{id}/{name}"))
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

async fn put_package(local: &Local, id: &str) {
    put(local, id, "list.csv", LIST.as_bytes()).await;
    put(local, id, "email.txt", b"Dear {{ name }}").await;
    put(local, id, "manifest.json", MANIFEST.as_bytes()).await;
}

async fn awaiting_approval(local: &Local, id: &str) -> Value {
    local
        .portal()
        .wait_for(id, &["awaiting_approval"], Duration::from_secs(60), |_| {})
        .await
        .unwrap()
}

/// A dispatch's audit trail as (actor, action, outcome).
struct Audit(Vec<(String, String, String)>);

impl Audit {
    async fn of(local: &Local, id: &str) -> Audit {
        let (status, body) = local
            .portal()
            .get(&format!("/dispatches/{id}/audit"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let audit: Value = serde_json::from_str(&body).unwrap();
        Audit(
            audit["audit"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["actor"].as_str().unwrap().to_string(),
                        e["action"].as_str().unwrap().to_string(),
                        e["outcome"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        )
    }

    /// The trail has an entry of `actor` doing `action` whose outcome contains `outcome`.
    fn has(&self, actor: &str, action: &str, outcome: &str) {
        assert!(
            self.0
                .iter()
                .any(|(a, x, o)| a == actor && x == action && o.contains(outcome)),
            "no {actor} {action} '{outcome}' in {:?}",
            self.0
        );
    }
}

fn detail(body: &Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verified_callers_with_the_right_permission_act_and_four_eyes_hold() {
    let local = Local::start(Default::default())
        .await
        .expect("local environment");

    // 401: no token, a token signed with another key, an expired token. The function is not
    // reached; the answer is API Gateway's.
    let (status, body) = local.anonymous().get("/dispatches").await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body, r#"{"message":"Unauthorized"}"#);
    // The template's one route without the authorizer.
    let (status, body) = local.anonymous().get("/health").await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let forged = LocalIssuer::random().mint("mallory", &[SEND_ROLE], Duration::from_secs(600));
    let (status, _) = local
        .anonymous()
        .with_token(&forged)
        .get("/dispatches")
        .await
        .unwrap();
    assert_eq!(status, 401, "a token signed with another key");
    let expired = local.system.issuer.sign(&json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "ann", "roles": [SEND_ROLE],
        "iat": now() - 7200, "exp": now() - 3600,
    }));
    let (status, _) = local
        .anonymous()
        .with_token(&expired)
        .get("/dispatches")
        .await
        .unwrap();
    assert_eq!(status, 401, "an expired token");
    let (status, _) = local
        .anonymous()
        .with_token(&format!(
            "{}x",
            local
                .system
                .issuer
                .mint("ann", &[SEND_ROLE], Duration::from_secs(600))
        ))
        .get("/dispatches")
        .await
        .unwrap();
    assert_eq!(status, 401, "a token whose signature was tampered with");

    // 403: a verified caller without either permission, and with the wrong one.
    let (status, body) = local
        .portal_as("nobody", &[])
        .get("/dispatches")
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = local
        .portal_as("bo", &[SEND_ROLE])
        .post_json("/dispatches", &json!({"id": "four-eyes"}))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains(CREATE_ROLE), "{body}");

    // Ann starts a dispatch (create permission); starting it again is a conflict.
    let ann = local.portal_as("ann", &[CREATE_ROLE, SEND_ROLE]);
    let (status, body) = ann
        .post_json(
            "/dispatches",
            &json!({"id": "four-eyes", "title": "Water off"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state"], "awaiting_upload");
    assert_eq!(body["started_by"], "ann");
    assert_eq!(body["title"], "Water off");
    assert!(
        body["upload_to"]
            .as_str()
            .unwrap()
            .ends_with("/incoming/four-eyes/"),
        "{body}"
    );
    let (status, _) = ann
        .post_json("/dispatches", &json!({"id": "four-eyes"}))
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (status, _) = ann
        .post_json("/dispatches", &json!({"id": "no/slashes"}))
        .await
        .unwrap();
    assert_eq!(status, 400);

    // Her package arrives and is validated; who started it stays recorded.
    put_package(&local, "four-eyes").await;
    let d = awaiting_approval(&local, "four-eyes").await;
    assert_eq!(d["started_by"], "ann");
    assert_eq!(d["counts"]["valid"], 2);

    // A role is granted by a whole entry of the claim only: a one-text claim is one role, an
    // array claim (flattened by API Gateway) is its entries, read from the token.
    let roles_token = |roles: Value| {
        local.system.issuer.sign(&json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "roles": roles,
            "iat": now(), "exp": now() + 600,
        }))
    };
    for (roles, reads) in [
        (json!("Not MASSDISPATCHSEND"), false),
        (json!("xMASSDISPATCHSEND"), false),
        (json!("MASSDISPATCH, MASSDISPATCHSEND"), false),
        (json!(["Not MASSDISPATCHSEND"]), false),
        (json!(["MASSDISPATCH", "Not MASSDISPATCHSEND"]), true),
    ] {
        let caller = local.anonymous().with_token(&roles_token(roles.clone()));
        let (status, body) = caller.get("/dispatches").await.unwrap();
        assert_eq!(status, if reads { 200 } else { 403 }, "{roles}: {body}");
        let (status, body) = caller.post("/dispatches/four-eyes/approve").await.unwrap();
        assert_eq!(status, 403, "{roles} approves nothing: {body}");
        if reads {
            assert!(detail(&body).contains(SEND_ROLE), "{body}");
        }
    }
    let (status, body) = local
        .anonymous()
        .with_token(&roles_token(json!("MASSDISPATCHSEND")))
        .get("/dispatches")
        .await
        .unwrap();
    assert_eq!(status, 200, "one role, the whole text: {body}");

    // The operator with only the create permission cannot approve; Ann cannot approve her
    // own dispatch.
    let (status, body) = local
        .portal_as("cy", &[CREATE_ROLE])
        .post("/dispatches/four-eyes/approve")
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains(SEND_ROLE), "{body}");
    let (status, body) = ann.post("/dispatches/four-eyes/approve").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains("four eyes"), "{body}");

    // Ann forwards the approval to Carl: Bo may no longer approve, Carl may, once.
    let (status, body) = ann
        .post_json("/dispatches/four-eyes/forward", &json!({"to": "ann"}))
        .await
        .unwrap();
    assert_eq!(status, 400, "not to the person who started it: {body}");
    let (status, body) = ann
        .post_json("/dispatches/four-eyes/forward", &json!({"to": "carl"}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["forwarded_to"], "carl");
    let (status, body) = local
        .portal_as("bo", &[SEND_ROLE])
        .post("/dispatches/four-eyes/approve")
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains("forwarded to carl"), "{body}");
    let carl = local.portal_as("carl", &[SEND_ROLE]);
    // Carl approves what he reviewed: a list other than the validated one is stale (409).
    let list_sha = d["list_sha256"]
        .as_str()
        .expect("the validated list's hash")
        .to_string();
    let template_sha = d["template_sha256"]
        .as_str()
        .expect("the templates' hash")
        .to_string();
    assert_eq!(list_sha.len(), 64);
    let (status, body) = carl
        .post_json(
            "/dispatches/four-eyes/approve",
            &json!({"list_sha256": "0".repeat(64), "template_sha256": template_sha, "valid": 2}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        detail(&body).contains("review the new validation"),
        "{body}"
    );
    let (status, body) = carl
        .post_json(
            "/dispatches/four-eyes/approve",
            &json!({"list_sha256": list_sha, "template_sha256": template_sha, "valid": 3}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "other counts than validated: {body}");
    // Two approvals at the same moment: one is taken, the other refused.
    let reviewed = json!({"list_sha256": list_sha, "template_sha256": template_sha, "valid": 2});
    let (a, b) = tokio::join!(
        carl.post_json("/dispatches/four-eyes/approve", &reviewed),
        carl.post_json("/dispatches/four-eyes/approve", &reviewed)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [202, 409], "{a:?} {b:?}");
    let approved = if a.0 == 202 { &a.1 } else { &b.1 };
    assert_eq!(approved["approved_by"], "carl");
    let (status, _) = carl.post("/dispatches/four-eyes/approve").await.unwrap();
    assert_eq!(status, 409, "approved already");

    // Every action is in the audit trail, refusals included, with its actor.
    let audit = Audit::of(&local, "four-eyes").await;
    audit.has("ann", "start", "awaiting_upload");
    audit.has("ann", "approve", "refused: four eyes");
    audit.has("ann", "forward", "to carl");
    audit.has("bo", "approve", "refused");
    audit.has("carl", "approve", "approved");
    audit.has(
        "carl",
        "approve",
        "refused: dispatch 'four-eyes' is not awaiting_approval",
    );

    // A package folder that changed after validation cannot be approved until the change is
    // validated (the manifest uploaded again).
    let (status, _) = ann
        .post_json("/dispatches", &json!({"id": "changed"}))
        .await
        .unwrap();
    assert_eq!(status, 201);
    put_package(&local, "changed").await;
    awaiting_approval(&local, "changed").await;
    // S3 keeps whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put(
        &local,
        "changed",
        "list.csv",
        b"recipient_id,name,email\n1,Ann,ann@example.net\n",
    )
    .await;
    let (status, body) = carl.post("/dispatches/changed/approve").await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(detail(&body).contains("list.csv"), "{body}");
    put(&local, "changed", "manifest.json", MANIFEST.as_bytes()).await;
    // The second attempt's validation, once it has run.
    let mut d = Value::Null;
    for _ in 0..240 {
        d = local.portal().dispatch("changed").await.unwrap().unwrap();
        if d["attempt"] == 2 && d["state"] == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(d["attempt"], 2, "{d}");
    assert_eq!(d["counts"]["valid"], 1, "{d}");
    let (status, body) = carl.post("/dispatches/changed/approve").await.unwrap();
    assert_eq!(status, 202, "{body}");

    // A package uploaded without being started through the API validates, but under four
    // eyes nobody can approve it: who started it is not known.
    put_package(&local, "direct").await;
    let d = awaiting_approval(&local, "direct").await;
    assert_eq!(d["started_by"], Value::Null);
    let (status, body) = local
        .portal()
        .post("/dispatches/direct/approve")
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        detail(&body).contains("not started through the API"),
        "{body}"
    );
    local.system.stop().await;
}

/// Every recipient of a dispatch, through the recipients endpoint, page by page.
async fn recipients(portal: &local::portal::Portal, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/dispatches/{id}/recipients?limit=7&cursor={c}"),
            None => format!("/dispatches/{id}/recipients?limit=7"),
        };
        let (status, body) = portal.get(&path).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        let got = page["recipients"].as_array().unwrap();
        assert!(got.len() <= 7);
        out.extend(got.iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return out,
        }
    }
}

fn count(recipients: &[Value], state: &str) -> usize {
    recipients.iter().filter(|r| r["state"] == state).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_while_sending_keeps_the_sent_and_rejects_the_rest() {
    let local = Local::start(local::runtime::Options {
        overrides: vec![(domain::config::vars::EMAIL_RATE_PER_SECOND, "4".into())],
        senders: Some(1),
        ..Default::default()
    })
    .await
    .expect("local environment");
    let id = "stopped";
    let mut list = String::from("recipient_id,name,email\n");
    for i in 0..30 {
        list.push_str(&format!("{i},Name{i},r{i}@example.net\n"));
    }
    local
        .upload_files(
            id,
            &[
                ("list.csv", list.as_bytes()),
                ("email.txt", b"Dear {{ name }}"),
                ("manifest.json", MANIFEST.as_bytes()),
            ],
        )
        .await
        .unwrap();
    let portal = local.portal();
    awaiting_approval(&local, id).await;

    // Paging: every row exactly once, whatever the page size and shard layout.
    let all = recipients(&portal, id).await;
    assert_eq!(all.len(), 30);
    assert_eq!(count(&all, "pending"), 30);
    let (status, _) = portal
        .get(&format!("/dispatches/{id}/recipients?state=nonsense"))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = portal
        .get(&format!("/dispatches/{id}/recipients?cursor=zz"))
        .await
        .unwrap();
    assert_eq!(status, 400);

    let (status, body) = portal
        .post(&format!("/dispatches/{id}/approve"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    // At 4 emails a second, reject once a few have gone.
    portal
        .wait_for(id, &["sending"], Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    for _ in 0..200 {
        let d = portal.dispatch(id).await.unwrap().unwrap();
        if d["counts"]["sent"].as_u64().unwrap() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A pause and a resume on the way; then the rejection.
    let (status, body) = portal
        .post(&format!("/dispatches/{id}/pause"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paused");
    let (status, body) = portal
        .post(&format!("/dispatches/{id}/resume"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "sending");
    let (status, body) = portal
        .post(&format!("/dispatches/{id}/reject"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected");
    assert_eq!(body["rejected_by"], local::APPROVER);
    let (status, _) = portal
        .post(&format!("/dispatches/{id}/pause"))
        .await
        .unwrap();
    assert_eq!(status, 409, "a rejected dispatch cannot be paused");
    let audit = Audit::of(&local, id).await;
    audit.has(local::APPROVER, "approve", "approved");
    audit.has(local::APPROVER, "pause", "paused");
    audit.has(local::APPROVER, "resume", "sending");
    audit.has(local::APPROVER, "reject", "rejected");
    audit.has(
        local::APPROVER,
        "pause",
        "refused: dispatch 'stopped' is not sending",
    );

    // Soon nobody is pending or being sent to: who was sent to stays sent, the rest are
    // rejected, and the provider got exactly the sent ones.
    let mut settled = Vec::new();
    for _ in 0..120 {
        settled = recipients(&portal, id).await;
        if count(&settled, "pending") + count(&settled, "sending") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sent = count(&settled, "sent");
    let rejected = count(&settled, "rejected");
    assert!(sent >= 3, "sent {sent}");
    assert!(rejected >= 1, "rejected {rejected}");
    assert_eq!(sent + rejected, 30, "{settled:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = local.emulator.sent_emails().await.unwrap();
    assert_eq!(mails.len(), sent, "nothing is sent after the rejection");
    let (status, body) = portal
        .get(&format!(
            "/dispatches/{id}/recipients?state=rejected&limit=1000"
        ))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let only: Value = serde_json::from_str(&body).unwrap();
    let only = only["recipients"].as_array().unwrap();
    assert_eq!(only.len(), rejected);
    assert!(only
        .iter()
        .all(|r| r["state"] == "rejected" && r["reason"].as_str().unwrap().contains("rejected")));
    local.system.stop().await;
}

fn ids(list: &Value) -> Vec<String> {
    list["dispatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatches_are_listed_searched_sorted_paged_cancelled_and_archived() {
    let local = Local::start(Default::default())
        .await
        .expect("local environment");
    let ann = local.portal_as("ann", &[CREATE_ROLE]);
    for (id, title) in [
        ("alpha-water", "Water off in Alpha"),
        ("beta-roads", "Roads closed"),
        ("gamma-water", "Water back"),
    ] {
        let (status, body) = ann
            .post_json("/dispatches", &json!({"id": id, "title": title}))
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let list = |query: &str| {
        let portal = local.portal();
        let path = format!("/dispatches{query}");
        async move {
            let (status, body) = portal.get(&path).await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    let (status, all) = list("").await;
    assert_eq!(status, 200);
    assert_eq!(all["total"], 3);
    assert_eq!(
        ids(&all),
        ["gamma-water", "beta-roads", "alpha-water"],
        "newest first"
    );
    let (_, by_name) = list("?sort=name").await;
    assert_eq!(ids(&by_name), ["beta-roads", "gamma-water", "alpha-water"]);
    let (_, by_name_desc) = list("?sort=name&order=desc").await;
    assert_eq!(
        ids(&by_name_desc),
        ["alpha-water", "gamma-water", "beta-roads"]
    );
    let (_, water) = list("?q=WATER").await;
    assert_eq!(ids(&water), ["gamma-water", "alpha-water"]);
    let (_, both_words) = list("?q=water%20alpha").await;
    assert_eq!(ids(&both_words), ["alpha-water"]);

    // Pages of two, following the cursor.
    let (_, first) = list("?limit=2&sort=name").await;
    assert_eq!(ids(&first), ["beta-roads", "gamma-water"]);
    let next = first["next"].as_str().expect("a next page").to_string();
    let (_, second) = list(&format!("?limit=2&sort=name&cursor={next}")).await;
    assert_eq!(ids(&second), ["alpha-water"]);
    assert_eq!(second["next"], Value::Null);
    for bad in [
        "?sort=size",
        "?order=up",
        "?state=nonsense",
        "?cursor=zz",
        "?limit=0",
    ] {
        assert_eq!(list(bad).await.0, 400, "{bad}");
    }

    // Cancel needs the create permission, and only before approval.
    let (status, _) = local
        .portal()
        .post("/dispatches/beta-roads/cancel")
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, body) = ann.post("/dispatches/beta-roads/cancel").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["cancelled_by"], "ann");
    let (status, _) = ann.post("/dispatches/beta-roads/cancel").await.unwrap();
    assert_eq!(status, 409);
    let (_, states) = list("?state=cancelled,awaiting_upload&sort=name").await;
    assert_eq!(ids(&states), ["beta-roads", "gamma-water", "alpha-water"]);
    let (_, cancelled) = list("?state=cancelled").await;
    assert_eq!(ids(&cancelled), ["beta-roads"]);

    // Archiving: only what is over; the default list leaves it out.
    let (status, _) = local
        .portal()
        .post("/dispatches/alpha-water/archive")
        .await
        .unwrap();
    assert_eq!(status, 409, "not over yet");
    let (status, body) = local
        .portal()
        .post("/dispatches/beta-roads/archive")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["archived_by"], local::APPROVER);
    let (status, _) = local
        .portal()
        .post("/dispatches/beta-roads/archive")
        .await
        .unwrap();
    assert_eq!(status, 409, "archived already");
    assert_eq!(ids(&list("").await.1), ["gamma-water", "alpha-water"]);
    let audit = Audit::of(&local, "beta-roads").await;
    audit.has("ann", "cancel", "cancelled");
    audit.has("ann", "cancel", "refused");
    audit.has(local::APPROVER, "archive", "cancelled");
    audit.has(
        local::APPROVER,
        "archive",
        "refused: the dispatch is archived already",
    );
    Audit::of(&local, "alpha-water").await.has(
        local::APPROVER,
        "archive",
        "refused: a dispatch that is awaiting_upload cannot be archived",
    );
    assert_eq!(ids(&list("?archived=only").await.1), ["beta-roads"]);
    assert_eq!(list("?archived=true").await.1["total"], 3);

    // Cancelling a validated dispatch: its recipients are rejected, nothing is sent.
    let (status, _) = ann
        .post_json("/dispatches", &json!({"id": "delta"}))
        .await
        .unwrap();
    assert_eq!(status, 201);
    put_package(&local, "delta").await;
    awaiting_approval(&local, "delta").await;
    let (status, body) = ann.post("/dispatches/delta/cancel").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mut settled = Vec::new();
    for _ in 0..120 {
        settled = recipients(&local.portal(), "delta").await;
        if count(&settled, "rejected") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(count(&settled, "rejected"), 2, "{settled:?}");
    assert!(settled
        .iter()
        .all(|r| r["reason"].as_str().unwrap().contains("cancelled")));
    let (status, _) = local
        .portal()
        .post("/dispatches/delta/approve")
        .await
        .unwrap();
    assert_eq!(status, 409, "a cancelled dispatch cannot be approved");
    assert!(local.emulator.sent_emails().await.unwrap().is_empty());
    local.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_are_notified_when_validation_ends_approval_is_asked_and_sending_completes() {
    let local = Local::start(Default::default())
        .await
        .expect("local environment");
    let inbox = local.operator_inbox("operator-inbox").await.unwrap();

    // One dispatch goes all the way; another fails validation (its list is missing). The
    // manifest's title replaces the one given at the start.
    let (status, _) = local
        .operator()
        .post_json(
            "/dispatches",
            &json!({"id": "notified", "title": "Water off"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    put_package(&local, "notified").await;
    awaiting_approval(&local, "notified").await;
    let (status, body) = local
        .portal()
        .post("/dispatches/notified/approve")
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    local
        .portal()
        .wait_for("notified", &["completed"], Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    put(&local, "broken", "manifest.json", MANIFEST.as_bytes()).await;
    local
        .portal()
        .wait_for(
            "broken",
            &["validation_failed"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..20 {
        for (dispatch, event, subject, envelope) in local.operator_notices(&inbox).await.unwrap() {
            assert_eq!(
                envelope["MessageAttributes"]["event"]["Value"], event,
                "the event is a message attribute too: {envelope}"
            );
            seen.push((dispatch, event, subject));
        }
        if seen.len() >= 4 {
            break;
        }
    }
    // A standard queue does not keep the order; each event comes once.
    let events = |id: &str| -> Vec<String> {
        let mut e: Vec<String> = seen
            .iter()
            .filter(|(d, _, _)| d == id)
            .map(|(_, e, _)| e.clone())
            .collect();
        e.sort();
        e
    };
    assert_eq!(
        events("notified"),
        ["approval_requested", "completed", "validation_passed"],
        "{seen:?}"
    );
    assert_eq!(events("broken"), ["validation_failed"], "{seen:?}");
    assert!(
        seen.iter().any(|(_, e, s)| e == "approval_requested"
            && s == "Dispatch Approval test: approval requested"),
        "{seen:?}"
    );
    local.system.stop().await;
}

/// API Gateway's own limits stand in front of the function, as on AWS: a body over 10 MB
/// is refused with its 413 before the authorizer or the function sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_api_gateways_10_mb_is_refused_as_api_gateway_refuses_it() {
    let local = Local::start(local::runtime::Options {
        senders: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let token = local
        .system
        .issuer
        .mint("operator", &[CREATE_ROLE], Duration::from_secs(600));
    let url = format!("{}/dispatches", local.system.api_url);
    let post = |size: usize| {
        reqwest::Client::new()
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"id\":\"big\",\"title\":\"{}\"}}",
                "x".repeat(size)
            ))
            .send()
    };
    let r = post(local::gateway::MAX_REQUEST_BYTES).await.unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({ "message": "Request Entity Too Large" }));
    // Within the limit the request reaches the function, which answers itself.
    let r = post(1_000).await.unwrap();
    assert_ne!(r.status(), 413);
    assert!(r.status().as_u16() < 500, "{}", r.status());
}
