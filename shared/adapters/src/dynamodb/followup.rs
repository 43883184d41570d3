//! The follow-up of a failed delivery on the recipient's next channel (the dispatch's
//! fallback order): the recipient goes back to `pending` on that channel as a new send
//! attempt, once, in one transaction with its dispatch, which counts it sent no more and, if
//! it had completed, is sending again.

use super::{s, shard_pk, Store};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use domain::error::{Error, Result};
use domain::keys::RecipientKey;
use domain::model::{now_rfc3339, DispatchState, Reach, Recipient, RecipientState};

/// What became of a follow-up.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowedUp {
    /// The recipient is pending on its next channel, for this send attempt.
    Started {
        recipient: Box<Recipient>,
        attempt: u32,
    },
    /// Nothing was written (why).
    Not(String),
}

fn build<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::Malformed(format!("transaction item: {e}")))
}

impl Store {
    /// One recipient, read strongly.
    pub async fn recipient_at(
        &self,
        dispatch_id: &str,
        key: &RecipientKey,
    ) -> Result<Option<Recipient>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(shard_pk(dispatch_id, key.shard)))
            .key("sk", s(key.sk.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::aws("GetItem recipient"))?;
        match out.item {
            Some(item) => Ok(Some(super::recipients::recipient_from(&item)?.1)),
            None => Ok(None),
        }
    }

    /// Gives a sent recipient (`current`, as just read) back to the senders on `next` as its
    /// next send attempt, with `why` the failed attempt's failure. The transaction's
    /// conditions catch a recipient that changed since it was read. Conditional on the
    /// recipient still `sent` and never followed up, and on the dispatch's state as read.
    pub async fn follow_up(
        &self,
        dispatch_id: &str,
        key: &RecipientKey,
        current: &Recipient,
        next: &Reach,
        why: &str,
    ) -> Result<FollowedUp> {
        let Some(d) = self.get_dispatch(dispatch_id).await? else {
            return Ok(FollowedUp::Not("the dispatch is gone".into()));
        };
        let reopen = matches!(
            d.state,
            DispatchState::Completed | DispatchState::CompletedWithErrors
        );
        let open = matches!(
            d.state,
            DispatchState::Sending | DispatchState::Paused | DispatchState::WaitingForContinuation
        );
        if !reopen && !open {
            return Ok(FollowedUp::Not(format!(
                "the dispatch is {}, and sends nothing more",
                d.state.as_str()
            )));
        }
        let rest: Vec<Reach> = current.fallbacks.iter().skip(1).cloned().collect();
        // The recipient's own next attempt; the dispatch's attempt (an operator's resend)
        // is left as it is.
        let attempt = current.send_attempt + 1;
        let now = now_rfc3339();
        let mut dispatch = self
            .dispatch_update(dispatch_id)
            .condition_expression("#state = :was")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#sent", "sent")
            .expression_attribute_values(":was", s(d.state.as_str()))
            .expression_attribute_values(":minus", AttributeValue::N("-1".into()))
            .expression_attribute_values(":now", s(now.clone()));
        dispatch = if reopen {
            dispatch
                .update_expression(
                    "SET #state = :sending, gsi2pk = :sending, gsi2sk = :gsi2sk, updated_at = :now REMOVE completed_at ADD #sent :minus",
                )
                .expression_attribute_values(":sending", s(DispatchState::Sending.as_str()))
                .expression_attribute_values(":gsi2sk", s(format!("{now}#{dispatch_id}")))
        } else {
            dispatch.update_expression("SET updated_at = :now ADD #sent :minus")
        };
        let recipient = self
            .recipient_update(dispatch_id, key)
            .update_expression(
                "SET #state = :pending, channel = :channel, address = :address, fallbacks = :rest, send_attempt = :attempt, previous_reason = :why, followed_up_at = :now, updated_at = :now REMOVE message_id, sent_at, receipt, receipt_rank, receipt_at, receipt_detail, reason, claim, claimed_at, stuck_at",
            )
            .condition_expression("#state = :sent AND attribute_not_exists(followed_up_at)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(RecipientState::Pending.as_str()))
            .expression_attribute_values(":sent", s(RecipientState::Sent.as_str()))
            .expression_attribute_values(":channel", s(next.channel.as_str()))
            .expression_attribute_values(":address", s(next.address.clone()))
            .expression_attribute_values(":rest", super::recipients::reaches(&rest))
            .expression_attribute_values(":attempt", super::n(u64::from(attempt)))
            .expression_attribute_values(":why", s(why.to_string()))
            .expression_attribute_values(":now", s(now.clone()));
        let mut items = vec![
            TransactWriteItem::builder()
                .update(build(dispatch.build())?)
                .build(),
            TransactWriteItem::builder()
                .update(build(recipient.build())?)
                .build(),
        ];
        // The failed message's id leaves the recipient (the next send brings its own): a
        // pointer keeps later events about it (a repeated bounce) recognised, not unmatched.
        if let Some(old) = &current.message_id {
            let pointer = Put::builder()
                .table_name(&self.table)
                .item("pk", s(followed_up_pk(old)))
                .item("sk", s(FOLLOWED_UP_SK))
                .item("dispatch_id", s(dispatch_id))
                .item("recipient_sk", s(key.sk.clone()))
                .item("at", s(now.clone()));
            items.push(
                TransactWriteItem::builder()
                    .put(build(pointer.build())?)
                    .build(),
            );
        }
        for attempt_no in 1..=8usize {
            match self.transact_items(items.clone()).await? {
                None => {
                    let r = self
                        .recipient_at(dispatch_id, key)
                        .await?
                        .ok_or_else(|| Error::NotFound(format!("recipient {}", key.sk)))?;
                    return Ok(FollowedUp::Started {
                        recipient: Box::new(r),
                        attempt,
                    });
                }
                Some(codes) => {
                    let failed = |i: usize| {
                        codes.get(i).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed")
                    };
                    if failed(1) {
                        return Ok(FollowedUp::Not(
                            "the recipient is no longer sent, or was followed up already".into(),
                        ));
                    }
                    if failed(0) {
                        return Ok(FollowedUp::Not("the dispatch moved meanwhile".into()));
                    }
                    tokio::time::sleep(engine::retry::backoff(attempt_no)).await;
                }
            }
        }
        Err(Error::Conflict(
            "the follow-up kept colliding with other writes".into(),
        ))
    }
}

const FOLLOWED_UP_SK: &str = "FOLLOWED_UP";

fn followed_up_pk(message_id: &str) -> String {
    format!("MSG#{message_id}")
}

impl Store {
    /// The dispatch of a provider message whose recipient was followed up on another
    /// channel, if it is one.
    pub async fn followed_up_message(&self, message_id: &str) -> Result<Option<String>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(followed_up_pk(message_id)))
            .key("sk", s(FOLLOWED_UP_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::aws("GetItem followed-up message"))?;
        Ok(out.item.and_then(|i| super::get_s(&i, "dispatch_id")))
    }
}

/// The words of the first attempt's failure kept on the recipient.
pub fn failure_words(r: &Recipient, receipt: &str, detail: Option<&str>) -> String {
    format!(
        "{} to {}: {receipt}{}",
        r.channel.map(|c| c.as_str()).unwrap_or("message"),
        r.address.as_deref().unwrap_or(""),
        detail.map(|d| format!(" ({d})")).unwrap_or_default()
    )
}
