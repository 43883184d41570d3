//! An operator's amendments to the recipients of a dispatch:
//!
//! - **Resend**: recipients the provider refused (`failed`) or never answered for
//!   (`unknown`) go back to `pending` as a new send attempt of a dispatch that completed with
//!   errors, which sends again.
//! - **Remove**: a pending recipient of a dispatch awaiting approval becomes `excluded`, so
//!   the approval is of the list without it.
//!
//! Each write is a transaction of up to [`MAX_RECIPIENTS_PER_WRITE`] recipients together
//! with the dispatch: its state condition and its counters move with the records, or nothing
//! moves. A recipient that changed meanwhile drops out of its transaction and is reported as
//! skipped; when the dispatch is no longer in the state the amendment needs, the rest is not
//! written and the caller hears so.

use crate::dynamodb::{s, shard_pk, Store};
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use domain::error::{Error, Result};
use domain::keys::RecipientKey;
use domain::limits::MAX_RECIPIENTS_PER_WRITE;
use domain::model::{now_rfc3339, Dispatch, DispatchState, Recipient, RecipientState};
use std::collections::HashMap;

/// What an amendment did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Amended {
    /// Recipient ids written, in the order asked.
    pub done: Vec<String>,
    /// Recipient ids that were no longer in the state the amendment needs.
    pub skipped: Vec<String>,
    /// The dispatch left the state the amendment needs before everything was written; the
    /// recipients not in `done` or `skipped` were not written.
    pub dispatch_moved: bool,
}

fn signed(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn build<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::Malformed(format!("transaction item: {e}")))
}

impl Store {
    /// Recipients by their ids (the list's id column), in the order asked. Only a row with
    /// a usable, unique id can be pending, failed or unknown, and such a row is stored under
    /// its id.
    pub async fn recipients_by_id(
        &self,
        d: &Dispatch,
        ids: &[String],
    ) -> Result<Vec<Option<(RecipientKey, Recipient)>>> {
        let keys: Vec<RecipientKey> = ids
            .iter()
            .map(|id| RecipientKey {
                shard: domain::keys::shard_of(id, d.shards),
                sk: format!("R#{id}"),
            })
            .collect();
        let items = self
            .batch_get(
                keys.iter()
                    .map(|k| {
                        HashMap::from([
                            ("pk".to_string(), s(shard_pk(&d.id, k.shard))),
                            ("sk".to_string(), s(k.sk.clone())),
                        ])
                    })
                    .collect(),
                true,
            )
            .await?;
        let mut found: HashMap<RecipientKey, Recipient> = items
            .iter()
            .map(crate::dynamodb::recipients::recipient_from)
            .collect::<Result<_>>()?;
        Ok(keys.into_iter().map(|k| found.remove_entry(&k)).collect())
    }

    /// Every recipient of a dispatch in one of `states`.
    pub async fn recipients_in(
        &self,
        d: &Dispatch,
        states: &[RecipientState],
    ) -> Result<Vec<(RecipientKey, Recipient)>> {
        let mut out = Vec::new();
        for &state in states {
            for shard in 0..d.shards {
                out.extend(self.shard_recipients(&d.id, shard, Some(state)).await?);
            }
        }
        out.sort_by_key(|(_, r)| r.line);
        Ok(out)
    }

    /// Gives failed and unknown recipients of a dispatch that completed with errors back to
    /// the senders as send attempt `d.send_attempt + 1`: the dispatch becomes `sending`
    /// with the first of them, and its counters lose what the recipients had counted for.
    pub async fn resend(
        &self,
        d: &Dispatch,
        chosen: &[(RecipientKey, Recipient)],
        by: &str,
    ) -> Result<Amended> {
        self.resend_as(d, chosen, by, None).await
    }

    /// [`Store::resend`], or with `continuing` `Some(attempt)` more recipients of the send
    /// attempt an earlier call began (the dispatch still sending it): a job that resends a
    /// page at a time.
    pub async fn resend_as(
        &self,
        d: &Dispatch,
        chosen: &[(RecipientKey, Recipient)],
        by: &str,
        continuing: Option<u32>,
    ) -> Result<Amended> {
        let attempt = continuing.unwrap_or(d.send_attempt + 1);
        let now = now_rfc3339();
        let dispatch = |first: bool, rs: &[&(RecipientKey, Recipient)]| {
            let first = first && continuing.is_none();
            let failed = rs
                .iter()
                .filter(|(_, r)| r.state == RecipientState::Failed)
                .count() as i64;
            let unknown = rs.len() as i64 - failed;
            let mut values = HashMap::from([
                (":f".to_string(), signed(-failed)),
                (":u".to_string(), signed(-unknown)),
                (":now".to_string(), s(now.clone())),
                (":sending".to_string(), s(DispatchState::Sending.as_str())),
                (
                    ":attempt".to_string(),
                    crate::dynamodb::n(u64::from(attempt)),
                ),
            ]);
            let (set, condition) = if first {
                values.insert(
                    ":from".into(),
                    s(DispatchState::CompletedWithErrors.as_str()),
                );
                values.insert(":gsi2sk".into(), s(format!("{now}#{}", d.id)));
                values.insert(":by".into(), s(by));
                (
                    "SET #state = :sending, gsi2pk = :sending, gsi2sk = :gsi2sk, send_attempt = :attempt, resent_by = :by, resent_at = :now, updated_at = :now REMOVE completed_at",
                    "#state = :from",
                )
            } else {
                (
                    "SET updated_at = :now",
                    "#state = :sending AND send_attempt = :attempt",
                )
            };
            self.dispatch_update(&d.id)
                .update_expression(format!("{set} ADD #failed :f, #unknown :u"))
                .condition_expression(condition)
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#failed", "failed")
                .expression_attribute_names("#unknown", "unknown")
                .set_expression_attribute_values(Some(values))
                .build()
        };
        let recipient = |(key, r): &(RecipientKey, Recipient)| {
            self.recipient_update(&d.id, key)
                .update_expression(
                    "SET #state = :pending, send_attempt = :attempt, previous_reason = if_not_exists(reason, :none), updated_at = :now REMOVE reason, claim, claimed_at, stuck_at",
                )
                .condition_expression("#state = :was")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":pending", s(RecipientState::Pending.as_str()))
                .expression_attribute_values(":was", s(r.state.as_str()))
                .expression_attribute_values(":attempt", crate::dynamodb::n(u64::from(attempt)))
                .expression_attribute_values(":none", s("no reason recorded"))
                .expression_attribute_values(":now", s(now.clone()))
                .build()
        };
        self.amend(chosen, &dispatch, &recipient).await
    }

    /// Removes pending recipients of a dispatch awaiting approval: each becomes `excluded`
    /// with who removed it as the reason, and the dispatch counts one valid recipient less
    /// and one excluded more.
    pub async fn remove_pending(
        &self,
        d: &Dispatch,
        chosen: &[(RecipientKey, Recipient)],
        by: &str,
    ) -> Result<Amended> {
        let now = now_rfc3339();
        let dispatch = |_first: bool, rs: &[&(RecipientKey, Recipient)]| {
            let k = rs.len() as i64;
            self.dispatch_update(&d.id)
                .update_expression("SET updated_at = :now ADD #valid :minus, #excluded :plus")
                .condition_expression("#state = :awaiting")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#valid", "valid")
                .expression_attribute_names("#excluded", "excluded")
                .expression_attribute_values(":now", s(now.clone()))
                .expression_attribute_values(":minus", signed(-k))
                .expression_attribute_values(":plus", signed(k))
                .expression_attribute_values(
                    ":awaiting",
                    s(DispatchState::AwaitingApproval.as_str()),
                )
                .build()
        };
        let reason = format!("removed from the list by {by} before approval");
        let recipient = |(key, _): &(RecipientKey, Recipient)| {
            self.recipient_update(&d.id, key)
                .update_expression("SET #state = :excluded, reason = :reason, updated_at = :now")
                .condition_expression("#state = :pending")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":excluded", s(RecipientState::Excluded.as_str()))
                .expression_attribute_values(":pending", s(RecipientState::Pending.as_str()))
                .expression_attribute_values(":reason", s(reason.clone()))
                .expression_attribute_values(":now", s(now.clone()))
                .build()
        };
        self.amend(chosen, &dispatch, &recipient).await
    }

    /// Writes recipients a chunk at a time, each chunk in one transaction with the
    /// dispatch's update (`first`: nothing has been written yet).
    async fn amend<D, R, E1, E2>(
        &self,
        chosen: &[(RecipientKey, Recipient)],
        dispatch: &D,
        recipient: &R,
    ) -> Result<Amended>
    where
        D: Fn(bool, &[&(RecipientKey, Recipient)]) -> std::result::Result<Update, E1>,
        R: Fn(&(RecipientKey, Recipient)) -> std::result::Result<Update, E2>,
        E1: std::fmt::Display,
        E2: std::fmt::Display,
    {
        let mut out = Amended::default();
        for chunk in chosen.chunks(MAX_RECIPIENTS_PER_WRITE) {
            let mut open: Vec<&(RecipientKey, Recipient)> = chunk.iter().collect();
            let mut attempts = 0;
            while !open.is_empty() {
                attempts += 1;
                let first = out.done.is_empty();
                let mut items = vec![TransactWriteItem::builder()
                    .update(build(dispatch(first, &open))?)
                    .build()];
                for r in &open {
                    items.push(
                        TransactWriteItem::builder()
                            .update(build(recipient(r))?)
                            .build(),
                    );
                }
                match self.transact_items(items).await? {
                    None => {
                        out.done
                            .extend(open.iter().map(|(_, r)| r.recipient_id.clone()));
                        break;
                    }
                    Some(codes) => {
                        if codes
                            .first()
                            .is_some_and(|c| c.as_deref() == Some("ConditionalCheckFailed"))
                        {
                            out.dispatch_moved = true;
                            return Ok(out);
                        }
                        let mut still = Vec::new();
                        for (i, r) in open.into_iter().enumerate() {
                            match codes.get(i + 1).and_then(|c| c.as_deref()) {
                                Some("ConditionalCheckFailed") => {
                                    out.skipped.push(r.1.recipient_id.clone())
                                }
                                _ => still.push(r),
                            }
                        }
                        open = still;
                        if !open.is_empty() {
                            tokio::time::sleep(engine::retry::backoff(attempts)).await;
                        }
                        if attempts >= 8 {
                            return Err(Error::Conflict(format!(
                                "amending {} recipients kept colliding with other writes; try again",
                                open.len()
                            )));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
