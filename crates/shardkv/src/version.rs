//! Key versions and shard revisions.
//!
//! Every shard counts its changes: its **revision** starts at 0 and grows by one with every
//! write that changes the shard (a put, an append, the delete of a key that exists). A key's
//! **version** is the shard's revision when the key was last written; an absent key has
//! version 0 ([`Version::ABSENT`]), so "the version is 0" is the condition of a create-only
//! write. A revision belongs to the shard, not to the group: it moves with the shard in a
//! migration and in a group snapshot, and goes on growing at the new owner, so a key never
//! gets a non-zero version it had before (no ABA for compare-and-set), wherever its shard
//! lives; version 0 comes back whenever the key is absent again.
//!
//! Both are stored where they move with the shard without any other record:
//! - a key's value in the `data` column family is `1 ‖ version u64 ‖ value` ([`Versioned`]);
//! - a shard's revision is a record of the `sessions` column family under client id 0
//!   ([`REVISION_CLIENT`]; no client uses it, the node refuses it), `1 ‖ revision u64`, so a
//!   shard scan yields it first, before any session and any key.
//!
//! All integers are big-endian.

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_engine::ClientId;

use crate::encoding::DecodeError;

/// The session key under which a shard keeps its revision. Client id 0 is never a client's
/// (clients draw ids from 1 up; the node and the state machine refuse 0).
pub const REVISION_CLIENT: ClientId = ClientId(0);

const VALUE_VERSION: u8 = 1;
const VALUE_HEADER_BYTES: usize = 1 + 8;
const REVISION_VERSION: u8 = 1;
const REVISION_BYTES: usize = 1 + 8;

/// A key's version: its shard's revision when it was last written; [`Version::ABSENT`] for a
/// key that has no value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

impl Version {
    /// The version of a key without a value.
    pub const ABSENT: Self = Self(0);
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A key's value and its version, as the `data` column family stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The version: never [`Version::ABSENT`] for a stored value.
    pub version: Version,
}

impl Versioned {
    /// Encodes the stored form: `1 ‖ version u64 ‖ value`.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(VALUE_HEADER_BYTES + self.value.len());
        out.put_u8(VALUE_VERSION);
        out.put_u64(self.version.0);
        out.put_slice(&self.value);
        out.freeze()
    }

    /// Decodes the stored form; the value shares `stored`'s buffer.
    ///
    /// # Errors
    /// [`DecodeError`] for a short record, an unknown version byte, or version 0.
    pub fn decode(stored: &Bytes) -> Result<Self, DecodeError> {
        let header: &[u8; VALUE_HEADER_BYTES] = stored
            .get(..VALUE_HEADER_BYTES)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| DecodeError(format!("a stored value of {} bytes", stored.len())))?;
        if header[0] != VALUE_VERSION {
            return Err(DecodeError(format!("unknown stored value version {}", header[0])));
        }
        let version = Version(u64::from_be_bytes(header[1..].try_into().expect("8 bytes")));
        if version == Version::ABSENT {
            return Err(DecodeError("a stored value of version 0".into()));
        }
        Ok(Self { value: stored.slice(VALUE_HEADER_BYTES..), version })
    }
}

/// Encodes a shard's revision record: `1 ‖ revision u64`.
#[must_use]
pub fn encode_revision(revision: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(REVISION_BYTES);
    out.put_u8(REVISION_VERSION);
    out.put_u64(revision);
    out.freeze()
}

/// Decodes a shard's revision record.
///
/// # Errors
/// [`DecodeError`] for a record of the wrong length or version.
pub fn decode_revision(record: &[u8]) -> Result<u64, DecodeError> {
    let record: &[u8; REVISION_BYTES] = record
        .try_into()
        .map_err(|_| DecodeError(format!("a revision record of {} bytes", record.len())))?;
    if record[0] != REVISION_VERSION {
        return Err(DecodeError(format!("unknown revision record version {}", record[0])));
    }
    Ok(u64::from_be_bytes(record[1..].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn malformed_stored_values_and_revisions_are_refused() {
        let stored = Versioned { value: Bytes::from_static(b"v"), version: Version(7) }.encode();
        let mut other_version = stored.to_vec();
        other_version[0] = 2;
        let mut version_zero = stored.to_vec();
        version_zero[1..9].copy_from_slice(&0u64.to_be_bytes());
        for bad in [other_version, version_zero, stored[..8].to_vec()] {
            assert!(Versioned::decode(&Bytes::from(bad.clone())).is_err(), "{bad:02x?}");
        }
        assert_eq!(decode_revision(&encode_revision(9)), Ok(9));
        assert!(decode_revision(&encode_revision(9)[1..]).is_err());
        assert!(decode_revision(&[2, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    proptest! {
        #[test]
        fn stored_values_round_trip(
            value in proptest::collection::vec(any::<u8>(), 0..40), version in 1u64..,
        ) {
            let versioned = Versioned { value: Bytes::from(value), version: Version(version) };
            prop_assert_eq!(Versioned::decode(&versioned.encode()), Ok(versioned));
        }

        #[test]
        fn arbitrary_stored_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..30)) {
            let _ = Versioned::decode(&Bytes::from(bytes.clone()));
            let _ = decode_revision(&bytes);
        }
    }
}
