//! Api: the HTTP API the internal portal calls. One axum router, served by `lambda_http` in
//! Lambda and directly on a local port by the local runtime.
//!
//! Every route but `/health` needs a verified caller (the claims of API Gateway's JWT
//! authorizer) with one of the two permissions; the actions say which one they need.
//!
//! | method | path                            | what                                        |
//! |--------|---------------------------------|---------------------------------------------|
//! | GET    | `/health`                       | liveness                                    |
//! | GET    | `/dispatches?state=&q=&sort=&order=&limit=&cursor=` | dispatches: filter, search, sort, pages |
//! | POST   | `/dispatches`                   | start a dispatch; its package is uploaded next (create) |
//! | GET    | `/dispatches/{id}`              | one dispatch: state, counts, summary        |
//! | GET    | `/dispatches/{id}/report`       | validation report (CSV)                     |
//! | GET    | `/dispatches/{id}/sample`       | rendered sample messages (JSON)             |
//! | GET    | `/dispatches/{id}/example?format=csv\|xlsx` | the header the list must have  |
//! | GET    | `/dispatches/{id}/attempts/{n}/report` | an earlier validation attempt's report |
//! | GET    | `/dispatches/{id}/audit`        | every action on the dispatch: actor, time, outcome |
//! | GET    | `/dispatches/{id}/history`      | history document (CSV), once complete       |
//! | GET    | `/dispatches/{id}/history/summary` | counts, receipts and audit trail (JSON)  |
//! | POST   | `/dispatches/{id}/forward`      | forward the approval to a named approver (send) |
//! | POST   | `/dispatches/{id}/approve`      | approve: fan-out starts (send; four eyes)   |
//! | POST   | `/dispatches/{id}/reject`       | reject: nothing (more) is sent (send)       |
//! | GET    | `/dispatches/{id}/recipients?state=&limit=&cursor=` | recipients, a page at a time |
//! | POST   | `/dispatches/{id}/pause`        | stop sending within about 5 s               |
//! | POST   | `/dispatches/{id}/resume`       | continue with the recipients not yet sent   |
//! | POST   | `/dispatches/{id}/close`        | close a dispatch completed with errors      |
//! | POST   | `/dispatches/{id}/cancel`       | withdraw before approval (create)           |
//! | POST   | `/dispatches/{id}/archive`      | archive a dispatch that is over             |
//! | POST   | `/dispatches/{id}/repeat`       | validate the package again (create)         |
//! | POST   | `/dispatches/{id}/remove`       | remove recipients before approval (create)  |
//! | POST   | `/dispatches/{id}/resend`       | send again to failed recipients, a new attempt (send) |
//! | GET    | `/dispatches/{id}/download?format=csv\|xlsx` | the list with each recipient's status (303 to the file) |

use adapters::completion;
use adapters::dynamodb::{self, Store};
use adapters::s3::Documents;
use adapters::sqs;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, Extensions, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use documents::keys;
use domain::config::Config;
use domain::identity::{Caller, Permission, CREATE_ROLE, SEND_ROLE};
use domain::model::{now_rfc3339, Dispatch, DispatchState, RecipientState};
use domain::queue::FanOutAction;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
    pub sqs: aws_sdk_sqs::Client,
}

impl Deps {
    pub fn new(config: Config, clients: &adapters::clients::Clients) -> Deps {
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
    let guarded = Router::new()
        .route("/dispatches", get(list_dispatches).post(start_dispatch))
        .route("/dispatches/{id}", get(get_dispatch))
        .route("/dispatches/{id}/report", get(get_report))
        .route("/dispatches/{id}/sample", get(get_sample))
        .route("/dispatches/{id}/example", get(get_example))
        .route(
            "/dispatches/{id}/attempts/{n}/report",
            get(get_attempt_report),
        )
        .route("/dispatches/{id}/audit", get(get_audit))
        .route("/dispatches/{id}/recipients", get(get_recipients))
        .route("/dispatches/{id}/history", get(get_history))
        .route("/dispatches/{id}/history/summary", get(get_history_summary))
        .route("/dispatches/{id}/forward", post(forward))
        .route("/dispatches/{id}/approve", post(approve))
        .route("/dispatches/{id}/reject", post(reject))
        .route("/dispatches/{id}/pause", post(pause))
        .route("/dispatches/{id}/resume", post(resume))
        .route("/dispatches/{id}/close", post(close))
        .route("/dispatches/{id}/cancel", post(cancel))
        .route("/dispatches/{id}/archive", post(archive))
        .route("/dispatches/{id}/repeat", post(repeat))
        .route("/dispatches/{id}/remove", post(remove))
        .route("/dispatches/{id}/resend", post(resend))
        .route("/dispatches/{id}/download", get(download))
        .route_layer(middleware::from_fn_with_state(deps.clone(), identify));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(guarded)
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

type ApiResult<T> = Result<T, ApiError>;

/// The claims API Gateway's JWT authorizer verified, when there are any.
fn verified_claims(ext: &Extensions) -> Option<&std::collections::HashMap<String, String>> {
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
async fn identify(State(deps): State<AppState>, mut req: Request, next: Next) -> Response {
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
fn require(caller: &Caller, permission: Permission, doing: &str) -> ApiResult<()> {
    if caller.may(permission) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("to {doing} you need the {permission} permission"),
        ))
    }
}

/// A dispatch as the portal shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DispatchView {
    #[serde(flatten)]
    pub dispatch: Dispatch,
    /// "X of Y sent".
    pub progress: String,
    /// Recipients per recipient state, from the dispatch's counters: `pending` counts those
    /// not yet sent (being sent included); in a rejected or cancelled dispatch they are
    /// `rejected`.
    pub recipient_states: std::collections::BTreeMap<String, u64>,
}

/// Recipients per state, as the counters give them.
fn recipient_states(d: &Dispatch) -> std::collections::BTreeMap<String, u64> {
    let c = &d.counts;
    let not_sent = if matches!(d.state, DispatchState::Rejected | DispatchState::Cancelled) {
        RecipientState::Rejected
    } else {
        RecipientState::Pending
    };
    [
        (RecipientState::Invalid, c.invalid),
        (RecipientState::Excluded, c.excluded),
        (RecipientState::Sent, c.sent),
        (RecipientState::Failed, c.failed),
        (RecipientState::Unknown, c.unknown),
        (not_sent, c.outstanding()),
    ]
    .into_iter()
    .map(|(s, n)| (s.as_str().to_string(), n))
    .collect()
}

impl From<Dispatch> for DispatchView {
    fn from(d: Dispatch) -> Self {
        let progress = format!("{} of {} sent", d.counts.sent, d.counts.valid);
        DispatchView {
            recipient_states: recipient_states(&d),
            dispatch: d,
            progress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_states_add_up_to_the_list() {
        let mut d = Dispatch::arrived("d", "incoming/d/", 1);
        d.state = DispatchState::Sending;
        d.counts = domain::model::Counts {
            total: 10,
            valid: 7,
            invalid: 2,
            excluded: 1,
            sent: 3,
            failed: 1,
            unknown: 1,
            stuck: 0,
        };
        let by = recipient_states(&d);
        assert_eq!(by.values().sum::<u64>(), d.counts.total);
        assert_eq!(by["pending"], 2);
        assert_eq!(by["invalid"], 2);
        d.state = DispatchState::Rejected;
        let by = recipient_states(&d);
        assert_eq!((by["rejected"], by.get("pending")), (2, None));
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// One or more states, comma-separated.
    state: Option<String>,
    /// Words that must all appear in the title or id (any case).
    q: Option<String>,
    /// `created` (default) or `name`.
    sort: Option<String>,
    /// `desc` (default for `created`) or `asc` (default for `name`).
    order: Option<String>,
    /// `false` (default): without archived dispatches; `true`: with them; `only`.
    archived: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

enum Archived {
    Without,
    With,
    Only,
}

/// Dispatches: filtered by states and search words, sorted by creation time or name, a page
/// at a time. Archived dispatches are left out unless asked for.
async fn list_dispatches(
    State(deps): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let states = q
        .state
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<DispatchState>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit must be from 1 to 500".into()));
    }
    let by_name = match q.sort.as_deref().unwrap_or("created") {
        "created" => false,
        "name" => true,
        other => {
            return Err(bad(format!(
                "sort '{other}' is not offered; use created or name"
            )))
        }
    };
    let descending = match q.order.as_deref() {
        None => !by_name,
        Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(bad(format!(
                "order '{other}' is not offered; use asc or desc"
            )))
        }
    };
    let offset = match q.cursor.as_deref() {
        None => 0,
        Some(c) => hex::decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| {
                t.strip_prefix("offset:")
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .ok_or_else(|| bad("the cursor is not one this API gave".into()))?,
    };
    let archived = match q.archived.as_deref().unwrap_or("false") {
        "false" => Archived::Without,
        "true" => Archived::With,
        "only" => Archived::Only,
        other => {
            return Err(bad(format!(
                "archived '{other}' is not offered; use false, true or only"
            )))
        }
    };
    let words: Vec<String> =
        q.q.as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
    let mut list: Vec<Dispatch> = deps
        .store
        .all_dispatches(&states)
        .await?
        .into_iter()
        .filter(|d| match archived {
            Archived::Without => d.archived_at.is_none(),
            Archived::With => true,
            Archived::Only => d.archived_at.is_some(),
        })
        .filter(|d| {
            let hay = format!("{} {}", d.title, d.id).to_lowercase();
            words.iter().all(|w| hay.contains(w.as_str()))
        })
        .collect();
    list.sort_by(|a, b| {
        let order = if by_name {
            a.title
                .to_lowercase()
                .cmp(&b.title.to_lowercase())
                .then_with(|| a.id.cmp(&b.id))
        } else {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        };
        if descending {
            order.reverse()
        } else {
            order
        }
    });
    let total = list.len();
    let page: Vec<DispatchView> = list
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(DispatchView::from)
        .collect();
    let next = (offset + page.len() < total)
        .then(|| hex::encode(format!("offset:{}", offset + page.len())));
    Ok(Json(
        json!({ "dispatches": page, "total": total, "next": next }),
    ))
}

async fn load(deps: &Deps, id: &str) -> ApiResult<Dispatch> {
    domain::manifest::check_dispatch_id(id)
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

#[derive(Debug, Deserialize)]
struct RecipientsQuery {
    state: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Queries one request makes at most; a sparse filter continues with the cursor.
const RECIPIENT_QUERIES_PER_REQUEST: usize = 50;

/// A dispatch's recipients, optionally in one state, a page at a time. They are spread over
/// key shards; the cursor (opaque) says where the next page starts.
async fn get_recipients(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RecipientsQuery>,
) -> ApiResult<Json<Value>> {
    let d = load(&deps, &id).await?;
    let state = q
        .state
        .as_deref()
        .map(str::parse::<domain::model::RecipientState>)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit must be from 1 to 1000",
        ));
    }
    let bad_cursor = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the cursor is not one this API gave",
        )
    };
    let (mut shard, mut after) = match q.cursor.as_deref() {
        None => (0, None),
        Some(c) => {
            let text = hex::decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(bad_cursor)?;
            let (shard, sk) = text.split_once(':').ok_or_else(bad_cursor)?;
            let shard: u32 = shard.parse().map_err(|_| bad_cursor())?;
            if shard >= d.shards {
                return Err(bad_cursor());
            }
            (shard, (!sk.is_empty()).then(|| sk.to_string()))
        }
    };
    let mut out = Vec::new();
    let mut queries = 0;
    let next = loop {
        if shard >= d.shards {
            break None;
        }
        if out.len() >= limit || queries >= RECIPIENT_QUERIES_PER_REQUEST {
            break Some(format!("{shard}:{}", after.clone().unwrap_or_default()));
        }
        let want = i32::try_from(limit - out.len()).unwrap_or(1000);
        let page = deps
            .store
            .query_shard(&id, shard, state, after.clone(), want)
            .await?;
        queries += 1;
        out.extend(page.recipients.into_iter().map(|(_, r)| r));
        match page.next {
            Some(n) => after = Some(n),
            None => {
                shard += 1;
                after = None;
            }
        }
    };
    Ok(Json(json!({
        "recipients": out,
        "next": next.map(|n| hex::encode(n.as_bytes())),
    })))
}

/// The dispatch's audit trail, oldest first.
async fn get_audit(State(deps): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    load(&deps, &id).await?;
    let entries = deps.store.audit_log(&id).await?;
    Ok(Json(json!({ "audit": entries })))
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
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<DispatchView>> {
    load(&deps, &id).await?;
    require(&caller, Permission::Send, "close a dispatch")?;
    let by = caller.id;
    let closed = completion::close(&deps.store, &deps.docs, &id, &by).await;
    let d = audit_refusal(&deps, &id, &by, "closed", closed).await?;
    tracing::info!(dispatch = %id, by = %by, "closed");
    Ok(Json(d.into()))
}

/// What the approver saw; each given value must still be the dispatch's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    list_sha256: Option<String>,
    template_sha256: Option<String>,
    valid: Option<u64>,
}

async fn approve(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<DispatchView>)> {
    let d = load(&deps, &id).await?;
    require(&caller, Permission::Send, "approve a dispatch")?;
    let seen: ApproveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ApproveRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be empty or JSON with what was reviewed (list_sha256, template_sha256, valid): {e}"),
            )
        })?
    };
    let approved = async {
        may_approve(&deps, &d, &caller)?;
        still_as_validated(&deps, &d, &seen).await?;
        approve_validated(&deps, &d, &caller.id).await
    }
    .await;
    let d = settle(&deps, &id, &caller.id, "approve", approved).await?;
    // If this enqueue fails, the scheduled resume function fans the approved dispatch out.
    send_pending(&deps, &d).await;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}

/// The approval's write: it holds only while the dispatch still awaits approval with the
/// hashes that were validated.
async fn approve_validated(deps: &Deps, d: &Dispatch, by: &str) -> ApiResult<Dispatch> {
    // The approval is of this validation: it holds only while the hashes are unchanged.
    let unchanged: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)> = [
        ("list_sha256", d.list_sha256.clone()),
        ("template_sha256", d.template_sha256.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, dynamodb::s(v))))
    .collect();
    Ok(deps
        .store
        .transition_if_unchanged(
            &d.id,
            DispatchState::AwaitingApproval,
            DispatchState::Approved,
            &[
                ("approved_by", dynamodb::s(by)),
                ("approved_at", dynamodb::s(now_rfc3339())),
            ],
            &unchanged,
        )
        .await?)
}

/// Logs an action a caller took and writes it to the dispatch's audit trail.
async fn record(deps: &Deps, id: &str, by: &str, action: &str, outcome: &str) {
    tracing::info!(dispatch = %id, by = %by, action, outcome, "done");
    deps.store.audit_or_log(id, by, action, outcome).await;
}

/// Queues the rejection of a dispatch's recipients not yet sent to.
async fn reject_unsent(deps: &Deps, d: &Dispatch) -> domain::Result<()> {
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
async fn send_pending(deps: &Deps, d: &Dispatch) {
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

async fn reject(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<DispatchView>> {
    let current = load(&deps, &id).await?;
    require(&caller, Permission::Send, "reject a dispatch")?;
    let by = caller.id;
    // Before approval, or while sending (paused or waiting included): recipients sent to
    // stay sent, the others are rejected.
    let from = match current.state {
        DispatchState::Approved
        | DispatchState::Sending
        | DispatchState::WaitingForContinuation
        | DispatchState::Paused => current.state,
        _ => DispatchState::AwaitingApproval,
    };
    let changed = deps
        .store
        .transition(
            &id,
            from,
            DispatchState::Rejected,
            &[
                ("rejected_by", dynamodb::s(by.clone())),
                ("rejected_at", dynamodb::s(now_rfc3339())),
            ],
        )
        .await;
    let d = settle(&deps, &id, &by, "reject", changed).await?;
    reject_unsent(&deps, &d).await?;
    Ok(Json(d.into()))
}

async fn pause(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<DispatchView>> {
    let d = load(&deps, &id).await?;
    require(&caller, Permission::Send, "pause a dispatch")?;
    let by = caller.id;
    let extra = [
        ("paused_by", dynamodb::s(by.clone())),
        ("paused_at", dynamodb::s(now_rfc3339())),
    ];
    let from = match d.state {
        DispatchState::WaitingForContinuation => DispatchState::WaitingForContinuation,
        _ => DispatchState::Sending,
    };
    let changed = deps
        .store
        .transition(&id, from, DispatchState::Paused, &extra)
        .await;
    let d = settle(&deps, &id, &by, "pause", changed).await?;
    Ok(Json(d.into()))
}

async fn resume(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<(StatusCode, Json<DispatchView>)> {
    load(&deps, &id).await?;
    require(&caller, Permission::Send, "resume a dispatch")?;
    let by = caller.id;
    let changed = deps
        .store
        .transition(
            &id,
            DispatchState::Paused,
            DispatchState::Sending,
            &[("resumed_by", dynamodb::s(by.clone()))],
        )
        .await;
    let d = settle(&deps, &id, &by, "resume", changed).await?;
    // If this enqueue fails, the scheduled resume function hands the pending recipients out
    // once the dispatch has been quiet for a while.
    send_pending(&deps, &d).await;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}

/// Four eyes and forwarding: whether `caller` may approve `d`.
fn may_approve(deps: &Deps, d: &Dispatch, caller: &Caller) -> ApiResult<()> {
    if deps.config.identity.four_eyes {
        match d.started_by.as_deref() {
            None => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "four eyes: this dispatch was not started through the API (POST /dispatches), so who started it is not known and it cannot be approved; start it there and upload its package again",
                ))
            }
            Some(starter) if starter == caller.id => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "four eyes: the person who started a dispatch cannot approve it; forward it to another approver",
                ))
            }
            Some(_) => {}
        }
    }
    match d.forwarded_to.as_deref() {
        Some(to) if to != caller.id => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("the approval was forwarded to {to}; only they can approve it"),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
struct StartRequest {
    id: String,
    title: Option<String>,
}

/// Starts a dispatch: records who started it (for four eyes) and where its package goes.
/// Validation begins when the package's `manifest.json` arrives there.
async fn start_dispatch(
    State(deps): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require(&caller, Permission::Create, "start a dispatch")?;
    let req: StartRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the body must be JSON like {{\"id\": \"winter-notice\", \"title\": \"…\"}}: {e}"
            ),
        )
    })?;
    domain::manifest::check_dispatch_id(&req.id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let prefix = format!("{}{}/", domain::manifest::INCOMING_PREFIX, req.id);
    let mut d = Dispatch::arrived(&req.id, &prefix, deps.config.key_shards);
    d.state = DispatchState::AwaitingUpload;
    d.title = req
        .title
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(req.id.clone());
    d.started_by = Some(caller.id.clone());
    d.started_at = Some(d.created_at.clone());
    deps.store.create_dispatch(&d).await?;
    record(&deps, &d.id, &caller.id, "start", d.state.as_str()).await;
    let upload_to = format!("s3://{}/{prefix}", deps.config.uploads_bucket);
    let mut view = serde_json::to_value(DispatchView::from(d)).unwrap_or(Value::Null);
    view["upload_to"] = Value::String(upload_to);
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize)]
struct ForwardRequest {
    to: String,
}

/// Forwards an approval to a named approver: from then on only they may approve.
async fn forward(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Json<DispatchView>> {
    let d = load(&deps, &id).await?;
    require(&caller, Permission::Send, "forward an approval")?;
    let changed: ApiResult<Dispatch> = async {
        let req: ForwardRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON like {{\"to\": \"approver-id\"}}: {e}"),
            )
        })?;
        let to = req.to.trim().to_string();
        if to.is_empty() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "'to' is empty"));
        }
        if deps.config.identity.four_eyes && d.started_by.as_deref() == Some(to.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("four eyes: {to} started this dispatch and cannot approve it"),
            ));
        }
        Ok(deps
            .store
            .set_in_state(
                &id,
                DispatchState::AwaitingApproval,
                &[
                    ("forwarded_to", dynamodb::s(to.clone())),
                    ("forwarded_by", dynamodb::s(caller.id.clone())),
                ],
            )
            .await?)
    }
    .await;
    let d = audit_refusal(&deps, &id, &caller.id, "forward", changed).await?;
    let to = d.forwarded_to.as_deref().unwrap_or_default();
    record(&deps, &id, &caller.id, "forward", &format!("to {to}")).await;
    Ok(Json(d.into()))
}

/// An approval is of the version that was validated: what the approver saw must still be the
/// dispatch's, and nothing in its package folder may have changed since it was validated.
async fn still_as_validated(deps: &Deps, d: &Dispatch, seen: &ApproveRequest) -> ApiResult<()> {
    let stale = |what: &str, now: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("the package changed after you reviewed it ({what} is now {now}); review the new validation and approve again"),
        )
    };
    if let Some(list) = &seen.list_sha256 {
        if d.list_sha256.as_deref() != Some(list.as_str()) {
            return Err(stale(
                "the list's SHA-256",
                d.list_sha256.as_deref().unwrap_or("unknown"),
            ));
        }
    }
    if let Some(t) = &seen.template_sha256 {
        if d.template_sha256.as_deref() != Some(t.as_str()) {
            return Err(stale(
                "the templates' SHA-256",
                d.template_sha256.as_deref().unwrap_or("unknown"),
            ));
        }
    }
    if let Some(valid) = seen.valid {
        if d.counts.valid != valid {
            return Err(stale(
                "the number of valid recipients",
                &d.counts.valid.to_string(),
            ));
        }
    }
    if let Some(uploaded) = &d.uploaded_at {
        let changed = deps.docs.uploaded_after(&d.source_prefix, uploaded).await?;
        if let Some((key, at)) = changed.first() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("the package changed after it was validated ({key} was written at {at}); upload manifest.json again to validate the change, then approve"),
            ));
        }
    }
    Ok(())
}

/// Withdraws a dispatch before approval: nothing is sent, and its valid recipients become
/// rejected ("cancelled").
async fn cancel(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<DispatchView>> {
    let current = load(&deps, &id).await?;
    require(&caller, Permission::Create, "cancel a dispatch")?;
    let from = match current.state {
        DispatchState::AwaitingUpload | DispatchState::ValidationFailed => current.state,
        _ => DispatchState::AwaitingApproval,
    };
    let changed = deps
        .store
        .transition(
            &id,
            from,
            DispatchState::Cancelled,
            &[
                ("cancelled_by", dynamodb::s(caller.id.clone())),
                ("cancelled_at", dynamodb::s(now_rfc3339())),
            ],
        )
        .await;
    let d = settle(&deps, &id, &caller.id, "cancel", changed).await?;
    if from == DispatchState::AwaitingApproval {
        reject_unsent(&deps, &d).await?;
    }
    Ok(Json(d.into()))
}

/// Archives a dispatch that is over (or whose validation failed): it stays readable but
/// leaves the default list.
async fn archive(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<DispatchView>> {
    let d = load(&deps, &id).await?;
    let changed: ApiResult<Dispatch> = async {
        if !(d.state.is_final() || d.state == DispatchState::ValidationFailed) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "a dispatch that is {} cannot be archived; only one that is over",
                    d.state
                ),
            ));
        }
        if d.archived_at.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the dispatch is archived already",
            ));
        }
        Ok(deps
            .store
            .set_in_state(
                &id,
                d.state,
                &[
                    ("archived_by", dynamodb::s(caller.id.clone())),
                    ("archived_at", dynamodb::s(now_rfc3339())),
                ],
            )
            .await?)
    }
    .await;
    let d = settle(&deps, &id, &caller.id, "archive", changed).await?;
    if d.history_key.is_some() {
        // The history's audit rows gain the archive when the schedule writes it again.
        if let Err(e) = deps.store.mark_history_stale(&id, &now_rfc3339()).await {
            tracing::error!(dispatch = %id, error = %e, "history not marked for rewriting");
        }
    }
    Ok(Json(d.into()))
}

/// Validates the package again, as when its `manifest.json` is uploaded again: before
/// approval, after the operator corrected the list or the templates ("Repeat").
async fn repeat(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<(StatusCode, Json<DispatchView>)> {
    let d = load(&deps, &id).await?;
    require(&caller, Permission::Create, "repeat a validation")?;
    let done = repeat_checked(&deps, &d).await;
    let done = audit_refusal(&deps, &id, &caller.id, "repeat", done).await?;
    record(&deps, &id, &caller.id, "repeat", "validation requested").await;
    Ok((StatusCode::ACCEPTED, Json(done.into())))
}

/// The end of an action that changes a dispatch: its new state is audited as the outcome,
/// or its refusal is.
async fn settle<E: Into<ApiError>>(
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
async fn audit_refusal<T, E: Into<ApiError>>(
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

async fn repeat_checked(deps: &Deps, d: &Dispatch) -> ApiResult<Dispatch> {
    if !matches!(
        d.state,
        DispatchState::ValidationFailed | DispatchState::AwaitingApproval
    ) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "a dispatch that is {} cannot be validated again; only one whose validation failed or that awaits approval",
                d.state
            ),
        ));
    }
    let manifest = format!("{}{}", d.source_prefix, domain::manifest::MANIFEST_FILE);
    if !deps.docs.upload_again(&manifest).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the package has no {manifest}; upload the package again"),
        ));
    }
    Ok(d.clone())
}

/// Recipients an action names by their ids.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChosenRecipients {
    recipient_ids: Option<Vec<String>>,
    /// Resend only: which states to resend when no ids are named (default: failed).
    states: Option<Vec<String>>,
}

/// Recipients named in an action: at most this many per request.
const MAX_CHOSEN: usize = 1000;

fn chosen_body(body: &[u8], example: &str) -> ApiResult<ChosenRecipients> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ChosenRecipients::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {example}: {e}"),
        )
    })
}

/// Looks up the named recipients; each must exist and be in a state `fits` accepts.
async fn named_recipients(
    deps: &Deps,
    d: &Dispatch,
    ids: Vec<String>,
    fits: impl Fn(RecipientState) -> bool,
    needs: &str,
) -> ApiResult<Vec<(domain::keys::RecipientKey, domain::model::Recipient)>> {
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = ids
        .into_iter()
        .map(|i| i.trim().to_string())
        .filter(|i| seen.insert(i.clone()))
        .collect();
    if ids.is_empty() || ids.len() > MAX_CHOSEN {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("name from 1 to {MAX_CHOSEN} recipient ids"),
        ));
    }
    if let Some(bad) = ids.iter().find(|i| i.is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a recipient id is empty ('{bad}')"),
        ));
    }
    let found = deps.store.recipients_by_id(d, &ids).await?;
    let missing: Vec<&str> = ids
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(i, _)| i.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the dispatch has no recipient {}", few(&missing)),
        ));
    }
    let found: Vec<_> = found.into_iter().flatten().collect();
    let unfit: Vec<String> = found
        .iter()
        .filter(|(_, r)| !fits(r.state))
        .map(|(_, r)| format!("{} ({})", r.recipient_id, r.state))
        .collect();
    if !unfit.is_empty() {
        let unfit: Vec<&str> = unfit.iter().map(String::as_str).collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("only {needs} recipients can be chosen; not {}", few(&unfit)),
        ));
    }
    Ok(found)
}

/// A few names for a message: the first ten, then how many more.
fn few(names: &[&str]) -> String {
    let shown = names
        .iter()
        .take(10)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    match names.len() {
        n if n > 10 => format!("{shown} and {} more", n - 10),
        _ => shown,
    }
}

/// Removes recipients from a dispatch awaiting approval: they become excluded ("removed
/// from the list by …") and are never sent to. The counts change, so an approval of what
/// was reviewed before is refused as stale.
async fn remove(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let d = load(&deps, &id).await?;
    require(&caller, Permission::Create, "remove recipients")?;
    let done = remove_checked(&deps, &d, &caller, &body).await;
    let done = audit_refusal(&deps, &id, &caller.id, "remove", done).await?;
    let ids: Vec<&str> = done.done.iter().map(String::as_str).collect();
    record(
        &deps,
        &id,
        &caller.id,
        "remove",
        &format!("{} removed: {}", ids.len(), few(&ids)),
    )
    .await;
    let d = load(&deps, &id).await?;
    Ok(Json(json!({
        "dispatch": DispatchView::from(d),
        "removed": done.done,
        "skipped": done.skipped,
    })))
}

async fn remove_checked(
    deps: &Deps,
    d: &Dispatch,
    caller: &Caller,
    body: &[u8],
) -> ApiResult<adapters::dynamodb::amend::Amended> {
    let req = chosen_body(body, r#"{"recipient_ids": ["1042", "1043"]}"#)?;
    if req.states.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "removal names its recipients by id; 'states' is for resend",
        ));
    }
    if d.state != DispatchState::AwaitingApproval {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "recipients can be removed only while the dispatch awaits approval; it is {}",
                d.state
            ),
        ));
    }
    let ids = req.recipient_ids.unwrap_or_default();
    let chosen = named_recipients(
        deps,
        d,
        ids,
        |s| s == RecipientState::Pending,
        "valid, unsent",
    )
    .await?;
    let done = deps.store.remove_pending(d, &chosen, &caller.id).await?;
    if done.done.is_empty() {
        let why = if done.dispatch_moved {
            "the dispatch no longer awaits approval"
        } else {
            "the recipients changed meanwhile"
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("nothing was removed: {why}"),
        ));
    }
    Ok(done)
}

/// Sends again to recipients of a dispatch that completed with errors: by default every
/// recipient the provider refused (`failed`); `states` may add `unknown` (the provider never
/// said whether it took the message, so a resend may deliver twice: the operator decides);
/// or name the recipients. It is a new send attempt, audited; the dispatch sends again.
async fn resend(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let d = load(&deps, &id).await?;
    require(&caller, Permission::Send, "resend")?;
    let done = resend_checked(&deps, &d, &caller, &body).await;
    let done = audit_refusal(&deps, &id, &caller.id, "resend", done).await?;
    let ids: Vec<&str> = done.done.iter().map(String::as_str).collect();
    let mut outcome = format!(
        "send attempt {}: {} sent again: {}",
        d.send_attempt + 1,
        ids.len(),
        few(&ids)
    );
    if done.dispatch_moved {
        outcome.push_str("; the dispatch moved on before the rest");
    }
    record(&deps, &id, &caller.id, "resend", &outcome).await;
    let d = load(&deps, &id).await?;
    // If this enqueue fails, the scheduled resume function hands the pending recipients out.
    send_pending(&deps, &d).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "dispatch": DispatchView::from(d),
            "resent": done.done,
            "skipped": done.skipped,
        })),
    ))
}

async fn resend_checked(
    deps: &Deps,
    d: &Dispatch,
    caller: &Caller,
    body: &[u8],
) -> ApiResult<adapters::dynamodb::amend::Amended> {
    let req = chosen_body(
        body,
        r#"{"recipient_ids": ["1042"]} or {"states": ["failed", "unknown"]}"#,
    )?;
    if d.state != DispatchState::CompletedWithErrors {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "only a dispatch that completed with errors can resend; it is {}",
                d.state
            ),
        ));
    }
    let chosen = match (req.recipient_ids, req.states) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "name either recipient_ids or states, not both",
            ))
        }
        (Some(ids), None) => {
            named_recipients(
                deps,
                d,
                ids,
                RecipientState::may_be_resent,
                "failed or unknown",
            )
            .await?
        }
        (None, states) => {
            let states = states
                .unwrap_or_else(|| vec![RecipientState::Failed.as_str().to_string()])
                .iter()
                .map(|s| match s.parse::<RecipientState>() {
                    Ok(st) if st.may_be_resent() => Ok(st),
                    _ => Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("'{s}' cannot be resent; states may be failed and unknown"),
                    )),
                })
                .collect::<ApiResult<Vec<_>>>()?;
            deps.store.recipients_in(d, &states).await?
        }
    };
    if chosen.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "there is nobody to resend to: no recipient is in the states asked for",
        ));
    }
    let done = deps.store.resend(d, &chosen, &caller.id).await?;
    if done.done.is_empty() {
        let why = if done.dispatch_moved {
            format!(
                "the dispatch is no longer {}",
                DispatchState::CompletedWithErrors
            )
        } else {
            "the recipients changed meanwhile".to_string()
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("nothing was resent: {why}"),
        ));
    }
    Ok(done)
}

#[derive(Debug, Deserialize)]
struct DownloadQuery {
    format: Option<String>,
}

/// How long a download link works.
const DOWNLOAD_LINK_SECS: u64 = 15 * 60;

/// The validated list with each recipient's status appended, as CSV or XLSX. The file is
/// written to the reports bucket and the answer is a redirect (303) to a short-lived link:
/// a large list does not fit in an API answer.
async fn download(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    use documents::download::{self, Format};
    let d = load(&deps, &id).await?;
    let format = match q.format.as_deref().unwrap_or("csv") {
        "csv" => Format::Csv,
        "xlsx" => Format::Xlsx,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("format '{other}' is not offered; use csv or xlsx"),
            ))
        }
    };
    if d.package_key.is_none() || d.list_sha256.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "there is no validated list to download yet",
        ));
    }
    let package = deps.docs.package(&id).await?;
    let list = match deps
        .docs
        .fetch_to_file(
            &deps.docs.uploads_bucket,
            &package.list_key,
            deps.config.max_list_bytes,
        )
        .await?
    {
        adapters::s3::Fetched::Found(f) => f,
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "the validated list {} is no longer in the package folder",
                    package.list_key
                ),
            ))
        }
    };
    if Some(&list.sha256) != d.list_sha256.as_ref() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the list in the package folder is not the one validated; repeat the validation first",
        ));
    }
    // A shard at a time: only the statuses are kept, not the records.
    let mut statuses = std::collections::HashMap::new();
    for shard in 0..d.shards {
        let records = deps.store.shard_recipients(&id, shard, None).await?;
        statuses.extend(download::statuses(records.iter().map(|(_, r)| r)));
    }
    let m = package.manifest;
    let written = tokio::task::spawn_blocking(move || {
        let mut reader = intake::list::ListReader::open_input(
            &m.list,
            Box::new(list.file),
            m.sheet.as_deref(),
            m.encoding
                .as_deref()
                .and_then(domain::manifest::encoding_for),
        )
        .map_err(|e| download::DownloadError::Read(e.to_string()))?;
        download::write(&mut reader, &statuses, format)
    })
    .await
    .map_err(|e| {
        tracing::error!(dispatch = %id, error = %e, "download writer stopped");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?
    .map_err(|e| {
        tracing::error!(dispatch = %id, error = %e, "download not written");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the download could not be written",
        )
    })?;
    if written.unmatched > 0 {
        tracing::warn!(dispatch = %id, unmatched = written.unmatched, "rows without a recorded recipient");
    }
    let key = keys::download(&id, format.extension());
    deps.docs
        .put_report_file(&key, written.file.path(), format.content_type())
        .await?;
    let filename = format!("{id}-status.{}", format.extension());
    let link = deps
        .docs
        .report_link(
            &key,
            &filename,
            std::time::Duration::from_secs(DOWNLOAD_LINK_SECS),
        )
        .await?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, link)]).into_response())
}
