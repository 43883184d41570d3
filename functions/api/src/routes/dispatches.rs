//! The dispatch list, starting a dispatch, and one dispatch.

use crate::auth::require;
use crate::error::{ApiError, ApiResult};
use crate::input;
use crate::routes::steps::{load, record};
use crate::view::DispatchView;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use documents::keys;
use domain::identity::{Caller, Permission};
use domain::ids::DispatchId;
use domain::limits::input as limits;
use domain::model::{Dispatch, DispatchState};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
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
    limit: Option<String>,
    cursor: Option<String>,
}

pub(crate) enum Archived {
    Without,
    With,
    Only,
}

/// Dispatches: filtered by states and search words, sorted by creation time or name, a page
/// at a time. Archived dispatches are left out unless asked for.
pub(crate) async fn list_dispatches(
    State(deps): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    for (field, value) in [
        ("state", &q.state),
        ("q", &q.q),
        ("sort", &q.sort),
        ("order", &q.order),
        ("archived", &q.archived),
    ] {
        if let Some(v) = value {
            input::chars(field, v, limits::QUERY_VALUE_CHARS)?;
        }
    }
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
    let limit = input::number("limit", q.limit.as_deref(), 50, (1, 500))?;
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
        Some(c) => input::cursor_text(c)?
            .strip_prefix("offset:")
            .and_then(|n| n.parse::<usize>().ok())
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

pub(crate) async fn get_dispatch(
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

#[derive(Debug, Deserialize)]
pub(crate) struct StartRequest {
    id: String,
    title: Option<String>,
}

/// Starts a dispatch: records who started it (for four eyes) and where its package goes.
/// Validation begins when the package's `manifest.json` arrives there.
pub(crate) async fn start_dispatch(
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
    let id = DispatchId::parse(&req.id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    if let Some(title) = &req.title {
        input::chars("title", title, limits::TITLE_CHARS)?;
    }
    let prefix = id.folder();
    let mut d = Dispatch::arrived(id.as_str(), &prefix, deps.config.key_shards);
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
