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
use documents::history::{history_summary, HistoryWriter};
use documents::keys;
use domain::audit::SYSTEM;
use domain::model::{now_rfc3339, Dispatch, DispatchState, RecipientState};
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
        let closed = self.close_only(id, by).await?;
        self.write_history(&closed).await
    }

    /// [`Completer::close`] without writing the history, for a caller that has it written
    /// elsewhere (a job: the pass grows with the list).
    pub async fn close_only(&self, id: &str, by: &str) -> Result<Dispatch> {
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
        Ok(closed)
    }

    /// Writes the history documents of a dispatch and records where they are.
    pub async fn write_history(&self, d: &Dispatch) -> Result<Dispatch> {
        match self.pass(d, false).await? {
            Some(writer) => self.write_history_of(d, writer).await,
            None => Err(Error::Conflict(format!(
                "dispatch '{}' has recipients still open",
                d.id
            ))),
        }
    }

    /// Reads every recipient of a dispatch, a page at a time, into a history writer (on
    /// temporary disk: the pass holds one page). With `stop_at_open`, `None` as soon as a
    /// recipient is still pending or being sent.
    async fn pass(&self, d: &Dispatch, stop_at_open: bool) -> Result<Option<HistoryWriter>> {
        let mut writer = HistoryWriter::new().map_err(local_disk)?;
        for shard in 0..d.shards {
            let mut after = None;
            loop {
                let page = self.ports.recipients.page(d, shard, after).await?;
                for (key, r) in &page.recipients {
                    if stop_at_open
                        && matches!(r.state, RecipientState::Pending | RecipientState::Sending)
                    {
                        return Ok(None);
                    }
                    writer.add(key, r).map_err(local_disk)?;
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(Some(writer))
    }

    async fn write_history_of(&self, d: &Dispatch, writer: HistoryWriter) -> Result<Dispatch> {
        let key = keys::history(&d.id);
        let audit = self.ports.audit.trail(&d.id).await?;
        let (file, tally) = writer.finish(&audit).map_err(local_disk)?;
        self.ports
            .documents
            .put_file(&key, file.path(), "text/csv; charset=utf-8")
            .await?;
        drop(file);
        let summary = serde_json::to_vec_pretty(&history_summary(d, tally, audit))
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

    /// The dispatches whose histories receipts made stale, with the time of the first
    /// receipt since the last writing, at most `limit`.
    pub async fn stale_marks(&self, limit: i32) -> Result<Vec<(String, String)>> {
        self.ports.stale.stale(limit).await
    }

    /// Writes one stale history again and clears its mark (unless a receipt came after
    /// `since`). False when there was nothing to write.
    pub async fn refresh_history(&self, id: &str, since: &str) -> Result<bool> {
        let written = match self.ports.dispatches.dispatch(id).await? {
            Some(d) if d.state.is_finished() => {
                self.write_history(&d).await?;
                true
            }
            // Not finished (cannot happen for a mark) or gone: nothing to write.
            _ => false,
        };
        self.ports.stale.refreshed(id, since).await?;
        Ok(written)
    }
}

#[async_trait]
impl Completion for Completer {
    /// Completes a sending dispatch that has nothing outstanding and writes its history. The
    /// counters say when to look; the records, read once for the history anyway (a page at
    /// a time), decide: a recipient still pending or being sent keeps the dispatch open.
    async fn complete_if_done(&self, d: &Dispatch) -> Result<Option<Dispatch>> {
        if d.state != DispatchState::Sending || d.counts.outstanding() > 0 {
            return Ok(None);
        }
        let Some(writer) = self.pass(d, true).await? else {
            tracing::warn!(dispatch = %d.id, "counters say done but a recipient is open; not completing");
            return Ok(None);
        };
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
        tracing::info!(dispatch = %d.id, state = %to, sent = d.counts.sent, created = d.counts.created, failed = d.counts.failed, "dispatch complete");
        let outcome = match to {
            DispatchState::Completed => "completed (automatic)",
            _ => "completed with errors; waits for a manual close",
        };
        self.ports
            .audit
            .append(&d.id, SYSTEM, "completed", outcome)
            .await;
        self.write_history_of(&done, writer).await.map(Some)
    }
}

/// Temporary disk failing under a pass: the function's environment, not the dispatch.
fn local_disk(e: std::io::Error) -> Error {
    Error::Aws {
        op: "writing the history to temporary disk",
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests;
