//! Test support: a minimal Lambda Runtime API, so that each function binary can be booted
//! as Lambda boots it and handed one event, and a fault-injection proxy.

pub mod proxy;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Notify};

/// What the function sent back for its one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Response(Vec<u8>),
    Error(Vec<u8>),
    InitError(Vec<u8>),
}

struct Shared {
    event: Mutex<Option<Vec<u8>>>,
    answer: Mutex<Option<oneshot::Sender<Answer>>>,
    never: Notify,
}

/// Serves `/2018-06-01/runtime/invocation/next` once with `event`, then holds further
/// `next` calls open; the answer arrives on the returned receiver.
pub async fn runtime_api(event: Vec<u8>) -> (String, oneshot::Receiver<Answer>) {
    let (tx, rx) = oneshot::channel();
    let shared = Arc::new(Shared {
        event: Mutex::new(Some(event)),
        answer: Mutex::new(Some(tx)),
        never: Notify::new(),
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, rx)
}

const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";

async fn next(State(s): State<Arc<Shared>>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let event = s.event.lock().expect("lock").take();
    let Some(event) = event else {
        // One invocation only: the next poll waits until the process is stopped.
        s.never.notified().await;
        return (StatusCode::INTERNAL_SERVER_ERROR, HeaderMap::new(), vec![]);
    };
    let mut h = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() + 60_000)
        .unwrap_or_default();
    h.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_static(REQUEST_ID),
    );
    h.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from_str(&deadline.to_string()).expect("header"),
    );
    h.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:eu-west-1:123456789012:function:boot-test"),
    );
    h.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static(
            "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
        ),
    );
    (StatusCode::OK, h, event)
}

fn deliver(s: &Shared, a: Answer) -> StatusCode {
    if let Some(tx) = s.answer.lock().expect("lock").take() {
        let _ = tx.send(a);
    }
    StatusCode::ACCEPTED
}

async fn response(
    State(s): State<Arc<Shared>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    deliver(&s, Answer::Response(body.to_vec()))
}

async fn error(State(s): State<Arc<Shared>>, Path(_id): Path<String>, body: Bytes) -> StatusCode {
    deliver(&s, Answer::Error(body.to_vec()))
}

async fn init_error(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    deliver(&s, Answer::InitError(body.to_vec()))
}
