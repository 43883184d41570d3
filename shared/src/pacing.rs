//! Pacing: send slots at a rate shared by every sender instance.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::time::Duration;

fn interval_nanos(rate: f64) -> u64 {
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    (1e9 / rate) as u64
}

/// The moment of this process's clock at a wall-clock time (nanoseconds since the Unix epoch);
/// now when that time has passed.
pub fn instant_of(unix_nanos: i64) -> tokio::time::Instant {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    tokio::time::Instant::now() + Duration::from_nanos(unix_nanos.saturating_sub(now).max(0) as u64)
}

/// A send rate shared by every sender instance: one DynamoDB item per channel holds the time
/// of the next free slot, and a sender takes a run of consecutive slots with one atomic
/// addition. Runs taken by different instances never overlap, so the senders together keep
/// to the rate however many of them run.
pub struct SharedRate {
    store: crate::store::Store,
    pk: String,
}

/// Slots are spaced a little wider than the rate asks, so that the jitter of a request on its
/// way to the provider does not put more than the rate into any one second.
pub const RATE_HEADROOM: f64 = 0.98;

/// The spacing of slots for a rate per second, with [`RATE_HEADROOM`].
pub fn slot_interval(rate: f64) -> Duration {
    Duration::from_nanos(interval_nanos(rate * RATE_HEADROOM))
}

/// How far ahead of the moment it asks a sender's run must start: about one answer of the
/// store, so that the run has not begun by the time the answer arrives and its first sends
/// are not late.
pub const LEAD: Duration = Duration::from_millis(25);

fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The earliest start of a run asked for now: [`LEAD`] from now, so not in the past once the
/// answer is here.
fn earliest_start() -> i64 {
    unix_ms() + LEAD.as_millis() as i64
}

impl SharedRate {
    /// The shared rate called `name` (one per channel).
    pub fn new(store: crate::store::Store, name: &str) -> SharedRate {
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
            .key("pk", crate::store::s(self.pk.clone()))
            .key("sk", crate::store::s("RATE"))
    }

    /// Takes `count` consecutive slots `interval` apart and returns when the first one is, as
    /// milliseconds since the Unix epoch: at least [`LEAD`] after the moment it asked.
    ///
    /// While the schedule is ahead of that earliest start, one conditional addition places the
    /// run after every run taken before it, however many senders ask at once. When the
    /// schedule has fallen behind (nobody sent for a while), the run starts at the earliest
    /// start instead, with a write conditional on the schedule's still being behind it. Both
    /// conditions compare with the time taken before the request, so a slow answer does not
    /// make a sender find the schedule behind again; a sender loses a round only to another
    /// that moved the schedule meanwhile, and after two lost rounds it waits a moment
    /// (growing, with jitter) before the next.
    pub async fn take(&self, count: u32, interval: Duration) -> crate::Result<i64> {
        let span = (interval.as_nanos() as u64 * count as u64).div_ceil(1_000_000) as i64;
        for round in 0..16 {
            if round > 1 {
                // Lost twice in a row to other senders: let the crowd thin out.
                tokio::time::sleep(crate::claims::backoff(round - 2)).await;
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
                            crate::Error::Malformed(format!("{}: no next_at", self.pk))
                        })?;
                    return Ok(end - span);
                }
                Err(e) if crate::store::is_conditional_failure(&e) => {}
                Err(e) => return Err(crate::Error::aws("UpdateItem")(e)),
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
                Err(e) if crate::store::is_conditional_failure(&e) => continue,
                Err(e) => return Err(crate::Error::aws("UpdateItem")(e)),
            }
        }
        Err(crate::Error::Conflict(format!(
            "{}: the shared rate kept changing under this sender",
            self.pk
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_leave_headroom_under_the_rate() {
        assert_eq!(slot_interval(50.0), Duration::from_nanos(20_408_163));
        // Fifty slots span more than a second, so no second holds more than fifty.
        assert!(slot_interval(50.0) * 50 > Duration::from_secs(1));
        // A rate that makes no sense sends one a second rather than none or unbounded.
        assert_eq!(slot_interval(0.0), Duration::from_secs(1));
        assert_eq!(slot_interval(f64::NAN), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_past_time_is_now() {
        let before = tokio::time::Instant::now();
        assert!(instant_of(0) >= before);
        let soon = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 + 500_000_000;
        assert!(instant_of(soon) > before + Duration::from_millis(400));
    }
}
