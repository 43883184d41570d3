//! Send slots at a rate shared by every sender instance, on one DynamoDB item per channel.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use engine::pacing::earliest_start;
use std::time::Duration;

/// A send rate shared by every sender instance: one DynamoDB item per channel holds the time
/// of the next free slot, and a sender takes a run of consecutive slots with one atomic
/// addition. Runs taken by different instances never overlap, so the senders together keep
/// to the rate however many of them run.
pub struct SharedRate {
    store: crate::dynamodb::Store,
    pk: String,
}

impl SharedRate {
    /// The shared rate called `name` (one per channel).
    pub fn new(store: crate::dynamodb::Store, name: &str) -> SharedRate {
        SharedRate {
            store,
            pk: format!("RATE#{name}"),
        }
    }

    fn update(
        &self,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.store
            .client
            .update_item()
            .table_name(&self.store.table)
            .key("pk", crate::dynamodb::s(self.pk.clone()))
            .key("sk", crate::dynamodb::s("RATE"))
    }

    /// Takes `count` consecutive slots `interval` apart and returns when the first one is, as
    /// milliseconds since the Unix epoch: at least [`LEAD`](engine::pacing::LEAD) after the moment it asked.
    ///
    /// While the schedule is ahead of that earliest start, one conditional addition places the
    /// run after every run taken before it, however many senders ask at once. When the
    /// schedule has fallen behind (nobody sent for a while), the run starts at the earliest
    /// start instead, with a write conditional on the schedule's still being behind it. Both
    /// conditions compare with the time taken before the request, so a slow answer does not
    /// make a sender find the schedule behind again; a sender loses a round only to another
    /// that moved the schedule meanwhile, and after two lost rounds it waits a moment
    /// (growing, with jitter) before the next.
    pub async fn take(&self, count: u32, interval: Duration) -> domain::Result<i64> {
        let span = (interval.as_nanos() as u64 * count as u64).div_ceil(1_000_000) as i64;
        for round in 0..16 {
            if round > 1 {
                // Lost twice in a row to other senders: let the crowd thin out.
                tokio::time::sleep(engine::retry::backoff(round - 2)).await;
            }
            let earliest = earliest_start();
            let ahead = self
                .update()
                .update_expression("ADD next_at :span")
                .condition_expression("next_at >= :earliest")
                .expression_attribute_values(":span", AttributeValue::N(span.to_string()))
                .expression_attribute_values(":earliest", AttributeValue::N(earliest.to_string()))
                .return_values(ReturnValue::UpdatedNew)
                .send()
                .await;
            match ahead {
                Ok(out) => {
                    let end = out
                        .attributes()
                        .and_then(|a| a.get("next_at"))
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .ok_or_else(|| {
                            domain::Error::Malformed(format!("{}: no next_at", self.pk))
                        })?;
                    return Ok(end - span);
                }
                Err(e) if crate::dynamodb::is_conditional_failure(&e) => {}
                Err(e) => return Err(domain::Error::aws("UpdateItem")(e)),
            }
            // Behind, or no schedule yet: start it again from the earliest start, taken anew
            // so that the answer just waited for does not put the run in the past. Every run
            // taken so far ends by `next_at`, so a run from a later moment overlaps none of them.
            let earliest = earliest_start();
            let restart = self
                .update()
                .update_expression("SET next_at = :restart")
                .condition_expression("attribute_not_exists(next_at) OR next_at < :earliest")
                .expression_attribute_values(
                    ":restart",
                    AttributeValue::N((earliest + span).to_string()),
                )
                .expression_attribute_values(":earliest", AttributeValue::N(earliest.to_string()))
                .send()
                .await;
            match restart {
                Ok(_) => return Ok(earliest),
                Err(e) if crate::dynamodb::is_conditional_failure(&e) => continue,
                Err(e) => return Err(domain::Error::aws("UpdateItem")(e)),
            }
        }
        Err(domain::Error::Conflict(format!(
            "{}: the shared rate kept changing under this sender",
            self.pk
        )))
    }
}

/// The shared rates of both channels, as the senders' send slots.
pub struct SharedRates {
    email: SharedRate,
    sms: SharedRate,
}

impl SharedRates {
    pub fn new(store: &crate::dynamodb::Store) -> SharedRates {
        SharedRates {
            email: SharedRate::new(store.clone(), "email"),
            sms: SharedRate::new(store.clone(), "sms"),
        }
    }
}

#[async_trait::async_trait]
impl engine::ports::SendSlots for SharedRates {
    async fn take(
        &self,
        channel: domain::model::Channel,
        count: u32,
        interval: Duration,
    ) -> domain::Result<i64> {
        match channel {
            domain::model::Channel::Email => self.email.take(count, interval).await,
            domain::model::Channel::Sms => self.sms.take(count, interval).await,
        }
    }
}
