//! The shard key-value store's records (crates/shardkv): commands in a group's log (writes
//! and migration steps), sessions, stored values, shard revisions and ownership records in
//! its store. Any input decodes or
//! is refused, never panics; what decodes encodes to something that decodes to the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mosaic_shardkv::version::{decode_revision, encode_revision};
use mosaic_shardkv::{KvCommand, Ownership, Session, Versioned};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(command) = KvCommand::decode(&bytes) {
        assert_eq!(KvCommand::decode(&command.encode()).ok(), Some(command));
    }
    if let Ok(session) = Session::decode(data) {
        assert_eq!(Session::decode(&session.encode()).ok(), Some(session));
    }
    if let Ok(stored) = Versioned::decode(&bytes) {
        assert_eq!(Versioned::decode(&stored.encode()).ok(), Some(stored));
    }
    if let Ok(revision) = decode_revision(data) {
        assert_eq!(decode_revision(&encode_revision(revision)).ok(), Some(revision));
    }
    if let Ok(ownership) = Ownership::decode(data) {
        assert_eq!(Ownership::decode(&ownership.encode()).ok(), Some(ownership));
    }
});
