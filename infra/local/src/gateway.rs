//! API Gateway's limits in front of the local API, answered as an HTTP API answers them:
//! a request body over 10 MB is refused with 413, an integration that takes more than 29 s
//! with 503, and a Lambda response over 6 MB (the function's response payload, where a
//! binary body is base64-encoded) with 500, each with API Gateway's JSON `message`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// API Gateway's integration timeout.
pub const TIMEOUT: Duration = Duration::from_secs(29);
/// API Gateway's largest request body.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Lambda's largest response payload.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

fn gateway(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response()
}

/// Whether a response's body travels as text in the Lambda response (else base64).
fn is_text(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.starts_with("text/")
                || t.contains("json")
                || t.contains("xml")
                || t.contains("javascript")
        })
}

pub async fn limits(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return gateway(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let request = Request::from_parts(parts, Body::from(body));
    let Ok(response) = tokio::time::timeout(TIMEOUT, next.run(request)).await else {
        tracing::error!("the API took longer than API Gateway waits (29 s)");
        return gateway(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    };
    let text = is_text(&response);
    let (parts, body) = response.into_parts();
    // Read a little past the limit: what matters is only whether it is over.
    let Ok(bytes) = axum::body::to_bytes(body, MAX_RESPONSE_BYTES * 2).await else {
        return too_large();
    };
    let payload = if text {
        bytes.len()
    } else {
        bytes.len().div_ceil(3) * 4
    };
    if payload > MAX_RESPONSE_BYTES {
        return too_large();
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn too_large() -> Response {
    tracing::error!("the API's answer is over Lambda's 6 MB response limit");
    gateway(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}
