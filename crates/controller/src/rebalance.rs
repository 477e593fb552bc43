//! Rebalancing: spread the shards over the groups as evenly as possible (the largest and the
//! smallest group differ by at most one shard) while moving as few shards as possible, and
//! deterministically (ties broken by group id, never by hash order). 6.824 Lab 4A.
//!
//! The targets: with `n` shards and `g` groups every group gets `n / g` shards, and the
//! `n % g` groups that already hold the most shards (lowest id first among equals) get one
//! more, which is what keeps the number of moves minimal. Unassigned shards and the surplus of
//! groups above their target (their highest-numbered shards) then go, lowest shard first, to
//! the groups below their target, lowest group id first.

use std::collections::{BTreeMap, BTreeSet};

use mosaic_engine::GroupId;

/// Returns the balanced assignment for `groups`, starting from `shards`. Shards owned by a
/// group not in `groups` count as unassigned. With `max_moves`, at most that many shards move
/// from one group to another (shards without an owner are always assigned), lowest shard
/// first, so a large rebalance can be spread over several configurations.
#[must_use]
pub fn rebalance(
    shards: &[Option<GroupId>],
    groups: &BTreeSet<GroupId>,
    max_moves: Option<u32>,
) -> Vec<Option<GroupId>> {
    let current: Vec<Option<GroupId>> =
        shards.iter().map(|owner| owner.filter(|g| groups.contains(g))).collect();
    if groups.is_empty() {
        return current;
    }
    let shard_count = current.len();
    let base = shard_count / groups.len();
    let extra = shard_count % groups.len();

    let mut owned: BTreeMap<GroupId, Vec<usize>> =
        groups.iter().map(|g| (*g, Vec::new())).collect();
    for (shard, owner) in current.iter().enumerate() {
        if let Some(group) = owner {
            owned.get_mut(group).expect("filtered to known groups").push(shard);
        }
    }
    // The groups holding the most shards keep the extra ones; ties go to the lower id.
    let mut by_size: Vec<GroupId> = groups.iter().copied().collect();
    by_size.sort_by_key(|g| (std::cmp::Reverse(owned[g].len()), *g));
    let target: BTreeMap<GroupId, usize> = by_size
        .iter()
        .enumerate()
        .map(|(rank, g)| (*g, base + usize::from(rank < extra)))
        .collect();

    let mut free: BTreeSet<usize> =
        current.iter().enumerate().filter(|(_, o)| o.is_none()).map(|(s, _)| s).collect();
    for (group, shards) in &mut owned {
        while shards.len() > target[group] {
            free.insert(shards.pop().expect("above target, so not empty"));
        }
    }

    let mut next = current.clone();
    let mut free = free.into_iter();
    for (group, shards) in &owned {
        for _ in shards.len()..target[group] {
            let shard = free.next().expect("targets add up to the shard count");
            next[shard] = Some(*group);
        }
    }
    assert!(free.next().is_none(), "every shard has a target");

    let Some(limit) = max_moves else { return next };
    let mut moves_left = limit;
    for (shard, owner) in next.iter_mut().enumerate() {
        let from = current[shard];
        if from.is_some() && from != *owner {
            if moves_left == 0 {
                *owner = from;
            } else {
                moves_left -= 1;
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(ids: &[u64]) -> BTreeSet<GroupId> {
        ids.iter().map(|id| GroupId(*id)).collect()
    }

    fn counts(shards: &[Option<GroupId>]) -> BTreeMap<GroupId, usize> {
        let mut counts = BTreeMap::new();
        for owner in shards.iter().flatten() {
            *counts.entry(*owner).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn first_group_gets_every_shard() {
        let next = rebalance(&[None; 10], &groups(&[7]), None);
        assert!(next.iter().all(|o| *o == Some(GroupId(7))));
    }

    #[test]
    fn a_joining_group_takes_only_its_share() {
        let start = vec![Some(GroupId(1)); 10];
        let next = rebalance(&start, &groups(&[1, 2]), None);
        assert_eq!(counts(&next)[&GroupId(1)], 5);
        assert_eq!(counts(&next)[&GroupId(2)], 5);
        // Group 1 keeps its lowest shards; the highest move.
        assert!(next[..5].iter().all(|o| *o == Some(GroupId(1))));
    }

    #[test]
    fn extra_shards_stay_with_the_fullest_groups() {
        // 10 shards, 3 groups: 4/3/3. Group 1 holds the most (6), so it keeps the extra one.
        let mut start = vec![Some(GroupId(1)); 6];
        start.extend(vec![Some(GroupId(2)); 4]);
        let next = rebalance(&start, &groups(&[1, 2, 3]), None);
        let moved = start.iter().zip(&next).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 3, "only the surplus moves: {next:?}");
        assert_eq!(counts(&next)[&GroupId(1)], 4);
        assert_eq!(counts(&next)[&GroupId(2)], 3);
    }

    #[test]
    fn max_moves_limits_group_to_group_moves_but_places_orphans() {
        let mut start = vec![Some(GroupId(1)); 8];
        start.extend(vec![None; 2]);
        let next = rebalance(&start, &groups(&[1, 2]), Some(1));
        let moved = start.iter().zip(&next).filter(|(a, b)| a.is_some() && a != b).count();
        assert_eq!(moved, 1);
        assert!(next.iter().all(Option::is_some), "orphans are always placed: {next:?}");
    }
}
