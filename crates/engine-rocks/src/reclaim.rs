//! [`Reclaimer`]: gives the disk space of bulk deletions back to the file system, in the
//! background.
//!
//! A range delete in RocksDB writes one tombstone; the values it covers stay in their files
//! until a compaction rewrites those files, which for a shard that is never written again may
//! be never. The reclaimer compacts each range it is handed ([`mosaic_engine::KvEngine::reclaim`])
//! on a thread of its own, one range at a time, so writers never wait for it and automatic
//! compactions keep running beside it. Once no range waits, it flushes every column family:
//! RocksDB keeps a write-ahead log file while any column family holds a write of it in a
//! memtable, so one small write to a rarely written column family would otherwise keep every
//! log file after it, the deleted data's included, until the WAL limit forces a flush.
//!
//! Invariants:
//! - At most [`WAITING_MAX`] ranges wait, plus one per column family. Past that, a new range
//!   and the waiting ranges of its column family merge into one range covering them all:
//!   compacting live keys too costs time, never data.
//! - A compaction keeps what any snapshot still sees (a migration's pull reading the shard),
//!   so reclaiming never changes a read.
//! - Dropping the reclaimer lets the compaction under way finish, drops the waiting ranges
//!   (RocksDB compacts them in time by itself) and joins the thread, so the database is closed
//!   once the [`crate::RocksKv`] is dropped.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mosaic_engine::keys::KeyRange;
use mosaic_engine::{ColumnFamily, Error, Result};
use rocksdb::{BottommostLevelCompaction, CompactOptions, DB, FlushOptions};

/// The most ranges that wait before they are merged.
pub(crate) const WAITING_MAX: usize = 1024;

/// What the reclaimer has done and has left to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimStats {
    /// Ranges waiting to be compacted.
    pub waiting: usize,
    /// Whether a range is being compacted now.
    pub running: bool,
    /// Ranges compacted since the store was opened.
    pub completed: u64,
}

#[derive(Debug, Default)]
struct State {
    waiting: VecDeque<(ColumnFamily, KeyRange)>,
    running: bool,
    completed: u64,
    stopping: bool,
}

impl State {
    fn stats(&self) -> ReclaimStats {
        ReclaimStats {
            waiting: self.waiting.len(),
            running: self.running,
            completed: self.completed,
        }
    }

    fn push(&mut self, cf: ColumnFamily, range: &KeyRange) {
        let covered = self.waiting.iter().any(|(waiting_cf, waiting)| {
            *waiting_cf == cf && waiting.start <= range.start && range.end <= waiting.end
        });
        if covered || range.start >= range.end {
            return;
        }
        if self.waiting.len() >= WAITING_MAX {
            let mut merged = range.clone();
            self.waiting.retain(|(waiting_cf, waiting)| {
                if *waiting_cf != cf {
                    return true;
                }
                if waiting.start < merged.start {
                    merged.start.clone_from(&waiting.start);
                }
                if waiting.end > merged.end {
                    merged.end.clone_from(&waiting.end);
                }
                false
            });
            self.waiting.push_back((cf, merged));
            return;
        }
        self.waiting.push_back((cf, range.clone()));
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a range arrives, one finishes, or the reclaimer stops.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("reclaimer lock poisoned by a panic")
    }
}

/// The background compactor of one store.
#[derive(Debug)]
pub(crate) struct Reclaimer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaimer {
    /// Starts the reclaimer's thread over `db`.
    ///
    /// # Errors
    /// [`Error::Io`] when the thread cannot be started.
    pub(crate) fn start(db: Arc<DB>, path: &Path) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            let path = path.to_path_buf();
            std::thread::Builder::new().name("mosaic-reclaim".into()).spawn(move || {
                run(&shared, &db, &path);
            })
        }
        .map_err(|error| Error::Io {
            path: path.to_path_buf(),
            message: format!("cannot start the reclaim thread: {error}"),
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Queues `range` of `cf` for compaction.
    pub(crate) fn push(&self, cf: ColumnFamily, range: &KeyRange) {
        self.shared.lock().push(cf, range);
        self.shared.changed.notify_all();
    }

    pub(crate) fn stats(&self) -> ReclaimStats {
        self.shared.lock().stats()
    }

    /// Waits until no range waits or runs, for at most `timeout`; returns whether that happened.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.waiting.is_empty() || state.running {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .expect("reclaimer lock poisoned by a panic")
                .0;
        }
        true
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // The thread only panics if RocksDB's compaction does; that was logged already.
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, db: &DB, path: &Path) {
    loop {
        let (cf, range) = {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    if !state.waiting.is_empty() {
                        tracing::info!(
                            path = %path.display(),
                            ranges = state.waiting.len(),
                            "closing with deleted ranges not yet compacted; RocksDB will get \
                             to them in time"
                        );
                    }
                    return;
                }
                if let Some(next) = state.waiting.pop_front() {
                    state.running = true;
                    break next;
                }
                state = shared.changed.wait(state).expect("reclaimer lock poisoned by a panic");
            }
        };
        compact(db, path, cf, &range);
        if shared.lock().waiting.is_empty() {
            flush_all(db, path);
        }
        let mut state = shared.lock();
        state.running = false;
        state.completed += 1;
        drop(state);
        shared.changed.notify_all();
    }
}

fn compact(db: &DB, path: &Path, cf: ColumnFamily, range: &KeyRange) {
    let Some(handle) = db.cf_handle(cf.name()) else {
        tracing::warn!(path = %path.display(), cf = cf.name(), "no such column family to reclaim");
        return;
    };
    let mut options = CompactOptions::default();
    // Let automatic compactions run beside this one (RocksDB's default would pause them).
    options.set_exclusive_manual_compaction(false);
    // Rewrite the last level's files too: that is where a shard's old values mostly are.
    options.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
    let started = Instant::now();
    db.compact_range_cf_opt(handle, Some(&range.start), Some(&range.end), &options);
    tracing::debug!(
        path = %path.display(),
        cf = cf.name(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compacted a deleted range"
    );
}

/// Flushes the memtable of every column family, so that no write-ahead log file is kept for
/// them (RocksDB then deletes the files nothing needs).
pub(crate) fn flush_all(db: &DB, path: &Path) {
    let started = Instant::now();
    let mut options = FlushOptions::default();
    options.set_wait(true);
    for cf in ColumnFamily::ALL {
        let Some(handle) = db.cf_handle(cf.name()) else { continue };
        if let Err(error) = db.flush_cf_opt(handle, &options) {
            // The space comes back at the next flush RocksDB makes by itself.
            tracing::warn!(path = %path.display(), cf = cf.name(), %error, "cannot flush");
        }
    }
    tracing::debug!(
        path = %path.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "flushed every column family"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u8, end: u8) -> KeyRange {
        KeyRange { start: vec![start], end: vec![end] }
    }

    #[test]
    fn covered_and_empty_ranges_are_not_queued_twice() {
        let mut state = State::default();
        state.push(ColumnFamily::Data, &range(10, 20));
        state.push(ColumnFamily::Data, &range(12, 15));
        state.push(ColumnFamily::Data, &range(30, 30));
        state.push(ColumnFamily::Sessions, &range(12, 15));
        assert_eq!(state.stats().waiting, 2);
    }

    #[test]
    fn past_the_bound_the_ranges_of_a_column_family_merge() {
        let mut state = State::default();
        for i in 0..WAITING_MAX {
            let start = (i as u32 * 2).to_be_bytes().to_vec();
            let end = (i as u32 * 2 + 1).to_be_bytes().to_vec();
            state.push(ColumnFamily::Data, &KeyRange { start, end });
        }
        state.push(ColumnFamily::Sessions, &range(1, 2));
        assert_eq!(state.stats().waiting, WAITING_MAX + 1, "no session range to merge with");
        let (cf, merged) = state.waiting.back().unwrap().clone();
        assert_eq!(cf, ColumnFamily::Sessions);
        assert_eq!(merged, range(1, 2), "only ranges of its own column family merge");
        state.push(ColumnFamily::Data, &KeyRange { start: vec![0xff], end: vec![0xff, 1] });
        assert_eq!(state.stats().waiting, 2);
        let (_, merged) = state.waiting.back().unwrap();
        assert_eq!(merged.start, 0u32.to_be_bytes().to_vec());
        assert_eq!(merged.end, vec![0xff, 1]);
    }
}
