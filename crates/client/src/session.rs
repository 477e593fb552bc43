//! Client sessions for at-most-once writes: a pool of "lanes", each a client id and its next
//! sequence number (6.824 Lab 3 "duplicate detection").
//!
//! A node applies a write only if its `seq` is greater than the highest one it has applied for
//! that client id in that shard, and answers a lower or equal one with success without applying
//! it. So one client id must never have two writes in flight whose seqs could arrive out of
//! order. The pool guarantees that:
//! - a write checks out a whole lane ([`SessionPool::checkout`]) for the length of the operation,
//!   takes one seq from it ([`LaneLease::next_session`]) and sends that same `(client_id, seq)`
//!   on every retry; the lane goes back to the pool when the lease is dropped, whatever the
//!   outcome;
//! - concurrent operations therefore hold different lanes, hence different client ids;
//! - a lane's seqs only grow, so the next operation on a lane always carries a greater seq than
//!   any earlier one on it.
//!
//! A group keeps a bounded number of sessions per shard and evicts the least recently written
//! (`mosaic_shardkv::session`). A lane remembers the shards where its session exists (a write
//! of it there was answered) and says so on every later write there
//! ([`LaneLease::knows_session`], the request's `expects_session`): a group that evicted the
//! session then refuses the write (`SessionExpired`) instead of applying what may be a retry
//! of a write applied before the eviction. The first write of a lane to a shard cannot say
//! so: a retry of it after an eviction that came between its attempts could still apply twice.
//!
//! Invariant: the pool creates a lane only when none is free, so the number of lanes never
//! exceeds the peak number of concurrent leases; a lane remembers at most one entry per
//! shard. Client ids are drawn from the operating
//! system's random number generator (never 0), so that clients of different processes do not
//! collide.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use mosaic_engine::{ClientId, ShardId};
use rand::TryRng as _;
use rand::rngs::SysRng;

use crate::error::{ClientError, Result};

/// The `(client_id, seq)` every attempt of one write carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The lane's client id.
    pub(crate) client_id: ClientId,
    /// This write's sequence number.
    pub(crate) seq: u64,
}

/// One client id and the next sequence number to use with it.
#[derive(Debug)]
struct Lane {
    client_id: ClientId,
    /// The seq the next write on this lane takes. Starts at 1 (a node that has applied nothing
    /// for a client has highest seq 0).
    next_seq: u64,
    /// The shards where this lane's session exists, as far as it knows.
    sessions: BTreeSet<ShardId>,
}

/// Returns a client id drawn from the operating system's random number generator, so that
/// clients of different processes do not collide; never 0, so that it can never be mistaken
/// for "no session".
///
/// # Errors
/// [`ClientError::Randomness`] when the operating system's generator fails.
pub(crate) fn random_client_id() -> Result<ClientId> {
    let id = SysRng
        .try_next_u64()
        .map_err(|error| ClientError::Randomness { reason: error.to_string() })?;
    Ok(ClientId(id.max(1)))
}

/// The lanes of one client.
#[derive(Debug, Default)]
pub(crate) struct SessionPool {
    /// Lanes no operation holds, most recently returned last.
    free: Mutex<Vec<Lane>>,
    /// How many lanes exist (free or leased).
    lanes_created: AtomicUsize,
}

impl SessionPool {
    /// Leases a free lane, or creates one when none is free.
    ///
    /// # Errors
    /// [`ClientError::Randomness`] when a new lane is needed and the operating system's random
    /// number generator fails.
    pub(crate) fn checkout(&self) -> Result<LaneLease<'_>> {
        let free = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let lane = match free {
            Some(lane) => lane,
            None => {
                let client_id = random_client_id()?;
                self.lanes_created.fetch_add(1, Ordering::Relaxed);
                Lane { client_id, next_seq: 1, sessions: BTreeSet::new() }
            }
        };
        Ok(LaneLease { pool: self, lane: Some(lane) })
    }

    /// How many lanes exist.
    #[cfg(test)]
    pub(crate) fn lanes_created(&self) -> usize {
        self.lanes_created.load(Ordering::Relaxed)
    }
}

/// A lane held by one operation; returns to its pool when dropped.
#[derive(Debug)]
pub(crate) struct LaneLease<'pool> {
    pool: &'pool SessionPool,
    /// Always `Some` until dropped.
    lane: Option<Lane>,
}

impl LaneLease<'_> {
    /// Takes the lane's next seq, for one write (all of whose attempts carry it).
    pub(crate) fn next_session(&mut self) -> Session {
        let lane = self.lane_mut();
        let session = Session { client_id: lane.client_id, seq: lane.next_seq };
        lane.next_seq += 1;
        session
    }

    /// Whether the lane's session in `shard` exists, as far as it knows (a write of it there
    /// was answered, and no node said the session expired since).
    pub(crate) fn knows_session(&self, shard: ShardId) -> bool {
        self.lane.as_ref().expect("a lease holds its lane until dropped").sessions.contains(&shard)
    }

    /// A write of this lane to `shard` was answered: its session exists there.
    pub(crate) fn session_exists(&mut self, shard: ShardId) {
        self.lane_mut().sessions.insert(shard);
    }

    /// A node said the lane's session in `shard` expired.
    pub(crate) fn session_expired(&mut self, shard: ShardId) {
        self.lane_mut().sessions.remove(&shard);
    }

    fn lane_mut(&mut self) -> &mut Lane {
        self.lane.as_mut().expect("a lease holds its lane until dropped")
    }
}

impl Drop for LaneLease<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            self.pool.free.lock().unwrap_or_else(PoisonError::into_inner).push(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn concurrent_leases_get_distinct_client_ids() {
        let pool = SessionPool::default();
        let mut leases: Vec<_> = (0..8).map(|_| pool.checkout().unwrap()).collect();
        let ids: BTreeSet<ClientId> =
            leases.iter_mut().map(|l| l.next_session().client_id).collect();
        assert_eq!(ids.len(), 8, "client ids {ids:?}");
        assert!(!ids.contains(&ClientId(0)));
        assert_eq!(pool.lanes_created(), 8);
    }

    #[test]
    fn a_lane_remembers_the_shards_its_session_exists_in_until_one_expires() {
        let pool = SessionPool::default();
        let mut lease = pool.checkout().unwrap();
        assert!(!lease.knows_session(ShardId(3)));
        lease.session_exists(ShardId(3));
        drop(lease);
        let mut lease = pool.checkout().unwrap();
        assert!(lease.knows_session(ShardId(3)) && !lease.knows_session(ShardId(4)));
        lease.session_expired(ShardId(3));
        assert!(!lease.knows_session(ShardId(3)));
    }

    #[test]
    fn a_returned_lane_is_reused_with_a_greater_seq() {
        let pool = SessionPool::default();
        let first = pool.checkout().unwrap().next_session();
        let second = pool.checkout().unwrap().next_session();
        let third = pool.checkout().unwrap().next_session();
        assert_eq!(first.seq, 1);
        assert_eq!(second, Session { client_id: first.client_id, seq: 2 });
        assert_eq!(third, Session { client_id: first.client_id, seq: 3 });
        assert_eq!(pool.lanes_created(), 1);
    }

    #[test]
    fn the_pool_never_grows_past_the_peak_concurrency() {
        let pool = SessionPool::default();
        for _ in 0..10 {
            let leases: Vec<_> = (0..3).map(|_| pool.checkout().unwrap()).collect();
            drop(leases);
            let _one = pool.checkout().unwrap();
        }
        assert_eq!(pool.lanes_created(), 3);
    }

    #[test]
    fn every_lane_keeps_its_own_increasing_seqs() {
        let pool = SessionPool::default();
        let mut a = pool.checkout().unwrap();
        let mut b = pool.checkout().unwrap();
        let a1 = a.next_session();
        let b1 = b.next_session();
        let a2 = a.next_session();
        assert_ne!(a1.client_id, b1.client_id);
        assert_eq!((a1.seq, a2.seq, b1.seq), (1, 2, 1));
        assert_eq!(a2.client_id, a1.client_id);
    }

    #[test]
    fn leases_on_many_threads_never_share_a_client_id() {
        let pool = SessionPool::default();
        let seen = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let mut lease = pool.checkout().unwrap();
                        let session = lease.next_session();
                        // While this lease is held, no other thread may use its client id.
                        seen.lock().unwrap().push(session);
                    }
                });
            }
        });
        let sessions = seen.into_inner().unwrap();
        // (client_id, seq) pairs are unique: no seq was handed out twice on one lane.
        let unique: BTreeSet<(ClientId, u64)> =
            sessions.iter().map(|s| (s.client_id, s.seq)).collect();
        assert_eq!(unique.len(), sessions.len());
        assert!(pool.lanes_created() <= 4, "{} lanes for 4 threads", pool.lanes_created());
    }
}
