//! What the leader of a storage group does next to follow the controller (docs/migration.md),
//! decided from the group's [`Ownership`] and what the controller says, with no I/O: a
//! storage node's migrator and the simulator carry the same tasks out over their own
//! transports.
//!
//! | the group | task |
//! |---|---|
//! | a shard `Pulling { from }` | [`MigrationTask::Pull`] it from a replica of `from` |
//! | a shard `Confirming { from }` | [`MigrationTask::Confirm`]: `from` deletes its copy (unless the controller retired it: it held nothing then), then `ConfirmHandoff` |
//! | settled, at 0, listed from configuration `added` on | [`MigrationTask::Reconfigure`] to `added` |
//! | settled, behind the latest configuration | [`MigrationTask::Reconfigure`] to the next one |
//! | settled at the latest, removed, holding nothing | [`MigrationTask::Retire`] |
//!
//! Every task names its configuration, so carrying one out twice (two leaders, a retry) changes
//! nothing the second time; the state machine answers `Stale` then.

use std::collections::BTreeMap;

use mosaic_controller::{ConfigNum, GroupLife};
use mosaic_engine::{GroupId, ShardCursor, ShardId};
use mosaic_raft::NodeId;

use crate::ownership::{Ownership, ShardState};

/// One step a group's leader takes towards the latest configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationTask {
    /// Propose `Reconfigure { previous: next - 1, next }` to the group.
    Reconfigure {
        /// The group.
        group: GroupId,
        /// The configuration to switch to.
        next: ConfigNum,
    },
    /// Pull `shard`, which configuration `num` gave to the group, from a replica of `from`
    /// (one of `nodes`), starting at `resume`, installing each chunk through the group's log.
    Pull {
        /// The group.
        group: GroupId,
        /// The shard.
        shard: ShardId,
        /// The group's configuration.
        num: ConfigNum,
        /// The previous owner.
        from: GroupId,
        /// The previous owner's members as of configuration `num - 1`.
        nodes: Vec<NodeId>,
        /// Where the chunks installed so far end ([`Ownership::resume_point`]).
        resume: ShardCursor,
    },
    /// Have `from` delete its copy of `shard` (through `from`'s log), then propose
    /// `ConfirmHandoff` to the group. When the controller has retired `from`, its copy is
    /// gone (a group retires only once it holds nothing, and its replicas are then
    /// destroyed): only `ConfirmHandoff` is left to do, and asking `from` could never succeed.
    Confirm {
        /// The group.
        group: GroupId,
        /// The shard.
        shard: ShardId,
        /// The group's configuration.
        num: ConfigNum,
        /// The previous owner.
        from: GroupId,
        /// The previous owner's members as of configuration `num - 1`.
        nodes: Vec<NodeId>,
        /// True when the controller has retired `from`: skip the delete.
        from_retired: bool,
    },
    /// Tell the controller that the removed group holds nothing any more
    /// (`Command::RetireGroup`): every node then destroys its replica.
    Retire {
        /// The group.
        group: GroupId,
    },
}

/// What a task does, without its details: at most one task per key runs at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskKey {
    /// A [`MigrationTask::Reconfigure`] of the group.
    Reconfigure(GroupId),
    /// A [`MigrationTask::Pull`] of the group's shard.
    Pull(GroupId, ShardId),
    /// A [`MigrationTask::Confirm`] of the group's shard.
    Confirm(GroupId, ShardId),
    /// A [`MigrationTask::Retire`] of the group.
    Retire(GroupId),
}

impl MigrationTask {
    /// The task's key.
    #[must_use]
    pub fn key(&self) -> TaskKey {
        match *self {
            Self::Reconfigure { group, .. } => TaskKey::Reconfigure(group),
            Self::Pull { group, shard, .. } => TaskKey::Pull(group, shard),
            Self::Confirm { group, shard, .. } => TaskKey::Confirm(group, shard),
            Self::Retire { group } => TaskKey::Retire(group),
        }
    }
}

/// The tasks of `group`, which holds `ownership`, when `latest` is the latest configuration
/// and `lives` what the controller knows of every group (a group it does not know of, and
/// that has applied no configuration, waits).
#[must_use]
pub fn plan(
    group: GroupId,
    ownership: &Ownership,
    latest: ConfigNum,
    lives: &BTreeMap<GroupId, GroupLife>,
) -> Vec<MigrationTask> {
    let num = ownership.num;
    let life = lives.get(&group);
    if !ownership.is_settled() {
        return ownership
            .shards
            .iter()
            .filter_map(|(shard, state)| {
                let shard = *shard;
                let nodes = |from| ownership.sources.get(&from).cloned().unwrap_or_default();
                match *state {
                    ShardState::Pulling { from } => Some(MigrationTask::Pull {
                        group,
                        shard,
                        num,
                        from,
                        nodes: nodes(from),
                        resume: ownership.resume_point(shard),
                    }),
                    ShardState::Confirming { from } => Some(MigrationTask::Confirm {
                        group,
                        shard,
                        num,
                        from,
                        nodes: nodes(from),
                        from_retired: lives.get(&from).is_some_and(|life| life.retired),
                    }),
                    ShardState::Serving | ShardState::Sending { .. } => None,
                }
            })
            .collect();
    }
    let next =
        if num == ConfigNum(0) { life.map(|life| life.added) } else { Some(ConfigNum(num.0 + 1)) };
    match next {
        Some(next) if next <= latest => vec![MigrationTask::Reconfigure { group, next }],
        _ => match life {
            Some(life)
                if !life.retired
                    && life.removed.is_some_and(|removed| removed <= num)
                    && ownership.shards.is_empty() =>
            {
                vec![MigrationTask::Retire { group }]
            }
            _ => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: GroupId = GroupId(2);

    fn life(added: u64, removed: Option<u64>, retired: bool) -> BTreeMap<GroupId, GroupLife> {
        let life = GroupLife {
            added: ConfigNum(added),
            founders: vec![],
            removed: removed.map(ConfigNum),
            retired,
        };
        BTreeMap::from([(G, life)])
    }

    fn ownership(num: u64, shards: &[(u32, ShardState)]) -> Ownership {
        let shards: BTreeMap<_, _> =
            shards.iter().map(|(s, state)| (ShardId(*s), *state)).collect();
        let sources = [(GroupId(1), vec![NodeId(1), NodeId(2)])].into_iter().collect();
        Ownership { num: ConfigNum(num), shards, sources, resume: BTreeMap::new(), shard_count: 0 }
    }

    #[test]
    fn a_new_group_starts_at_the_configuration_that_added_it() {
        let fresh = Ownership::default();
        let tasks = plan(G, &fresh, ConfigNum(9), &life(4, None, false));
        assert_eq!(tasks, [MigrationTask::Reconfigure { group: G, next: ConfigNum(4) }]);
        // Also when it was removed before it applied anything: others may wait on it.
        let tasks = plan(G, &fresh, ConfigNum(9), &life(4, Some(6), false));
        assert_eq!(tasks, [MigrationTask::Reconfigure { group: G, next: ConfigNum(4) }]);
        assert!(
            plan(G, &fresh, ConfigNum(9), &BTreeMap::new()).is_empty(),
            "unknown to the controller"
        );
    }

    #[test]
    fn a_settled_group_walks_one_configuration_at_a_time() {
        let settled = ownership(5, &[(0, ShardState::Serving)]);
        let tasks = plan(G, &settled, ConfigNum(9), &life(1, None, false));
        assert_eq!(tasks, [MigrationTask::Reconfigure { group: G, next: ConfigNum(6) }]);
        assert!(plan(G, &settled, ConfigNum(5), &life(1, None, false)).is_empty());
    }

    #[test]
    fn moving_shards_are_pulled_or_confirmed_and_hold_the_group_back() {
        let from = GroupId(1);
        let mut moving = ownership(
            5,
            &[
                (0, ShardState::Pulling { from }),
                (1, ShardState::Confirming { from }),
                (2, ShardState::Serving),
                (3, ShardState::Sending { to: Some(GroupId(3)) }),
            ],
        );
        let resume = ShardCursor::AfterData(bytes::Bytes::from("key-7"));
        moving.resume.insert(ShardId(0), resume.clone());
        let nodes = vec![NodeId(1), NodeId(2)];
        let tasks = plan(G, &moving, ConfigNum(9), &life(1, None, false));
        assert_eq!(
            tasks,
            [
                MigrationTask::Pull {
                    group: G,
                    shard: ShardId(0),
                    num: ConfigNum(5),
                    from,
                    nodes: nodes.clone(),
                    resume,
                },
                MigrationTask::Confirm {
                    group: G,
                    shard: ShardId(1),
                    num: ConfigNum(5),
                    from,
                    nodes,
                    from_retired: false
                },
            ]
        );
        assert_eq!(tasks[0].key(), TaskKey::Pull(G, ShardId(0)));
        // Once the controller retired the previous owner, its copy is gone: only the local
        // confirmation is left (found by the whole-cluster simulator: asking a destroyed
        // group to delete fails for ever, and the shard would never settle).
        let mut lives = life(1, None, false);
        let from_life = GroupLife {
            added: ConfigNum(1),
            founders: vec![],
            removed: Some(ConfigNum(5)),
            retired: true,
        };
        lives.insert(from, from_life);
        let tasks = plan(G, &moving, ConfigNum(9), &lives);
        assert!(matches!(tasks[1], MigrationTask::Confirm { from_retired: true, .. }), "{tasks:?}");
    }

    #[test]
    fn a_removed_group_retires_once_it_holds_nothing_at_the_latest_configuration() {
        let latest = ConfigNum(7);
        let sending = ownership(7, &[(3, ShardState::Sending { to: Some(GroupId(3)) })]);
        assert!(plan(G, &sending, latest, &life(2, Some(7), false)).is_empty());
        let empty = ownership(7, &[]);
        assert_eq!(
            plan(G, &empty, latest, &life(2, Some(7), false)),
            [MigrationTask::Retire { group: G }]
        );
        assert!(plan(G, &empty, latest, &life(2, Some(7), true)).is_empty(), "retired");
        assert!(plan(G, &empty, latest, &life(2, None, false)).is_empty(), "listed");
        // Behind the configuration that removed it: it walks on first.
        let behind = ownership(6, &[]);
        assert_eq!(
            plan(G, &behind, latest, &life(2, Some(7), false)),
            [MigrationTask::Reconfigure { group: G, next: ConfigNum(7) }]
        );
    }
}
