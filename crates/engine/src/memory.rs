//! [`MemKv`]: an in-memory backend for tests and the deterministic simulator. No threads, no
//! clock, ordered maps only, so the same operations give the same results on every run.
//!
//! It models durability the way one shared write-ahead log behaves: a synced write makes it and
//! every earlier write durable; [`MemKv::crash`] keeps every durable write plus a chosen prefix
//! of the later, unsynced ones.
//!
//! Invariants:
//! - `live` equals `durable` with every batch in `unsynced` applied in order.
//! - `unsynced` holds at most `unsynced_writes_max` batches: older ones are folded into
//!   `durable` (as an operating system eventually writes its page cache back).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::error::Result;
use crate::keys::{ColumnFamily, KeyRange};
use crate::kv::{Direction, KvEngine, KvRead, RawOp, WriteOptions};

type Table = Arc<BTreeMap<Vec<u8>, Bytes>>;

/// One ordered map per column family. Cloning shares the maps; a write copies a shared map once.
#[derive(Clone, Debug, Default)]
struct Tables([Table; ColumnFamily::ALL.len()]);

impl Tables {
    fn table(&self, cf: ColumnFamily) -> &Table {
        &self.0[cf as usize]
    }

    fn apply(&mut self, ops: &[RawOp]) {
        for op in ops {
            match op {
                RawOp::Put { cf, key, value } => {
                    Arc::make_mut(&mut self.0[*cf as usize]).insert(key.clone(), value.clone());
                }
                RawOp::Delete { cf, key } => {
                    Arc::make_mut(&mut self.0[*cf as usize]).remove(key);
                }
                RawOp::DeleteRange { cf, range } => {
                    let table = Arc::make_mut(&mut self.0[*cf as usize]);
                    let doomed: Vec<Vec<u8>> = table
                        .range::<[u8], _>((
                            Bound::Included(range.start.as_slice()),
                            Bound::Excluded(range.end.as_slice()),
                        ))
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in doomed {
                        table.remove(&key);
                    }
                }
            }
        }
    }

    fn scan(
        &self,
        cf: ColumnFamily,
        range: &KeyRange,
        direction: Direction,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
    ) -> Result<()> {
        if range.start >= range.end {
            return Ok(());
        }
        let bounds =
            (Bound::Included(range.start.as_slice()), Bound::Excluded(range.end.as_slice()));
        let entries = self.table(cf).range::<[u8], _>(bounds);
        let mut step = |(key, value): (&Vec<u8>, &Bytes)| visit(key, value);
        match direction {
            Direction::Forward => {
                for item in entries {
                    if !step(item)? {
                        break;
                    }
                }
            }
            Direction::Reverse => {
                for item in entries.rev() {
                    if !step(item)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemState {
    live: Tables,
    durable: Tables,
    unsynced: VecDeque<Vec<RawOp>>,
}

/// An in-memory backend. See the module documentation.
#[derive(Debug)]
pub struct MemKv {
    path: PathBuf,
    created_new: bool,
    unsynced_writes_max: usize,
    state: Mutex<MemState>,
}

/// A point-in-time view of a [`MemKv`].
#[derive(Clone, Debug)]
pub struct MemSnapshot {
    tables: Tables,
}

impl MemKv {
    /// The default bound on unsynced writes a crash may lose.
    pub const UNSYNCED_WRITES_MAX_DEFAULT: usize = 1024;

    /// A new, empty store named `name` (the name stands in for a path in errors).
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self::with_unsynced_writes_max(name, Self::UNSYNCED_WRITES_MAX_DEFAULT)
    }

    /// A new, empty store that remembers at most `unsynced_writes_max` unsynced writes as
    /// losable by a crash (older ones count as durable).
    #[must_use]
    pub fn with_unsynced_writes_max(name: &str, unsynced_writes_max: usize) -> Self {
        let state = MemState {
            live: Tables::default(),
            durable: Tables::default(),
            unsynced: VecDeque::new(),
        };
        Self {
            path: PathBuf::from(format!("memory:{name}")),
            created_new: true,
            unsynced_writes_max,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().expect("memory store lock poisoned by a panic")
    }

    /// How many writes since the last synced one a crash could lose.
    #[must_use]
    pub fn unsynced_writes(&self) -> usize {
        self.lock().unsynced.len()
    }

    /// Returns the store as a process would find it after a crash: every durable write, then
    /// the first `unsynced_writes_kept` of the later unsynced writes (clamped). This store is
    /// left as it was; the caller drops it.
    #[must_use]
    pub fn crash(&self, unsynced_writes_kept: usize) -> Self {
        let state = self.lock();
        let mut survived = state.durable.clone();
        for ops in state.unsynced.iter().take(unsynced_writes_kept) {
            survived.apply(ops);
        }
        Self {
            path: self.path.clone(),
            created_new: false,
            unsynced_writes_max: self.unsynced_writes_max,
            state: Mutex::new(MemState {
                live: survived.clone(),
                durable: survived,
                unsynced: VecDeque::new(),
            }),
        }
    }

    /// Returns the store as a clean restart finds it: every write.
    #[must_use]
    pub fn reopen(&self) -> Self {
        self.crash(usize::MAX)
    }
}

impl KvRead for MemKv {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.lock().live.table(cf).get(key).cloned())
    }

    fn scan(
        &self,
        cf: ColumnFamily,
        range: &KeyRange,
        direction: Direction,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
    ) -> Result<()> {
        // Scan a shared copy outside the lock: one point in time, and `visit` may read again.
        let tables = self.lock().live.clone();
        tables.scan(cf, range, direction, visit)
    }
}

impl KvEngine for MemKv {
    type Snapshot = MemSnapshot;

    fn write(&self, ops: &[RawOp], options: WriteOptions) -> Result<()> {
        let mut state = self.lock();
        let state = &mut *state;
        state.live.apply(ops);
        if options.sync {
            for earlier in state.unsynced.drain(..) {
                state.durable.apply(&earlier);
            }
            state.durable.apply(ops);
        } else {
            state.unsynced.push_back(ops.to_vec());
            while state.unsynced.len() > self.unsynced_writes_max {
                let oldest = state.unsynced.pop_front().expect("over the bound, so not empty");
                state.durable.apply(&oldest);
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot { tables: self.lock().live.clone() }
    }

    /// Nothing to do: a delete drops the keys from the maps, and their memory with them once
    /// no snapshot shares the map.
    fn reclaim(&self, _cf: ColumnFamily, _range: &KeyRange) {}

    fn path(&self) -> &Path {
        &self.path
    }

    fn created_new(&self) -> bool {
        self.created_new
    }
}

impl KvRead for MemSnapshot {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.tables.table(cf).get(key).cloned())
    }

    fn scan(
        &self,
        cf: ColumnFamily,
        range: &KeyRange,
        direction: Direction,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
    ) -> Result<()> {
        self.tables.scan(cf, range, direction, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8]) -> Vec<RawOp> {
        vec![RawOp::Put { cf: ColumnFamily::Data, key: key.to_vec(), value: Bytes::new() }]
    }

    #[test]
    fn a_crash_keeps_synced_writes_and_a_prefix_of_unsynced_ones() {
        let kv = MemKv::new("crash");
        kv.write(&put(b"a"), WriteOptions { sync: false }).unwrap();
        kv.write(&put(b"b"), WriteOptions { sync: true }).unwrap();
        kv.write(&put(b"c"), WriteOptions { sync: false }).unwrap();
        kv.write(&put(b"d"), WriteOptions { sync: false }).unwrap();
        let present = |kv: &MemKv| -> Vec<bool> {
            [b"a", b"b", b"c", b"d"]
                .iter()
                .map(|key| kv.get(ColumnFamily::Data, *key).unwrap().is_some())
                .collect()
        };
        assert_eq!(present(&kv.crash(0)), [true, true, false, false]);
        assert_eq!(present(&kv.crash(1)), [true, true, true, false]);
        assert_eq!(present(&kv.reopen()), [true, true, true, true]);
        assert!(!kv.crash(0).created_new());
    }

    #[test]
    fn unsynced_writes_beyond_the_bound_become_durable() {
        let kv = MemKv::with_unsynced_writes_max("bound", 2);
        for key in [b"a", b"b", b"c"] {
            kv.write(&put(key), WriteOptions { sync: false }).unwrap();
        }
        assert_eq!(kv.unsynced_writes(), 2);
        let crashed = kv.crash(0);
        assert!(crashed.get(ColumnFamily::Data, b"a").unwrap().is_some());
        assert!(crashed.get(ColumnFamily::Data, b"b").unwrap().is_none());
    }

    #[test]
    fn a_snapshot_does_not_see_later_writes() {
        let kv = MemKv::new("snapshot");
        kv.write(&put(b"a"), WriteOptions::default()).unwrap();
        let snapshot = kv.snapshot();
        kv.write(&put(b"b"), WriteOptions::default()).unwrap();
        assert!(snapshot.get(ColumnFamily::Data, b"b").unwrap().is_none());
        assert!(kv.get(ColumnFamily::Data, b"b").unwrap().is_some());
    }
}
