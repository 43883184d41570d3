//! Careless and hostile input at the API, against the emulator: every value is bounded and
//! refused with a `400` naming the field and its limit; every refusal, the framework's own
//! too, is `application/problem+json` that echoes no more than a bounded part of what was
//! sent; refusals of a known caller are in the audit trail. A property test throws
//! arbitrary methods, paths, query strings and bodies at the router.

use domain::identity::{CREATE_ROLE, SEND_ROLE};
use domain::limits::input;
use local::portal::Portal;
use local::Local;
use proptest::prelude::*;
use serde_json::{json, Value};

/// The longest refusal body any answer may have: a problem document with a bounded detail.
const MAX_PROBLEM_BYTES: usize = 1_500;

/// Checks one answer: never a 5xx; a refusal is a problem document of bounded size.
fn judged(what: &str, (status, content_type, body): &(u16, String, Vec<u8>)) -> Value {
    assert!(
        *status < 500,
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    if *status < 400 {
        return Value::Null;
    }
    assert!(
        content_type.starts_with("application/problem+json"),
        "{what}: {status} as '{content_type}': {}",
        String::from_utf8_lossy(body)
    );
    assert!(
        body.len() <= MAX_PROBLEM_BYTES,
        "{what}: a refusal of {} bytes",
        body.len()
    );
    let problem: Value = serde_json::from_slice(body).expect("a problem document is JSON");
    assert_eq!(problem["status"], *status, "{what}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}"
    );
    problem
}

async fn send(portal: &Portal, method: &str, path: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    portal.send(method, path, body).await.unwrap()
}

async fn trail(local: &Local, id: &str) -> Vec<Value> {
    let (status, body) = local
        .portal()
        .get(&format!("/dispatches/{id}/audit"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["audit"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_is_bounded_and_every_refusal_is_a_bounded_problem_that_is_audited() {
    let local = Local::start(Default::default()).await.unwrap();
    let both = local.portal_as("pat", &[CREATE_ROLE, SEND_ROLE]);
    let operator = local.operator();

    // A title of 1 MB: a 400 naming the field and its limit (it used to be a 503 that no
    // retry could mend: the item was over DynamoDB's size limit).
    let huge_title = json!({"id": "huge-title", "title": "t".repeat(1_000_000)});
    let answer = send(
        &operator,
        "POST",
        "/dispatches",
        huge_title.to_string().into_bytes(),
    )
    .await;
    let p = judged("a 1 MB title", &answer);
    assert_eq!(answer.0, 400);
    assert_eq!(
        p["detail"],
        format!(
            "title is longer than its limit of {} characters",
            input::TITLE_CHARS
        )
    );
    // A body over the API's limit: 413, as a problem.
    let answer = send(
        &operator,
        "POST",
        "/dispatches",
        vec![b' '; input::BODY_BYTES + 1],
    )
    .await;
    assert_eq!(judged("a body over the limit", &answer)["status"], 413);

    // The framework's own refusals, as problems without its words.
    for (method, path, want) in [
        ("GET", "/dispatches?limit=abc", 400),
        ("GET", "/dispatches?limit=99999999999999999999999", 400),
        ("GET", "/dispatches/x/attempts/abc/report", 400),
        ("GET", "/dispatches/%FF%FE", 400),
        ("GET", "/dispatches?state=a&state=b", 400),
        ("DELETE", "/dispatches", 405),
        ("PUT", "/dispatches/x/approve", 405),
        ("GET", "/nothing-here", 404),
    ] {
        let answer = send(&both, method, path, Vec::new()).await;
        let p = judged(&format!("{method} {path}"), &answer);
        assert_eq!(answer.0, want, "{method} {path}: {p}");
        let detail = p["detail"].as_str().unwrap_or_default();
        for framework in [
            "Cannot parse",
            "deserialize",
            "Invalid UTF-8",
            "axum",
            "u32",
        ] {
            assert!(!detail.contains(framework), "{method} {path}: {detail}");
        }
    }
    let p = judged(
        "limit",
        &send(&both, "GET", "/dispatches?limit=abc", Vec::new()).await,
    );
    assert_eq!(p["detail"], "limit must be a whole number from 1 to 500");
    let long_q = format!("/dispatches?q={}", "w".repeat(input::QUERY_VALUE_CHARS + 1));
    let p = judged(
        "a long search",
        &send(&both, "GET", &long_q, Vec::new()).await,
    );
    assert_eq!(
        p["detail"],
        format!(
            "q is longer than its limit of {} characters",
            input::QUERY_VALUE_CHARS
        )
    );

    // A dispatch to refuse things on.
    let (status, body) = operator
        .post_json("/dispatches", &json!({"id": "probed", "title": "Probed"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    // Oversized recipient ids (150 KB): refused, naming the limit, with no echo; audited.
    let ids = json!({"recipient_ids": ["i".repeat(150_000), "2"]});
    let answer = send(
        &operator,
        "POST",
        "/dispatches/probed/remove",
        ids.to_string().into_bytes(),
    )
    .await;
    let p = judged("150 KB ids", &answer);
    assert_eq!(answer.0, 400);
    assert_eq!(
        p["detail"],
        format!(
            "a recipient id is longer than its limit of {} bytes",
            input::RECIPIENT_ID_BYTES
        )
    );
    // A cursor whose sort key is over DynamoDB's 1,024 bytes.
    let cursor = hex::encode(format!("0:R#{}", "k".repeat(1030)));
    let answer = send(
        &both,
        "GET",
        &format!("/dispatches/probed/recipients?cursor={cursor}"),
        Vec::new(),
    )
    .await;
    assert_eq!(judged("a long cursor", &answer)["status"], 400);
    // A refusal for want of a permission is audited too, under the action it was.
    let answer = send(&operator, "POST", "/dispatches/probed/approve", Vec::new()).await;
    assert_eq!(
        judged("approve without the permission", &answer)["status"],
        403
    );

    let entries = trail(&local, "probed").await;
    let refusals: Vec<(String, String)> = entries
        .iter()
        .filter(|e| {
            e["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("refused"))
        })
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let has = |action: &str, part: &str| {
        refusals
            .iter()
            .any(|(a, o)| a == action && o.contains(part))
    };
    assert!(
        has("remove", "a recipient id is longer than its limit"),
        "{refusals:?}"
    );
    assert!(
        has("read recipients", "the cursor is not one this API gave"),
        "{refusals:?}"
    );
    assert!(has("approve", "you need the"), "{refusals:?}");
    for e in &entries {
        assert!(
            e.to_string().len() <= input::AUDIT_OUTCOME_CHARS * 4 + 1_000,
            "an audit entry is bounded: {} bytes",
            e.to_string().len()
        );
    }
    local.system.stop().await;
}

/// Arbitrary requests: a method, a path made of segments that may be anything (or one of
/// the API's own words), a query string and a body.
fn request() -> impl Strategy<Value = (String, String, Vec<u8>)> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
    let word = prop_oneof![
        prop::sample::select(vec![
            "dispatches",
            "report",
            "sample",
            "example",
            "attempts",
            "audit",
            "recipients",
            "history",
            "summary",
            "forward",
            "approve",
            "reject",
            "pause",
            "resume",
            "close",
            "cancel",
            "archive",
            "repeat",
            "remove",
            "resend",
            "download",
            "health",
            "probe",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z0-9._~-]{0,80}",
        "(%[0-9A-F]{2}){1,12}",
        "\\PC{0,20}".prop_map(|s| urlencode(&s)),
        (1usize..5_000).prop_map(|n| "x".repeat(n)),
    ];
    let path = prop::collection::vec(word, 0..5).prop_map(|segments| {
        let mut p = String::from("/dispatches");
        for s in segments {
            p.push('/');
            p.push_str(&s);
        }
        p
    });
    let key = prop::sample::select(vec![
        "limit", "cursor", "state", "q", "sort", "order", "archived", "format", "other",
    ]);
    let value = prop_oneof![
        "[a-z0-9_,-]{0,30}",
        "-?[0-9]{1,25}",
        (1usize..3_000).prop_map(|n| "v".repeat(n)),
        "(%[0-9A-F]{2}){1,8}",
    ];
    let query = prop::collection::vec((key, value), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    });
    let body = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..400),
        "\\PC{0,200}".prop_map(String::into_bytes),
        (1usize..200_000).prop_map(|n| {
            json!({"recipient_ids": ["r".repeat(n)], "to": "t".repeat(n % 500), "id": "p", "title": "x".repeat(n)})
                .to_string()
                .into_bytes()
        }),
        Just(br#"{"states": ["failed", "unknown"], "valid": "many"}"#.to_vec()),
    ];
    (method, path, query, body).prop_map(|(m, p, q, b)| {
        let path = if q.is_empty() { p } else { format!("{p}?{q}") };
        (m.to_string(), path, b)
    })
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn arbitrary_requests_never_get_a_5xx_and_every_refusal_is_a_bounded_problem() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let local = rt.block_on(Local::start(Default::default())).unwrap();
    let portal = local.portal_as("fuzz", &[CREATE_ROLE, SEND_ROLE]);
    // One dispatch that exists, so that paths naming it reach the handlers' own checks.
    rt.block_on(portal.post_json("/dispatches", &json!({"id": "probe", "title": "Probe"})))
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&request(), |(method, path, body)| {
            let answer = rt.block_on(send(&portal, &method, &path, body));
            judged(&format!("{method} {path}"), &answer);
            Ok(())
        })
        .unwrap();
    rt.block_on(local.system.stop());
}
