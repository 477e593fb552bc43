//! One numbered configuration: which group owns each shard and which nodes host each group
//! (6.824 Lab 4's `Config`).
//!
//! Invariant: every group named in `shards` is a key of `groups`, and every group has at least
//! one member.

use std::collections::BTreeMap;
use std::fmt;

use mosaic_engine::{GroupId, ShardId};
use mosaic_raft::NodeId;

/// The number of a configuration. Configuration 0 has no groups and no assigned shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigNum(pub u64);

impl fmt::Display for ConfigNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The placement of every shard and every group at one point of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    /// This configuration's number.
    pub num: ConfigNum,
    /// `shards[s]` is the group that owns shard `s`, or `None` when no group does.
    pub shards: Vec<Option<GroupId>>,
    /// Every group and the nodes that host its replicas, in id order.
    pub groups: BTreeMap<GroupId, Vec<NodeId>>,
}

impl Configuration {
    /// Configuration 0: `shard_count` unassigned shards and no groups.
    #[must_use]
    pub fn initial(shard_count: u32) -> Self {
        Self {
            num: ConfigNum(0),
            shards: vec![None; shard_count as usize],
            groups: BTreeMap::new(),
        }
    }

    /// The number of shards (fixed when the cluster is created).
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The group that owns `shard`, if any.
    #[must_use]
    pub fn owner(&self, shard: ShardId) -> Option<GroupId> {
        self.shards.get(shard.0 as usize).copied().flatten()
    }

    /// The shards owned by `group`, in order.
    #[must_use]
    pub fn shards_of(&self, group: GroupId) -> Vec<ShardId> {
        (0..self.shard_count()).map(ShardId).filter(|s| self.owner(*s) == Some(group)).collect()
    }

    /// Shard count per group (groups that own nothing included), in group order.
    #[must_use]
    pub fn shard_counts(&self) -> BTreeMap<GroupId, usize> {
        let mut counts: BTreeMap<GroupId, usize> = self.groups.keys().map(|g| (*g, 0)).collect();
        for owner in self.shards.iter().flatten() {
            *counts.entry(*owner).or_default() += 1;
        }
        counts
    }

    /// Checks the invariant; panics with the offending values if it does not hold.
    pub(crate) fn assert_valid(&self) {
        if let Err(reason) = self.check_valid() {
            panic!("{reason}");
        }
    }

    /// Checks the invariant (for a configuration read back from storage, which must not
    /// panic); returns what is wrong, with the offending values.
    pub(crate) fn check_valid(&self) -> std::result::Result<(), String> {
        for (shard, owner) in self.shards.iter().enumerate() {
            if let Some(group) = owner
                && !self.groups.contains_key(group)
            {
                return Err(format!(
                    "configuration {}: shard {shard} owned by unknown group {group}",
                    self.num
                ));
            }
        }
        for (group, members) in &self.groups {
            if members.is_empty() {
                return Err(format!("configuration {}: group {group} is empty", self.num));
            }
        }
        Ok(())
    }
}

/// One shard changing owner between two configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardMove {
    /// The shard.
    pub shard: ShardId,
    /// The previous owner (`None`: unassigned).
    pub from: Option<GroupId>,
    /// The new owner (`None`: unassigned).
    pub to: Option<GroupId>,
}

/// Lists the shards whose owner differs between `before` and `after`, in shard order.
#[must_use]
pub fn shard_moves(before: &[Option<GroupId>], after: &[Option<GroupId>]) -> Vec<ShardMove> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(shard, (from, to))| ShardMove { shard: ShardId(shard as u32), from: *from, to: *to })
        .collect()
}
