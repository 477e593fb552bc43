//! [`Pacer`]: keeps a stream (a Raft snapshot, a shard being pulled) to a rate, so that moving
//! a large state does not starve the node's other traffic.

use std::time::{Duration, Instant};

/// Paces a stream to `bytes_per_sec` on average since it started.
#[derive(Debug)]
pub struct Pacer {
    started: Instant,
    sent_bytes: u64,
    bytes_per_sec: u64,
}

impl Pacer {
    /// A pacer starting now. A rate of 0 is treated as 1 byte per second (the config refuses
    /// 0).
    #[must_use]
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { started: Instant::now(), sent_bytes: 0, bytes_per_sec: bytes_per_sec.max(1) }
    }

    /// Counts `bytes` as sent; returns how long to wait before sending more to stay within
    /// the rate (`None`: no wait).
    pub fn sent(&mut self, bytes: u64) -> Option<Duration> {
        self.sent_bytes += bytes;
        let due = Duration::from_secs_f64(self.sent_bytes as f64 / self.bytes_per_sec as f64);
        due.checked_sub(self.started.elapsed()).filter(|wait| !wait.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ahead_of_its_rate_waits_for_the_difference() {
        let mut pacer = Pacer::new(1_000);
        let wait = pacer.sent(500).expect("half a second of bytes sent at once");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let mut fast = Pacer::new(u64::MAX);
        assert_eq!(fast.sent(1 << 20), None);
    }
}
