//! The ids Mosaic's data is keyed by.
//!
//! Every id is its own newtype so that a shard can never be passed where a group is expected.
//! Their widths are part of the on-disk key layout (docs/storage.md): changing one is a format
//! change.

use std::fmt;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty)) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

id_newtype!(
    /// A replica group (one Raft group). Stored as 8 big-endian bytes at the front of every key
    /// the group owns, so a group's keys form one contiguous range per column family.
    ///
    /// `GroupId(u64::MAX)` is reserved: its key range would have no upper bound, and writes
    /// naming it are refused by the storage engine.
    GroupId(u64)
);
id_newtype!(
    /// A shard of the key space. Stored as 4 big-endian bytes after the group id, so a shard's
    /// data within a group is one contiguous range.
    ShardId(u32)
);
id_newtype!(
    /// A client whose writes are deduplicated by a session record (6.824 Lab 3 "at most once").
    ClientId(u64)
);
id_newtype!(
    /// A cluster. A data directory created for one cluster never opens in another.
    ClusterId(u64)
);

impl GroupId {
    /// The one reserved group id (see the type's documentation).
    pub const RESERVED: Self = Self(u64::MAX);
}

/// The controller group's id in a controller replica's store (the only group there).
pub const CONTROLLER_GROUP: GroupId = GroupId(1);
