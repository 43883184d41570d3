//! The history of a dispatch: the CSV of every recipient and the audit trail, and its summary.

use crate::csvout::CsvDoc;
use domain::audit::AuditEntry;
use domain::keys::RecipientKey;
use domain::model::{now_rfc3339, Counts, Dispatch, DispatchState, Recipient, RecipientState};
use serde::Serialize;
use std::collections::BTreeMap;

/// Columns of the history document: one `recipient` row per row of the list, in list order,
/// then one `audit` row per entry of the dispatch's audit trail, oldest first. The `record`
/// column says which a row is.
///
/// After the recipient's id, line, channel and address come the columns an archive of
/// dispatches expects:
///
/// - `reachable`: whether the recipient could be reached on its channel: `yes` when the
///   address was usable and nothing reported it unreachable, `no` when the row was invalid
///   or excluded or the provider reported a bounce or an undeliverable SMS;
/// - `record_key`: where the recipient is stored (key shard and sort key);
/// - `external_id`: the provider's message id;
/// - `shipment_date` / `receipt_date`: when the provider accepted the message and when its
///   last receipt happened;
/// - `receipt`: the receipt (delivered, bounced, complained, ...);
/// - `shipment_state`: the receipt where there is one, else the recipient's state;
/// - `shipment_error`: why it was not sent or not delivered.
///
/// Then the recipient's `state`, its `send_attempt` (1, or the resend it was last sent in)
/// and `updated_at`. An audit row fills only `record`, `updated_at` (when the action was
/// taken), `actor`, `action` and `outcome`.
pub const HISTORY_COLUMNS: [&str; 19] = [
    "record",
    "recipient_id",
    "line",
    "channel",
    "address",
    "reachable",
    "record_key",
    "external_id",
    "shipment_date",
    "receipt_date",
    "receipt",
    "shipment_state",
    "shipment_error",
    "state",
    "send_attempt",
    "updated_at",
    "actor",
    "action",
    "outcome",
];

/// Whether a recipient could be reached on its channel.
pub fn reachable(r: &Recipient) -> bool {
    let usable = !matches!(r.state, RecipientState::Invalid | RecipientState::Excluded)
        && r.address.is_some();
    let refused = r.receipt.is_some_and(|x| {
        matches!(
            x,
            domain::model::Receipt::Bounced | domain::model::Receipt::Undelivered
        )
    });
    usable && !refused
}

/// The shipment state of a recipient: the receipt where there is one, else its state.
pub fn shipment_state(r: &Recipient) -> &'static str {
    match r.receipt {
        Some(x) => x.as_str(),
        None => r.state.as_str(),
    }
}

/// Why a recipient was not sent to or not delivered.
pub fn shipment_error(r: &Recipient) -> Option<&str> {
    match r.receipt {
        Some(x) if !x.reached() && x != domain::model::Receipt::Delayed => {
            r.receipt_detail.as_deref().or(Some(x.as_str()))
        }
        _ => r.reason.as_deref(),
    }
}

/// The history CSV of a dispatch: its recipients in list order, then its audit trail.
pub fn history_csv(recipients: &[(RecipientKey, Recipient)], audit: &[AuditEntry]) -> Vec<u8> {
    let mut rows: Vec<&(RecipientKey, Recipient)> = recipients.iter().collect();
    rows.sort_by_key(|(_, r)| r.line);
    let mut doc = CsvDoc::new(&HISTORY_COLUMNS);
    for (key, r) in rows {
        let line = r.line.to_string();
        let record_key = format!("{}/{}", key.shard, key.sk);
        let attempt = r.send_attempt.to_string();
        doc.row([
            "recipient",
            r.recipient_id.as_str(),
            line.as_str(),
            r.channel.map(|c| c.as_str()).unwrap_or(""),
            r.address.as_deref().unwrap_or(""),
            if reachable(r) { "yes" } else { "no" },
            record_key.as_str(),
            r.message_id.as_deref().unwrap_or(""),
            r.sent_at.as_deref().unwrap_or(""),
            r.receipt_at.as_deref().unwrap_or(""),
            r.receipt.map(|x| x.as_str()).unwrap_or(""),
            shipment_state(r),
            shipment_error(r).unwrap_or(""),
            r.state.as_str(),
            attempt.as_str(),
            r.updated_at.as_str(),
            "",
            "",
            "",
        ]);
    }
    for e in audit {
        let mut row = [""; HISTORY_COLUMNS.len()];
        row[0] = "audit";
        row[15] = e.at.as_str();
        row[16] = e.actor.as_str();
        row[17] = e.action.as_str();
        row[18] = e.outcome.as_str();
        doc.row(row);
    }
    doc.finish()
}

/// The summary document of a dispatch's history: counts, receipts and the audit trail.
#[derive(Debug, Serialize)]
pub struct HistorySummary {
    pub dispatch_id: String,
    pub title: String,
    pub state: DispatchState,
    /// "automatic" or "manual" once the dispatch is closed.
    pub completion: Option<String>,
    pub counts: Counts,
    /// Recipients per shipment state (receipt, or state where no receipt came).
    pub shipment_states: BTreeMap<&'static str, u64>,
    /// Recipients per receipt.
    pub receipts: BTreeMap<&'static str, u64>,
    pub reachable: u64,
    pub unreachable: u64,
    pub created_at: String,
    pub approved_by: Option<String>,
    pub approved_at: Option<String>,
    pub rejected_by: Option<String>,
    pub rejected_at: Option<String>,
    pub completed_at: Option<String>,
    pub closed_by: Option<String>,
    pub closed_at: Option<String>,
    /// Every action on the dispatch, oldest first: uploads and validations, approval,
    /// pauses, completion, close.
    pub audit: Vec<AuditEntry>,
    pub written_at: String,
}

pub fn history_summary(
    d: &Dispatch,
    recipients: &[(RecipientKey, Recipient)],
    audit: Vec<AuditEntry>,
) -> HistorySummary {
    let mut shipment_states = BTreeMap::new();
    let mut receipts = BTreeMap::new();
    let mut reach = 0;
    for (_, r) in recipients {
        *shipment_states.entry(shipment_state(r)).or_insert(0) += 1;
        if let Some(x) = r.receipt {
            *receipts.entry(x.as_str()).or_insert(0) += 1;
        }
        if reachable(r) {
            reach += 1;
        }
    }
    HistorySummary {
        dispatch_id: d.id.clone(),
        title: d.title.clone(),
        state: d.state,
        completion: d.completion.clone(),
        counts: d.counts,
        shipment_states,
        receipts,
        reachable: reach,
        unreachable: recipients.len() as u64 - reach,
        created_at: d.created_at.clone(),
        approved_by: d.approved_by.clone(),
        approved_at: d.approved_at.clone(),
        rejected_by: d.rejected_by.clone(),
        rejected_at: d.rejected_at.clone(),
        completed_at: d.completed_at.clone(),
        closed_by: d.closed_by.clone(),
        closed_at: d.closed_at.clone(),
        audit,
        written_at: now_rfc3339(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::model::{Channel, Receipt};

    fn sent(id: &str, line: u64) -> (RecipientKey, Recipient) {
        let r = Recipient {
            channel: Some(Channel::Sms),
            address: Some("+4520123456".into()),
            state: RecipientState::Sent,
            message_id: Some("m-1".into()),
            sent_at: Some("2026-01-01T00:00:00Z".into()),
            updated_at: "2026-01-01T00:00:01Z".into(),
            ..Recipient::pending("d", id, line)
        };
        let key = RecipientKey {
            shard: 3,
            sk: format!("R#{id}"),
        };
        (key, r)
    }

    #[test]
    fn history_rows_follow_the_list_and_carry_receipts() {
        let mut bounced = sent("=cmd", 3);
        bounced.1.receipt = Some(Receipt::Bounced);
        bounced.1.receipt_at = Some("2026-01-01T00:00:05Z".into());
        bounced.1.receipt_detail = Some("Permanent/General: 550 user unknown".into());
        let mut invalid = sent("9", 4);
        invalid.1.state = RecipientState::Invalid;
        invalid.1.message_id = None;
        invalid.1.sent_at = None;
        invalid.1.reason = Some("invalid_phone: too short".into());
        let audit = [
            AuditEntry {
                at: "2026-01-01T00:00:00Z".into(),
                actor: "ann".into(),
                action: "approve".into(),
                outcome: "approved".into(),
            },
            AuditEntry {
                at: "2026-01-01T00:00:09Z".into(),
                actor: "=evil".into(),
                action: "resend".into(),
                outcome: "1 recipient, send attempt 2".into(),
            },
        ];
        let text =
            String::from_utf8(history_csv(&[invalid, bounced, sent("7", 2)], &audit)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HISTORY_COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "recipient,7,2,sms,+4520123456,yes,3/R#7,m-1,2026-01-01T00:00:00Z,,,sent,,sent,1,2026-01-01T00:00:01Z,,,"
        );
        assert_eq!(
            lines[2],
            "recipient,'=cmd,3,sms,+4520123456,no,3/R#=cmd,m-1,2026-01-01T00:00:00Z,2026-01-01T00:00:05Z,bounced,bounced,Permanent/General: 550 user unknown,sent,1,2026-01-01T00:00:01Z,,,"
        );
        assert_eq!(
            lines[3],
            "recipient,9,4,sms,+4520123456,no,3/R#9,,,,,invalid,invalid_phone: too short,invalid,1,2026-01-01T00:00:01Z,,,"
        );
        assert_eq!(
            lines[4],
            "audit,,,,,,,,,,,,,,,2026-01-01T00:00:00Z,ann,approve,approved"
        );
        assert_eq!(
            lines[5],
            "audit,,,,,,,,,,,,,,,2026-01-01T00:00:09Z,'=evil,resend,\"1 recipient, send attempt 2\""
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn the_summary_counts_shipment_states_and_receipts() {
        let mut delivered = sent("1", 2);
        delivered.1.receipt = Some(Receipt::Delivered);
        let d = Dispatch::arrived("d", "incoming/d/", 1);
        let s = history_summary(&d, &[delivered, sent("2", 3)], vec![]);
        assert_eq!(s.shipment_states.get("delivered"), Some(&1));
        assert_eq!(s.shipment_states.get("sent"), Some(&1));
        assert_eq!(s.receipts.get("delivered"), Some(&1));
        assert_eq!((s.reachable, s.unreachable), (2, 0));
    }
}
