//! Helpers shared by the checker's tests: a script to write histories by hand, an independent
//! validator of the checker's witnesses, a brute-force checker to compare against, and the
//! seed handling of the randomized tests.

#![allow(dead_code)] // Each test binary uses its own subset of the helpers.

use std::panic::{self, AssertUnwindSafe};

use bytes::Bytes;
use mosaic_engine::ClientId;
use mosaic_sim::linearizability::{
    Completion, History, KeyOutcome, OpId, Operation, OperationRecord, Output, Verdict, Violation,
    check,
};

/// Writes a history by hand, one key at a time (`"k"` unless [`Script::on`] says otherwise).
pub struct Script {
    pub history: History,
    key: Bytes,
}

impl Script {
    pub fn new() -> Self {
        Self { history: History::new(), key: Bytes::from_static(b"k") }
    }

    /// Makes the following operations act on `key`.
    pub fn on(&mut self, key: &str) -> &mut Self {
        self.key = Bytes::copy_from_slice(key.as_bytes());
        self
    }

    fn write(&mut self, client: u64, operation: Operation, call: u64, ret: Option<u64>) -> OpId {
        let id = self.history.record_call(ClientId(client), self.key.clone(), operation, call);
        match ret {
            Some(time) => self.history.record_return(id, Output::Written, time),
            None => self.history.record_unknown(id),
        }
        id
    }

    /// A put of `value` by `client` during `[call, ret]`.
    pub fn put(&mut self, client: u64, value: &str, call: u64, ret: u64) -> OpId {
        self.write(client, Operation::Put(bytes(value)), call, Some(ret))
    }

    /// An append of `value` by `client` during `[call, ret]`.
    pub fn append(&mut self, client: u64, value: &str, call: u64, ret: u64) -> OpId {
        self.write(client, Operation::Append(bytes(value)), call, Some(ret))
    }

    /// A delete by `client` during `[call, ret]`.
    pub fn delete(&mut self, client: u64, call: u64, ret: u64) -> OpId {
        self.write(client, Operation::Delete, call, Some(ret))
    }

    /// A put of `value` called at `call` whose outcome the client never learned.
    pub fn put_unknown(&mut self, client: u64, value: &str, call: u64) -> OpId {
        self.write(client, Operation::Put(bytes(value)), call, None)
    }

    /// An append of `value` called at `call` whose outcome the client never learned.
    pub fn append_unknown(&mut self, client: u64, value: &str, call: u64) -> OpId {
        self.write(client, Operation::Append(bytes(value)), call, None)
    }

    /// A delete called at `call` whose outcome the client never learned.
    pub fn delete_unknown(&mut self, client: u64, call: u64) -> OpId {
        self.write(client, Operation::Delete, call, None)
    }

    /// A put of `value` called at `call` that the client gave up on, told it was not applied.
    pub fn put_not_applied(&mut self, client: u64, value: &str, call: u64) -> OpId {
        let id = self.history.record_call(
            ClientId(client),
            self.key.clone(),
            Operation::Put(bytes(value)),
            call,
        );
        self.history.record_not_applied(id);
        id
    }

    /// A compare-and-set by `client` from `expected` to `new` (`None`: absent) during
    /// `[call, ret]`, that took effect (`Some(true)`), failed (`Some(false)`), or whose outcome
    /// the client never learned (`None`: `ret` is ignored).
    pub fn cas(
        &mut self,
        client: u64,
        expected: Option<&str>,
        new: Option<&str>,
        (call, ret): (u64, u64),
        took_effect: Option<bool>,
    ) -> OpId {
        let operation =
            Operation::CompareAndSet { expected: expected.map(bytes), new: new.map(bytes) };
        let id = self.history.record_call(ClientId(client), self.key.clone(), operation, call);
        match took_effect {
            Some(true) => self.history.record_return(id, Output::Written, ret),
            Some(false) => self.history.record_return(id, Output::ConditionFailed, ret),
            None => self.history.record_unknown(id),
        }
        id
    }

    /// A get by `client` during `[call, ret]` that read `read` (`None`: absent).
    pub fn get(&mut self, client: u64, read: Option<&str>, call: u64, ret: u64) -> OpId {
        let id = self.history.record_call(ClientId(client), self.key.clone(), Operation::Get, call);
        self.history.record_return(id, Output::Value(read.map(bytes)), ret);
        id
    }

    /// A get called at `call` that never returned.
    pub fn get_unknown(&mut self, client: u64, call: u64) -> OpId {
        let id = self.history.record_call(ClientId(client), self.key.clone(), Operation::Get, call);
        self.history.record_unknown(id);
        id
    }
}

pub fn bytes(value: &str) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

/// Checks `history`, asserts every key is linearizable and every witness valid.
pub fn must_be_linearizable(history: &History) -> Verdict {
    let verdict = check(history);
    assert!(verdict.is_linearizable(), "expected linearizable, got {verdict}");
    validate_witnesses(history, &verdict);
    verdict
}

/// Checks `history`, asserts `key` is not linearizable and returns its violation.
pub fn must_violate(history: &History, key: &str) -> Violation {
    let verdict = check(history);
    let key_verdict = verdict.key(key.as_bytes()).unwrap_or_else(|| panic!("no key {key:?}"));
    match &key_verdict.outcome {
        KeyOutcome::NotLinearizable(violation) => violation.as_ref().clone(),
        other => panic!("expected key {key:?} to be not linearizable, got {other:?}\n{verdict}"),
    }
}

/// Asserts that the witness of every linearizable key in `verdict` is one.
pub fn validate_witnesses(history: &History, verdict: &Verdict) {
    for key in &verdict.keys {
        if let KeyOutcome::Linearizable { order } = &key.outcome
            && let Err(problem) = validate_witness(history, &key.key, order)
        {
            panic!("witness for key {:?} is wrong: {problem}", key.key);
        }
    }
}

/// The register's value after `operation` on `value`, or `Err` if a get read something else
/// or a compare-and-set's outcome does not fit the value.
fn apply(value: &mut Option<Vec<u8>>, record: &OperationRecord) -> Result<(), String> {
    match &record.operation {
        Operation::Get => {
            let Completion::Returned { output: Output::Value(read), .. } = &record.completion
            else {
                return Err(format!("{record}: a get without a value in the order"));
            };
            if read.as_deref() != value.as_deref() {
                return Err(format!("{record} read {read:?}, the value is {value:?}"));
            }
        }
        Operation::Put(new) => *value = Some(new.to_vec()),
        Operation::Append(suffix) => value.get_or_insert_with(Vec::new).extend_from_slice(suffix),
        Operation::Delete => *value = None,
        Operation::CompareAndSet { expected, new } => {
            let holds = expected.as_deref() == value.as_deref();
            match &record.completion {
                Completion::Returned { output: Output::Written, .. } if !holds => {
                    return Err(format!("{record} took effect, the value is {value:?}"));
                }
                Completion::Returned { output: Output::ConditionFailed, .. } if holds => {
                    return Err(format!("{record} failed, the value is {value:?}"));
                }
                _ if holds => *value = new.as_deref().map(<[u8]>::to_vec),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Checks, independently of the checker, that `order` is a linearization of `key`'s operations:
/// it holds each write and each returned get exactly once, keeps real-time order, and every
/// get reads what the writes before it leave.
pub fn validate_witness(history: &History, key: &[u8], order: &[OpId]) -> Result<(), String> {
    let checked = |record: &&OperationRecord| record.key == key && record.is_checked();
    let mut expected: Vec<OpId> =
        history.operations().iter().filter(checked).map(|record| record.id).collect();
    let mut got = order.to_vec();
    expected.sort_unstable();
    got.sort_unstable();
    if expected != got {
        return Err(format!("it holds {got:?}, the key's checked operations are {expected:?}"));
    }
    let mut value = None;
    let mut latest_call: Option<&OperationRecord> = None;
    for id in order {
        let record = history.get(*id).ok_or(format!("{id} is not in the history"))?;
        if let Some(earlier) = latest_call
            && record.precedes(earlier)
        {
            return Err(format!("{record} is placed after {earlier}, called after it returned"));
        }
        if latest_call.is_none_or(|latest| latest.call_time < record.call_time) {
            latest_call = Some(record);
        }
        apply(&mut value, record)?;
    }
    Ok(())
}

/// Decides linearizability of `key`'s operations by trying every order: the definition, with
/// no cache and no cleverness, for small histories. A write of unknown outcome may be left out.
pub fn brute_force_linearizable(history: &History, key: &[u8]) -> bool {
    let operations: Vec<&OperationRecord> = history
        .operations()
        .iter()
        .filter(|record| record.key == key && record.is_checked())
        .collect();
    assert!(operations.len() <= 12, "brute force of {} operations", operations.len());
    let mut placed = vec![false; operations.len()];
    brute_force(&operations, &mut placed, &None)
}

fn brute_force(
    operations: &[&OperationRecord],
    placed: &mut [bool],
    value: &Option<Vec<u8>>,
) -> bool {
    let remaining: Vec<usize> = (0..operations.len()).filter(|index| !placed[*index]).collect();
    if remaining.iter().all(|index| operations[*index].return_time().is_none()) {
        return true;
    }
    for &candidate in &remaining {
        let blocked =
            remaining.iter().any(|other| operations[*other].precedes(operations[candidate]));
        if blocked {
            continue;
        }
        let mut next = value.clone();
        if apply(&mut next, operations[candidate]).is_err() {
            continue;
        }
        placed[candidate] = true;
        let found = brute_force(operations, placed, &next);
        placed[candidate] = false;
        if found {
            return true;
        }
    }
    false
}

// ---- Seeds ---------------------------------------------------------------------------------

/// The value of the environment variable `name`, if set.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else {
        "(non-string panic)".to_owned()
    }
}

/// A randomized suite's seed variables and where its tests live, for replay instructions:
/// `{env}_SEED=S` runs seed `S` alone; `{env}_SEEDS=N` runs N seeds from `{env}_FIRST_SEED`
/// (default 0) instead of the default count.
pub struct Suite {
    /// The prefix of the environment variables.
    pub env: &'static str,
    /// The test binary (`cargo test --test NAME`).
    pub test_file: &'static str,
}

/// The checker's randomized tests.
pub const LINEARIZABILITY: Suite =
    Suite { env: "MOSAIC_LINEARIZABILITY", test_file: "linearizability_random" };

/// Runs `test` on each seed of this run and fails naming every failing seed (a panic, or the
/// reason `test` returns) and how to replay it.
pub fn run_suite(
    suite: &Suite,
    test_name: &str,
    default_count: u64,
    mut test: impl FnMut(u64) -> Option<String>,
) {
    let env = suite.env;
    if let Ok(filter) = std::env::var("MOSAIC_SIM_LOG") {
        // The simulated nodes' log lines, for replaying one seed (virtual time is in each
        // line's fields where it matters; the lines are in the run's order).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .without_time()
            .with_test_writer()
            .try_init();
    }
    let seeds: Vec<u64> = match env_u64(&format!("{env}_SEED")) {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64(&format!("{env}_FIRST_SEED")).unwrap_or(0);
            let count = env_u64(&format!("{env}_SEEDS")).unwrap_or(default_count);
            (first..first + count).collect()
        }
    };
    eprintln!(
        "{test_name}: seeds {}..={} (replay one with {env}_SEED=S)",
        seeds[0],
        seeds[seeds.len() - 1]
    );
    let mut failures = Vec::new();
    for seed in &seeds {
        let reason = match panic::catch_unwind(AssertUnwindSafe(|| test(*seed))) {
            Ok(reason) => reason,
            Err(payload) => Some(format!("panicked: {}", panic_message(payload.as_ref()))),
        };
        if let Some(reason) = reason {
            failures.push(format!(
                "seed {seed} failed: {reason}\n  replay: {env}_SEED={seed} cargo test -p \
                 mosaic-sim --test {} {test_name} -- --nocapture",
                suite.test_file
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{test_name}: {} of {} seeds failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

/// Runs the checker's randomized `test` on each seed of this run ([`LINEARIZABILITY`]).
pub fn run_seeds(test_name: &str, default_count: u64, mut test: impl FnMut(u64)) {
    run_suite(&LINEARIZABILITY, test_name, default_count, |seed| {
        test(seed);
        None
    });
}
