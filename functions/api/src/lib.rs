//! Api: the HTTP API the internal portal calls. One axum router, served by `lambda_http` in
//! Lambda and directly on a local port by the local runtime.
//!
//! | method | path                            | what                                        |
//! |--------|---------------------------------|---------------------------------------------|
//! | GET    | `/health`                       | liveness                                    |
//! | GET    | `/dispatches?state=&limit=`     | dispatches, newest first                    |
//! | GET    | `/dispatches/{id}`              | one dispatch: state, counts, summary        |
//! | GET    | `/dispatches/{id}/report`       | validation report (CSV)                     |
//! | GET    | `/dispatches/{id}/sample`       | rendered sample messages (JSON)             |
//! | GET    | `/dispatches/{id}/example?format=csv\|xlsx` | the header the list must have  |
//! | GET    | `/dispatches/{id}/attempts/{n}/report` | an earlier validation attempt's report |
//! | GET    | `/dispatches/{id}/history`      | history document (CSV), once complete       |
//! | GET    | `/dispatches/{id}/history/summary` | counts, receipts and audit trail (JSON)  |
//! | POST   | `/dispatches/{id}/approve`      | approve: fan-out starts                     |
//! | POST   | `/dispatches/{id}/reject`       | reject: nothing is sent                     |
//! | POST   | `/dispatches/{id}/pause`        | stop sending within about a second         |
//! | POST   | `/dispatches/{id}/resume`       | continue with the recipients not yet sent   |
//! | POST   | `/dispatches/{id}/close`        | close a dispatch completed with errors      |

use axum::extract::{Path, Query, State};
use axum::http::{header, Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::completion;
use shared::config::Config;
use shared::documents::{keys, Documents};
use shared::model::{now_rfc3339, Dispatch, DispatchState};
use shared::queue::{self, FanOutAction};
use shared::store::{self, Store};
use std::sync::Arc;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
    pub sqs: aws_sdk_sqs::Client,
}

impl Deps {
    pub fn new(config: Config, clients: &shared::aws::Clients) -> Deps {
        Deps {
            store: Store::from_config(clients, &config),
            docs: Documents::from_config(clients, &config),
            sqs: clients.sqs.clone(),
            config,
        }
    }
}

type AppState = Arc<Deps>;

/// The API's routes.
pub fn router(deps: Arc<Deps>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/dispatches", get(list_dispatches))
        .route("/dispatches/{id}", get(get_dispatch))
        .route("/dispatches/{id}/report", get(get_report))
        .route("/dispatches/{id}/sample", get(get_sample))
        .route("/dispatches/{id}/example", get(get_example))
        .route(
            "/dispatches/{id}/attempts/{n}/report",
            get(get_attempt_report),
        )
        .route("/dispatches/{id}/history", get(get_history))
        .route("/dispatches/{id}/history/summary", get(get_history_summary))
        .route("/dispatches/{id}/approve", post(approve))
        .route("/dispatches/{id}/reject", post(reject))
        .route("/dispatches/{id}/pause", post(pause))
        .route("/dispatches/{id}/resume", post(resume))
        .route("/dispatches/{id}/close", post(close))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(deps)
}

/// Errors as `application/problem+json`, with no internal detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
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

impl From<shared::Error> for ApiError {
    fn from(e: shared::Error) -> ApiError {
        match e {
            shared::Error::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("{what} does not exist"))
            }
            shared::Error::Conflict(why) => ApiError::new(StatusCode::CONFLICT, why),
            e @ shared::Error::Aws { .. } => {
                tracing::error!(error = %e, "backing service failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a backing service did not answer; try again",
                )
            }
            e @ shared::Error::Malformed(_) => {
                tracing::error!(error = %e, "stored data is malformed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The caller's id from the claims API Gateway's JWT authorizer verified, when there is one.
fn caller(ext: &Extensions) -> String {
    use lambda_http::request::RequestContext;
    match ext.get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|j| j.claims.get("sub").cloned()),
        _ => None,
    }
    .unwrap_or_else(|| "unauthenticated".to_string())
}

/// A dispatch as the portal shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DispatchView {
    #[serde(flatten)]
    pub dispatch: Dispatch,
    /// "X of Y sent".
    pub progress: String,
}

impl From<Dispatch> for DispatchView {
    fn from(d: Dispatch) -> Self {
        let progress = format!("{} of {} sent", d.counts.sent, d.counts.valid);
        DispatchView {
            dispatch: d,
            progress,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<i32>,
}

async fn list_dispatches(
    State(deps): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let state = q
        .state
        .as_deref()
        .map(str::parse::<DispatchState>)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit must be from 1 to 500",
        ));
    }
    let list = deps.store.list_dispatches(state, limit).await?;
    let views: Vec<DispatchView> = list.into_iter().map(DispatchView::from).collect();
    Ok(Json(json!({ "dispatches": views })))
}

async fn load(deps: &Deps, id: &str) -> ApiResult<Dispatch> {
    shared::manifest::check_dispatch_id(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    deps.store.get_dispatch(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("dispatch '{id}' does not exist"),
        )
    })
}

async fn get_dispatch(
    State(deps): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = load(&deps, &id).await?;
    let summary = match deps.docs.report_document(&keys::summary(&id)).await? {
        Some(bytes) => serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
        None => Value::Null,
    };
    let mut view = serde_json::to_value(DispatchView::from(d)).unwrap_or(Value::Null);
    view["validation"] = summary;
    Ok(Json(view))
}

async fn document(
    deps: &Deps,
    key: Option<String>,
    what: &str,
    content_type: &'static str,
) -> ApiResult<Response> {
    let key =
        key.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("there is no {what} yet")))?;
    let body =
        deps.docs.report_document(&key).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("there is no {what} yet"))
        })?;
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn get_report(State(deps): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    document(
        &deps,
        d.report_key,
        "validation report",
        "text/csv; charset=utf-8",
    )
    .await
}

async fn get_sample(State(deps): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    document(&deps, d.sample_key, "sample", "application/json").await
}

#[derive(Debug, Deserialize)]
struct ExampleQuery {
    format: Option<String>,
}

/// The example file: the header a list for this dispatch's templates must have.
async fn get_example(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ExampleQuery>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    let (ext, content_type) = match q.format.as_deref().unwrap_or("csv") {
        "csv" => ("csv", "text/csv; charset=utf-8"),
        "xlsx" => (
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("format '{other}' is not offered; use csv or xlsx"),
            ))
        }
    };
    let mut response = document(
        &deps,
        Some(keys::example(&d.id, ext)),
        "example file",
        content_type,
    )
    .await?;
    if let Ok(v) = header::HeaderValue::from_str(&format!(
        "attachment; filename=\"{}-example.{ext}\"",
        d.id.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
            "_"
        )
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The report of an earlier validation attempt, kept when a corrected package replaced it.
async fn get_attempt_report(
    State(deps): State<AppState>,
    Path((id, n)): Path<(String, u32)>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    let key = d
        .attempts
        .iter()
        .find(|a| a.attempt == n)
        .and_then(|a| a.report_key.clone());
    document(
        &deps,
        key,
        "report of that attempt",
        "text/csv; charset=utf-8",
    )
    .await
}

async fn get_history(State(deps): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    document(
        &deps,
        d.history_key,
        "history document",
        "text/csv; charset=utf-8",
    )
    .await
}

async fn get_history_summary(
    State(deps): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    document(
        &deps,
        d.history_key.map(|_| keys::history_summary(&id)),
        "history summary",
        "application/json",
    )
    .await
}

/// Closes a dispatch that completed with errors, after the operator reviewed the history.
async fn close(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    ext: Extensions,
) -> ApiResult<Json<DispatchView>> {
    load(&deps, &id).await?;
    let by = caller(&ext);
    let d = completion::close(&deps.store, &deps.docs, &id, &by).await?;
    tracing::info!(dispatch = %id, by = %by, "closed");
    Ok(Json(d.into()))
}

async fn approve(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    ext: Extensions,
) -> ApiResult<(StatusCode, Json<DispatchView>)> {
    load(&deps, &id).await?;
    let by = caller(&ext);
    let d = deps
        .store
        .transition(
            &id,
            DispatchState::AwaitingApproval,
            DispatchState::Approved,
            &[
                ("approved_by", store::s(by.clone())),
                ("approved_at", store::s(now_rfc3339())),
            ],
        )
        .await?;
    tracing::info!(dispatch = %id, by = %by, "approved");
    deps.store
        .audit_or_log(&id, &by, "approve", d.state.as_str())
        .await;
    // If this enqueue fails, the scheduled resume function fans the approved dispatch out.
    send_pending(&deps, &d).await;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}

/// Queues fan-out of a dispatch's pending recipients; a failure is logged and left to the
/// schedule.
async fn send_pending(deps: &Deps, d: &Dispatch) {
    if let Err(e) = queue::fan_out_all(
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

async fn reject(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    ext: Extensions,
) -> ApiResult<Json<DispatchView>> {
    load(&deps, &id).await?;
    let by = caller(&ext);
    let d = deps
        .store
        .transition(
            &id,
            DispatchState::AwaitingApproval,
            DispatchState::Rejected,
            &[
                ("rejected_by", store::s(by.clone())),
                ("rejected_at", store::s(now_rfc3339())),
            ],
        )
        .await?;
    tracing::info!(dispatch = %id, by = %by, "rejected");
    deps.store
        .audit_or_log(&id, &by, "reject", d.state.as_str())
        .await;
    queue::fan_out_all(
        &deps.sqs,
        &deps.config.fanout_queue_url,
        &d,
        FanOutAction::Reject,
    )
    .await?;
    Ok(Json(d.into()))
}

async fn pause(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    ext: Extensions,
) -> ApiResult<Json<DispatchView>> {
    let d = load(&deps, &id).await?;
    let by = caller(&ext);
    let extra = [
        ("paused_by", store::s(by.clone())),
        ("paused_at", store::s(now_rfc3339())),
    ];
    let from = match d.state {
        DispatchState::WaitingForContinuation => DispatchState::WaitingForContinuation,
        _ => DispatchState::Sending,
    };
    let d = deps
        .store
        .transition(&id, from, DispatchState::Paused, &extra)
        .await?;
    tracing::info!(dispatch = %id, by = %by, "paused");
    deps.store
        .audit_or_log(&id, &by, "pause", d.state.as_str())
        .await;
    Ok(Json(d.into()))
}

async fn resume(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    ext: Extensions,
) -> ApiResult<(StatusCode, Json<DispatchView>)> {
    load(&deps, &id).await?;
    let by = caller(&ext);
    let d = deps
        .store
        .transition(
            &id,
            DispatchState::Paused,
            DispatchState::Sending,
            &[("resumed_by", store::s(by.clone()))],
        )
        .await?;
    tracing::info!(dispatch = %id, by = %by, "resumed");
    deps.store
        .audit_or_log(&id, &by, "resume", d.state.as_str())
        .await;
    // If this enqueue fails, the scheduled resume function hands the pending recipients out
    // once the dispatch has been quiet for a while.
    send_pending(&deps, &d).await;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}
