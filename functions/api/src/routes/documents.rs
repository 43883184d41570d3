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
        let mut reader = intake::list::ListReader::open_listed_as_uploaded(&m, Box::new(list.file))
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
