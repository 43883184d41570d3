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

/// The longest lead a run is asked with, however slow the store: its first sends wait at
/// most this long for their slots.
pub const MAX_LEAD: Duration = Duration::from_millis(500);

/// The lead for a store whose recent answers took `answer`: twice that (an answer varies),
/// at least [`LEAD`] and at most [`MAX_LEAD`]. A run asked for with a lead shorter than the
/// answer has begun by the time the sender has it, and its first sends are late.
pub fn lead_for(answer: Duration) -> Duration {
    (answer * 2).clamp(LEAD, MAX_LEAD)
}

/// The earliest start of a run asked for now: [`LEAD`] from now, so not in the past once the
/// answer is here.
pub fn earliest_start() -> i64 {
    earliest_start_with(LEAD)
}

/// The earliest start of a run asked for now with `lead`.
pub fn earliest_start_with(lead: Duration) -> i64 {
    unix_ms() + lead.as_millis() as i64
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

    #[test]
    fn the_lead_follows_the_store_within_bounds() {
        assert_eq!(lead_for(Duration::ZERO), LEAD);
        assert_eq!(
            lead_for(Duration::from_millis(80)),
            Duration::from_millis(160)
        );
        assert_eq!(lead_for(Duration::from_secs(3)), MAX_LEAD);
    }

    #[tokio::test]
    async fn a_past_time_is_now() {
        let before = tokio::time::Instant::now();
        assert!(instant_of(0) >= before);
        let soon = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 + 500_000_000;
        assert!(instant_of(soon) > before + Duration::from_millis(400));
    }
}
