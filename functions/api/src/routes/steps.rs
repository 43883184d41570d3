//! The steps the routes share: loading the dispatch, auditing an action's outcome or its
//! refusal, and queueing the fan-out that follows.

use crate::error::{ApiError, ApiResult};
use crate::Deps;
use adapters::sqs;
use axum::http::StatusCode;
use domain::ids::DispatchId;
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
    let result = result.map_err(Into::into);
    if let Err(e) = &result {
        deps.store
            .audit_or_log(id, by, action, &format!("refused: {}", e.detail))
            .await;
    }
    result
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
