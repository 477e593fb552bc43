//! Loading many keys ([`Client::put_all`]): each shard's keys go in atomic batches of puts,
//! several batches in flight at once, so that a load costs one request and one log entry per
//! batch rather than per key (docs/api.md "Loading").
//!
//! The entries are read lazily ([`Batcher`]): a shard's puts wait in a buffer until it holds
//! [`LoadOptions::batch_keys_max`] keys, or until the next would take it past
//! [`LoadOptions::batch_bytes_max`]; the buffers left are sent once the entries end. So a load
//! holds at most one buffer per shard and [`LoadOptions::parallel`] batches in flight.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use futures_util::StreamExt as _;
use mosaic_engine::ShardId;
use mosaic_shardkv::BATCH_ITEMS_MAX;
use mosaic_types::shard_for_key;

use crate::batch::Batch;
use crate::client::Client;
use crate::error::{ClientError, Result, WriteOutcome};
use crate::routing::RoutingSource;

/// What each entry of a load batch counts for beyond its key and value: more than its framing
/// in the request, so that a batch's counted bytes bound its encoded size.
const LOAD_ENTRY_OVERHEAD_BYTES: usize = 16;

/// How [`Client::put_all`] loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Batches in flight at once (at least 1).
    pub parallel: usize,
    /// Keys per batch, at most (1 to 256, the most a batch holds).
    pub batch_keys_max: usize,
    /// Bytes of keys and values per batch, at most, except that a batch always holds one key:
    /// keep it below the nodes' `key-bytes-max` plus `value-bytes-max`, the largest request
    /// they take.
    pub batch_bytes_max: usize,
}

impl Default for LoadOptions {
    /// 8 batches in flight, of up to 256 keys and 256 KiB each.
    fn default() -> Self {
        Self { parallel: 8, batch_keys_max: BATCH_ITEMS_MAX, batch_bytes_max: 256 << 10 }
    }
}

impl LoadOptions {
    /// Why these options cannot load, if they cannot.
    fn refusal(&self) -> Option<String> {
        if self.parallel == 0 || self.batch_bytes_max == 0 {
            return Some("a load needs at least one batch in flight, and bytes per batch".into());
        }
        (self.batch_keys_max == 0 || self.batch_keys_max > BATCH_ITEMS_MAX).then(|| {
            format!("a load batch holds 1 to {BATCH_ITEMS_MAX} keys, not {}", self.batch_keys_max)
        })
    }
}

/// What a load wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Keys written (an entry of a key given twice counts twice).
    pub keys: u64,
    /// Batches that wrote them.
    pub batches: u64,
}

impl<S: RoutingSource> Client<S> {
    /// Puts every entry of `entries`, in batches of one shard's keys, `options.parallel`
    /// batches at once: the way to load many keys. Each batch takes effect all at once, exactly
    /// once, like [`Client::batch`]; the load as a whole is not atomic, and batches of
    /// different shards, or of one shard, take effect in any order, so a key given twice keeps
    /// either value. The entries are read as the batches go out: memory holds one batch per
    /// shard and the batches in flight (docs/api.md "Loading").
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] (nothing sent) for options that cannot load;
    /// otherwise the first error of a batch, as [`Client::batch`] fails: the load stops
    /// there, the batches answered before it are written, and those still in flight may or
    /// may not be (loading the same entries again is safe: puts of the same values).
    pub async fn put_all<I, K, V>(&self, entries: I, options: LoadOptions) -> Result<LoadSummary>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Bytes>,
        V: Into<Bytes>,
    {
        if let Some(reason) = options.refusal() {
            return Err(ClientError::InvalidArgument { reason, outcome: WriteOutcome::NotApplied });
        }
        let shard_count = self.warm_up().await?.shard_count();
        let entries = entries.into_iter().map(|(key, value)| (key.into(), value.into()));
        let batches = Batcher::new(entries, shard_count, &options);
        let mut answers = futures_util::stream::iter(
            batches.map(|(keys, batch)| async move { self.batch(batch).await.map(|_| keys) }),
        )
        .buffer_unordered(options.parallel);
        let mut summary = LoadSummary::default();
        while let Some(answer) = answers.next().await {
            summary.keys += answer?;
            summary.batches += 1;
        }
        Ok(summary)
    }
}

/// A shard's puts waiting to go out.
#[derive(Default)]
struct Buffer {
    batch: Batch,
    keys: u64,
    bytes: usize,
}

impl Buffer {
    /// The batch and the keys it holds, leaving the buffer empty.
    fn take(&mut self) -> (u64, Batch) {
        let full = std::mem::take(self);
        (full.keys, full.batch)
    }
}

/// Turns entries into batches of one shard's puts, reading the entries only as far as the
/// next batch needs. Each item is a batch and the keys it holds.
pub(crate) struct Batcher<I> {
    entries: I,
    shard_count: u32,
    keys_max: u64,
    bytes_max: usize,
    buffers: BTreeMap<ShardId, Buffer>,
    /// Batches ready to go out.
    ready: VecDeque<(u64, Batch)>,
}

impl<I> Batcher<I> {
    /// Batches of `entries`' keys among `shard_count` shards, within `options`' limits.
    pub(crate) fn new(entries: I, shard_count: u32, options: &LoadOptions) -> Self {
        Self {
            entries,
            shard_count,
            keys_max: options.batch_keys_max as u64,
            bytes_max: options.batch_bytes_max,
            buffers: BTreeMap::new(),
            ready: VecDeque::new(),
        }
    }
}

impl<I: Iterator<Item = (Bytes, Bytes)>> Iterator for Batcher<I> {
    type Item = (u64, Batch);

    fn next(&mut self) -> Option<Self::Item> {
        while self.ready.is_empty() {
            let Some((key, value)) = self.entries.next() else {
                let (_, mut buffer) = self.buffers.pop_first()?;
                return Some(buffer.take());
            };
            let cost = key.len() + value.len() + LOAD_ENTRY_OVERHEAD_BYTES;
            let buffer = self.buffers.entry(shard_for_key(&key, self.shard_count)).or_default();
            if buffer.keys > 0 && buffer.bytes + cost > self.bytes_max {
                self.ready.push_back(buffer.take());
            }
            buffer.batch = std::mem::take(&mut buffer.batch).put(key, value);
            buffer.keys += 1;
            buffer.bytes += cost;
            if buffer.keys >= self.keys_max {
                self.ready.push_back(buffer.take());
            }
        }
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mosaic_engine::GroupId;
    use mosaic_raft::NodeId;

    use super::*;
    use crate::client::{ClientOptions, Consistency};
    use crate::routing::{Routing, StaticRouting};
    use crate::testing::fake_node::FakeNode;

    fn entries(count: usize, value_bytes: usize) -> Vec<(Bytes, Bytes)> {
        (0..count)
            .map(|index| {
                let value = format!("{index:0value_bytes$}");
                (Bytes::from(format!("key-{index}")), Bytes::from(value))
            })
            .collect()
    }

    /// Every entry goes out once, each batch within one shard and within both limits (but
    /// for a lone entry over the byte limit), and no more entries are read than the
    /// batches so far and one buffer per shard hold.
    #[test]
    fn batches_hold_one_shards_keys_within_the_limits_and_read_entries_lazily() {
        let shard_count = 8;
        let options = LoadOptions { parallel: 1, batch_keys_max: 10, batch_bytes_max: 400 };
        let mut all = entries(500, 20);
        all.push((Bytes::from_static(b"huge"), Bytes::from(vec![b'h'; 1_000])));
        let read = std::cell::Cell::new(0_usize);
        let counted = all.iter().cloned().inspect(|_| read.set(read.get() + 1));
        let batcher = Batcher::new(counted, shard_count, &options);
        let mut seen = BTreeMap::new();
        let mut batches = 0;
        for (keys, batch) in batcher {
            batches += 1;
            let sent: u64 = seen.values().sum();
            assert!(
                read.get() as u64 <= sent + keys + u64::from(shard_count) * 10,
                "{} entries read for {sent} sent",
                read.get()
            );
            assert_eq!(keys as usize, batch.writes.len());
            assert!(batch.conditions.is_empty() && (1..=10).contains(&batch.writes.len()));
            let bytes: usize = batch
                .writes
                .iter()
                .map(|write| write.key.len() + write.value.len() + LOAD_ENTRY_OVERHEAD_BYTES)
                .sum();
            assert!(bytes <= 400 || batch.writes.len() == 1, "{bytes} bytes in {batch:?}");
            assert!(batch.check_one_shard(shard_count).is_ok(), "{batch:?}");
            for write in &batch.writes {
                *seen.entry(write.key.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), all.len());
        assert!(seen.values().all(|count| *count == 1));
        assert!(batches >= 500 / 10, "{batches} batches");
    }

    /// A client that routes by the controller loads as one with a fixed placement.
    #[tokio::test]
    async fn a_client_routed_by_the_controller_loads() {
        let cluster = crate::testing::FakeCluster::start(4).await;
        let client = Client::connect(cluster.controllers(), ClientOptions::default()).unwrap();
        let summary = client.put_all(entries(300, 4), LoadOptions::default()).await.unwrap();
        assert_eq!(summary.keys, 300);
        assert_eq!(summary.batches, cluster.node().received().len() as u64);
        let read = client.get("key-299", Consistency::Linearizable).await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"0299"[..]));
    }

    #[tokio::test]
    async fn a_load_writes_every_key_in_batches_of_one_shard() {
        let node = FakeNode::start().await;
        let nodes = BTreeMap::from([(NodeId(1), node.address())]);
        let routing = Routing::single_group(GroupId(1), nodes, 8).unwrap();
        let client = Client::new(StaticRouting::new(routing), ClientOptions::default()).unwrap();
        let loaded = entries(1_000, 8);
        let options = LoadOptions { parallel: 4, ..LoadOptions::default() };
        let summary = client.put_all(loaded.clone(), options).await.unwrap();
        assert_eq!(summary.keys, 1_000);
        let received = node.received();
        assert!(received.iter().all(|request| request.method == "batch"));
        assert_eq!(summary.batches, received.len() as u64);
        // 1,000 keys over 8 shards: a few batches a shard, not one request a key.
        assert!(summary.batches <= 16, "{summary:?}");
        for (key, value) in loaded.iter().step_by(97) {
            let read = client.get(key.clone(), Consistency::Linearizable).await.unwrap();
            assert_eq!(read.as_ref(), Some(value));
        }

        let nothing = client.put_all(Vec::<(Bytes, Bytes)>::new(), LoadOptions::default()).await;
        assert_eq!(nothing, Ok(LoadSummary::default()));
        let bad = LoadOptions { batch_keys_max: BATCH_ITEMS_MAX + 1, ..LoadOptions::default() };
        let refused = client.put_all(loaded, bad).await.unwrap_err();
        assert!(matches!(refused, ClientError::InvalidArgument { .. }), "{refused:?}");
    }
}
