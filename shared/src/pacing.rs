//! Pacing: hands out send slots at a rate to every task of one process. The rate can change
//! while sending (the provider's quota is read while a dispatch runs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    /// Nanoseconds between slots.
    interval: AtomicU64,
    next: Mutex<Instant>,
}

fn interval_nanos(rate: f64) -> u64 {
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    (1e9 / rate) as u64
}

impl Pacer {
    /// At most `rate` slots per second.
    pub fn per_second(rate: f64) -> Pacer {
        Pacer {
            interval: AtomicU64::new(interval_nanos(rate)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Changes the rate for the slots still to come.
    pub fn set_per_second(&self, rate: f64) {
        self.interval.store(interval_nanos(rate), Ordering::Relaxed);
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        let slot = self.reserve(Instant::now()).await;
        tokio::time::sleep_until(slot).await;
    }

    /// Takes the next free slot at or after `now`.
    pub async fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().await;
        let slot = (*next).max(now);
        *next = slot + Duration::from_nanos(self.interval.load(Ordering::Relaxed));
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_spaced_by_the_rate() {
        let p = Pacer::per_second(10.0);
        let start = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..5 {
            slots.push(p.reserve(start).await - start);
        }
        let ms: Vec<u128> = slots.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 100, 200, 300, 400]);
        // A caller arriving after a quiet spell starts at once, not in the past.
        let later = start + Duration::from_secs(5);
        assert_eq!(p.reserve(later).await, later);
        p.set_per_second(2.0);
        assert_eq!(p.reserve(later).await - later, Duration::from_millis(100));
        assert_eq!(p.reserve(later).await - later, Duration::from_millis(600));
    }
}
