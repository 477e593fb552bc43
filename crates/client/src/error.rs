//! The errors a client operation ends with, and what a failed write's status is.
//!
//! A write that got an explicit success is `Ok`. Every error says, through
//! [`ClientError::outcome`], whether the write it ended can have been applied: callers retry a
//! [`WriteOutcome::NotApplied`] write freely, and check the key before retrying a
//! [`WriteOutcome::Unknown`] one (a retry carries a new sequence number, so it would apply
//! again).

use std::fmt;
use std::time::Duration;

use crate::routing::RoutingError;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Whether a write that did not succeed can have been applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteOutcome {
    /// Certainly not applied: every attempt was refused before it entered a Raft log, or was
    /// never sent. Always the outcome of a failed read.
    NotApplied,
    /// Perhaps applied: some attempt was sent and no answer said it was refused (the connection
    /// broke, the attempt timed out, or the node said the outcome is unknown).
    Unknown,
}

impl fmt::Display for WriteOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotApplied => "not applied",
            Self::Unknown => "may have been applied",
        })
    }
}

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A node refused the request as malformed (an empty or oversized key, an oversized value,
    /// ...). Retrying the same request will not help.
    #[error("the request is invalid: {reason}")]
    InvalidArgument {
        /// What the node said is wrong.
        reason: String,
        /// Whether an earlier attempt of the same write may have been applied (only possible if
        /// nodes disagree about what is valid).
        outcome: WriteOutcome,
    },
    /// The operation's deadline ([`crate::ClientOptions::timeout`]) passed before any node
    /// gave a final answer.
    #[error(
        "no final answer within {timeout:?} after {attempts} attempt(s) (last failure: \
         {last_failure})"
    )]
    Timeout {
        /// Whether the write may have been applied.
        outcome: WriteOutcome,
        /// The deadline the operation had.
        timeout: Duration,
        /// How many requests were sent or tried.
        attempts: u32,
        /// What went wrong with the last attempt, for people.
        last_failure: String,
    },
    /// No usable placement: the routing source failed before the first request, or gave a
    /// placement that breaks an invariant.
    #[error("cannot route: {reason}")]
    Routing {
        /// What is wrong.
        reason: RoutingError,
    },
    /// The [`crate::ClientOptions`] are inconsistent.
    #[error("invalid client options: {reason}")]
    InvalidOptions {
        /// What is wrong with them.
        reason: String,
    },
    /// The operating system's random number generator failed, so no session id could be drawn.
    #[error("cannot draw a client session id: {reason}")]
    Randomness {
        /// The error the operating system gave.
        reason: String,
    },
}

impl ClientError {
    /// Whether the write this error ended can have been applied. For reads, and for errors
    /// raised before any request was sent, always [`WriteOutcome::NotApplied`].
    #[must_use]
    pub fn outcome(&self) -> WriteOutcome {
        match self {
            Self::InvalidArgument { outcome, .. } | Self::Timeout { outcome, .. } => *outcome,
            Self::Routing { .. } | Self::InvalidOptions { .. } | Self::Randomness { .. } => {
                WriteOutcome::NotApplied
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_reports_the_write_status_each_error_carries() {
        let timeout = |outcome| ClientError::Timeout {
            outcome,
            timeout: Duration::from_secs(1),
            attempts: 3,
            last_failure: "node 1 unreachable".into(),
        };
        assert_eq!(timeout(WriteOutcome::Unknown).outcome(), WriteOutcome::Unknown);
        assert_eq!(timeout(WriteOutcome::NotApplied).outcome(), WriteOutcome::NotApplied);
        let invalid = ClientError::InvalidArgument {
            reason: "the key is empty".into(),
            outcome: WriteOutcome::NotApplied,
        };
        assert_eq!(invalid.outcome(), WriteOutcome::NotApplied);
        let routing = ClientError::Routing { reason: RoutingError::NoShards };
        assert_eq!(routing.outcome(), WriteOutcome::NotApplied);
    }
}
