//! Jobs: an operator's action too large for one API request (resending to every failed
//! recipient of a large dispatch), done by a worker a page at a time. The API answers `202`
//! with the job, which the portal reads again until it has finished.

use crate::model::RecipientState;
use serde::{Deserialize, Serialize};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted; the worker has not begun.
    Queued,
    /// The worker is at it: `done` says how far it came.
    Running,
    Succeeded,
    /// Ended without doing what was asked; `outcome` says why.
    Failed,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum JobKind {
    /// Every recipient in one of `states` goes back to the senders as a new send attempt.
    Resend { states: Vec<RecipientState> },
    /// The history documents written again (after a close, so that they hold it).
    History,
    /// The validated list with each recipient's status, as a file in the reports bucket.
    Download { format: ListFormat },
    /// The print files of the dispatch's letters built (again), as generation `generation`.
    Print { generation: u32 },
}

/// The formats a list is downloaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListFormat {
    Csv,
    Xlsx,
}

impl JobKind {
    /// The audit trail's name of the action.
    pub fn action(&self) -> &'static str {
        match self {
            JobKind::Resend { .. } => "resend",
            JobKind::History => "history",
            JobKind::Download { .. } => "download",
            JobKind::Print { .. } => "print",
        }
    }
}

/// One job and how far it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub dispatch_id: String,
    #[serde(flatten)]
    pub kind: JobKind,
    pub state: JobState,
    /// Who asked for it: the audit trail's actor for what the job does.
    pub requested_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// Recipients the job has done (resent).
    pub done: u64,
    /// Recipients that changed meanwhile and were left as they were.
    pub skipped: u64,
    /// Records looked at so far.
    pub looked_at: u64,
    /// The send attempt the resent recipients belong to, once the first was resent.
    pub send_attempt: Option<u32>,
    /// What came of it, in words, once finished.
    pub outcome: Option<String>,
    /// The document it wrote, in the reports bucket, and the file name a link gives it.
    #[serde(default)]
    pub result_key: Option<String>,
    #[serde(default)]
    pub result_name: Option<String>,
}

impl Job {
    /// A job just accepted, with a fresh id.
    pub fn new(dispatch_id: &str, kind: JobKind, requested_by: &str, id: String) -> Job {
        let now = crate::model::now_rfc3339();
        Job {
            id,
            dispatch_id: dispatch_id.to_string(),
            kind,
            state: JobState::Queued,
            requested_by: requested_by.to_string(),
            created_at: now.clone(),
            updated_at: now,
            finished_at: None,
            done: 0,
            skipped: 0,
            looked_at: 0,
            send_attempt: None,
            outcome: None,
            result_key: None,
            result_name: None,
        }
    }

    /// Ends the job in `state` with what came of it.
    pub fn finish(&mut self, state: JobState, outcome: String) {
        let now = crate::model::now_rfc3339();
        self.state = state;
        self.outcome = Some(outcome);
        self.finished_at = Some(now.clone());
        self.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_reads_back_as_written_with_its_kind_beside_its_fields() {
        let mut j = Job::new(
            "d1",
            JobKind::Resend {
                states: vec![RecipientState::Failed, RecipientState::Unknown],
            },
            "approver",
            "j1".into(),
        );
        assert_eq!(j.state, JobState::Queued);
        assert!(!j.state.is_finished());
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["kind"], "resend");
        assert_eq!(v["states"], serde_json::json!(["failed", "unknown"]));
        assert_eq!(v["state"], "queued");
        j.finish(JobState::Succeeded, "2 sent again".into());
        let back: Job = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
        assert!(back.state.is_finished() && back.finished_at.is_some());
        assert_eq!(j.kind.action(), "resend");
    }
}
