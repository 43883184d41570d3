//! When an invocation must be over. Lambda gives every invocation a deadline (its function's
//! timeout from the start) and ends the process there, whatever it is doing; work that
//! cannot finish before it is better not begun.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The moment an invocation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(SystemTime);

impl Deadline {
    /// The deadline Lambda gives, in milliseconds since the Unix epoch.
    pub fn at_unix_ms(ms: u64) -> Deadline {
        Deadline(UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// A deadline `after` from now (a function's timeout).
    pub fn after(after: Duration) -> Deadline {
        Deadline(SystemTime::now() + after)
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.0
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> i64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// This deadline moved `margin` earlier: when work must stop so that what follows it
    /// (writing results, answering) still fits.
    pub fn less(&self, margin: Duration) -> Deadline {
        Deadline(self.0.checked_sub(margin).unwrap_or(UNIX_EPOCH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_counts_down_to_zero() {
        let d = Deadline::after(Duration::from_secs(60));
        assert!(d.remaining() > Duration::from_secs(59));
        assert!(d.remaining() <= Duration::from_secs(60));
        let past = Deadline::at_unix_ms(1_000);
        assert_eq!(past.remaining(), Duration::ZERO);
        assert_eq!(past.unix_ms(), 1_000);
        assert_eq!(
            d.less(Duration::from_secs(10)).unix_ms(),
            d.unix_ms() - 10_000
        );
        assert_eq!(past.less(Duration::from_secs(10)).unix_ms(), 0);
    }
}
