//! The committed OpenAPI document (`functions/api/openapi.json`) and the API's router agree:
//! the same paths and methods, every documented operation answered by its route (not the
//! fallback, not 405) with a status the document lists, and every other method refused.

use domain::identity::{CREATE_ROLE, SEND_ROLE};
use local::Local;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("functions/api/openapi.json")).expect("openapi.json"),
    )
    .expect("openapi.json is JSON")
}

/// Operations of the document: (method, path).
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect()
}

/// Operations of the router, read from its source: every `.route("<path>", get(..).post(..))`.
fn routed() -> BTreeSet<(String, String)> {
    let source =
        std::fs::read_to_string(repo().join("functions/api/src/lib.rs")).expect("api source");
    let mut out = BTreeSet::new();
    for part in source.split(".route(").skip(1) {
        let part = part.trim_start();
        let Some(rest) = part.strip_prefix('"') else {
            continue;
        };
        let (path, rest) = rest.split_once('"').expect("a quoted path");
        // The handlers, up to the next builder call on the router.
        let handlers = rest
            .split(['\n'])
            .take_while(|l| !l.trim_start().starts_with(".route") && !l.contains(".fallback"))
            .collect::<Vec<_>>()
            .join(" ");
        for m in METHODS {
            let found = handlers.match_indices(&format!("{m}(")).any(|(i, _)| {
                i == 0
                    || !handlers[..i]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if found {
                out.insert((m.to_string(), path.to_string()));
            }
        }
    }
    out
}

#[test]
fn the_document_is_openapi_3_and_names_the_routes_of_the_router() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented = documented(&doc);
    let routed = routed();
    assert!(
        routed.len() >= 15,
        "routes read from the source: {routed:?}"
    );
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not routed"
    );
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed but not documented"
    );
    // Every operation but the public ones (/health, /unsubscribe) names its permission and
    // says how it refuses callers.
    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        if op["security"] != json!([]) {
            assert!(op["x-permission"].is_string(), "{method} {path}");
            for status in ["401", "403"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
}

/// A path of the document with its parameters filled in, for a dispatch that does not exist.
fn concrete(path: &str) -> String {
    path.replace("{id}", "no-such-dispatch")
        .replace("{n}", "1")
        .replace("{job}", "no-such-job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_answered_by_its_route_with_a_documented_status() {
    let doc = document();
    let local = Local::start(Default::default())
        .await
        .expect("local environment");
    let portal = local.portal_as("reader", &[CREATE_ROLE, SEND_ROLE]);
    let client = reqwest::Client::new();
    let token = local.system.issuer.mint(
        "reader",
        &[CREATE_ROLE, SEND_ROLE],
        std::time::Duration::from_secs(600),
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let url = format!("{}{}", local.system.api_url, concrete(path));
        for m in METHODS {
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = client
                .request(method, &url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(json!({}).to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            match item.get(m) {
                Some(op) => {
                    assert_ne!(status, 405, "{m} {path}: {body}");
                    assert!(
                        !body.contains("no such endpoint"),
                        "{m} {path} reached the fallback"
                    );
                    assert!(
                        op["responses"][status.to_string()].is_object(),
                        "{m} {path} answered {status}, which the document does not list: {body}"
                    );
                }
                None => assert_eq!(status, 405, "{m} {path} is not documented: {body}"),
            }
        }
    }
    // An unknown path is the fallback's 404.
    let (status, body) = portal.get("/nowhere").await.unwrap();
    assert_eq!(status, 404, "{body}");
    local.system.stop().await;
}
