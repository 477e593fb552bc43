//! The pauses between retries of one operation: exponential backoff with jitter.
//!
//! The `n`th pause (from 0) has a ceiling of `min(initial * 2^n, max)` and is drawn uniformly
//! from `[ceiling / 2, ceiling]` ("equal jitter"): it grows with every retry so that an
//! overloaded or leaderless group is not hammered, never exceeds `max`, and never falls below
//! half its ceiling, while the random half spreads out clients that failed together.
//!
//! The randomness comes from the generator passed in, so a seeded generator gives the same
//! schedule every time. A client seeds each operation's generator from its [`JitterSeeds`],
//! itself seeded once from the options or the operating system.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::{SmallRng, SysRng};
use rand::{Rng, RngExt as _, SeedableRng as _};

use crate::error::{ClientError, Result};

/// Where the operations of one client draw their jitter from: one generator, seeded once,
/// that seeds every operation's own [`Backoff`].
#[derive(Debug)]
pub(crate) struct JitterSeeds {
    seeds: Mutex<SmallRng>,
}

impl JitterSeeds {
    /// Seeds from `seed`, or from the operating system when it is `None`.
    ///
    /// # Errors
    /// [`ClientError::Randomness`] when the operating system's generator fails.
    pub(crate) fn new(seed: Option<u64>) -> Result<Self> {
        let seeds = match seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::try_from_rng(&mut SysRng)
                .map_err(|error| ClientError::Randomness { reason: error.to_string() })?,
        };
        Ok(Self { seeds: Mutex::new(seeds) })
    }

    /// The schedule of one operation ([`Backoff::new`]), with its own jitter generator.
    ///
    /// # Panics
    /// As [`Backoff::new`].
    pub(crate) fn backoff(&self, initial: Duration, max: Duration) -> Backoff<SmallRng> {
        // One draw under the lock: the generator is valid after any panic.
        let seed = self.seeds.lock().unwrap_or_else(PoisonError::into_inner).next_u64();
        Backoff::new(initial, max, SmallRng::seed_from_u64(seed))
    }
}

/// The pause schedule of one operation.
#[derive(Debug)]
pub(crate) struct Backoff<R> {
    /// The ceiling of the next pause. Invariant: `initial <= next_ceiling <= max`.
    next_ceiling: Duration,
    /// The largest pause.
    max: Duration,
    /// Where the jitter comes from.
    jitter: R,
}

impl<R: Rng> Backoff<R> {
    /// A schedule whose first pause is at most `initial` and whose pauses never exceed `max`.
    ///
    /// # Panics
    /// If `initial` is zero or greater than `max` ([`crate::ClientOptions::validate`] refuses
    /// such options).
    pub(crate) fn new(initial: Duration, max: Duration, jitter: R) -> Self {
        assert!(
            !initial.is_zero() && initial <= max,
            "backoff: initial {initial:?} must be positive and at most max {max:?}"
        );
        Self { next_ceiling: initial, max, jitter }
    }

    /// Returns the next pause and advances the schedule.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let ceiling = self.next_ceiling;
        self.next_ceiling = ceiling.saturating_mul(2).min(self.max);
        let floor = ceiling / 2;
        let spread_nanos = u64::try_from((ceiling - floor).as_nanos()).unwrap_or(u64::MAX);
        floor + Duration::from_nanos(self.jitter.random_range(0..=spread_nanos))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::SmallRng;

    use super::*;

    const INITIAL: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(500);

    fn schedule(seed: u64, pauses: usize) -> Vec<Duration> {
        let mut backoff = Backoff::new(INITIAL, MAX, SmallRng::seed_from_u64(seed));
        (0..pauses).map(|_| backoff.next_pause()).collect()
    }

    #[test]
    fn pauses_stay_within_half_to_all_of_a_doubling_capped_ceiling() {
        for seed in 0..50 {
            for (n, pause) in schedule(seed, 20).into_iter().enumerate() {
                let ceiling = INITIAL.saturating_mul(1 << n.min(20)).min(MAX);
                assert!(
                    ceiling / 2 <= pause && pause <= ceiling,
                    "seed {seed}, pause {n}: {pause:?} not in [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }

    #[test]
    fn pauses_grow_then_are_capped_at_the_max() {
        let pauses = schedule(7, 30);
        // Ceilings 10, 20, 40, 80, 160, 320, 500, 500, ...: a pause at the cap is at least
        // 250 ms, more than any pause of the first four.
        let early_max = pauses[..4].iter().max().unwrap();
        let late_min = pauses[6..].iter().min().unwrap();
        assert!(early_max < late_min, "seed 7: early {early_max:?}, late {late_min:?}");
        assert!(pauses.iter().all(|pause| *pause <= MAX), "seed 7: {pauses:?}");
        assert!(pauses[6..].iter().all(|pause| *pause >= MAX / 2), "seed 7: {pauses:?}");
    }

    #[test]
    fn the_total_of_many_pauses_is_bounded() {
        let total: Duration = schedule(3, 1000).into_iter().sum();
        assert!(total <= MAX * 1000, "seed 3: total {total:?}");
    }

    #[test]
    fn a_seeded_jitter_source_gives_the_same_schedule() {
        assert_eq!(schedule(42, 12), schedule(42, 12));
        assert_ne!(schedule(42, 12), schedule(43, 12), "seeds 42 and 43 gave the same jitter");
    }

    #[test]
    fn equal_initial_and_max_give_constant_ceilings() {
        let mut backoff = Backoff::new(MAX, MAX, SmallRng::seed_from_u64(1));
        for _ in 0..10 {
            let pause = backoff.next_pause();
            assert!(MAX / 2 <= pause && pause <= MAX, "seed 1: {pause:?}");
        }
    }

    #[test]
    fn a_seeded_client_gives_its_operations_the_same_schedules_every_time() {
        let draw = |seed| {
            let seeds = JitterSeeds::new(Some(seed)).unwrap();
            let mut operations: Vec<_> = (0..3).map(|_| seeds.backoff(INITIAL, MAX)).collect();
            operations.iter_mut().map(Backoff::next_pause).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert!(JitterSeeds::new(None).is_ok());
    }

    #[test]
    #[should_panic(expected = "must be positive and at most max")]
    fn an_initial_pause_above_the_max_is_refused() {
        let _ = Backoff::new(MAX, INITIAL, SmallRng::seed_from_u64(0));
    }
}
