//! [`Clock`]: the monotonic clock a store reads, and [`ManualClock`], one that moves only when
//! told (tests and the simulator).
//!
//! Lease reads are timed with the clock, not with ticks: a leader whose thread stalls counts no
//! ticks, but its clock runs on, so it wakes up with its lease expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The monotonic clock a store reads. Production reads `Instant::now()`; the simulator its
/// virtual time.
pub trait Clock {
    /// Time since a fixed origin of this clock; never goes backwards.
    fn now(&self) -> Duration;
}

/// A clock that moves only when told; clones share the time, and may be sent to other
/// threads (a store callback that reads the time, say).
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    /// Nanoseconds since the origin.
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.set(self.now() + by);
    }

    /// Sets the time.
    ///
    /// # Panics
    /// If `now` is before the current time: a monotonic clock never goes back; or past
    /// 2^64 nanoseconds (584 years).
    pub fn set(&self, now: Duration) {
        assert!(now >= self.now(), "the clock would go back from {:?} to {now:?}", self.now());
        let nanos = u64::try_from(now.as_nanos()).expect("a manual clock counts 584 years");
        self.nanos.store(nanos, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}
