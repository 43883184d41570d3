//! The actions that move a dispatch through its life. Reject, pause, resume and cancel are
//! declared once each ([`Action`]: permission, allowed states, target state, stamps, what
//! follows) and taken by one routine; close, archive and repeat have checks of their own but
//! end the same way ([`settle`]: the new state audited as the outcome, or the refusal).

use crate::auth::require;
use crate::error::{ApiError, ApiResult};
use crate::routes::steps::{audit_refusal, load, record, reject_unsent, send_pending, settle};
use crate::view::DispatchView;
use crate::{AppState, Deps};
use adapters::dynamodb;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::identity::{Caller, Permission};
use domain::model::{now_rfc3339, Dispatch, DispatchState};
use engine::ports::DispatchBook;

/// Closes a dispatch that completed with errors, after the operator reviewed the history.
pub(crate) async fn close(
    State(deps): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<serde_json::Value>> {
    load(&deps, &id).await?;
    require(&caller, Permission::Send, "close a dispatch")?;
    let by = caller.id;
    let closed = deps.completer.close_only(&id, &by).await;
    let d = audit_refusal(&deps, &id, &by, "closed", closed).await?;
    tracing::info!(dispatch = %id, by = %by, "closed");
    // The history is written again with the close in it by a job: the pass grows with the
    // list. Should the job not be queued, the schedule writes it again (a stale mark).
    let job = match crate::routes::recipients::queue_job(
        &deps,
        &d,
        domain::job::JobKind::History,
        &by,
    )
    .await
    {
        Ok(job) => Some(crate::routes::recipients::job_view(&job)),
        Err(e) => {
            tracing::error!(dispatch = %id, error = ?e, "history job not queued; marked stale for the schedule");
            if let Err(e) = deps.store.mark_history_stale(&id, &now_rfc3339()).await {
                tracing::error!(dispatch = %id, error = %e, "history not marked for rewriting");
            }
            None
        }
    };
    let mut view = serde_json::to_value(DispatchView::from(d)).unwrap_or_default();
    view["history_job"] = job.unwrap_or_default();
    Ok(Json(view))
}

/// What a lifecycle action writes besides the new state.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stamp {
    /// The caller's id.
    Caller,
    /// The time of the action.
    Now,
}

/// What follows an action's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    Nothing,
    /// The pending recipients are handed to the senders (a failure is left to the schedule).
    SendPending,
    /// The recipients not yet sent to are rejected.
    RejectUnsent,
    /// As [`Then::RejectUnsent`], when the dispatch was in this state (it had recipients).
    RejectUnsentFrom(DispatchState),
}

/// A lifecycle action, declared once: who may take it, from which states, to which state,
/// what it stamps on the dispatch, what follows, and how it is audited (its name, with the
/// new state as the outcome, or the refusal).
#[derive(Debug)]
pub(crate) struct Action {
    /// As audited.
    pub name: &'static str,
    /// For the refusal of a caller without the permission: "to {doing} you need …".
    pub doing: &'static str,
    pub permission: Permission,
    /// The states it may be taken from; when the dispatch is in none, the first is the one
    /// the refusal names.
    pub from: &'static [DispatchState],
    pub to: DispatchState,
    pub stamps: &'static [(&'static str, Stamp)],
    pub then: Then,
    /// Answered `202 Accepted` (work follows) rather than `200`.
    pub accepted: bool,
}

/// Reject: nothing (more) is sent. Before approval, or while sending (paused or waiting
/// included): recipients sent to stay sent, the others are rejected.
pub(crate) const REJECT: Action = Action {
    name: "reject",
    doing: "reject a dispatch",
    permission: Permission::Send,
    from: &[
        DispatchState::AwaitingApproval,
        DispatchState::Approved,
        DispatchState::Sending,
        DispatchState::WaitingForContinuation,
        DispatchState::Paused,
    ],
    to: DispatchState::Rejected,
    stamps: &[("rejected_by", Stamp::Caller), ("rejected_at", Stamp::Now)],
    then: Then::RejectUnsent,
    accepted: false,
};

/// Pause: sending stops within about 2 s.
pub(crate) const PAUSE: Action = Action {
    name: "pause",
    doing: "pause a dispatch",
    permission: Permission::Send,
    from: &[
        DispatchState::Sending,
        DispatchState::WaitingForContinuation,
    ],
    to: DispatchState::Paused,
    stamps: &[("paused_by", Stamp::Caller), ("paused_at", Stamp::Now)],
    then: Then::Nothing,
    accepted: false,
};

/// Resume: sending continues with the recipients not yet sent. If the enqueue fails, the
/// scheduled resume function hands them out once the dispatch has been quiet for a while.
pub(crate) const RESUME: Action = Action {
    name: "resume",
    doing: "resume a dispatch",
    permission: Permission::Send,
    from: &[DispatchState::Paused],
    to: DispatchState::Sending,
    stamps: &[("resumed_by", Stamp::Caller)],
    then: Then::SendPending,
    accepted: true,
};

/// Cancel: the dispatch is withdrawn before approval; nothing is sent, and its valid
/// recipients become rejected ("cancelled").
pub(crate) const CANCEL: Action = Action {
    name: "cancel",
    doing: "cancel a dispatch",
    permission: Permission::Create,
    from: &[
        DispatchState::AwaitingApproval,
        DispatchState::AwaitingUpload,
        DispatchState::ValidationFailed,
    ],
    to: DispatchState::Cancelled,
    stamps: &[
        ("cancelled_by", Stamp::Caller),
        ("cancelled_at", Stamp::Now),
    ],
    then: Then::RejectUnsentFrom(DispatchState::AwaitingApproval),
    accepted: false,
};

/// The answer of a declared action, as its route gives it.
type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<Response>> + Send>>;

/// The route of a declared action.
pub(crate) fn handler(
    action: &'static Action,
) -> impl Fn(State<AppState>, Path<String>, Extension<Caller>) -> Answer + Clone + Send + Sync + 'static
{
    move |State(deps), Path(id), Extension(caller)| {
        Box::pin(async move { take(&deps, action, &id, &caller).await })
    }
}

/// Takes a declared action: load, check the permission, write the transition with its
/// stamps, audit the outcome or the refusal, then what follows.
async fn take(deps: &Deps, action: &Action, id: &str, caller: &Caller) -> ApiResult<Response> {
    let current = load(deps, id).await?;
    require(caller, action.permission, action.doing)?;
    let from = if action.from.contains(&current.state) {
        current.state
    } else {
        action.from[0]
    };
    let now = now_rfc3339();
    let stamps: Vec<(&str, String)> = action
        .stamps
        .iter()
        .map(|(field, stamp)| match stamp {
            Stamp::Caller => (*field, caller.id.clone()),
            Stamp::Now => (*field, now.clone()),
        })
        .collect();
    let changed = DispatchBook::transition(&deps.store, id, from, action.to, &stamps).await;
    let d = settle(deps, id, &caller.id, action.name, changed).await?;
    match action.then {
        Then::Nothing => {}
        Then::SendPending => send_pending(deps, &d).await,
        Then::RejectUnsent => reject_unsent(deps, &d).await?,
        Then::RejectUnsentFrom(state) if state == from => reject_unsent(deps, &d).await?,
        Then::RejectUnsentFrom(_) => {}
    }
    let status = if action.accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(DispatchView::from(d))).into_response())
}

/// Archives a dispatch that is over (or whose validation failed): it stays readable but
/// leaves the default list.
pub(crate) async fn archive(
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
pub(crate) async fn repeat(
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

pub(crate) async fn repeat_checked(deps: &Deps, d: &Dispatch) -> ApiResult<Dispatch> {
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
