//! Send slots at a rate shared by every sender instance, on one DynamoDB item per channel.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use engine::pacing::{earliest_start_with, lead_for};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A send rate shared by every sender instance: one DynamoDB item per channel holds the time
/// of the next free slot, and a sender takes a run of consecutive slots with one atomic
/// addition. Runs taken by different instances never overlap, so the senders together keep
/// to the rate however many of them run.
pub struct SharedRate {
    store: crate::dynamodb::Store,
    pk: String,
    /// How long the store's answers to this rate's writes took lately (microseconds, a
    /// moving average): the lead a run is asked with follows it.
    answer_us: AtomicU64,
    /// Whether the last run taken here found the schedule behind.
    behind: AtomicBool,
}

impl SharedRate {
    /// The shared rate called `name` (one per channel).
    pub fn new(store: crate::dynamodb::Store, name: &str) -> SharedRate {
        SharedRate {
            store,
            pk: format!("RATE#{name}"),
            answer_us: AtomicU64::new(0),
            behind: AtomicBool::new(false),
        }
    }

    /// The lead for the next run, from the store's recent answers.
    fn lead(&self) -> Duration {
        lead_for(Duration::from_micros(
            self.answer_us.load(Ordering::Relaxed),
        ))
    }

    /// Notes how long an answer took: a quarter of the new one, three quarters of the past.
    fn answered(&self, asked: Instant) {
        let took = asked.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let before = self.answer_us.load(Ordering::Relaxed);
        let next = if before == 0 {
            took
        } else {
            (before * 3 + took) / 4
        };
        self.answer_us.store(next, Ordering::Relaxed);
    }

    /// Adds the run after every run taken so far, if the schedule is not behind `earliest`:
    /// the run's start, or `None` when it is behind.
    async fn add(&self, span: i64, earliest: i64) -> domain::Result<Option<i64>> {
        let asked = Instant::now();
        let ahead = self
            .update()
            .update_expression("ADD next_at :span")
            .condition_expression("next_at >= :earliest")
            .expression_attribute_values(":span", AttributeValue::N(span.to_string()))
            .expression_attribute_values(":earliest", AttributeValue::N(earliest.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        self.answered(asked);
        match ahead {
            Ok(out) => {
                let end = out
                    .attributes()
                    .and_then(|a| a.get("next_at"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| domain::Error::Malformed(format!("{}: no next_at", self.pk)))?;
                Ok(Some(end - span))
            }
            Err(e) if crate::dynamodb::is_conditional_failure(&e) => Ok(None),
            Err(e) => Err(domain::Error::aws("UpdateItem")(e)),
        }
    }

    /// Starts the schedule again at `earliest` with this run, if it is behind that: every run
    /// taken so far ends by `next_at`, so a run from a later moment overlaps none of them.
    async fn restart(&self, span: i64, earliest: i64) -> domain::Result<Option<i64>> {
        let asked = Instant::now();
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
        self.answered(asked);
        match restart {
            Ok(_) => Ok(Some(earliest)),
            Err(e) if crate::dynamodb::is_conditional_failure(&e) => Ok(None),
            Err(e) => Err(domain::Error::aws("UpdateItem")(e)),
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
    /// milliseconds since the Unix epoch: a lead after the moment it asked, at least
    /// [`LEAD`](engine::pacing::LEAD) and about twice the store's recent answers
    /// ([`lead_for`]), so that the run has not begun when its answer arrives.
    ///
    /// While the schedule is ahead of that earliest start, one conditional addition places the
    /// run after every run taken before it, however many senders ask at once. When the
    /// schedule has fallen behind (nobody sent for a while, or the senders cannot reach the
    /// rate), the run starts at the earliest start instead, with a write conditional on the
    /// schedule's still being behind it. A sender whose last run found the schedule behind
    /// tries that write first, so a schedule the senders cannot keep up with costs one write
    /// per run, not two. Both conditions compare with the time taken before the request, so a
    /// slow answer does not make a sender find the schedule behind again; a sender loses a
    /// round only to another that moved the schedule meanwhile, and after two lost rounds it
    /// waits a moment (growing, with jitter) before the next.
    pub async fn take(&self, count: u32, interval: Duration) -> domain::Result<i64> {
        let span = (interval.as_nanos() as u64 * count as u64).div_ceil(1_000_000) as i64;
        for round in 0..16 {
            if round > 1 {
                // Lost twice in a row to other senders: let the crowd thin out.
                tokio::time::sleep(engine::retry::backoff(round - 2)).await;
            }
            let behind = self.behind.load(Ordering::Relaxed);
            let first = if behind {
                self.restart(span, earliest_start_with(self.lead())).await?
            } else {
                self.add(span, earliest_start_with(self.lead())).await?
            };
            if let Some(start) = first {
                return Ok(start);
            }
            // The other way, with the earliest start taken anew so that the answer just
            // waited for does not put the run in the past.
            let second = if behind {
                self.add(span, earliest_start_with(self.lead())).await?
            } else {
                self.restart(span, earliest_start_with(self.lead())).await?
            };
            if let Some(start) = second {
                self.behind.store(!behind, Ordering::Relaxed);
                return Ok(start);
            }
        }
        Err(domain::Error::Conflict(format!(
            "{}: the shared rate kept changing under this sender",
            self.pk
        )))
    }
}

/// The shared rates of the three channels, as the senders' send slots.
pub struct SharedRates {
    email: SharedRate,
    sms: SharedRate,
    letter: SharedRate,
}

impl SharedRates {
    pub fn new(store: &crate::dynamodb::Store) -> SharedRates {
        SharedRates {
            email: SharedRate::new(store.clone(), "email"),
            sms: SharedRate::new(store.clone(), "sms"),
            letter: SharedRate::new(store.clone(), "letter"),
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
            domain::model::Channel::Letter => self.letter.take(count, interval).await,
        }
    }
}
