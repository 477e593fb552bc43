//! [`DiskGuard`]: keeps a node from filling its disk (docs/security.md "A full disk").
//!
//! The node looks at the free space of its data directory every [`CHECK_INTERVAL`]. Below
//! `disk-reserve-bytes` it is full: it refuses the writes that grow the store (client puts and
//! appends, shard chunks pulled in, snapshots received) with `StorageFull`, while it serves
//! reads, deletes, Raft traffic and the small records of migrations, all of which the
//! reserve is there for. It takes writes again by itself once the free space is back above
//! the reserve and a quarter more (so that it does not flap around the line).
//!
//! A write the engine itself fails is still fatal to the node (the store cannot tell what of
//! its state reached the disk); the reserve exists so that it never comes to that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mosaic_raftstore::Error;
use tokio::sync::watch;

/// How often the free space is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a node is full after finding `available` bytes free, given whether it was and
/// its `reserve`: full below the reserve, and full until the reserve and a quarter more are
/// free again. A reserve of 0 never fills.
#[must_use]
pub fn is_full(was_full: bool, available: u64, reserve: u64) -> bool {
    let resume_at = reserve.saturating_add(reserve / 4);
    if was_full { available < resume_at } else { available < reserve }
}

/// The free space of one data directory, and whether the node is full. Clones share it.
#[derive(Clone, Debug)]
pub struct DiskGuard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    reserve_bytes: u64,
    available_bytes: AtomicU64,
    full: AtomicBool,
}

impl DiskGuard {
    /// The guard of the data directory `path`, keeping `reserve_bytes` free (0: never full).
    /// It looks once now.
    #[must_use]
    pub fn new(path: &Path, reserve_bytes: u64) -> Self {
        let inner = Inner {
            path: path.to_path_buf(),
            reserve_bytes,
            available_bytes: AtomicU64::new(u64::MAX),
            full: AtomicBool::new(false),
        };
        let guard = Self { inner: Arc::new(inner) };
        guard.check();
        guard
    }

    /// Looks at the free space again, logging a change of state.
    pub fn check(&self) {
        let inner = &self.inner;
        let available = match available_bytes(&inner.path) {
            Ok(available) => available,
            Err(error) => {
                tracing::warn!(path = %inner.path.display(), %error,
                    "cannot read the free space of the data directory");
                return;
            }
        };
        inner.available_bytes.store(available, Ordering::Relaxed);
        let was_full = inner.full.load(Ordering::Relaxed);
        let full = is_full(was_full, available, inner.reserve_bytes);
        inner.full.store(full, Ordering::Relaxed);
        let reserve = inner.reserve_bytes;
        match (was_full, full) {
            (false, true) => tracing::warn!(path = %inner.path.display(), available, reserve,
                "the disk is nearly full: writes are refused until space is freed"),
            (true, false) => tracing::info!(path = %inner.path.display(), available, reserve,
                "space was freed: writes are taken again"),
            _ => {}
        }
    }

    /// Refuses a write that grows the store while the node is full.
    ///
    /// # Errors
    /// [`Error::StorageFull`] while full.
    pub fn check_write(&self) -> Result<(), Error> {
        if self.inner.full.load(Ordering::Relaxed) {
            return Err(Error::StorageFull {
                available_bytes: self.inner.available_bytes.load(Ordering::Relaxed),
                reserve_bytes: self.inner.reserve_bytes,
            });
        }
        Ok(())
    }

    /// Looks every [`CHECK_INTERVAL`] until `closing` turns true.
    pub async fn watch(self, mut closing: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    let guard = self.clone();
                    // statvfs may block on a slow file system.
                    let _ = tokio::task::spawn_blocking(move || guard.check()).await;
                }
                changed = closing.changed() => {
                    if changed.is_err() || *closing.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// The bytes an unprivileged process may still write under `path`.
fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_below_the_reserve_until_a_quarter_more_is_free() {
        let reserve = 1_000;
        assert!(!is_full(false, 1_000, reserve));
        assert!(is_full(false, 999, reserve));
        assert!(is_full(true, 1_000, reserve), "not yet a quarter more");
        assert!(is_full(true, 1_249, reserve));
        assert!(!is_full(true, 1_250, reserve));
        assert!(!is_full(false, 0, 0), "a reserve of 0 never fills");
        assert!(!is_full(true, u64::MAX, u64::MAX));
    }

    #[test]
    fn a_data_directory_with_room_takes_writes_and_one_without_refuses_them() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskGuard::new(dir.path(), 1).check_write().is_ok());
        let refused = DiskGuard::new(dir.path(), u64::MAX).check_write().unwrap_err();
        assert!(matches!(refused, Error::StorageFull { reserve_bytes: u64::MAX, .. }), "{refused}");
    }
}
