//! [`Budget`]: the node's one bandwidth budget for moving state. Every snapshot stream it sends
//! and every shard stream it serves takes its bytes from it, so however many run at once
//! they stay within the rate together, and the node's other traffic keeps the rest.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate shared by many streams: each takes its bytes before it sends them, and waits for
/// its turn. Unused time is not saved up: a stream that starts after a pause gets the rate,
/// not a burst.
#[derive(Debug)]
pub struct Budget {
    bytes_per_sec: u64,
    /// When the bytes taken so far will have gone out at the rate.
    free_at: Mutex<Option<Instant>>,
}

impl Budget {
    /// A budget of `bytes_per_sec`. A rate of 0 is treated as 1 byte per second (the config
    /// refuses 0).
    #[must_use]
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { bytes_per_sec: bytes_per_sec.max(1), free_at: Mutex::new(None) }
    }

    /// The rate, in bytes per second.
    #[must_use]
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Takes `bytes` from the budget: how long to wait before sending them (`None`: send at
    /// once).
    pub fn take(&self, bytes: u64) -> Option<Duration> {
        self.take_at(Instant::now(), bytes)
    }

    fn take_at(&self, now: Instant, bytes: u64) -> Option<Duration> {
        let mut free_at = self.free_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = free_at.map_or(now, |free_at| free_at.max(now));
        let takes = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        *free_at = Some(start + takes);
        Some(start - now).filter(|wait| !wait.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_sharing_a_budget_take_turns_within_its_rate() {
        let budget = Budget::new(1_000);
        let now = Instant::now();
        // The first 500 bytes go at once; the next 500, of another stream, after them.
        assert_eq!(budget.take_at(now, 500), None);
        assert_eq!(budget.take_at(now, 500), Some(Duration::from_millis(500)));
        // Two streams of 100 chunks of 100 bytes each, interleaved: 20,000 bytes take 20 s
        // at 1,000 bytes per second, whatever the number of streams.
        let mut last_wait = Duration::ZERO;
        for _ in 0..200 {
            last_wait = budget.take_at(now, 100).expect("behind the rate");
        }
        assert_eq!(last_wait, Duration::from_millis(1_000 + 199 * 100));
        // Time that passed unused is not saved up.
        let later = now + Duration::from_secs(100);
        assert_eq!(budget.take_at(later, 1_000), None);
        assert_eq!(budget.take_at(later, 1_000), Some(Duration::from_secs(1)));
    }

    #[test]
    fn an_unlimited_budget_never_waits() {
        let budget = Budget::new(u64::MAX);
        let now = Instant::now();
        for _ in 0..1_000 {
            assert_eq!(budget.take_at(now, 1 << 20), None);
        }
    }
}
