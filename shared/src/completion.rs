//! The end of a dispatch: when every valid recipient has a final state the dispatch
//! completes and its history document is written.

use crate::csvout::CsvDoc;
use crate::documents::{keys, Documents};
use crate::error::{Error, Result};
use crate::model::{now_rfc3339, Dispatch, DispatchState, Recipient, RecipientState};
use crate::store::{self, Store};

/// Columns of the history document, one row per recipient of the list.
pub const HISTORY_COLUMNS: [&str; 9] = [
    "recipient_id",
    "line",
    "channel",
    "address",
    "state",
    "provider_message_id",
    "sent_at",
    "error",
    "updated_at",
];

/// The history CSV of a dispatch.
pub fn history_csv(recipients: &[Recipient]) -> Vec<u8> {
    let mut doc = CsvDoc::new(&HISTORY_COLUMNS);
    for r in recipients {
        let line = r.line.to_string();
        doc.row([
            r.recipient_id.as_str(),
            line.as_str(),
            r.channel.map(|c| c.as_str()).unwrap_or(""),
            r.address.as_deref().unwrap_or(""),
            r.state.as_str(),
            r.message_id.as_deref().unwrap_or(""),
            r.sent_at.as_deref().unwrap_or(""),
            r.reason.as_deref().unwrap_or(""),
            r.updated_at.as_str(),
        ]);
    }
    doc.finish()
}

/// The final state a finished dispatch takes.
pub fn final_state(d: &Dispatch) -> DispatchState {
    if d.counts.failed + d.counts.unknown + d.counts.invalid == 0 {
        DispatchState::Completed
    } else {
        DispatchState::CompletedWithErrors
    }
}

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
    let recipients = store.all_recipients(&d.id, d.shards).await?;
    let open = recipients
        .iter()
        .filter(|r| matches!(r.state, RecipientState::Pending | RecipientState::Sending))
        .count();
    if open > 0 {
        tracing::warn!(dispatch = %d.id, open, "counters say done but recipients are open; not completing");
        return Ok(None);
    }
    let to = final_state(d);
    let done = match store
        .transition(
            &d.id,
            DispatchState::Sending,
            to,
            &[("completed_at", store::s(now_rfc3339()))],
        )
        .await
    {
        Ok(done) => done,
        Err(Error::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    tracing::info!(dispatch = %d.id, state = %to, sent = d.counts.sent, failed = d.counts.failed, "dispatch complete");
    write_history_of(store, docs, &done, &recipients)
        .await
        .map(Some)
}

/// Writes the history document of a dispatch and records where it is.
pub async fn write_history(store: &Store, docs: &Documents, d: &Dispatch) -> Result<Dispatch> {
    let recipients = store.all_recipients(&d.id, d.shards).await?;
    write_history_of(store, docs, d, &recipients).await
}

async fn write_history_of(
    store: &Store,
    docs: &Documents,
    d: &Dispatch,
    recipients: &[Recipient],
) -> Result<Dispatch> {
    let key = keys::history(&d.id);
    docs.put_report_document(&key, history_csv(recipients), "text/csv; charset=utf-8")
        .await?;
    store
        .update_dispatch(&d.id, &[("history_key", store::s(key.clone()))])
        .await?;
    let mut out = d.clone();
    out.history_key = Some(key);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, Counts};
    use std::collections::BTreeMap;

    #[test]
    fn history_has_one_row_per_recipient_and_neutralised_cells() {
        let r = Recipient {
            dispatch_id: "d".into(),
            recipient_id: "=cmd".into(),
            line: 2,
            channel: Some(Channel::Sms),
            address: Some("+4520123456".into()),
            fields: BTreeMap::new(),
            state: RecipientState::Sent,
            reason: None,
            message_id: Some("m-1".into()),
            sent_at: Some("2026-01-01T00:00:00Z".into()),
            claimed_at: None,
            updated_at: "2026-01-01T00:00:01Z".into(),
        };
        let text = String::from_utf8(history_csv(&[r])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HISTORY_COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "'=cmd,2,sms,+4520123456,sent,m-1,2026-01-01T00:00:00Z,,2026-01-01T00:00:01Z"
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn a_dispatch_with_any_loss_completes_with_errors() {
        let mut d = Dispatch::arrived("d", "incoming/d/", 1);
        d.state = DispatchState::Sending;
        d.counts = Counts {
            total: 2,
            valid: 2,
            invalid: 0,
            sent: 2,
            failed: 0,
            unknown: 0,
            stuck: d.counts.stuck,
        };
        assert_eq!(final_state(&d), DispatchState::Completed);
        d.counts.invalid = 1;
        assert_eq!(final_state(&d), DispatchState::CompletedWithErrors);
    }
}
