//! The errors of the storage layer. Every error about stored bytes names the store's path, so an
//! operator knows which directory to look at; decode failures are always [`Error::Corruption`].

use std::path::PathBuf;

use mosaic_raft::LogIndex;

use crate::ids::{GroupId, NodeIdentity};

/// The result type of this crate and of every engine.
pub type Result<T> = std::result::Result<T, Error>;

/// An error from a storage engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Stored bytes do not decode, or stored records contradict each other. The store is left
    /// as it is: nothing is repaired or wiped.
    #[error("corrupted store at {}: {reason}", path.display())]
    Corruption {
        /// The store's directory.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
    /// The operating system or the engine failed to read or write (disk full, permissions,
    /// lock held by another process, ...). A write that returns this did not happen.
    #[error("io error at {}: {message}", path.display())]
    Io {
        /// The store's directory.
        path: PathBuf,
        /// The underlying error, in words.
        message: String,
    },
    /// The directory was written by a format version this build does not read.
    #[error(
        "store at {} has format version {found}; this build reads version {expected}",
        path.display()
    )]
    FormatVersion {
        /// The store's directory.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// The directory belongs to another node or cluster.
    #[error("store at {} belongs to {found}, not to {expected}", path.display())]
    WrongNode {
        /// The store's directory.
        path: PathBuf,
        /// The identity recorded in the directory.
        found: NodeIdentity,
        /// The identity of the process opening it.
        expected: NodeIdentity,
    },
    /// The path exists but does not hold a store (and is not an empty directory), so it is
    /// neither opened nor initialized.
    #[error("{} is not a store: {reason}", path.display())]
    NotAStore {
        /// The path given.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The entries asked for were compacted away (Raft §7).
    #[error("group {group}: log compacted, first index is {first_index}")]
    Compacted {
        /// The group whose log was read.
        group: GroupId,
        /// The first index still stored.
        first_index: LogIndex,
    },
    /// The index asked for is past the end of the log.
    #[error("group {group}: index {index} is past the last index {last_index}")]
    Unavailable {
        /// The group whose log was read.
        group: GroupId,
        /// The index asked for.
        index: LogIndex,
        /// The last index stored.
        last_index: LogIndex,
    },
    /// A write batch or a read asks for something impossible (a gap in the log, a reserved
    /// id, an empty range). Nothing was written.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid engine config: {reason}")]
    InvalidConfig {
        /// Which field, and why.
        reason: String,
    },
}

impl From<Error> for mosaic_raft::Error {
    /// Maps the log errors the Raft core acts on to its own variants; every other error becomes
    /// [`mosaic_raft::Error::Storage`] with the full message.
    fn from(error: Error) -> Self {
        match error {
            Error::Compacted { first_index, .. } => mosaic_raft::Error::Compacted { first_index },
            Error::Unavailable { index, last_index, .. } => {
                mosaic_raft::Error::Unavailable { index, last_index }
            }
            other => mosaic_raft::Error::Storage(other.to_string()),
        }
    }
}
