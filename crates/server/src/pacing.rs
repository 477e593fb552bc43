//! [`Budget`]: the node's one bandwidth budget for moving state. Every snapshot stream it sends
//! and every shard stream it serves takes its bytes from it, so however many run at once
//! they stay within the rate together, and the node's other traffic keeps the rest.
//!
//! A token bucket that may go into debt: a chunk goes as soon as the bucket is not in debt,
//! and leaves it in debt by its size; the next waits until the rate has paid it off. Nothing
//! is booked ahead: a stream that stops waiting (its peer went away) takes nothing, so the
//! wait of the others never grows with streams that gave up. The config keeps every chunk
//! under a quarter second of the rate (`ServerConfig::validate`).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest sleep between two looks at whether the stream still wants to send.
const STEP: Duration = Duration::from_millis(50);
/// Unused rate saved up, at most: this long of it.
const BURST: Duration = Duration::from_millis(100);

/// A rate shared by many streams (see the module documentation).
#[derive(Debug)]
pub struct Budget {
    bytes_per_sec: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may go now; negative: the debt to pay off first.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Budget {
    /// A budget of `bytes_per_sec` (at least 1).
    #[must_use]
    pub fn new(bytes_per_sec: u64) -> Self {
        let bucket = Bucket { tokens: 0.0, at: Instant::now() };
        Self { bytes_per_sec: bytes_per_sec.max(1) as f64, bucket: Mutex::new(bucket) }
    }

    /// Waits, on this blocking thread, until `bytes` may be sent, and takes them; gives up
    /// (false, nothing taken) once `cancelled` says the stream no longer wants to send.
    pub fn take(&self, bytes: u64, cancelled: impl Fn() -> bool) -> bool {
        loop {
            let Some(wait) = self.take_at(Instant::now(), bytes) else { return true };
            if cancelled() {
                return false;
            }
            std::thread::sleep(wait.min(STEP));
        }
    }

    /// Takes `bytes` at `now` if the bucket is not in debt (`None`); otherwise how long until
    /// it is not, nothing taken.
    fn take_at(&self, now: Instant, bytes: u64) -> Option<Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * self.bytes_per_sec;
        let burst = BURST.as_secs_f64() * self.bytes_per_sec;
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 0.0 {
            bucket.tokens -= bytes as f64;
            return None;
        }
        Some(Duration::from_secs_f64(-bucket.tokens / self.bytes_per_sec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait in whole milliseconds (the arithmetic is in floating point).
    fn ms(wait: Option<Duration>) -> Option<u64> {
        wait.map(|wait| (wait.as_secs_f64() * 1_000.0).round() as u64)
    }

    #[test]
    fn streams_sharing_a_budget_go_in_turn_within_its_rate() {
        let budget = Budget::new(1_000);
        let now = Instant::now();
        // A chunk goes at once and leaves the bucket in debt by its size; the next waits.
        assert_eq!(budget.take_at(now, 500), None);
        assert_eq!(ms(budget.take_at(now, 500)), Some(500));
        assert_eq!(ms(budget.take_at(now + Duration::from_millis(300), 500)), Some(200));
        let paid = now + Duration::from_millis(500);
        assert_eq!(budget.take_at(paid, 500), None);
        // Whoever comes next waits for that chunk, however many asked before: nothing is
        // booked by a stream that waits (and may give up).
        for _ in 0..10 {
            assert_eq!(ms(budget.take_at(paid, 100)), Some(500));
        }
        // 20 chunks of 100 bytes, each taken when the debt is paid, take 2 s at 1,000 bytes
        // per second.
        let mut at = paid + Duration::from_millis(500);
        let start = at;
        for _ in 0..20 {
            while let Some(wait) = budget.take_at(at, 100) {
                at += wait + Duration::from_micros(1);
            }
        }
        assert_eq!(ms(Some(at - start)), Some(1_900));
        // Time unused is saved up for a tenth of a second of the rate, no more.
        let later = at + Duration::from_secs(100);
        assert_eq!(budget.take_at(later, 150), None);
        assert_eq!(ms(budget.take_at(later, 1)), Some(50));
    }

    #[test]
    fn a_stream_that_gives_up_takes_nothing() {
        let budget = Budget::new(1_000);
        assert!(budget.take(1_000, || false));
        assert!(!budget.take(1_000, || true), "in debt: it would wait, and it gave up");
        let start = Instant::now();
        assert!(budget.take(1, || false));
        let waited = start.elapsed();
        assert!(waited <= Duration::from_millis(1_100), "only the first chunk's debt: {waited:?}");
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
