//! The audit trail of a dispatch: who did what to it, when, and with what outcome. Entries
//! live beside the dispatch (pk `D#<id>`, sk `AUDIT#<time>#<unique>`) and go into the
//! history summary. Refusals of requests that name no dispatch there is go into the API's
//! own trail (pk `API#AUDIT`). Every text of an entry is cut to a bound, so that an entry is
//! written however much a caller sent.

use crate::dynamodb::{dispatch_pk, get_s, s, Store};
use domain::audit::AuditEntry;
use domain::error::{Error, Result};
use domain::limits::{input, truncated};
use domain::model::now_rfc3339;

const AUDIT_PREFIX: &str = "AUDIT#";

/// The partition of the API's own trail: refusals that name no dispatch there is.
pub const API_TRAIL_PK: &str = "API#AUDIT";

/// Who and what an entry names, in characters.
const NAME_CHARS: usize = 200;

impl Store {
    /// Adds an entry to a dispatch's audit trail.
    pub async fn audit(
        &self,
        dispatch_id: &str,
        actor: &str,
        action: &str,
        outcome: &str,
    ) -> Result<()> {
        self.audit_in(&dispatch_pk(dispatch_id), actor, action, outcome)
            .await
    }

    /// Adds an entry to the API's own trail, logging instead of failing.
    pub async fn audit_api_or_log(&self, actor: &str, action: &str, outcome: &str) {
        if let Err(e) = self.audit_in(API_TRAIL_PK, actor, action, outcome).await {
            tracing::error!(actor = %truncated(actor, NAME_CHARS), action = %truncated(action, NAME_CHARS), error = %e,
                "audit entry not written");
        }
    }

    async fn audit_in(&self, pk: &str, actor: &str, action: &str, outcome: &str) -> Result<()> {
        let at = now_rfc3339();
        // Fixed-width nanoseconds keep the trail in time order (RFC 3339 texts of varying
        // precision do not sort as times).
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item(
                "sk",
                s(format!(
                    "{AUDIT_PREFIX}{nanos:020}#{}",
                    uuid::Uuid::new_v4().simple()
                )),
            )
            .item("at", s(at))
            .item("actor", s(truncated(actor, NAME_CHARS)))
            .item("action", s(truncated(action, NAME_CHARS)))
            .item("outcome", s(truncated(outcome, input::AUDIT_OUTCOME_CHARS)))
            .send()
            .await
            .map_err(Error::aws("PutItem audit"))?;
        Ok(())
    }

    /// Adds an entry, logging instead of failing: the action it records already happened.
    pub async fn audit_or_log(&self, dispatch_id: &str, actor: &str, action: &str, outcome: &str) {
        if let Err(e) = self.audit(dispatch_id, actor, action, outcome).await {
            tracing::error!(dispatch = %dispatch_id, actor = %truncated(actor, NAME_CHARS),
                action = %truncated(action, NAME_CHARS),
                outcome = %truncated(outcome, input::AUDIT_OUTCOME_CHARS), error = %e,
                "audit entry not written");
        }
    }

    /// A dispatch's audit trail, oldest first.
    pub async fn audit_log(&self, dispatch_id: &str) -> Result<Vec<AuditEntry>> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p AND begins_with(sk, :a)")
                .expression_attribute_values(":p", s(dispatch_pk(dispatch_id)))
                .expression_attribute_values(":a", s(AUDIT_PREFIX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(Error::aws("Query audit"))?;
            entries.extend(out.items().iter().map(|i| AuditEntry {
                at: get_s(i, "at").unwrap_or_default(),
                actor: get_s(i, "actor").unwrap_or_default(),
                action: get_s(i, "action").unwrap_or_default(),
                outcome: get_s(i, "outcome").unwrap_or_default(),
            }));
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(entries);
            }
        }
    }
}

#[async_trait::async_trait]
impl engine::ports::AuditTrail for Store {
    async fn append(&self, dispatch_id: &str, actor: &str, action: &str, outcome: &str) {
        self.audit_or_log(dispatch_id, actor, action, outcome).await
    }

    async fn trail(&self, dispatch_id: &str) -> Result<Vec<AuditEntry>> {
        self.audit_log(dispatch_id).await
    }
}
