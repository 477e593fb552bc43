//! Randomized tests of the linearizability checker, each seed replayable (the seeds are
//! printed; see [`support::run_seeds`]):
//!
//! - histories recorded from a real sequential execution, with random overlapping intervals
//!   around each operation's moment of effect and writes of unknown outcome, must pass, with a
//!   valid witness;
//! - the same histories with one read changed to a value that cannot be read there must fail;
//! - small histories with random results must get the verdict of a brute-force search;
//! - 2,000 operations on one key from 10 clients must be checked well within a second.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mosaic_engine::ClientId;
use mosaic_raft::SplitMix64;
use mosaic_sim::linearizability::{
    Completion, History, KeyOutcome, OpId, Operation, OperationRecord, Output, Verdict, Violation,
    check,
};
use support::{brute_force_linearizable, run_seeds, validate_witnesses};

/// The shape of a generated history.
#[derive(Clone, Copy, Debug)]
struct Shape {
    clients: u64,
    operations: u64,
    keys: u64,
    /// Percent of operations whose client gives up on them.
    unknown_percent: u64,
    /// A client waits `[0, think_max)` between operations.
    think_max: u64,
    /// The moment of effect is `[0, latency_max)` after the call, the return as long after it.
    latency_max: u64,
    /// Percent of operations that are compare-and-sets.
    cas_percent: u64,
}

/// A generated operation: what the client did and when it took effect, if it did.
struct Planned {
    client: u64,
    key: Bytes,
    operation: Operation,
    call: u64,
    /// `None`: gave up on (unknown outcome).
    ret: Option<u64>,
    /// `None`: never took effect (only for operations of unknown outcome).
    effect: Option<u64>,
}

/// Runs the operations of `planned` that took effect in the order of their moments, on one
/// copy of the data, and returns what each get read and whether each compare-and-set took
/// effect, by index. A compare-and-set expects what it is about to find two times in three, as
/// a client that read first does, else another value the key held or absent.
fn execute(rng: &mut SplitMix64, planned: &mut [Planned]) -> BTreeMap<usize, Output> {
    let mut by_effect: Vec<usize> =
        (0..planned.len()).filter(|index| planned[*index].effect.is_some()).collect();
    by_effect.sort_by_key(|index| (planned[*index].effect, *index));
    let mut store: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut held: BTreeMap<Bytes, Vec<Bytes>> = BTreeMap::new();
    let mut read: BTreeMap<usize, Output> = BTreeMap::new();
    for index in by_effect {
        let current = store.get(&planned[index].key).cloned();
        if let Operation::CompareAndSet { expected, .. } = &mut planned[index].operation {
            let earlier = held.get(&planned[index].key).map_or(&[][..], Vec::as_slice);
            *expected = match rng.below(3) {
                0 if !earlier.is_empty() => {
                    Some(earlier[rng.below(earlier.len() as u64) as usize].clone())
                }
                0 => None,
                _ => current,
            };
        }
        let op = &planned[index];
        match &op.operation {
            Operation::Get => {
                read.insert(index, Output::Value(store.get(&op.key).cloned()));
            }
            Operation::Put(value) => {
                store.insert(op.key.clone(), value.clone());
            }
            Operation::Append(suffix) => {
                let mut joined = store.get(&op.key).map(|value| value.to_vec()).unwrap_or_default();
                joined.extend_from_slice(suffix);
                store.insert(op.key.clone(), Bytes::from(joined));
            }
            Operation::Delete => {
                store.remove(&op.key);
            }
            Operation::CompareAndSet { expected, new } => {
                if store.get(&op.key) != expected.as_ref() {
                    read.insert(index, Output::ConditionFailed);
                    continue;
                }
                match new {
                    Some(value) => store.insert(op.key.clone(), value.clone()),
                    None => store.remove(&op.key),
                };
                read.insert(index, Output::Written);
            }
        }
        if let Some(value) = store.get(&op.key) {
            held.entry(op.key.clone()).or_default().push(value.clone());
        }
    }
    read
}

/// Values are `;`-terminated tokens that name the operation that wrote them (`p7;` for the
/// put of operation 7, `a9;` for an append, `c8;` for a compare-and-set), so any value splits
/// back into the writes that made it, and none is written twice.
fn generate(rng: &mut SplitMix64, shape: Shape) -> History {
    let mut next_call: Vec<u64> = (0..shape.clients).map(|_| rng.below(shape.think_max)).collect();
    let mut planned = Vec::new();
    for index in 0..shape.operations {
        let client = rng.below(shape.clients);
        let key = Bytes::from(format!("key{}", rng.below(shape.keys)));
        let operation = match rng.below(20) {
            _ if shape.cas_percent > 0 && rng.below(100) < shape.cas_percent => {
                // What it expects is chosen when it takes effect (see `execute`).
                let new = (rng.below(4) != 0).then(|| Bytes::from(format!("c{index};")));
                Operation::CompareAndSet { expected: None, new }
            }
            0..9 => Operation::Get,
            9..14 => Operation::Put(Bytes::from(format!("p{index};"))),
            14..18 => Operation::Append(Bytes::from(format!("a{index};"))),
            _ => Operation::Delete,
        };
        let call = next_call[client as usize];
        let (ret, effect) = if rng.below(100) < shape.unknown_percent {
            // The write may land long after the client gave up, or never.
            let effect = (rng.below(2) == 0).then(|| call + rng.below(shape.latency_max * 8));
            (None, effect)
        } else {
            let effect = call + rng.below(shape.latency_max);
            (Some(effect + rng.below(shape.latency_max)), Some(effect))
        };
        let client_free = ret.unwrap_or(call + shape.latency_max);
        next_call[client as usize] = client_free + rng.below(shape.think_max);
        planned.push(Planned { client, key, operation, call, ret, effect });
    }

    let outputs = execute(rng, &mut planned);

    // Each client's operations are in call order, so recording them one by one keeps every
    // client sequential; across clients the recording order is not the time order.
    record(planned, |index| outputs[&index].clone())
}

/// Records `planned` in call order per client; a get or a compare-and-set returns
/// `output(index)`, index being its position in `planned`, any other write `Written`.
fn record(planned: Vec<Planned>, mut output: impl FnMut(usize) -> Output) -> History {
    let mut history = History::new();
    for (index, op) in planned.into_iter().enumerate() {
        let id = history.record_call(ClientId(op.client), op.key, op.operation.clone(), op.call);
        let answers = matches!(op.operation, Operation::Get | Operation::CompareAndSet { .. });
        match op.ret {
            None => history.record_unknown(id),
            Some(time) if answers => history.record_return(id, output(index), time),
            Some(time) => history.record_return(id, Output::Written, time),
        }
    }
    history
}

const SMALL: Shape = Shape {
    clients: 4,
    operations: 40,
    keys: 2,
    unknown_percent: 10,
    think_max: 20,
    latency_max: 30,
    cas_percent: 15,
};
const MEDIUM: Shape = Shape {
    clients: 8,
    operations: 400,
    keys: 3,
    unknown_percent: 5,
    think_max: 10,
    latency_max: 60,
    cas_percent: 15,
};

fn shape_for(seed: u64) -> Shape {
    if seed % 4 == 3 { MEDIUM } else { SMALL }
}

#[test]
fn histories_of_a_sequential_execution_are_linearizable() {
    run_seeds("histories_of_a_sequential_execution_are_linearizable", 400, |seed| {
        let mut rng = SplitMix64::new(seed);
        let history = generate(&mut rng, shape_for(seed));
        let verdict = check(&history);
        assert!(verdict.is_linearizable(), "{verdict}");
        validate_witnesses(&history, &verdict);
    });
}

// ---- One impossible read -------------------------------------------------------------------

/// Why a changed read cannot be explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mutation {
    /// The value of a put called after the read returned.
    FromTheFuture,
    /// The value of a put that returned before another write that returned before the read was
    /// called: no write makes that exact value again.
    Overwritten,
    /// Two appended tokens swapped although the first append returned before the second was
    /// called.
    AppendsSwapped,
    /// The value of a put `p0` that returned before a put `p1` was called, when another get
    /// that returned before this one was called already saw `p1`'s value; `p1` itself is still
    /// running when this get is called, so only the order of the reads gives it away.
    Regressed,
    /// A value no operation writes.
    NeverWritten,
}

fn tokens(value: &[u8]) -> Vec<&[u8]> {
    value.split_inclusive(|byte| *byte == b';').collect()
}

/// The operation that wrote `token` (`p7;` or `a7;` name operation 7).
fn writer_of<'a>(history: &'a History, token: &[u8]) -> &'a OperationRecord {
    let digits = std::str::from_utf8(&token[1..token.len() - 1]).expect("an ascii token");
    &history.operations()[digits.parse::<usize>().expect("a numbered token")]
}

/// Impossible values for the get `get`, each with the reason it is impossible (a value never
/// written is always one more).
fn impossible_reads(history: &History, get: &OperationRecord) -> Vec<(Mutation, Option<Bytes>)> {
    let Completion::Returned { output: Output::Value(observed), time: get_return } =
        &get.completion
    else {
        unreachable!("only returned gets are mutated")
    };
    let same_key = |record: &&OperationRecord| record.key == get.key;
    let mut found = Vec::new();
    for put in history.operations().iter().filter(same_key) {
        let Operation::Put(value) = &put.operation else { continue };
        if put.call_time > *get_return {
            found.push((Mutation::FromTheFuture, Some(value.clone())));
        }
        let overwritten = history
            .operations()
            .iter()
            .filter(same_key)
            .any(|write| changes_value(write) && put.precedes(write) && write.precedes(get));
        if overwritten && Some(value) != observed.as_ref() {
            found.push((Mutation::Overwritten, Some(value.clone())));
        }
    }
    for earlier in history.operations().iter().filter(same_key) {
        let Some(Some(seen)) = earlier.read() else { continue };
        let newer = writer_of(history, tokens(seen)[0]);
        if !earlier.precedes(get) || newer.return_time().is_none_or(|time| time < get.call_time) {
            continue;
        }
        for older in history.operations().iter().filter(same_key) {
            let Operation::Put(value) = &older.operation else { continue };
            if older.precedes(newer) && Some(value) != observed.as_ref() {
                found.push((Mutation::Regressed, Some(value.clone())));
            }
        }
    }
    if let Some(value) = observed {
        let parts = tokens(value);
        for first in 0..parts.len() {
            for second in first + 1..parts.len() {
                let (a, b) = (writer_of(history, parts[first]), writer_of(history, parts[second]));
                let both_appends = matches!(a.operation, Operation::Append(_))
                    && matches!(b.operation, Operation::Append(_));
                if both_appends && a.precedes(b) {
                    let mut swapped = parts.clone();
                    swapped.swap(first, second);
                    found.push((Mutation::AppendsSwapped, Some(Bytes::from(swapped.concat()))));
                }
            }
        }
    }
    found
}

/// Whether `record` is a write that took effect (not a compare-and-set whose condition failed).
fn changes_value(record: &OperationRecord) -> bool {
    let failed =
        matches!(record.completion, Completion::Returned { output: Output::ConditionFailed, .. });
    record.operation.is_write() && !failed
}

/// A copy of `history` in which get `target` read `value` instead.
fn with_read(history: &History, target: OpId, value: Option<Bytes>) -> History {
    let mut copy = History::new();
    for record in history.operations() {
        let id = copy.record_call(
            record.client,
            record.key.clone(),
            record.operation.clone(),
            record.call_time,
        );
        match &record.completion {
            Completion::Returned { output, time } => {
                let output =
                    if id == target { Output::Value(value.clone()) } else { output.clone() };
                copy.record_return(id, output, *time);
            }
            Completion::Unknown => copy.record_unknown(id),
            Completion::NotApplied => copy.record_not_applied(id),
            Completion::Pending => {}
        }
    }
    copy
}

/// The gets of `history` that returned.
fn returned_gets(history: &History) -> Vec<&OperationRecord> {
    let gets: Vec<&OperationRecord> = history
        .operations()
        .iter()
        .filter(|record| {
            record.operation == Operation::Get
                && matches!(record.completion, Completion::Returned { .. })
        })
        .collect();
    assert!(!gets.is_empty(), "no returned get in the history");
    gets
}

/// Picks a kind of subtle mutation at random, then a get it applies to (looking through the
/// gets from a random one); a value never written if no get allows that kind.
fn choose_mutation<'h>(
    rng: &mut SplitMix64,
    history: &History,
    gets: &[&'h OperationRecord],
) -> (&'h OperationRecord, Mutation, Option<Bytes>) {
    let subtle = [
        Mutation::FromTheFuture,
        Mutation::Overwritten,
        Mutation::AppendsSwapped,
        Mutation::Regressed,
    ];
    let wanted = subtle[rng.below(subtle.len() as u64) as usize];
    let start = rng.below(gets.len() as u64) as usize;
    for offset in 0..gets.len() {
        let get = gets[(start + offset) % gets.len()];
        let values: Vec<Option<Bytes>> = impossible_reads(history, get)
            .into_iter()
            .filter(|(kind, _)| *kind == wanted)
            .map(|(_, value)| value)
            .collect();
        if !values.is_empty() {
            let value = values[rng.below(values.len() as u64) as usize].clone();
            return (get, wanted, value);
        }
    }
    (gets[start], Mutation::NeverWritten, Some(Bytes::from_static(b"never;")))
}

#[test]
fn one_impossible_read_makes_the_history_fail() {
    let mut exercised: BTreeMap<Mutation, u64> = BTreeMap::new();
    run_seeds("one_impossible_read_makes_the_history_fail", 400, |seed| {
        let mut rng = SplitMix64::new(seed);
        let history = generate(&mut rng, shape_for(seed));
        let gets = returned_gets(&history);
        let (get, kind, value) = choose_mutation(&mut rng, &history, &gets);
        *exercised.entry(kind).or_default() += 1;
        let mutated = with_read(&history, get.id, value.clone());
        let verdict = check(&mutated);
        let context = format!("{get} changed to read {value:?} ({kind:?})");
        let key_verdict = verdict.key(&get.key).expect("the key of the get");
        assert!(
            matches!(key_verdict.outcome, KeyOutcome::NotLinearizable(_)),
            "{context}: {verdict}"
        );
        // The other keys are untouched and still pass.
        assert_eq!(verdict.violations().count(), 1, "{context}: {verdict}");
        assert_eq!(
            verdict.keys.iter().filter(|key| matches!(key.outcome, KeyOutcome::Unknown)).count(),
            0,
            "{context}: {verdict}"
        );
    });
    eprintln!("mutations exercised: {exercised:?}");
    if std::env::var("MOSAIC_LINEARIZABILITY_SEED").is_err() {
        for kind in [
            Mutation::FromTheFuture,
            Mutation::Overwritten,
            Mutation::AppendsSwapped,
            Mutation::Regressed,
        ] {
            assert!(exercised.get(&kind).copied().unwrap_or(0) >= 10, "{kind:?}: {exercised:?}");
        }
    }
}

// ---- Against brute force -----------------------------------------------------------------

/// A small history on one key, from a sequential execution over a tiny alphabet (so values
/// repeat and start or end one another, which stresses the pruning's over-approximations),
/// with each read (and each compare-and-set's outcome) replaced by a random one with a
/// probability that varies by seed.
fn random_small_history(rng: &mut SplitMix64) -> History {
    const WRITTEN: [&str; 4] = ["x", "y", "xy", ""];
    const READ: [Option<&str>; 10] = [
        None,
        Some(""),
        Some("x"),
        Some("y"),
        Some("xx"),
        Some("xy"),
        Some("yx"),
        Some("yy"),
        Some("xyx"),
        Some("xxy"),
    ];
    let pick = |rng: &mut SplitMix64, values: &[&'static str]| {
        // The empty value is rarer than the others.
        let index = rng.below(values.len() as u64 * 3) as usize % values.len();
        Bytes::from_static(values[index].as_bytes())
    };
    let wrong_read_percent = [0, 20, 50, 100][rng.below(4) as usize];
    let clients = 2 + rng.below(3);
    let mut next_call = vec![0; clients as usize];
    let mut planned = Vec::new();
    for _ in 0..3 + rng.below(6) {
        let client = rng.below(clients);
        let key = Bytes::from_static(b"k");
        let operation = match rng.below(10) {
            0..3 => Operation::Get,
            3 | 4 => Operation::Put(pick(rng, &WRITTEN)),
            5 | 6 => Operation::Append(pick(rng, &WRITTEN)),
            7 => Operation::Delete,
            _ => {
                // What it expects is chosen again if it takes effect (see `execute`).
                let expected = READ[rng.below(READ.len() as u64) as usize].map(Bytes::from);
                let new = (rng.below(3) != 0).then(|| pick(rng, &WRITTEN));
                Operation::CompareAndSet { expected, new }
            }
        };
        let call = next_call[client as usize] + rng.below(4);
        let (ret, effect) = if operation.is_write() && rng.below(5) == 0 {
            (None, (rng.below(2) == 0).then(|| call + rng.below(20)))
        } else {
            let effect = call + rng.below(6);
            (Some(effect + rng.below(6)), Some(effect))
        };
        next_call[client as usize] = ret.unwrap_or(call + 6);
        planned.push(Planned { client, key, operation, call, ret, effect });
    }
    let outputs = execute(rng, &mut planned);
    record(planned, |index| {
        let output = outputs[&index].clone();
        if rng.below(100) >= wrong_read_percent {
            return output;
        }
        match output {
            Output::Value(_) => {
                Output::Value(READ[rng.below(READ.len() as u64) as usize].map(Bytes::from))
            }
            Output::Written | Output::ConditionFailed if rng.below(2) == 0 => Output::Written,
            Output::Written | Output::ConditionFailed => Output::ConditionFailed,
        }
    })
}

#[test]
fn verdicts_match_a_brute_force_search_on_small_histories() {
    let mut outcomes = [0_u64; 2];
    run_seeds("verdicts_match_a_brute_force_search_on_small_histories", 3_000, |seed| {
        let mut rng = SplitMix64::new(seed);
        let history = random_small_history(&mut rng);
        let verdict = check(&history);
        let expected = brute_force_linearizable(&history, b"k");
        let history_text: Vec<String> =
            history.operations().iter().map(ToString::to_string).collect();
        assert_eq!(
            verdict.is_linearizable(),
            expected,
            "brute force says {expected}; checker says {verdict}\nhistory:\n{}",
            history_text.join("\n")
        );
        assert_eq!(verdict.has_violation(), !expected, "{verdict}");
        validate_witnesses(&history, &verdict);
        outcomes[usize::from(expected)] += 1;
    });
    eprintln!("brute force: {} not linearizable, {} linearizable", outcomes[0], outcomes[1]);
    if std::env::var("MOSAIC_LINEARIZABILITY_SEED").is_err() {
        assert!(
            outcomes.iter().all(|count| *count >= 300),
            "both verdicts exercised: {outcomes:?}"
        );
    }
}

// ---- Performance ---------------------------------------------------------------------------

/// Checking a linearizable history, or one with a read the check before the search refutes,
/// must stay far below this; the tests print the actual time.
const PERFORMANCE_ELAPSED_MAX: Duration = Duration::from_secs(1);
/// The same bound in work rather than time, so that a regression of the search shows on any
/// machine (the seeds below take under 10,000 steps).
const PERFORMANCE_STEPS_MAX: u64 = 100_000;
/// Refuting a history only by search means trying every order of the operations before the
/// bad read that pruning cannot rule out: slower, and more so the later the read. The seeds
/// below take up to 1.4 million steps, 1.5 s with the test profile.
const SEARCH_REFUTATION_ELAPSED_MAX: Duration = Duration::from_secs(10);
const SEARCH_REFUTATION_STEPS_MAX: u64 = 3_000_000;

/// 2,000 operations on one key from 10 clients, about 10 in flight at any moment, with some
/// writes of unknown outcome.
const HEAVY: Shape = Shape {
    clients: 10,
    operations: 2_000,
    keys: 1,
    unknown_percent: 3,
    think_max: 5,
    latency_max: 50,
    cas_percent: 0,
};

/// Checks `history`, prints how long it took and how hard it was, and asserts it took at most
/// `steps_max` steps and `elapsed_max`.
#[allow(clippy::disallowed_methods)] // Measures the checker's own speed; nothing is simulated.
fn check_within(seed: u64, history: &History, steps_max: u64, elapsed_max: Duration) -> Verdict {
    let concurrency = mean_concurrency(history);
    let started = Instant::now();
    let verdict = check(history);
    let elapsed = started.elapsed();
    let key = &verdict.keys[0];
    eprintln!(
        "seed {seed}: {} ops, mean concurrency {concurrency:.1}, {} steps, {} configurations \
         cached, checked in {elapsed:?}",
        key.operation_count, key.steps, key.cached_configurations
    );
    assert!(concurrency >= 5.0, "the history is concurrent enough: {concurrency}");
    assert!(key.steps <= steps_max, "{} steps", key.steps);
    assert!(elapsed < elapsed_max, "checked in {elapsed:?}");
    verdict
}

/// [`check_within`] the bounds for a history checked without much search.
fn check_quickly(seed: u64, history: &History) -> Verdict {
    check_within(seed, history, PERFORMANCE_STEPS_MAX, PERFORMANCE_ELAPSED_MAX)
}

#[test]
fn two_thousand_concurrent_operations_on_one_key_check_within_a_second() {
    run_seeds("two_thousand_concurrent_operations_on_one_key_check_within_a_second", 3, |seed| {
        let history = generate(&mut SplitMix64::new(seed), HEAVY);
        let verdict = check_quickly(seed, &history);
        assert!(verdict.is_linearizable(), "{verdict}");
    });
}

/// The same with compare-and-sets (15%, two thirds of them taking effect) and more writes of
/// unknown outcome (10%): a failed compare-and-set may have failed because of any write called
/// before it returned, which the relaxed pass ignores (`check_key`); without it, these seeds
/// took millions of steps and up to two minutes (found in review).
#[test]
fn two_thousand_concurrent_operations_with_compare_and_sets_check_within_a_second() {
    let name = "two_thousand_concurrent_operations_with_compare_and_sets_check_within_a_second";
    run_seeds(name, 3, |seed| {
        let shape = Shape { cas_percent: 15, unknown_percent: 10, ..HEAVY };
        let history = generate(&mut SplitMix64::new(seed), shape);
        let verdict = check_quickly(seed, &history);
        assert!(verdict.is_linearizable(), "{verdict}");
        validate_witnesses(&history, &verdict);
    });
}

#[test]
fn an_impossible_read_among_two_thousand_concurrent_operations_is_found_within_a_second() {
    let name =
        "an_impossible_read_among_two_thousand_concurrent_operations_is_found_within_a_second";
    run_seeds(name, 3, |seed| {
        let mut rng = SplitMix64::new(seed);
        let history = generate(&mut rng, HEAVY);
        let gets = returned_gets(&history);
        let (get, kind, value) = choose_mutation(&mut rng, &history, &gets);
        let mutated = with_read(&history, get.id, value.clone());
        let verdict = check_quickly(seed, &mutated);
        assert!(verdict.has_violation(), "{get} changed to read {value:?} ({kind:?}): {verdict}");
    });
}

/// A get of `history` and a value it cannot have read that only the search refutes: the value
/// of a put that a get before it saw overwritten ([`Mutation::Regressed`]), where no write
/// came between that put and this get in real time, so the check before the search finds a
/// last write for it.
fn hidden_regression<'h>(
    rng: &mut SplitMix64,
    history: &'h History,
) -> Option<(&'h OperationRecord, Bytes)> {
    let gets = returned_gets(history);
    let start = rng.below(gets.len() as u64) as usize;
    (0..gets.len()).map(|offset| gets[(start + offset) % gets.len()]).find_map(|get| {
        let values = impossible_reads(history, get).into_iter().filter_map(|(kind, value)| {
            (kind == Mutation::Regressed).then(|| value.expect("a put's value"))
        });
        values
            .into_iter()
            .find(|value| {
                let put = writer_of(history, value);
                !history.operations().iter().any(|write| {
                    write.key == get.key
                        && changes_value(write)
                        && put.precedes(write)
                        && write.precedes(get)
                })
            })
            .map(|value| (get, value))
    })
}

#[test]
fn a_regressed_read_among_two_thousand_concurrent_operations_is_found_by_the_search() {
    let name = "a_regressed_read_among_two_thousand_concurrent_operations_is_found_by_the_search";
    run_seeds(name, 3, |seed| {
        let mut rng = SplitMix64::new(seed);
        let history = generate(&mut rng, HEAVY);
        let (get, value) = hidden_regression(&mut rng, &history).expect("a hidden regression");
        let mutated = with_read(&history, get.id, Some(value.clone()));
        let verdict = check_within(
            seed,
            &mutated,
            SEARCH_REFUTATION_STEPS_MAX,
            SEARCH_REFUTATION_ELAPSED_MAX,
        );
        let context = format!("{get} changed to read {value:?}");
        let Some((_, violation)) = verdict.violations().next() else {
            panic!("{context}: {verdict}")
        };
        assert!(matches!(violation, Violation::DeadEnd(_)), "{context}: {verdict}");
    });
}

/// How many operations that returned are in flight, on average, when one of them is called.
fn mean_concurrency(history: &History) -> f64 {
    let returned: Vec<(u64, u64)> = history
        .operations()
        .iter()
        .filter_map(|op| Some((op.call_time, op.return_time()?)))
        .collect();
    let overlapping: usize = returned
        .iter()
        .map(|(call, _)| returned.iter().filter(|(c, r)| c <= call && r >= call).count())
        .sum();
    overlapping as f64 / returned.len() as f64
}
