//! Opening a store that belongs to another node, has another format version, or is corrupted
//! fails with an error naming the path and the problem, and leaves every file byte-for-byte as
//! it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use mosaic_engine::conformance::{IDENTITY, entries};
use mosaic_engine::{
    ClusterId, ColumnFamily, Error, GroupId, KvEngine, NodeIdentity, RawOp, WriteBatch,
    WriteOptions, codec, keys,
};
use mosaic_engine_rocks::{RocksConfig, open};
use mosaic_raft::NodeId;

/// Every file under `directory` with its contents.
fn files(directory: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(directory).expect("list directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.insert(path.clone(), std::fs::read(&path).expect("read file"));
        }
    }
    out
}

/// Creates a store with some data in it and closes it.
fn make_store(path: &Path) {
    let engine = open(path, IDENTITY, &RocksConfig::small()).expect("create store");
    let mut batch = WriteBatch::new();
    batch.append(GroupId(1), entries(1, 10, 1, 100));
    batch.put_data(GroupId(1), mosaic_engine::ShardId(0), Bytes::from("k"), Bytes::from("v"));
    engine.write(&batch, WriteOptions { sync: true }).expect("write");
}

/// Overwrites one `meta` record through the raw backend, as a foreign or damaged store has it.
fn put_meta(path: &Path, key: &[u8], value: Vec<u8>) {
    let engine = open(path, IDENTITY, &RocksConfig::small()).expect("open store");
    let op = RawOp::Put { cf: ColumnFamily::Meta, key: key.to_vec(), value: value.into() };
    engine.kv().write(&[op], WriteOptions { sync: true }).expect("raw write");
}

/// Opens `path` as `identity`, expecting a failure; checks no file changed.
fn open_fails(path: &Path, identity: NodeIdentity) -> Error {
    let before = files(path);
    let error = match open(path, identity, &RocksConfig::small()) {
        Ok(_) => panic!("{} opened as {identity}", path.display()),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name the path: {message}"
    );
    let after = files(path);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "{message}");
    for (file, contents) in &before {
        assert!(after[file] == *contents, "{} changed by a refused open", file.display());
    }
    error
}

#[test]
fn a_store_of_another_node_or_cluster_is_refused_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store");
    make_store(&path);
    for other in [
        NodeIdentity { node_id: NodeId(9), ..IDENTITY },
        NodeIdentity { cluster_id: ClusterId(99), ..IDENTITY },
    ] {
        match open_fails(&path, other) {
            Error::WrongNode { found, expected, .. } => {
                assert_eq!((found, expected), (IDENTITY, other))
            }
            error => panic!("expected WrongNode, got {error}"),
        }
    }
    let engine = open(&path, IDENTITY, &RocksConfig::small()).expect("the owner still opens it");
    assert_eq!(engine.last_index(GroupId(1)), Ok(mosaic_raft::LogIndex(10)));
}

#[test]
fn an_unknown_format_version_is_refused_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store");
    make_store(&path);
    put_meta(&path, keys::META_FORMAT_VERSION, codec::encode_format_version(99));
    match open_fails(&path, IDENTITY) {
        Error::FormatVersion { found: 99, expected: codec::FORMAT_VERSION, .. } => {}
        error => panic!("expected FormatVersion, got {error}"),
    }
}

#[test]
fn an_undecodable_identity_record_is_corruption() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store");
    make_store(&path);
    put_meta(&path, keys::META_IDENTITY, vec![1, 2, 3]);
    match open_fails(&path, IDENTITY) {
        Error::Corruption { reason, .. } => assert!(reason.contains("node identity"), "{reason}"),
        error => panic!("expected Corruption, got {error}"),
    }
}

#[test]
fn a_damaged_manifest_is_refused_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store");
    make_store(&path);
    let current = std::fs::read_to_string(path.join("CURRENT")).unwrap();
    let manifest = path.join(current.trim());
    let mut bytes = std::fs::read(&manifest).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    std::fs::write(&manifest, bytes).unwrap();
    match open_fails(&path, IDENTITY) {
        Error::Corruption { .. } => {}
        error => panic!("expected Corruption, got {error}"),
    }
}

#[test]
fn a_directory_of_other_files_is_not_a_store() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("notes.txt"), "not a database").unwrap();
    match open_fails(directory.path(), IDENTITY) {
        Error::NotAStore { reason, .. } => assert!(reason.contains("no CURRENT"), "{reason}"),
        error => panic!("expected NotAStore, got {error}"),
    }
}
