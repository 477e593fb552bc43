//! Property tests of rebalancing over random sequences of group additions, removals and
//! moves: the result is balanced, moves the fewest shards possible, and is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use mosaic_controller::rebalance::rebalance;
use mosaic_engine::GroupId;
use proptest::prelude::*;

/// The fewest moves any balanced assignment needs from `shards` over `groups` (computed
/// independently of the algorithm): every orphan moves, and every group above its target
/// sheds its surplus, where only `n % g` groups may keep one shard above `n / g`.
fn minimum_moves(shards: &[Option<GroupId>], groups: &BTreeSet<GroupId>) -> usize {
    let n = shards.len();
    let g = groups.len();
    let (base, extra) = (n / g, n % g);
    let mut counts: BTreeMap<GroupId, usize> = groups.iter().map(|id| (*id, 0)).collect();
    let mut orphans = 0;
    for owner in shards {
        match owner.filter(|o| groups.contains(o)) {
            Some(owner) => *counts.get_mut(&owner).expect("known") += 1,
            None => orphans += 1,
        }
    }
    let above: Vec<usize> = counts.values().copied().filter(|c| *c > base).collect();
    let surplus: usize = above.iter().map(|c| c - base).sum::<usize>() - above.len().min(extra);
    orphans + surplus
}

#[derive(Clone, Debug)]
enum Op {
    Add(u64),
    Remove(u64),
    Move(usize, u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (1u64..12).prop_map(Op::Add),
        (1u64..12).prop_map(Op::Remove),
        (0usize..64, 1u64..12).prop_map(|(s, g)| Op::Move(s, g)),
    ];
    prop::collection::vec(op, 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn rebalance_is_balanced_minimal_and_deterministic(shard_count in 1usize..64, ops in ops()) {
        let mut shards: Vec<Option<GroupId>> = vec![None; shard_count];
        let mut groups: BTreeSet<GroupId> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Add(g) => { groups.insert(GroupId(g)); }
                Op::Remove(g) => { groups.remove(&GroupId(g)); }
                Op::Move(s, g) => {
                    // A move pins one shard without rebalancing, as in 6.824.
                    if groups.contains(&GroupId(g)) && s < shard_count {
                        shards[s] = Some(GroupId(g));
                    }
                    continue;
                }
            }
            let next = rebalance(&shards, &groups, None);
            if groups.is_empty() {
                prop_assert!(next.iter().all(|o| o.is_none() || !groups.contains(&o.unwrap())));
                shards = next;
                continue;
            }
            // Balanced: every shard owned by a live group; max - min <= 1.
            let mut counts: BTreeMap<GroupId, usize> = groups.iter().map(|g| (*g, 0)).collect();
            for owner in &next {
                let owner = owner.expect("every shard has an owner");
                prop_assert!(groups.contains(&owner));
                *counts.get_mut(&owner).unwrap() += 1;
            }
            let max = counts.values().max().unwrap();
            let min = counts.values().min().unwrap();
            prop_assert!(max - min <= 1, "unbalanced {:?}", counts);
            // Minimal.
            let moved = shards.iter().zip(&next).filter(|(a, b)| a != b).count();
            prop_assert_eq!(moved, minimum_moves(&shards, &groups));
            // Deterministic, whatever order the groups were added in.
            let reversed: BTreeSet<GroupId> = groups.iter().rev().copied().collect();
            prop_assert_eq!(&rebalance(&shards, &reversed, None), &next);
            // Idempotent.
            prop_assert_eq!(&rebalance(&next, &groups, None), &next);
            shards = next;
        }
    }

    #[test]
    fn max_moves_bounds_group_to_group_moves(
        shard_count in 1usize..64,
        owners in prop::collection::vec(prop::option::of(1u64..6), 64),
        group_ids in prop::collection::btree_set(1u64..8, 1..6),
        limit in 0u32..8,
    ) {
        let groups: BTreeSet<GroupId> = group_ids.into_iter().map(GroupId).collect();
        let shards: Vec<Option<GroupId>> =
            owners[..shard_count].iter().map(|o| o.map(GroupId)).collect();
        let next = rebalance(&shards, &groups, Some(limit));
        let live = |o: &Option<GroupId>| o.is_some_and(|g| groups.contains(&g));
        let between_groups = shards
            .iter()
            .zip(&next)
            .filter(|(a, b)| live(a) && a != b)
            .count();
        prop_assert!(between_groups <= limit as usize);
        prop_assert!(next.iter().all(live), "orphans are always placed");
    }
}
