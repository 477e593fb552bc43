//! The conformance suite and the log model property test, run against the in-memory backend.

use mosaic_engine::MemKv;
use mosaic_engine::conformance::{self, KvFactory, ModelOp};
use proptest::prelude::*;

/// Makes numbered in-memory stores; a reopen keeps every write, as a clean shutdown does.
struct MemFactory {
    created: u32,
}

impl KvFactory for MemFactory {
    type Kv = MemKv;

    fn create(&mut self) -> MemKv {
        self.created += 1;
        MemKv::new(&format!("conformance-{}", self.created))
    }

    fn reopen(&mut self, kv: MemKv) -> MemKv {
        kv.reopen()
    }
}

mosaic_engine::conformance_tests!(MemFactory { created: 0 });

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn log_store_matches_a_model(ops in proptest::collection::vec(
        (0u8..ModelOp::KINDS, any::<u16>(), any::<u16>()).prop_map(ModelOp::from_parts),
        1..60,
    )) {
        conformance::log_store_matches_model(&mut MemFactory { created: 0 }, &ops);
    }
}
