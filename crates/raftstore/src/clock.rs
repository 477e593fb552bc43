//! [`Clock`]: the monotonic clock a store reads, and [`ManualClock`], one that moves only when
//! told (tests and the simulator).
//!
//! Lease reads are timed with the clock, not with ticks: a leader whose thread stalls counts no
//! ticks, but its clock runs on, so it wakes up with its lease expired.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// The monotonic clock a store reads. Production reads `Instant::now()`; the simulator its
/// virtual time.
pub trait Clock {
    /// Time since a fixed origin of this clock; never goes backwards.
    fn now(&self) -> Duration;
}

/// A clock that moves only when told; clones share the time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Rc<Cell<Duration>>,
}

impl ManualClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now.set(self.now.get() + by);
    }

    /// Sets the time.
    ///
    /// # Panics
    /// If `now` is before the current time: a monotonic clock never goes back.
    pub fn set(&self, now: Duration) {
        assert!(
            now >= self.now.get(),
            "the clock would go back from {:?} to {now:?}",
            self.now.get()
        );
        self.now.set(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.now.get()
    }
}
