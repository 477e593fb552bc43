//! Cross-checks of the checker's parts on small random histories, against the definition (try
//! every order): the search alone, without the check before it, must agree with it; the check
//! before the search must only refute what it refutes. (The integration tests check the whole
//! against the same definition; these make sure neither part hides a bug of the other.)

use bytes::Bytes;
use mosaic_engine::ClientId;
use mosaic_raft::SplitMix64;

use super::history::{History, Operation, OperationRecord, Output};
use super::pruning::FailedConditions;
use super::verdict::{CheckLimits, KeyOutcome};
use super::{last_write, search};

/// Seeds per test: enough for every kind of history the generator makes, quick in debug.
const SEEDS: u64 = 20_000;

/// A history on one key of 2 to 9 operations from 2 to 4 clients over a tiny alphabet, with
/// some writes of unknown outcome and reads (and compare-and-set outcomes) that are right or
/// random.
fn random_history(rng: &mut SplitMix64) -> History {
    const WRITTEN: [&str; 4] = ["x", "y", "xy", ""];
    const READ: [Option<&str>; 7] =
        [None, Some(""), Some("x"), Some("y"), Some("xy"), Some("yx"), Some("xyx")];
    let mut history = History::new();
    let clients = 2 + rng.below(3);
    let mut next_call = vec![0; clients as usize];
    let mut value: Option<Vec<u8>> = None;
    for _ in 0..2 + rng.below(8) {
        let client = rng.below(clients);
        let written = Bytes::from_static(WRITTEN[rng.below(4) as usize].as_bytes());
        let operation = match rng.below(10) {
            0..3 => Operation::Get,
            3 | 4 => Operation::Put(written),
            5 | 6 => Operation::Append(written),
            7 => Operation::Delete,
            _ => {
                let expected = READ[rng.below(5) as usize].map(|text| Bytes::from(text.as_bytes()));
                let new = (rng.below(3) != 0).then_some(written);
                Operation::CompareAndSet { expected, new }
            }
        };
        let call = next_call[client as usize] + rng.below(4);
        let id = history.record_call(ClientId(client), "k", operation.clone(), call);
        let ret = call + rng.below(8);
        next_call[client as usize] = ret;
        // Reads are those of applying the operations in recording order, or random.
        match &operation {
            Operation::Get => {
                let read = if rng.below(3) == 0 {
                    READ[rng.below(READ.len() as u64) as usize]
                        .map(|text| Bytes::from_static(text.as_bytes()))
                } else {
                    value.clone().map(Bytes::from)
                };
                history.record_return(id, Output::Value(read), ret);
                continue;
            }
            Operation::Put(bytes) => value = Some(bytes.to_vec()),
            Operation::Append(bytes) => value.get_or_insert_with(Vec::new).extend_from_slice(bytes),
            Operation::Delete => value = None,
            Operation::CompareAndSet { expected, new } => {
                let holds = expected.as_deref() == value.as_deref();
                if holds {
                    value = new.as_deref().map(<[u8]>::to_vec);
                }
                if rng.below(5) != 0 {
                    // Right or, one time in three, random.
                    let written = if rng.below(3) == 0 { rng.below(2) == 0 } else { holds };
                    let output = if written { Output::Written } else { Output::ConditionFailed };
                    history.record_return(id, output, ret);
                    continue;
                }
            }
        }
        if rng.below(5) == 0 {
            history.record_unknown(id);
        } else {
            history.record_return(id, Output::Written, ret);
        }
    }
    history
}

/// The operations the checker looks at: writes, and gets that returned.
fn checked(history: &History) -> Vec<&OperationRecord> {
    history.operations().iter().filter(|record| record.is_checked()).collect()
}

/// The definition: some order of the operations keeps real time and explains every read;
/// writes of unknown outcome may be left out.
fn linearizable_by_definition(operations: &[&OperationRecord]) -> bool {
    fn extend(operations: &[&OperationRecord], placed: &mut [bool], value: Option<&[u8]>) -> bool {
        let left: Vec<usize> = (0..operations.len()).filter(|index| !placed[*index]).collect();
        if left.iter().all(|index| operations[*index].return_time().is_none()) {
            return true;
        }
        for &next in &left {
            if left.iter().any(|other| operations[*other].precedes(operations[next])) {
                continue;
            }
            let after: Option<Vec<u8>> = match &operations[next].operation {
                Operation::Get => {
                    if operations[next].read().expect("returned").map(|read| &read[..]) != value {
                        continue;
                    }
                    value.map(<[u8]>::to_vec)
                }
                Operation::Put(bytes) => Some(bytes.to_vec()),
                Operation::Append(bytes) => Some([value.unwrap_or_default(), bytes].concat()),
                Operation::Delete => None,
                Operation::CompareAndSet { expected, new } => {
                    let holds = expected.as_deref() == value;
                    let took_effect = !operations[next].condition_failed();
                    let returned = operations[next].return_time().is_some();
                    if returned && holds != took_effect {
                        continue;
                    }
                    if holds {
                        new.as_deref().map(<[u8]>::to_vec)
                    } else {
                        value.map(<[u8]>::to_vec)
                    }
                }
            };
            placed[next] = true;
            let found = extend(operations, placed, after.as_deref());
            placed[next] = false;
            if found {
                return true;
            }
        }
        false
    }
    extend(operations, &mut vec![false; operations.len()], None)
}

fn describe(history: &History) -> String {
    history.operations().iter().map(|record| format!("\n  {record}")).collect()
}

#[test]
fn the_search_alone_agrees_with_trying_every_order() {
    let mut verdicts = [0_u32; 2];
    for seed in 0..SEEDS {
        let history = random_history(&mut SplitMix64::new(seed));
        let operations = checked(&history);
        let expected = linearizable_by_definition(&operations);
        let limits = CheckLimits::default();
        let outcome = search::search(&operations, &limits, FailedConditions::Counted).outcome;
        let found = match outcome {
            KeyOutcome::Linearizable { .. } => true,
            KeyOutcome::NotLinearizable(_) => false,
            KeyOutcome::Unknown => panic!("seed {seed}: undecided{}", describe(&history)),
        };
        assert_eq!(found, expected, "seed {seed}: the search says {found}{}", describe(&history));
        // The relaxed pass finds no linearization where there is none.
        let relaxed = search::search(&operations, &limits, FailedConditions::Ignored).outcome;
        if matches!(relaxed, KeyOutcome::Linearizable { .. }) {
            assert!(expected, "seed {seed}: the relaxed search says true{}", describe(&history));
        }
        verdicts[usize::from(expected)] += 1;
    }
    assert!(verdicts.iter().all(|count| *count > SEEDS as u32 / 5), "{verdicts:?}");
}

#[test]
fn the_check_before_the_search_refutes_only_what_is_not_linearizable() {
    let mut refuted = 0_u32;
    let mut missed = 0_u32;
    for seed in 0..SEEDS {
        let history = random_history(&mut SplitMix64::new(seed));
        let operations = checked(&history);
        let expected = linearizable_by_definition(&operations);
        match last_write::unexplained_read(&operations) {
            Some(read) => {
                assert!(
                    !expected,
                    "seed {seed}: wrongly refuted by {read:?}{}",
                    describe(&history)
                );
                refuted += 1;
            }
            None if !expected => missed += 1,
            None => {}
        }
    }
    // It catches most violations of histories this small, and leaves some to the search.
    assert!(refuted > missed && missed > 0, "refuted {refuted}, missed {missed}");
}
