//! Pacing: hands out send slots at a fixed rate to every task of one process.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// At most `rate` slots per second.
    pub fn per_second(rate: f64) -> Pacer {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Pacer {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_by_the_rate() {
        let p = Pacer::per_second(10.0);
        let start = Instant::now();
        for _ in 0..5 {
            p.wait().await;
        }
        // Five slots at 10/s: the first at once, the fifth 400 ms later (virtual time).
        assert_eq!(Instant::now() - start, Duration::from_millis(400));
    }
}
