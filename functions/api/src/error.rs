//! Errors as `application/problem+json`, with no internal detail, and never more than
//! [`input::DETAIL_CHARS`] characters of detail: no answer echoes unbounded input back.

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::limits::{input, truncated};
use serde_json::json;

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// Errors as `application/problem+json`, with no internal detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(crate) detail: String,
    /// Already in the dispatch's audit trail.
    pub(crate) audited: bool,
}

/// Marks an answer whose refusal is already in the audit trail.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Audited;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        let detail: String = detail.into();
        ApiError {
            status,
            detail: truncated(&detail, input::DETAIL_CHARS).into_owned(),
            audited: false,
        }
    }

    /// A `400` for a value over its limit, naming the field and the limit.
    pub fn too_long(field: &str, limit: usize, unit: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field} is longer than its limit of {limit} {unit}"),
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut res = (
            self.status,
            [(header::CONTENT_TYPE, PROBLEM_JSON)],
            body.to_string(),
        )
            .into_response();
        if self.audited {
            res.extensions_mut().insert(Audited);
        }
        res
    }
}

impl From<domain::Error> for ApiError {
    fn from(e: domain::Error) -> ApiError {
        match e {
            domain::Error::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("{what} does not exist"))
            }
            domain::Error::Conflict(why) => ApiError::new(StatusCode::CONFLICT, why),
            e @ domain::Error::Aws { .. } => {
                tracing::error!(error = %e, "backing service failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a backing service did not answer; try again",
                )
            }
            e @ domain::Error::Malformed(_) => {
                tracing::error!(error = %e, "stored data is malformed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Whether an answer is already a problem document.
pub(crate) fn is_problem(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// A refusal of the framework's own (an unreadable path or query value, a body over the
/// limit, a method the route does not take) as a problem document. Its text is not kept: it
/// names types of the code and repeats what was sent.
/// A page for people (the unsubscribe endpoint's), answered as it is.
fn is_page(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

pub(crate) fn as_problem(method: &Method, res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&res) || is_page(&res)
    {
        return res;
    }
    let detail = match status {
        StatusCode::BAD_REQUEST => "a value in the path or the query string cannot be read: see the API's description for what each one takes".to_string(),
        StatusCode::NOT_FOUND => "no such endpoint".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => format!("this endpoint does not take {method}"),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the body is over the limit of {} bytes", input::BODY_BYTES)
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "the body's content type is not one this endpoint reads".to_string(),
        StatusCode::UNPROCESSABLE_ENTITY => "the body cannot be read".to_string(),
        s if s.is_server_error() => "internal error".to_string(),
        _ => "the request cannot be answered".to_string(),
    };
    let allow: Option<HeaderValue> = res.headers().get(header::ALLOW).cloned();
    let audited = res.extensions().get::<Audited>().copied();
    let mut out = ApiError::new(status, detail).into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    if let Some(a) = audited {
        out.extensions_mut().insert(a);
    }
    out
}

/// Axum middleware: every refusal the router gives is `application/problem+json`.
pub(crate) async fn problems(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    as_problem(&method, next.run(req).await)
}
