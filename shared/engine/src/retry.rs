//! Waits between attempts that collided with other writers.

use std::time::Duration;

/// The wait before attempt `attempt + 1` of a write that collided: 25 ms doubling, with
/// jitter, so that colliding senders spread apart.
pub fn backoff(attempt: usize) -> Duration {
    let base = 25u64 << attempt.min(6);
    // Spread retries of colliding senders apart.
    let jitter = (uuid::Uuid::new_v4().as_u128() % base as u128) as u64;
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_jitter_and_are_capped() {
        let a = backoff(0);
        assert!(a >= Duration::from_millis(25) && a < Duration::from_millis(50));
        assert!(backoff(20) < Duration::from_millis(3200));
    }
}
