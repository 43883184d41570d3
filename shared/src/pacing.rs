//! Pacing: send slots at a rate shared by every sender instance.

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
/// of the next free slot, and a sender takes a run of consecutive slots with one conditional
/// write. Runs taken by different instances never overlap, so the senders together keep to
/// the rate however many of them run.
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

fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl SharedRate {
    /// The shared rate called `name` (one per channel).
    pub fn new(store: crate::store::Store, name: &str) -> SharedRate {
        SharedRate {
            store,
            pk: format!("RATE#{name}"),
        }
    }

    /// Takes `count` consecutive slots `interval` apart and returns when the first one is, as
    /// milliseconds since the Unix epoch (now or later).
    pub async fn take(&self, count: u32, interval: Duration) -> crate::Result<i64> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
        let span = (interval.as_nanos() as u64 * count as u64).div_ceil(1_000_000) as i64;
        // First as if the rate were idle; after that from the next free slot the item showed.
        let mut seen: Option<i64> = None;
        for _ in 0..16 {
            let now = unix_ms();
            let start = seen.map_or(now, |t| t.max(now));
            let mut req = self
                .store
                .client
                .update_item()
                .table_name(&self.store.table)
                .key("pk", crate::store::s(self.pk.clone()))
                .key("sk", crate::store::s("RATE"))
                .update_expression("SET next_at = :end")
                .expression_attribute_values(
                    ":end",
                    aws_sdk_dynamodb::types::AttributeValue::N((start + span).to_string()),
                )
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            req = match seen {
                Some(t) if t > now => req
                    .condition_expression("next_at = :seen")
                    .expression_attribute_values(
                        ":seen",
                        aws_sdk_dynamodb::types::AttributeValue::N(t.to_string()),
                    ),
                _ => req
                    .condition_expression("attribute_not_exists(next_at) OR next_at <= :now")
                    .expression_attribute_values(
                        ":now",
                        aws_sdk_dynamodb::types::AttributeValue::N(now.to_string()),
                    ),
            };
            match req.send().await {
                Ok(_) => return Ok(start),
                Err(e) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        let next = c
                            .item()
                            .and_then(|i| i.get("next_at"))
                            .and_then(|v| v.as_n().ok())
                            .and_then(|v| v.parse::<i64>().ok());
                        match next {
                            Some(t) => seen = Some(t),
                            None => seen = Some(self.next_at().await?),
                        }
                    }
                    _ => return Err(crate::Error::aws("UpdateItem")(e)),
                },
            }
        }
        Err(crate::Error::Conflict(format!(
            "{}: the shared rate kept changing under this sender",
            self.pk
        )))
    }

    /// The next free slot as stored (for services that do not return the item on a failed
    /// condition).
    async fn next_at(&self) -> crate::Result<i64> {
        let out = self
            .store
            .client
            .get_item()
            .table_name(&self.store.table)
            .key("pk", crate::store::s(self.pk.clone()))
            .key("sk", crate::store::s("RATE"))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::Error::aws("GetItem"))?;
        Ok(out
            .item()
            .and_then(|i| i.get("next_at"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0))
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
