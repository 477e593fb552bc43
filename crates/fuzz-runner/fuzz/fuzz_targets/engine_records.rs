//! The engine's records (crates/engine/src/codec.rs: log entries, Raft state, snapshot
//! metadata, the store's identity), its keys (crates/engine/src/keys.rs, as read back from
//! the store) and the chunks of a snapshot stream (crates/raftstore/src/snapshot.rs). Any
//! input decodes or is refused, never panics; what decodes encodes to something that decodes
//! to the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mosaic_engine::{GroupId, codec, keys};
use mosaic_raftstore::snapshot;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(entry) = codec::decode_entry(&bytes) {
        let again = codec::decode_entry(&Bytes::from(codec::encode_entry(&entry)));
        assert_eq!(again.ok(), Some(entry));
    }
    if let Ok(state) = codec::decode_hard_state(data) {
        assert_eq!(codec::decode_hard_state(&codec::encode_hard_state(&state)).ok(), Some(state));
    }
    if let Ok(state) = codec::decode_conf_state(data) {
        assert_eq!(codec::decode_conf_state(&codec::encode_conf_state(&state)).ok(), Some(state));
    }
    if let Ok(metadata) = codec::decode_snapshot_metadata(data) {
        let again = codec::decode_snapshot_metadata(&codec::encode_snapshot_metadata(&metadata));
        assert_eq!(again.ok(), Some(metadata));
    }
    if let Ok(identity) = codec::decode_identity(data) {
        assert_eq!(codec::decode_identity(&codec::encode_identity(&identity)).ok(), Some(identity));
    }
    // The group of the seeds' log keys.
    let group = GroupId(7);
    if let Some(index) = keys::parse_raft_log_key(group, data) {
        let again = keys::parse_raft_log_key(group, &keys::raft_log_key(group, index));
        assert_eq!(again, Some(index));
    }
    let _ = keys::parse_raft_state_key(data);
    let _ = keys::parse_session_key(data);
    let _ = keys::parse_shard(data);
    let _ = codec::decode_applied_index(data);
    let _ = codec::decode_format_version(data);
    if let Ok(records) = snapshot::decode_chunk(&bytes) {
        let again = snapshot::decode_chunk(&snapshot::encode_chunk(&records));
        assert_eq!(again.ok(), Some(records));
    }
});
