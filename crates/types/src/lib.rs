//! The vocabulary every Mosaic crate shares, with no dependency of its own: the ids of groups,
//! shards, clients and clusters, the function that puts a key in its shard, where the keys of
//! a prefix end, and the id of the controller's group. The node, the client, the controller and the simulator use these one
//! definitions.
#![deny(missing_docs)]

mod ids;
mod range;
mod shard;

pub use ids::{CONTROLLER_GROUP, ClientId, ClusterId, GroupId, ShardId};
pub use range::prefix_end;
pub use shard::{fnv1a_64, hash_tag, shard_for_key};
