//! What every encoding of this crate shares: the version of the log entry format, the
//! error for bytes that are not what they claim to be, and the encoding of a shard cursor
//! (log entries and the ownership record both carry cursors): `0` (the start), `1 ‖ client
//! u64` (after that client's session) or `2 ‖ key length u32 ‖ key` (after that key).

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_controller::codec::{self, Reader, put_len};
use mosaic_engine::{ClientId, ShardCursor};

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

const CURSOR_START_TAG: u8 = 0;
const CURSOR_AFTER_SESSION_TAG: u8 = 1;
const CURSOR_AFTER_DATA_TAG: u8 = 2;

/// Writes a shard cursor.
pub(crate) fn put_cursor(out: &mut BytesMut, cursor: &ShardCursor) {
    match cursor {
        ShardCursor::Start => out.put_u8(CURSOR_START_TAG),
        ShardCursor::AfterSession(client) => {
            out.put_u8(CURSOR_AFTER_SESSION_TAG);
            out.put_u64(client.0);
        }
        ShardCursor::AfterData(key) => {
            out.put_u8(CURSOR_AFTER_DATA_TAG);
            put_bytes(out, key);
        }
    }
}

/// Reads a shard cursor written by [`put_cursor`].
pub(crate) fn read_cursor(reader: &mut Reader<'_>) -> Result<ShardCursor, codec::DecodeError> {
    Ok(match reader.u8()? {
        CURSOR_START_TAG => ShardCursor::Start,
        CURSOR_AFTER_SESSION_TAG => ShardCursor::AfterSession(ClientId(reader.u64()?)),
        CURSOR_AFTER_DATA_TAG => {
            let len = reader.count(1)?;
            ShardCursor::AfterData(Bytes::copy_from_slice(reader.take(len)?))
        }
        tag => return Err(codec::DecodeError(format!("unknown cursor tag {tag}"))),
    })
}

/// Writes a length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.put_slice(bytes);
}
