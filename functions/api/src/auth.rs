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

/// Middleware: every guarded route needs a verified caller who may read dispatches (either
/// permission). The caller is handed to the handler, which checks what its action needs.
pub(crate) async fn identify(
    State(deps): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = verified_claims(req.extensions())
        .and_then(|claims| Caller::from_claims(claims, &deps.config.identity));
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
