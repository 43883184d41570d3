//! The history of a dispatch: the CSV of every recipient and the audit trail, and its summary.

use domain::audit::AuditEntry;
use domain::keys::RecipientKey;
use domain::model::{now_rfc3339, Counts, Dispatch, DispatchState, Recipient, RecipientState};
use serde::Serialize;
use std::collections::BTreeMap;

/// Columns of the history document: one `recipient` row per row of the list, in list order
/// (written by [`HistoryWriter`]),
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
/// taken), `actor`, `action` and `outcome`. Last, `previous_attempt`: what became of the
/// recipient's attempt before this one (a resend's failure, or the channel a failed delivery
/// was followed up from).
pub const HISTORY_COLUMNS: [&str; 20] = [
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
    "previous_attempt",
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

/// Lines of the list one bucket of the history holds. Recipients come in storage order
/// (shard by shard), so each row goes to the bucket of its line on temporary disk, and the
/// document is the buckets in turn, each sorted in memory: what the writer holds at a time is
/// one bucket, however long the list.
pub const BUCKET_LINES: u64 = 50_000;

/// The recipient row of the history.
fn recipient_row(key: &RecipientKey, r: &Recipient) -> [String; HISTORY_COLUMNS.len()] {
    let text = |s: &str| s.to_string();
    [
        text("recipient"),
        r.recipient_id.clone(),
        r.line.to_string(),
        text(r.channel.map(|c| c.as_str()).unwrap_or("")),
        r.address.clone().unwrap_or_default(),
        text(if reachable(r) { "yes" } else { "no" }),
        format!("{}/{}", key.shard, key.sk),
        r.message_id.clone().unwrap_or_default(),
        r.sent_at.clone().unwrap_or_default(),
        r.receipt_at.clone().unwrap_or_default(),
        text(r.receipt.map(|x| x.as_str()).unwrap_or("")),
        text(shipment_state(r)),
        text(shipment_error(r).unwrap_or("")),
        text(r.state.as_str()),
        r.send_attempt.to_string(),
        r.updated_at.clone(),
        String::new(),
        String::new(),
        String::new(),
        r.previous_reason.clone().unwrap_or_default(),
    ]
}

/// What the summary counts of the recipients, tallied as they pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub shipment_states: BTreeMap<&'static str, u64>,
    pub receipts: BTreeMap<&'static str, u64>,
    pub reachable: u64,
    pub recipients: u64,
}

impl Tally {
    pub fn add(&mut self, r: &Recipient) {
        *self.shipment_states.entry(shipment_state(r)).or_insert(0) += 1;
        if let Some(x) = r.receipt {
            *self.receipts.entry(x.as_str()).or_insert(0) += 1;
        }
        if reachable(r) {
            self.reachable += 1;
        }
        self.recipients += 1;
    }
}

type Bucket = csv::Writer<std::io::BufWriter<std::fs::File>>;

/// Writes a dispatch's history CSV from its recipients in any order, in bounded memory (see
/// [`BUCKET_LINES`]), and tallies its summary on the way.
pub struct HistoryWriter {
    dir: tempfile::TempDir,
    bucket_lines: u64,
    buckets: BTreeMap<u64, Bucket>,
    tally: Tally,
}

impl HistoryWriter {
    pub fn new() -> std::io::Result<HistoryWriter> {
        HistoryWriter::with_bucket_lines(BUCKET_LINES)
    }

    pub fn with_bucket_lines(bucket_lines: u64) -> std::io::Result<HistoryWriter> {
        Ok(HistoryWriter {
            dir: tempfile::tempdir()?,
            bucket_lines: bucket_lines.max(1),
            buckets: BTreeMap::new(),
            tally: Tally::default(),
        })
    }

    fn bucket_path(&self, bucket: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("{bucket}.csv"))
    }

    /// Takes one recipient.
    pub fn add(&mut self, key: &RecipientKey, r: &Recipient) -> std::io::Result<()> {
        self.tally.add(r);
        let bucket = r.line / self.bucket_lines;
        if !self.buckets.contains_key(&bucket) {
            let file = std::fs::File::create(self.bucket_path(bucket))?;
            let writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(std::io::BufWriter::with_capacity(16 * 1024, file));
            self.buckets.insert(bucket, writer);
        }
        if let Some(w) = self.buckets.get_mut(&bucket) {
            w.write_record(recipient_row(key, r))?;
        }
        Ok(())
    }

    /// The tally so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The document: the recipients in list order, then the audit trail, in a temporary
    /// file; and the tally.
    pub fn finish(self, audit: &[AuditEntry]) -> std::io::Result<(tempfile::NamedTempFile, Tally)> {
        let mut doc = crate::csvout::CsvFile::temporary(&HISTORY_COLUMNS)?;
        let HistoryWriter {
            dir,
            buckets,
            tally,
            ..
        } = self;
        for (bucket, writer) in buckets {
            writer
                .into_inner()
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_data()?;
            let path = dir.path().join(format!("{bucket}.csv"));
            let mut rows = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_path(&path)?
                .into_records()
                .collect::<Result<Vec<_>, _>>()?;
            rows.sort_by_key(|row| row.get(2).and_then(|l| l.parse::<u64>().ok()));
            for row in &rows {
                doc.row(row.iter());
            }
            drop(rows);
            std::fs::remove_file(&path)?;
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
        Ok((doc.finish_file()?, tally))
    }
}

/// The history CSV of recipients held in memory: their rows in list order, then the audit
/// trail.
pub fn history_csv(
    recipients: &[(RecipientKey, Recipient)],
    audit: &[AuditEntry],
) -> std::io::Result<Vec<u8>> {
    let mut w = HistoryWriter::new()?;
    for (key, r) in recipients {
        w.add(key, r)?;
    }
    let (file, _) = w.finish(audit)?;
    std::fs::read(file.path())
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

pub fn history_summary(d: &Dispatch, tally: Tally, audit: Vec<AuditEntry>) -> HistorySummary {
    HistorySummary {
        dispatch_id: d.id.clone(),
        title: d.title.clone(),
        state: d.state,
        completion: d.completion.clone(),
        counts: d.counts,
        shipment_states: tally.shipment_states,
        receipts: tally.receipts,
        reachable: tally.reachable,
        unreachable: tally.recipients - tally.reachable,
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
            String::from_utf8(history_csv(&[invalid, bounced, sent("7", 2)], &audit).unwrap())
                .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HISTORY_COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "recipient,7,2,sms,+4520123456,yes,3/R#7,m-1,2026-01-01T00:00:00Z,,,sent,,sent,1,2026-01-01T00:00:01Z,,,,"
        );
        assert_eq!(
            lines[2],
            "recipient,'=cmd,3,sms,+4520123456,no,3/R#=cmd,m-1,2026-01-01T00:00:00Z,2026-01-01T00:00:05Z,bounced,bounced,Permanent/General: 550 user unknown,sent,1,2026-01-01T00:00:01Z,,,,"
        );
        assert_eq!(
            lines[3],
            "recipient,9,4,sms,+4520123456,no,3/R#9,,,,,invalid,invalid_phone: too short,invalid,1,2026-01-01T00:00:01Z,,,,"
        );
        assert_eq!(
            lines[4],
            "audit,,,,,,,,,,,,,,,2026-01-01T00:00:00Z,ann,approve,approved,"
        );
        assert_eq!(
            lines[5],
            "audit,,,,,,,,,,,,,,,2026-01-01T00:00:09Z,'=evil,resend,\"1 recipient, send attempt 2\","
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn the_summary_counts_shipment_states_and_receipts() {
        let mut delivered = sent("1", 2);
        delivered.1.receipt = Some(Receipt::Delivered);
        let d = Dispatch::arrived("d", "incoming/d/", 1);
        let mut tally = Tally::default();
        for (_, r) in [delivered, sent("2", 3)] {
            tally.add(&r);
        }
        let s = history_summary(&d, tally, vec![]);
        assert_eq!(s.shipment_states.get("delivered"), Some(&1));
        assert_eq!(s.shipment_states.get("sent"), Some(&1));
        assert_eq!(s.receipts.get("delivered"), Some(&1));
        assert_eq!((s.reachable, s.unreachable), (2, 0));
    }

    #[test]
    fn rows_in_any_order_come_out_in_list_order_across_buckets() {
        // 1,000 recipients in storage order (by id, as a shard gives them), buckets of 64
        // lines: the document is in list order all the same.
        let mut all: Vec<(RecipientKey, Recipient)> = (0..1000u64)
            .map(|i| sent(&format!("id{}", (i * 7919) % 1000), i + 2))
            .collect();
        all.sort_by(|a, b| a.0.sk.cmp(&b.0.sk));
        let mut w = HistoryWriter::with_bucket_lines(64).unwrap();
        for (k, r) in &all {
            w.add(k, r).unwrap();
        }
        assert_eq!(w.tally().recipients, 1000);
        let (file, tally) = w.finish(&[]).unwrap();
        assert_eq!(tally.shipment_states.get("sent"), Some(&1000));
        let text = std::fs::read_to_string(file.path()).unwrap();
        let lines: Vec<u64> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
            .collect();
        assert_eq!(lines, (2..1002).collect::<Vec<u64>>());
    }
}
