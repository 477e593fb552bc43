//! [`Slots`]: a bound on how many of one kind of long-lived work (a snapshot sent or received,
//! a shard stream served) a node runs at once. Each holds a slot until it ends; work past the
//! bound is refused at once ([`Slots::try_take`]) with `ResourceExhausted` naming the setting,
//! and its sender tries again later (nothing queues: queued work would hold what it was given,
//! a snapshot of the store say, while it ages).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Slots for one kind of work. Clones share the slots.
#[derive(Clone, Debug)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    max: usize,
    /// The setting that sets `max`, for the refusal.
    setting: &'static str,
    /// What a slot is for, for the refusal ("snapshots received").
    what: &'static str,
    /// True from a refusal to the next slot taken: a run of refusals is logged once.
    refusing: Arc<AtomicBool>,
}

/// A slot taken: the work holds it until it ends.
pub type Slot = OwnedSemaphorePermit;

impl Slots {
    /// `max` slots (at least 1) for `what`, set by `setting`.
    #[must_use]
    pub fn new(max: usize, setting: &'static str, what: &'static str) -> Self {
        let max = max.max(1);
        let semaphore = Arc::new(Semaphore::new(max));
        Self { semaphore, max, setting, what, refusing: Arc::new(AtomicBool::new(false)) }
    }

    /// A slot if one is free. The first refusal of a run of them is logged at info, the
    /// others at debug (senders retry at their own pace, and a busy node would fill its log).
    ///
    /// # Errors
    /// `ResourceExhausted` naming the limit when every slot is taken.
    pub fn try_take(&self) -> Result<Slot, Status> {
        match Arc::clone(&self.semaphore).try_acquire_owned() {
            Ok(slot) => {
                self.refusing.store(false, Ordering::Relaxed);
                Ok(slot)
            }
            Err(_) => {
                let message = format!(
                    "this node already has {} {} at once ({} = {}); try again later",
                    self.max, self.what, self.setting, self.max
                );
                if self.refusing.swap(true, Ordering::Relaxed) {
                    tracing::debug!("refused: {message}");
                } else {
                    tracing::info!("refused: {message}");
                }
                Err(Status::resource_exhausted(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_past_the_limit_is_refused_until_a_slot_is_free() {
        let slots = Slots::new(2, "snapshot-receives-max", "snapshots received");
        let first = slots.try_take().unwrap();
        let _second = slots.try_take().unwrap();
        let refused = slots.try_take().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "this node already has 2 snapshots received at once (snapshot-receives-max = 2); \
             try again later"
        );
        drop(first);
        let _third = slots.clone().try_take().expect("a slot was freed");
        assert!(slots.try_take().is_err(), "the clone shares the slots");
    }
}
