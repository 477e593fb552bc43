//! The conformance suite and the log model property test (with reopens), run against RocksDB.

use mosaic_engine::KvEngine;
use mosaic_engine::conformance::{self, IDENTITY, KvFactory, ModelOp};
use mosaic_engine_rocks::{RocksConfig, RocksKv};
use proptest::prelude::*;
use tempfile::TempDir;

/// Makes stores in fresh temporary directories, removed when the factory is dropped.
struct RocksFactory {
    directories: Vec<TempDir>,
}

impl RocksFactory {
    fn new() -> Self {
        Self { directories: Vec::new() }
    }
}

impl KvFactory for RocksFactory {
    type Kv = RocksKv;

    fn create(&mut self) -> RocksKv {
        let directory = tempfile::tempdir().expect("create a temporary directory");
        let path = directory.path().join("store");
        self.directories.push(directory);
        RocksKv::open(&path, IDENTITY, &RocksConfig::small()).expect("create a store")
    }

    fn reopen(&mut self, kv: RocksKv) -> RocksKv {
        let path = kv.path().to_path_buf();
        drop(kv);
        RocksKv::open(&path, IDENTITY, &RocksConfig::small())
            .unwrap_or_else(|error| panic!("reopen {}: {error}", path.display()))
    }
}

mosaic_engine::conformance_tests!(RocksFactory::new());

proptest! {
    // Each case opens RocksDB a few times; fewer cases than the in-memory run keep this fast.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn log_store_matches_a_model_across_reopens(ops in proptest::collection::vec(
        (0u8..ModelOp::KINDS, any::<u16>(), any::<u16>()).prop_map(ModelOp::from_parts),
        1..50,
    )) {
        conformance::log_store_matches_model(&mut RocksFactory::new(), &ops);
    }
}
