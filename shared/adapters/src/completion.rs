//! The end of a dispatch: when every valid recipient has a final state the dispatch
//! completes and its history documents are written.
//!
//! - Everyone on the list sent to: the dispatch closes by itself (`completed`, completion
//!   "automatic").
//! - Anything failed, unknown, invalid or excluded: `completed_with_errors`, which waits for
//!   an operator to review the history and close it (`closed`, completion "manual").
//!
//! Receipts keep arriving after completion; each one that changes a recipient marks the
//! history as stale and the scheduled function writes both documents again.

use crate::dynamodb::{self, Store};
use crate::s3::Documents;
use documents::history::{history_csv, history_summary};
use documents::keys;
use domain::audit::SYSTEM;
use domain::error::{Error, Result};
use domain::keys::RecipientKey;
use domain::model::{now_rfc3339, Dispatch, DispatchState, Recipient, RecipientState};

/// Completes a sending dispatch that has nothing outstanding and writes its history.
/// Returns the dispatch after, or `None` when it is not complete or another caller got there
/// first. The counters say when to look; the records, read once for the history anyway,
/// decide: a recipient still pending or being sent keeps the dispatch open.
pub async fn complete_if_done(
    store: &Store,
    docs: &Documents,
    d: &Dispatch,
) -> Result<Option<Dispatch>> {
    if d.state != DispatchState::Sending || d.counts.outstanding() > 0 {
        return Ok(None);
    }
    let recipients = store.all_recipients_keyed(&d.id, d.shards).await?;
    let open = recipients
        .iter()
        .filter(|(_, r)| matches!(r.state, RecipientState::Pending | RecipientState::Sending))
        .count();
    if open > 0 {
        tracing::warn!(dispatch = %d.id, open, "counters say done but recipients are open; not completing");
        return Ok(None);
    }
    let to = d.final_state();
    let mut set = vec![("completed_at", dynamodb::s(now_rfc3339()))];
    if to == DispatchState::Completed {
        set.push(("completion", dynamodb::s("automatic")));
    }
    let done = match store
        .transition(&d.id, DispatchState::Sending, to, &set)
        .await
    {
        Ok(done) => done,
        Err(Error::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    tracing::info!(dispatch = %d.id, state = %to, sent = d.counts.sent, failed = d.counts.failed, "dispatch complete");
    let outcome = match to {
        DispatchState::Completed => "completed (automatic)",
        _ => "completed with errors; waits for a manual close",
    };
    store
        .audit_or_log(&d.id, SYSTEM, "completed", outcome)
        .await;
    write_history_of(store, docs, &done, &recipients)
        .await
        .map(Some)
}

/// Closes a dispatch that completed with errors, by an operator's decision, and writes its
/// history again with the close in it.
pub async fn close(store: &Store, docs: &Documents, id: &str, by: &str) -> Result<Dispatch> {
    let closed = store
        .transition(
            id,
            DispatchState::CompletedWithErrors,
            DispatchState::Closed,
            &[
                ("completion", dynamodb::s("manual")),
                ("closed_by", dynamodb::s(by)),
                ("closed_at", dynamodb::s(now_rfc3339())),
            ],
        )
        .await?;
    store
        .audit_or_log(id, by, "closed", "closed (manual)")
        .await;
    write_history(store, docs, &closed).await
}

/// Writes the history documents of a dispatch and records where they are.
pub async fn write_history(store: &Store, docs: &Documents, d: &Dispatch) -> Result<Dispatch> {
    let recipients = store.all_recipients_keyed(&d.id, d.shards).await?;
    write_history_of(store, docs, d, &recipients).await
}

async fn write_history_of(
    store: &Store,
    docs: &Documents,
    d: &Dispatch,
    recipients: &[(RecipientKey, Recipient)],
) -> Result<Dispatch> {
    let key = keys::history(&d.id);
    let audit = store.audit_log(&d.id).await?;
    docs.put_report_document(
        &key,
        history_csv(recipients, &audit),
        "text/csv; charset=utf-8",
    )
    .await?;
    docs.put_json(
        &keys::history_summary(&d.id),
        &history_summary(d, recipients, audit),
    )
    .await?;
    store
        .update_dispatch(&d.id, &[("history_key", dynamodb::s(key.clone()))])
        .await?;
    let mut out = d.clone();
    out.history_key = Some(key);
    Ok(out)
}

/// Writes again the histories that receipts made stale, at most `limit` per call. Returns
/// the dispatches written.
pub async fn refresh_stale_histories(
    store: &Store,
    docs: &Documents,
    limit: i32,
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    for (id, since) in store.stale_histories(limit).await? {
        match store.get_dispatch(&id).await? {
            Some(d) if d.state.is_finished() => {
                write_history(store, docs, &d).await?;
                written.push(id.clone());
            }
            // Not finished (cannot happen for a mark) or gone: nothing to write.
            _ => {}
        }
        store.history_refreshed(&id, &since).await?;
    }
    Ok(written)
}

/// Completion on the table and the reports bucket, as the senders look for it.
pub struct StoreCompletion {
    pub store: Store,
    pub docs: Documents,
}

#[async_trait::async_trait]
impl engine::ports::Completion for StoreCompletion {
    async fn complete_if_done(&self, d: &Dispatch) -> Result<Option<Dispatch>> {
        complete_if_done(&self.store, &self.docs, d).await
    }
}
