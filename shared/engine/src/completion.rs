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

use crate::ports::{
    AuditTrail, Completion, DispatchBook, RecipientRoll, ReportDocuments, StaleHistories,
};
use async_trait::async_trait;
use documents::history::{history_csv, history_summary};
use documents::keys;
use domain::audit::SYSTEM;
use domain::keys::RecipientKey;
use domain::model::{now_rfc3339, Dispatch, DispatchState, Recipient, RecipientState};
use domain::{Error, Result};
use std::sync::Arc;

/// What completion works with.
#[derive(Clone)]
pub struct CompletionPorts {
    pub dispatches: Arc<dyn DispatchBook>,
    pub recipients: Arc<dyn RecipientRoll>,
    pub audit: Arc<dyn AuditTrail>,
    pub documents: Arc<dyn ReportDocuments>,
    pub stale: Arc<dyn StaleHistories>,
}

/// Completes dispatches, closes them, and writes their histories.
#[derive(Clone)]
pub struct Completer {
    ports: CompletionPorts,
}

impl Completer {
    pub fn new(ports: CompletionPorts) -> Completer {
        Completer { ports }
    }

    /// Closes a dispatch that completed with errors, by an operator's decision, and writes
    /// its history again with the close in it.
    pub async fn close(&self, id: &str, by: &str) -> Result<Dispatch> {
        let closed = self
            .ports
            .dispatches
            .transition(
                id,
                DispatchState::CompletedWithErrors,
                DispatchState::Closed,
                &[
                    ("completion", "manual".to_string()),
                    ("closed_by", by.to_string()),
                    ("closed_at", now_rfc3339()),
                ],
            )
            .await?;
        self.ports
            .audit
            .append(id, by, "closed", "closed (manual)")
            .await;
        self.write_history(&closed).await
    }

    /// Writes the history documents of a dispatch and records where they are.
    pub async fn write_history(&self, d: &Dispatch) -> Result<Dispatch> {
        let recipients = self.ports.recipients.every_recipient(d).await?;
        self.write_history_of(d, &recipients).await
    }

    async fn write_history_of(
        &self,
        d: &Dispatch,
        recipients: &[(RecipientKey, Recipient)],
    ) -> Result<Dispatch> {
        let key = keys::history(&d.id);
        let audit = self.ports.audit.trail(&d.id).await?;
        self.ports
            .documents
            .put(
                &key,
                history_csv(recipients, &audit),
                "text/csv; charset=utf-8",
            )
            .await?;
        let summary = serde_json::to_vec_pretty(&history_summary(d, recipients, audit))
            .map_err(|e| Error::Malformed(e.to_string()))?;
        self.ports
            .documents
            .put(&keys::history_summary(&d.id), summary, "application/json")
            .await?;
        self.ports
            .dispatches
            .stamp(&d.id, &[("history_key", key.clone())])
            .await?;
        let mut out = d.clone();
        out.history_key = Some(key);
        Ok(out)
    }

    /// Writes again the histories that receipts made stale, at most `limit` per call.
    /// Returns the dispatches written.
    pub async fn refresh_stale_histories(&self, limit: i32) -> Result<Vec<String>> {
        let mut written = Vec::new();
        for (id, since) in self.ports.stale.stale(limit).await? {
            match self.ports.dispatches.dispatch(&id).await? {
                Some(d) if d.state.is_finished() => {
                    self.write_history(&d).await?;
                    written.push(id.clone());
                }
                // Not finished (cannot happen for a mark) or gone: nothing to write.
                _ => {}
            }
            self.ports.stale.refreshed(&id, &since).await?;
        }
        Ok(written)
    }
}

#[async_trait]
impl Completion for Completer {
    /// Completes a sending dispatch that has nothing outstanding and writes its history. The
    /// counters say when to look; the records, read once for the history anyway, decide: a
    /// recipient still pending or being sent keeps the dispatch open.
    async fn complete_if_done(&self, d: &Dispatch) -> Result<Option<Dispatch>> {
        if d.state != DispatchState::Sending || d.counts.outstanding() > 0 {
            return Ok(None);
        }
        let recipients = self.ports.recipients.every_recipient(d).await?;
        let open = recipients
            .iter()
            .filter(|(_, r)| matches!(r.state, RecipientState::Pending | RecipientState::Sending))
            .count();
        if open > 0 {
            tracing::warn!(dispatch = %d.id, open, "counters say done but recipients are open; not completing");
            return Ok(None);
        }
        let to = d.final_state();
        let mut stamps = vec![("completed_at", now_rfc3339())];
        if to == DispatchState::Completed {
            stamps.push(("completion", "automatic".to_string()));
        }
        let done = match self
            .ports
            .dispatches
            .transition(&d.id, DispatchState::Sending, to, &stamps)
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
        self.ports
            .audit
            .append(&d.id, SYSTEM, "completed", outcome)
            .await;
        self.write_history_of(&done, &recipients).await.map(Some)
    }
}

#[cfg(test)]
mod tests;
