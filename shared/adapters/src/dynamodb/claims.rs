//! Batched claims and results: the writes that make a recipient sent to at most once, at a
//! cost of two DynamoDB calls per queue message rather than two per recipient.
//!
//! - A sender claims all recipients of a message in one transaction: each recipient goes from
//!   `pending` to `sending` under a claim token. Recipients another sender holds or that are
//!   already final drop out, and the rest are claimed again. The claim does not look at the
//!   dispatch: a condition check on its item would make every claim of every sender touch
//!   that one item, and DynamoDB cancels transactions that touch an item together. The sender
//!   reads the dispatch's state before it sends what it claimed, and between sends.
//! - The results go back in one transaction: each recipient moves from `sending` under our
//!   token to its final state (or back to `pending`), together with one of the dispatch's
//!   counter slots ([`super::counters`]), chosen at random for each attempt. The counters
//!   therefore move exactly when the records do.
//!
//! A transaction the service applied but whose answer was lost is recognised on the next
//! attempt: the recipients it names already carry our token in the state it asked for.

use crate::dynamodb::counters::any_slot;
use crate::dynamodb::{dispatch_pk, get_s, s, shard_pk, Item, Store, DISPATCH_SK};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use domain::error::{Error, Result};
use domain::keys::RecipientKey;
use domain::limits::within_one_write;
use domain::model::{now_rfc3339, RecipientState};
use engine::ports::{new_token, Claimed, Outcome, RecipientLedger, Recorded};
use engine::retry::backoff;
use std::collections::HashMap;

/// Attempts at one transaction when items drop out or transactions collide.
const ATTEMPTS: usize = 8;

enum Attempt {
    Done,
    /// Per item: the reason code and the item as it was, when it failed.
    Cancelled(Vec<(Option<String>, Option<Item>)>),
}

fn build<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::Malformed(format!("transaction item: {e}")))
}

impl Store {
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Attempt> {
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            // The SDK's own retries of this request repeat the token, so the service applies
            // it once.
            .client_request_token(new_token())
            .send()
            .await;
        match res {
            Ok(_) => Ok(Attempt::Done),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c))
                    if !c.cancellation_reasons().is_empty() =>
                {
                    Ok(Attempt::Cancelled(
                        c.cancellation_reasons()
                            .iter()
                            .map(|r| {
                                (
                                    r.code().filter(|c| *c != "None").map(str::to_string),
                                    r.item().cloned(),
                                )
                            })
                            .collect(),
                    ))
                }
                _ => Err(Error::aws("TransactWriteItems")(e)),
            },
        }
    }

    /// One transaction: `None` when it was applied, else each item's cancellation code
    /// (`None` for an item that did not fail).
    pub(crate) async fn transact_items(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<Vec<Option<String>>>> {
        Ok(match self.transact(items).await? {
            Attempt::Done => None,
            Attempt::Cancelled(reasons) => Some(reasons.into_iter().map(|(c, _)| c).collect()),
        })
    }

    /// A transaction's update of a dispatch.
    pub(crate) fn dispatch_update(
        &self,
        dispatch_id: &str,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .key("pk", s(dispatch_pk(dispatch_id)))
            .key("sk", s(DISPATCH_SK))
    }

    /// A transaction's update of a recipient.
    pub(crate) fn recipient_update(
        &self,
        dispatch_id: &str,
        key: &RecipientKey,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .key("pk", s(shard_pk(dispatch_id, key.shard)))
            .key("sk", s(key.sk.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }

    /// Claims recipients of a dispatch under `token` (at most
    /// [`MAX_RECIPIENTS_PER_WRITE`]). Recipients that are not pending are left out.
    pub async fn claim_many(
        &self,
        dispatch_id: &str,
        keys: &[RecipientKey],
        token: &str,
    ) -> Result<Claimed> {
        within_one_write(keys.len(), "recipients in one claim")?;
        let mut open: Vec<usize> = (0..keys.len()).collect();
        let mut held = Vec::new();
        for attempt in 0..ATTEMPTS {
            if open.is_empty() {
                break;
            }
            let now = now_rfc3339();
            let mut items = Vec::with_capacity(open.len());
            for &i in &open {
                items.push(
                    TransactWriteItem::builder()
                        .update(build(
                            self.recipient_update(dispatch_id, &keys[i])
                                .update_expression(
                                    "SET #state = :sending, claim = :token, claimed_at = :now, updated_at = :now",
                                )
                                .condition_expression("#state = :pending")
                                .expression_attribute_names("#state", "state")
                                .expression_attribute_values(
                                    ":sending",
                                    s(RecipientState::Sending.as_str()),
                                )
                                .expression_attribute_values(
                                    ":pending",
                                    s(RecipientState::Pending.as_str()),
                                )
                                .expression_attribute_values(":token", s(token))
                                .expression_attribute_values(":now", s(now.clone()))
                                .build(),
                        )?)
                        .build(),
                );
            }
            match self.transact(items).await? {
                Attempt::Done => {
                    held.append(&mut open);
                    break;
                }
                Attempt::Cancelled(reasons) => {
                    let ours = |item: &Option<Item>| {
                        item.as_ref().is_some_and(|it| {
                            get_s(it, "claim").as_deref() == Some(token)
                                && get_s(it, "state").as_deref()
                                    == Some(RecipientState::Sending.as_str())
                        })
                    };
                    let mut still_open = Vec::new();
                    let mut conflict = false;
                    for (pos, &i) in open.iter().enumerate() {
                        match reasons.get(pos) {
                            Some((Some(code), item)) if code == "ConditionalCheckFailed" => {
                                if ours(item) {
                                    // An earlier attempt of this claim was applied.
                                    held.push(i);
                                }
                            }
                            Some((Some(_), _)) => {
                                conflict = true;
                                still_open.push(i);
                            }
                            _ => still_open.push(i),
                        }
                    }
                    if conflict {
                        super::counters::note_conflict_retried();
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    open = still_open;
                }
            }
        }
        if !open.is_empty() {
            return Err(Error::Conflict(format!(
                "claiming {} recipients of {dispatch_id} kept colliding",
                open.len()
            )));
        }
        held.sort_unstable();
        Ok(Claimed { held })
    }

    /// Writes the results of recipients claimed under `token` (at most
    /// [`MAX_RECIPIENTS_PER_WRITE`]) and one of the dispatch's counter slots, in one
    /// transaction.
    pub async fn record_many(
        &self,
        dispatch_id: &str,
        token: &str,
        results: &[(RecipientKey, Outcome)],
    ) -> Result<Recorded> {
        within_one_write(results.len(), "results in one write")?;
        let mut open: Vec<usize> = (0..results.len()).collect();
        let mut lost = 0u64;
        for attempt in 0..ATTEMPTS {
            let mut counts = Recorded::default();
            for &i in &open {
                match results[i].1 {
                    Outcome::Sent { .. } => counts.sent += 1,
                    Outcome::Created { .. } => counts.created += 1,
                    Outcome::Failed { .. } => counts.failed += 1,
                    Outcome::Unknown { .. } => counts.unknown += 1,
                    Outcome::Release => counts.released += 1,
                }
            }
            if open.is_empty() {
                counts.lost = lost;
                return Ok(counts);
            }
            let now = now_rfc3339();
            let mut items = Vec::with_capacity(open.len() + 1);
            for &i in &open {
                let (key, outcome) = &results[i];
                let mut set = String::from("SET #state = :to, updated_at = :now");
                let mut values: HashMap<String, AttributeValue> = HashMap::from([
                    (":to".into(), s(outcome.state().as_str())),
                    (":sending".into(), s(RecipientState::Sending.as_str())),
                    (":token".into(), s(token)),
                    (":now".into(), s(now.clone())),
                ]);
                let mut remove = "";
                match outcome {
                    Outcome::Sent { message_id, at }
                    | Outcome::Created {
                        document: message_id,
                        at,
                    } => {
                        set.push_str(", message_id = :mid, sent_at = :at");
                        values.insert(":mid".into(), s(message_id.clone()));
                        values.insert(":at".into(), s(at.clone()));
                    }
                    Outcome::Failed { reason } | Outcome::Unknown { reason } => {
                        set.push_str(", reason = :reason");
                        values.insert(":reason".into(), s(reason.clone()));
                    }
                    Outcome::Release => remove = " REMOVE claimed_at",
                }
                items.push(
                    TransactWriteItem::builder()
                        .update(build(
                            self.recipient_update(dispatch_id, key)
                                .update_expression(format!("{set}{remove}"))
                                .condition_expression("#state = :sending AND claim = :token")
                                .expression_attribute_names("#state", "state")
                                .set_expression_attribute_values(Some(values))
                                .build(),
                        )?)
                        .build(),
                );
            }
            if counts.sent + counts.created + counts.failed + counts.unknown > 0 {
                items.push(
                    TransactWriteItem::builder()
                        .update(build(
                            self.counter_update(
                                dispatch_id,
                                any_slot(),
                                [
                                    counts.sent,
                                    counts.failed,
                                    counts.unknown,
                                    0,
                                    counts.created,
                                ],
                                &now,
                            )
                            .build(),
                        )?)
                        .build(),
                );
            }
            match self.transact(items).await? {
                Attempt::Done => {
                    counts.lost = lost;
                    return Ok(counts);
                }
                Attempt::Cancelled(reasons) => {
                    let mut still_open = Vec::new();
                    let mut applied_before = false;
                    let mut conflict = false;
                    for (pos, &i) in open.iter().enumerate() {
                        match reasons.get(pos) {
                            Some((Some(code), item)) if code == "ConditionalCheckFailed" => {
                                let target = results[i].1.state();
                                let was_ours = item.as_ref().is_some_and(|it| {
                                    get_s(it, "claim").as_deref() == Some(token)
                                        && get_s(it, "state").as_deref() == Some(target.as_str())
                                });
                                if was_ours {
                                    applied_before = true;
                                } else {
                                    tracing::error!(dispatch = %dispatch_id, recipient = %results[i].0.sk, "claim no longer held; result not written");
                                    lost += 1;
                                }
                            }
                            Some((Some(_), _)) => {
                                conflict = true;
                                still_open.push(i);
                            }
                            _ => still_open.push(i),
                        }
                    }
                    if applied_before {
                        // A transaction is all or nothing: an earlier attempt wrote every
                        // result and the counters.
                        counts.lost = lost;
                        return Ok(counts);
                    }
                    if conflict || reasons.last().is_some_and(|(c, _)| c.is_some()) {
                        super::counters::note_conflict_retried();
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    open = still_open;
                }
            }
        }
        Err(Error::Conflict(format!(
            "writing {} results of {dispatch_id} kept colliding",
            open.len()
        )))
    }
}

#[async_trait::async_trait]
impl RecipientLedger for Store {
    async fn claim(
        &self,
        dispatch_id: &str,
        keys: &[RecipientKey],
        token: &str,
    ) -> Result<Claimed> {
        self.claim_many(dispatch_id, keys, token).await
    }

    async fn record(
        &self,
        dispatch_id: &str,
        token: &str,
        results: &[(RecipientKey, Outcome)],
    ) -> Result<Recorded> {
        self.record_many(dispatch_id, token, results).await
    }

    async fn mark_stuck(&self, dispatch_id: &str, keys: &[RecipientKey]) -> Result<u64> {
        Store::mark_stuck(self, dispatch_id, keys).await
    }
}
