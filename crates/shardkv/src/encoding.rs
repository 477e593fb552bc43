//! What every encoding of this crate shares: the version of the log entry format, and the
//! error for bytes that are not what they claim to be.

/// The current encoding version of log entries (commands and migration steps).
pub const COMMAND_VERSION: u8 = 1;

/// Why bytes in a log entry (or a record) are not what they should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
