//! The steps the routes share: loading the dispatch, auditing an action's outcome or its
//! refusal, and queueing the fan-out that follows.

use crate::error::{as_problem, ApiError, ApiResult, Audited};
use crate::{AppState, Deps};
use adapters::sqs;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use domain::identity::Caller;
use domain::ids::DispatchId;
use domain::limits::truncated;
use domain::model::Dispatch;
use domain::queue::FanOutAction;

pub(crate) async fn load(deps: &Deps, id: &str) -> ApiResult<Dispatch> {
    let id = DispatchId::parse(id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    deps.store.get_dispatch(id.as_str()).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("dispatch '{id}' does not exist"),
        )
    })
}

/// Logs an action a caller took and writes it to the dispatch's audit trail.
pub(crate) async fn record(deps: &Deps, id: &str, by: &str, action: &str, outcome: &str) {
    tracing::info!(dispatch = %id, by = %by, action, outcome, "done");
    deps.store.audit_or_log(id, by, action, outcome).await;
}

/// The end of an action that changes a dispatch: its new state is audited as the outcome,
/// or its refusal is.
pub(crate) async fn settle<E: Into<ApiError>>(
    deps: &Deps,
    id: &str,
    by: &str,
    action: &str,
    result: Result<Dispatch, E>,
) -> ApiResult<Dispatch> {
    let d = audit_refusal(deps, id, by, action, result).await?;
    record(deps, id, by, action, d.state.as_str()).await;
    Ok(d)
}

/// Audits an action refused after the caller's permission was checked, then answers.
pub(crate) async fn audit_refusal<T, E: Into<ApiError>>(
    deps: &Deps,
    id: &str,
    by: &str,
    action: &str,
    result: Result<T, E>,
) -> ApiResult<T> {
    let mut result = result.map_err(Into::into);
    if let Err(e) = &mut result {
        deps.store
            .audit_or_log(id, by, action, &format!("refused: {}", e.detail))
            .await;
        e.audited = true;
    }
    result
}

/// Axum middleware, inside the caller check of the guarded routes: a refusal its handler did
/// not audit (a missing permission, an unreadable path, query or body, a value over its
/// limit) is audited here, in the trail of the dispatch the path names, or in the API's own
/// trail when it names none there is.
pub(crate) async fn audit_refusals(
    State(deps): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let caller = req.extensions().get::<Caller>().map(|c| c.id.clone());
    let res = as_problem(&method, next.run(req).await);
    let status = res.status();
    let refused = status.is_client_error() || status.is_server_error();
    let Some(caller) = caller.filter(|_| refused && res.extensions().get::<Audited>().is_none())
    else {
        return res;
    };
    let (parts, body) = res.into_parts();
    // A problem document of ours: small, its detail bounded.
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_default();
    let (dispatch, action) = action_of(&method, &path);
    let outcome = format!("refused ({}): {detail}", status.as_u16());
    match dispatch.filter(|_| status != StatusCode::NOT_FOUND) {
        Some(id) => {
            deps.store
                .audit_or_log(&id, &caller, &action, &outcome)
                .await
        }
        None => {
            deps.store
                .audit_api_or_log(
                    &caller,
                    &format!("{action} {}", truncated(&path, 100)),
                    &outcome,
                )
                .await
        }
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The dispatch a path names (when it is a dispatch id) and the action a request is: the
/// step of a POST (`approve`, `start` for `POST /dispatches`), `read` and what of a GET.
fn action_of(method: &Method, path: &str) -> (Option<String>, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let dispatch = segments
        .get(1)
        .and_then(|s| DispatchId::parse(s).ok())
        .map(|d| d.as_str().to_string());
    let step = segments.get(2).copied().unwrap_or("");
    let action = match (method, segments.len()) {
        (&Method::POST, 1) => "start".to_string(),
        (&Method::POST, _) => step.to_string(),
        (&Method::GET, 1) => "read dispatches".to_string(),
        (&Method::GET, 2) => "read dispatch".to_string(),
        (&Method::GET, _) => format!("read {step}"),
        (m, _) => format!("{m} {step}"),
    };
    (dispatch, truncated(&action, 100).into_owned())
}

/// Queues the rejection of a dispatch's recipients not yet sent to.
pub(crate) async fn reject_unsent(deps: &Deps, d: &Dispatch) -> domain::Result<()> {
    sqs::fan_out_all(
        &deps.sqs,
        &deps.config.fanout_queue_url,
        d,
        FanOutAction::Reject,
    )
    .await
}

/// Queues fan-out of a dispatch's pending recipients; a failure is logged and left to the
/// schedule.
pub(crate) async fn send_pending(deps: &Deps, d: &Dispatch) {
    if let Err(e) = sqs::fan_out_all(
        &deps.sqs,
        &deps.config.fanout_queue_url,
        d,
        FanOutAction::Send,
    )
    .await
    {
        tracing::error!(dispatch = %d.id, error = %e, "fan-out not queued; the schedule will retry");
    }
}
