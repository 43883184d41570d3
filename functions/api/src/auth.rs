//! Who is calling: the verified caller from the token's claims, and what they may do.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{Extensions, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::identity::{Caller, Permission, CREATE_ROLE, SEND_ROLE};

/// The claims API Gateway's JWT authorizer verified, when there are any.
pub(crate) fn verified_claims(
    ext: &Extensions,
) -> Option<&std::collections::HashMap<String, String>> {
    use lambda_http::request::RequestContext;
    match ext.get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|j| &j.claims),
        _ => None,
    }
}

/// The payload of the request's bearer token, which API Gateway verified, read for the
/// array claims it passes on flattened. Its signature is API Gateway's to check: what is read
/// here only tells apart entries of a claim whose flattened text API Gateway verified.
fn bearer_payload(
    headers: &axum::http::HeaderMap,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine as _;
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim();
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Middleware: every guarded route needs a verified caller who may read dispatches (either
/// permission). The caller is handed to the handler, which checks what its action needs.
pub(crate) async fn identify(
    State(deps): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = bearer_payload(req.headers());
    let caller = verified_claims(req.extensions())
        .and_then(|claims| Caller::from_claims(claims, &deps.config.identity, token.as_ref()));
    let Some(caller) = caller else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no verified identity: call the API with a token from the organisation's identity provider",
        )
        .into_response();
    };
    if !caller.may_read() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this needs the {CREATE_ROLE} or the {SEND_ROLE} permission"),
        )
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The caller may do what needs `permission`, or the answer is 403.
pub(crate) fn require(caller: &Caller, permission: Permission, doing: &str) -> ApiResult<()> {
    if caller.may(permission) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("to {doing} you need the {permission} permission"),
        ))
    }
}
