//! The errors of starting and running a node (as opposed to refusing a request, which is
//! `mosaic_raftstore::Error` converted to a gRPC status in [`crate::status`]).

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not valid.
    #[error("configuration: {reason}")]
    Config {
        /// What is wrong, naming the setting.
        reason: String,
    },
    /// The data directory could not be opened (wrong node, corrupted, unknown format, IO).
    #[error("data directory {path}: {source}")]
    Storage {
        /// The directory.
        path: PathBuf,
        /// What the engine said.
        source: mosaic_engine::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread of the node could not be started.
    #[error("cannot start thread {thread}: {source}")]
    Spawn {
        /// The thread's name.
        thread: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store thread stopped because of an error (a storage failure: the node must not go
    /// on).
    #[error("store stopped: {0}")]
    Store(mosaic_raftstore::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}
