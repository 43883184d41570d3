//! Approval: forwarding to a named approver, four eyes, and the approval of exactly what
//! was validated.

use crate::auth::require;
use crate::error::{ApiError, ApiResult};
use crate::routes::steps::{audit_refusal, load, record, send_pending, settle};
use crate::view::DispatchView;
use crate::{AppState, Deps};
use adapters::dynamodb;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use domain::identity::{Caller, Permission};
use domain::limits::input as limits;
use domain::model::{now_rfc3339, Dispatch, DispatchState};
use serde::Deserialize;

/// What the approver saw; each given value must still be the dispatch's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproveRequest {
    list_sha256: Option<String>,
    template_sha256: Option<String>,
    valid: Option<u64>,
}

pub(crate) async fn approve(
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
        for (field, value) in [
            ("list_sha256", &seen.list_sha256),
            ("template_sha256", &seen.template_sha256),
        ] {
            if let Some(v) = value {
                // A SHA-256 in hex.
                crate::input::chars(field, v, 64)?;
            }
        }
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
pub(crate) async fn approve_validated(deps: &Deps, d: &Dispatch, by: &str) -> ApiResult<Dispatch> {
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

/// Four eyes and forwarding: whether `caller` may approve `d`.
pub(crate) fn may_approve(deps: &Deps, d: &Dispatch, caller: &Caller) -> ApiResult<()> {
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
pub(crate) struct ForwardRequest {
    to: String,
}

/// Forwards an approval to a named approver: from then on only they may approve.
pub(crate) async fn forward(
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
        let to = crate::input::chars("to", req.to.trim(), limits::PERSON_CHARS)?.to_string();
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
pub(crate) async fn still_as_validated(
    deps: &Deps,
    d: &Dispatch,
    seen: &ApproveRequest,
) -> ApiResult<()> {
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
