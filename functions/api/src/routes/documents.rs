//! The documents of a dispatch: report, sample, example, audit trail, history, download.

use crate::error::{ApiError, ApiResult};
use crate::routes::steps::load;
use crate::{AppState, Deps};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use documents::keys;
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) async fn document(
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

/// How long a link to a large document works.
pub(crate) const DOCUMENT_LINK_SECS: u64 = 15 * 60;

/// A document that may be large (a report, a history: a row per recipient): `303` to a link
/// that works for [`DOCUMENT_LINK_SECS`], since an answer of Lambda holds at most 6 MB.
pub(crate) async fn linked_document(
    deps: &Deps,
    key: Option<String>,
    what: &str,
    filename: &str,
) -> ApiResult<Response> {
    let key =
        key.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("there is no {what} yet")))?;
    let link = deps
        .docs
        .report_link(
            &key,
            filename,
            std::time::Duration::from_secs(DOCUMENT_LINK_SECS),
        )
        .await?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, link)]).into_response())
}

pub(crate) async fn get_report(
    State(deps): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    if d.report_key.is_none() && d.state == domain::model::DispatchState::ValidationFailed {
        // Refused at file level: no row was checked, so no report is coming.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "there is no validation report and there will be none: validation failed before any row was checked; the dispatch's problems say why",
        ));
    }
    linked_document(
        &deps,
        d.report_key,
        "validation report",
        &format!("{id}-report.csv"),
    )
    .await
}

pub(crate) async fn get_sample(
    State(deps): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    document(&deps, d.sample_key, "sample", "application/json").await
}

/// A sample letter's PDF, by its place among the letter samples (1 is the first valid
/// letter recipient's): `303` to a link that works for [`DOCUMENT_LINK_SECS`].
pub(crate) async fn get_sample_letter(
    State(deps): State<AppState>,
    Path((id, n)): Path<(String, usize)>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    let none = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no sample letter {n}"),
        )
    };
    let key = d.sample_key.clone().ok_or_else(none)?;
    let body = deps.docs.report_document(&key).await?.ok_or_else(none)?;
    let samples: Value = serde_json::from_slice(&body).map_err(|_| none())?;
    let document = n
        .checked_sub(1)
        .and_then(|i| samples["letter"].get(i))
        .and_then(|s| s["document"].as_str())
        .map(str::to_string)
        .ok_or_else(none)?;
    linked_document(
        &deps,
        Some(document),
        "sample letter",
        &format!("{id}-sample-letter-{n}.pdf"),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExampleQuery {
    format: Option<String>,
}

/// The example file: the header a list for this dispatch's templates must have.
pub(crate) async fn get_example(
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
pub(crate) async fn get_attempt_report(
    State(deps): State<AppState>,
    Path((id, n)): Path<(String, u32)>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    let key = d
        .attempts
        .iter()
        .find(|a| a.attempt == n)
        .and_then(|a| a.report_key.clone());
    linked_document(
        &deps,
        key,
        "report of that attempt",
        &format!("{id}-report-{n}.csv"),
    )
    .await
}

/// The dispatch's audit trail, oldest first.
pub(crate) async fn get_audit(
    State(deps): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    load(&deps, &id).await?;
    let entries = deps.store.audit_log(&id).await?;
    Ok(Json(json!({ "audit": entries })))
}

pub(crate) async fn get_history(
    State(deps): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    linked_document(
        &deps,
        d.history_key,
        "history document",
        &format!("{id}-history.csv"),
    )
    .await
}

pub(crate) async fn get_history_summary(
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

#[derive(Debug, Deserialize)]
pub(crate) struct DownloadQuery {
    format: Option<String>,
}

/// The download as a job, for a list of any size: `202` with the job; once it has
/// succeeded, the job's `result` is a link to the file.
pub(crate) async fn download_job(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(caller): axum::Extension<domain::identity::Caller>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    let format = list_format(&q)?;
    if !adapters::download::has_list(&d) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            adapters::download::Refusal::NoList.message(),
        ));
    }
    let job = crate::routes::recipients::queue_job(
        &deps,
        &d,
        domain::job::JobKind::Download { format },
        &caller.id,
    )
    .await?;
    let view = crate::routes::recipients::job_view(&job);
    let location = view["link"].as_str().unwrap_or_default().to_string();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(serde_json::json!({ "job": view })),
    )
        .into_response())
}

/// The format a download asks for (CSV when it names none).
fn list_format(q: &DownloadQuery) -> ApiResult<domain::job::ListFormat> {
    use domain::job::ListFormat;
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => Ok(ListFormat::Csv),
        "xlsx" => Ok(ListFormat::Xlsx),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("format '{other}' is not offered; use csv or xlsx"),
        )),
    }
}

/// How long a download link works.
pub(crate) const DOWNLOAD_LINK_SECS: u64 = 15 * 60;

/// The validated list with each recipient's status appended, as CSV or XLSX. The file is
/// written to the reports bucket and the answer is a redirect (303) to a short-lived link:
/// a large list does not fit in an API answer.
pub(crate) async fn download(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    let d = load(&deps, &id).await?;
    let format = list_format(&q)?.into();
    let written = match adapters::download::write(
        &deps.store,
        &deps.docs,
        &d,
        format,
        deps.config.max_list_bytes,
    )
    .await?
    {
        Ok(w) => w,
        Err(refusal) => {
            let status = match refusal {
                adapters::download::Refusal::NoList => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            return Err(ApiError::new(status, refusal.message()));
        }
    };
    let link = deps
        .docs
        .report_link(
            &written.key,
            &written.filename,
            std::time::Duration::from_secs(DOWNLOAD_LINK_SECS),
        )
        .await?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, link)]).into_response())
}
