//! A dispatch's recipients: pages of them, and an operator's removal and resend.

use crate::auth::require;
use crate::error::{ApiError, ApiResult};
use crate::input;
use crate::routes::steps::{audit_refusal, load, record, send_pending};
use crate::view::DispatchView;
use crate::{AppState, Deps};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use domain::identity::{Caller, Permission};
use domain::job::{Job, JobKind};
use domain::limits::input as limits;
use domain::model::{Dispatch, DispatchState, RecipientState};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
pub(crate) struct RecipientsQuery {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Queries one request makes at most; a sparse filter continues with the cursor.
pub(crate) const RECIPIENT_QUERIES_PER_REQUEST: usize = 50;

/// A dispatch's recipients, optionally in one state, a page at a time. They are spread over
/// key shards; the cursor (opaque) says where the next page starts.
pub(crate) async fn get_recipients(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RecipientsQuery>,
) -> ApiResult<Json<Value>> {
    let d = load(&deps, &id).await?;
    let state = q
        .state
        .as_deref()
        .map(|s| input::chars("state", s, limits::QUERY_VALUE_CHARS))
        .transpose()?
        .map(str::parse::<domain::model::RecipientState>)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let limit = input::number("limit", q.limit.as_deref(), 100, (1, 1000))?;
    let bad_cursor = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the cursor is not one this API gave",
        )
    };
    let (mut shard, mut after) = match q.cursor.as_deref() {
        None => (0, None),
        Some(c) => {
            let text = input::cursor_text(c)?;
            let (shard, sk) = text.split_once(':').ok_or_else(bad_cursor)?;
            let shard: u32 = shard.parse().map_err(|_| bad_cursor())?;
            // DynamoDB refuses a sort key over 1,024 bytes; no cursor of ours holds one.
            if shard >= d.shards || sk.len() > 1024 {
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

/// Recipients an action names by their ids.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChosenRecipients {
    recipient_ids: Option<Vec<String>>,
    /// Resend only: which states to resend when no ids are named (default: failed).
    states: Option<Vec<String>>,
}

/// Recipients named in an action: at most this many per request.
pub(crate) const MAX_CHOSEN: usize = limits::CHOSEN_IDS;

pub(crate) fn chosen_body(body: &[u8], example: &str) -> ApiResult<ChosenRecipients> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ChosenRecipients::default());
    }
    let chosen: ChosenRecipients = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {example}: {e}"),
        )
    })?;
    // Bounded before anything else looks at them, whatever the dispatch's state.
    if let Some(ids) = &chosen.recipient_ids {
        if ids.len() > MAX_CHOSEN {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("name from 1 to {MAX_CHOSEN} recipient ids"),
            ));
        }
        for id in ids {
            input::bytes("a recipient id", id, limits::RECIPIENT_ID_BYTES)?;
        }
    }
    if let Some(states) = &chosen.states {
        if states.len() > limits::STATES {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("name at most {} states", limits::STATES),
            ));
        }
        for s in states {
            input::chars("a state", s, limits::QUERY_VALUE_CHARS)?;
        }
    }
    Ok(chosen)
}

/// Looks up the named recipients; each must exist and be in a state `fits` accepts.
pub(crate) async fn named_recipients(
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
pub(crate) fn few(names: &[&str]) -> String {
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
pub(crate) async fn remove(
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

pub(crate) async fn remove_checked(
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
pub(crate) async fn resend(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<axum::response::Response> {
    let d = load(&deps, &id).await?;
    require(&caller, Permission::Send, "resend")?;
    let done = resend_checked(&deps, &d, &caller, &body).await;
    let done = match audit_refusal(&deps, &id, &caller.id, "resend", done).await? {
        Resent::Now(done) => done,
        Resent::Job(job) => {
            let states: Vec<&str> = match &job.kind {
                JobKind::Resend { states } => states.iter().map(|s| s.as_str()).collect(),
                _ => Vec::new(),
            };
            record(
                &deps,
                &id,
                &caller.id,
                "resend",
                &format!(
                    "queued as job {}: every recipient {}",
                    job.id,
                    states.join(" or ")
                ),
            )
            .await;
            return Ok((
                StatusCode::ACCEPTED,
                [(axum::http::header::LOCATION, job_path(&job))],
                Json(json!({
                    "dispatch": DispatchView::from(d),
                    "job": job_view(&job),
                })),
            )
                .into_response());
        }
    };
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
    )
        .into_response())
}

/// What a resend came to: recipients named by id are resent in the request (there are at
/// most [`MAX_CHOSEN`]); recipients chosen by state, however many, by a job.
pub(crate) enum Resent {
    Now(adapters::dynamodb::amend::Amended),
    Job(Box<Job>),
}

fn job_path(job: &Job) -> String {
    format!("/dispatches/{}/jobs/{}", job.dispatch_id, job.id)
}

/// A job as the API shows it: the job with the path to read it again.
pub(crate) fn job_view(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("result_key");
        o.remove("result_name");
    }
    v["link"] = json!(job_path(job));
    v
}

/// How long the link to a job's document works.
const RESULT_LINK_SECS: u64 = 15 * 60;

/// One job of a dispatch: its state, how far it came and, once finished, what came of it.
pub(crate) async fn get_job(
    State(deps): State<AppState>,
    Path((id, job_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    input::bytes("job", &job_id, limits::RECIPIENT_ID_BYTES)?;
    let _ = load(&deps, &id).await?;
    match deps.store.get_job(&id, &job_id).await? {
        Some(job) => {
            let mut view = job_view(&job);
            // The document it wrote, by a link made now: a link works for minutes.
            if let (Some(key), Some(name)) = (&job.result_key, &job.result_name) {
                let link = deps
                    .docs
                    .report_link(key, name, std::time::Duration::from_secs(RESULT_LINK_SECS))
                    .await?;
                view["result"] = json!(link);
            }
            Ok(Json(view))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("dispatch {id} has no job {job_id}"),
        )),
    }
}

/// The queue of the jobs' worker.
pub(crate) fn settle_queue(deps: &Deps) -> ApiResult<&str> {
    deps.config.settle_queue_url.as_deref().ok_or_else(|| {
        ApiError::from(domain::Error::Malformed(format!(
            "{} is not set: jobs have no worker",
            domain::config::vars::SETTLE_QUEUE_URL
        )))
    })
}

/// Accepts a job: written as queued, then handed to the worker's queue.
pub(crate) async fn queue_job(
    deps: &Deps,
    d: &Dispatch,
    kind: JobKind,
    by: &str,
) -> ApiResult<Job> {
    let queue = settle_queue(deps)?;
    let job = Job::new(&d.id, kind, by, uuid::Uuid::new_v4().simple().to_string());
    deps.store.put_job(&job).await?;
    adapters::sqs::send_job(&deps.sqs, queue, &d.id, &job.id, (0, None)).await?;
    Ok(job)
}

pub(crate) async fn resend_checked(
    deps: &Deps,
    d: &Dispatch,
    caller: &Caller,
    body: &[u8],
) -> ApiResult<Resent> {
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
            let mut states: Vec<RecipientState> = states;
            states.dedup();
            let waiting: u64 = states
                .iter()
                .map(|s| match s {
                    RecipientState::Failed => d.counts.failed,
                    RecipientState::Unknown => d.counts.unknown,
                    _ => 0,
                })
                .sum();
            if waiting == 0 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "there is nobody to resend to: no recipient is in the states asked for",
                ));
            }
            return queue_job(deps, d, JobKind::Resend { states }, &caller.id)
                .await
                .map(|job| Resent::Job(Box::new(job)));
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
    Ok(Resent::Now(done))
}
