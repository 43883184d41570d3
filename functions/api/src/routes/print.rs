//! A dispatch's print files: built (again) as a job, read with links to each part and its
//! index, and closed, after which they cannot change.

use crate::auth::require;
use crate::error::{ApiError, ApiResult};
use crate::routes::documents::linked_document;
use crate::routes::steps::{audit_refusal, load, record};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::identity::{Caller, Permission};
use domain::model::now_rfc3339;
use domain::print::{PrintRun, PrintState};
use serde::Deserialize;
use serde_json::{json, Value};

fn view(run: &PrintRun) -> Value {
    let mut v = serde_json::to_value(run).unwrap_or_default();
    if let Some(parts) = v["parts"].as_array_mut() {
        for p in parts {
            let n = p["part"].as_u64().unwrap_or_default();
            p["link"] = json!(format!("/dispatches/{}/print/parts/{n}", run.dispatch_id));
            p["index_link"] = json!(format!(
                "/dispatches/{}/print/parts/{n}?file=index",
                run.dispatch_id
            ));
        }
    }
    v
}

async fn run_of(deps: &crate::Deps, id: &str) -> ApiResult<PrintRun> {
    deps.store.get_print(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "the dispatch's print files have not been built",
        )
    })
}

/// `GET /dispatches/{id}/print`: the print run as last built.
pub(crate) async fn get_print(
    State(deps): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    load(&deps, &id).await?;
    Ok(Json(view(&run_of(&deps, &id).await?)))
}

/// `POST /dispatches/{id}/print`: builds the print files again (the old ones are deleted),
/// as a job: `202` with it.
pub(crate) async fn build_print(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    require(&caller, Permission::Send, "build print files")?;
    let queue = crate::routes::recipients::settle_queue(&deps)?;
    // A dispatch with no produced letter may have no package at all: refused before it is read.
    if let Err(why) = adapters::print::may_build(&d, None) {
        let refused: ApiResult<()> = Err(ApiError::new(StatusCode::CONFLICT, why));
        audit_refusal(&deps, &id, &caller.id, "print", refused).await?;
    }
    let manifest = deps.docs.package(&id).await?.manifest;
    let started = adapters::print::start(&deps.store, &deps.sqs, queue, &d, &manifest, &caller.id)
        .await?
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, why));
    let (job, run) = audit_refusal(&deps, &id, &caller.id, "print", started).await?;
    record(
        &deps,
        &id,
        &caller.id,
        "print",
        &format!(
            "print files requested (build {}, job {})",
            run.generation, job.id
        ),
    )
    .await;
    let job = crate::routes::recipients::job_view(&job);
    let location = job["link"].as_str().unwrap_or_default().to_string();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(json!({ "job": job, "print": view(&run) })),
    )
        .into_response())
}

/// `POST /dispatches/{id}/print/close`: closes the letter run. The print files as built are
/// final: the run keeps their hashes, and they are not built again.
pub(crate) async fn close_print(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    load(&deps, &id).await?;
    require(&caller, Permission::Send, "close the letter run")?;
    let closed = async {
        let mut run = run_of(&deps, &id).await?;
        if run.state != PrintState::Ready {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                match run.state {
                    PrintState::Closed => "the letter run is closed already".to_string(),
                    PrintState::Building => {
                        "the print files are being built; close them once they are ready".into()
                    }
                    _ => "the last build of the print files failed; build them again first".into(),
                },
            ));
        }
        run.state = PrintState::Closed;
        run.closed_at = Some(now_rfc3339());
        run.closed_by = Some(caller.id.clone());
        match deps.store.put_print(&run, Some(PrintState::Ready)).await {
            Ok(()) => Ok(run),
            Err(domain::Error::Conflict(why)) => Err(ApiError::new(StatusCode::CONFLICT, why)),
            Err(e) => Err(e.into()),
        }
    }
    .await;
    let run = audit_refusal(&deps, &id, &caller.id, "close print", closed).await?;
    record(
        &deps,
        &id,
        &caller.id,
        "close print",
        &format!(
            "letter run closed: build {}, {} letters in {} parts",
            run.generation,
            run.letters,
            run.parts.len()
        ),
    )
    .await;
    Ok(Json(view(&run)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PartQuery {
    file: Option<String>,
}

/// `GET /dispatches/{id}/print/parts/{n}`: `303` to a link to the part's PDF, or with
/// `?file=index` to its CSV index.
pub(crate) async fn get_part(
    State(deps): State<AppState>,
    Path((id, n)): Path<(String, u32)>,
    Query(q): Query<PartQuery>,
) -> ApiResult<Response> {
    load(&deps, &id).await?;
    let run = run_of(&deps, &id).await?;
    let part = run.parts.iter().find(|p| p.part == n).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("there is no print part {n}"))
    })?;
    let (key, ext) = match q.file.as_deref().unwrap_or("pdf") {
        "pdf" => (&part.pdf_key, "pdf"),
        "index" => (&part.index_key, "csv"),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("file '{other}' is not offered; use pdf or index"),
            ))
        }
    };
    linked_document(
        &deps,
        Some(key.clone()),
        "print part",
        &format!("{id}-print-{}-part-{n:04}.{ext}", run.generation),
    )
    .await
}
