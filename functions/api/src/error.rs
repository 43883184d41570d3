//! Errors as `application/problem+json`, with no internal detail.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Errors as `application/problem+json`, with no internal detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(crate) detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
        }
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
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
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
