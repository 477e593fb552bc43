//! The search for a linearization of one key's operations: the Wing & Gong algorithm as
//! improved by Lowe ("Testing for linearizability", 2017), with the cache of configurations
//! that Porcupine uses, and two additions that cut most of its backtracking.
//!
//! The calls and returns sit in one doubly linked list in time order. The search walks it from
//! the front: a call is a candidate to go next; placing it applies it to the register, and if
//! it fits (a get must read the current value) and the configuration (set of placed
//! operations, value) is new, the search lifts the operation's call and return out of the list
//! and starts again from the front. Reaching a return means its operation was not placed
//! although everything after that return must come after it: the search backtracks, putting
//! the last placed operation back and trying the candidate after it. The list empties exactly
//! when a linearization is found; the stack of placed operations is then that linearization.
//!
//! The additions:
//! - A get that may go next and reads the current value is placed at once, and is the only
//!   choice tried there; so is a compare-and-set that failed and expected another value, and
//!   a write no get can observe while the value is unreadable ([`Search::free_candidate`] says
//!   why that loses nothing).
//! - A write is not placed if that leaves some get unable ever to read its value
//!   ([`Pruning`]), and values no get can read collapse into one state
//!   ([`StateId::UNREADABLE`]).
//! - Writes of unknown outcome are tried after the others, and a configuration refuted
//!   refutes those that only add such writes to it ([`Cache`]).
//!
//! Invariants: `placed` (returned operations) and `placed_unknown` (by slot) hold exactly the
//! operations on `stack`, and their calls and returns are the nodes missing from the list;
//! `placed_hash` is the xor of the Zobrist keys of `placed`; the counts of `pruning` have
//! exactly the placed operations counted out; each frame's cache entry, if kept, is marked
//! finished when the frame is taken back.
//! An operation of unknown outcome returns after everything else (at infinity), so it may be
//! placed anywhere after its call; placed after every returned operation, it never took effect.

use bytes::Bytes;
use mosaic_raft::SplitMix64;

use super::cache::{Cache, Visit};
use super::fast_hash::mix;
use super::history::{Operation, OperationRecord};
use super::model::{Register, StateId, Step, replay};
use super::pruning::{Event, FailedConditions, Observability, Pruning};
use super::verdict::{CheckLimits, KeyOutcome};
use super::violation::{DeadEnd, Misfit, Violation};

/// The end of the list.
const NIL: u32 = u32::MAX;
/// The list's sentinel node: `nodes[HEAD].next` is the first call or return left.
const HEAD: u32 = 0;
/// The seed of the Zobrist keys (any fixed value: only distinctness matters).
const ZOBRIST_SEED: u64 = 0x6D6F_7361_6963_2D6C; // "mosaic-l"

/// A call or a return in the list.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The operation, as an index into the key's operations.
    operation: u32,
    /// The node of the operation's return, for a call; `NIL` for a return (and the head).
    return_node: u32,
    prev: u32,
    next: u32,
}

impl Node {
    fn is_call(self) -> bool {
        self.return_node != NIL
    }
}

/// A placed operation: its call node, the state before it, whether it was the only
/// operation worth trying in its configuration (a fitting get), and the cache entry of the
/// configuration it led to (`NIL` if not kept), to mark finished when it is taken back.
#[derive(Clone, Copy, Debug)]
struct Frame {
    call_node: u32,
    state_before: StateId,
    forced: bool,
    cache_entry: u32,
}

/// Where the walk over the candidates of a configuration goes on: at `node`, in the first
/// pass (returned writes) or the second (writes of unknown outcome, tried last so that the
/// configurations without them are refuted first and dominate; see [`Cache`]).
#[derive(Clone, Copy, Debug)]
struct Cursor {
    node: u32,
    unknown_pass: bool,
}

/// The deepest dead end found so far: the call nodes placed, in order, and the first return
/// left (see [`DeadEnd`]).
struct Deepest {
    prefix: Vec<u32>,
    first_return: u32,
}

/// What the search found and how much it worked.
pub(super) struct SearchResult {
    pub(super) outcome: KeyOutcome,
    pub(super) steps: u64,
    pub(super) cached_configurations: u64,
}

/// Decides whether `operations` (all on one key) are linearizable.
///
/// # Panics
/// If there are more than `u32::MAX / 2 - 1` operations, or a get among them did not return.
pub(super) fn search(
    operations: &[&OperationRecord],
    limits: &CheckLimits,
    failed: FailedConditions,
) -> SearchResult {
    Search::new(operations, limits, failed).run()
}

/// The state of the search over one key's operations (see the module documentation).
struct Search<'a> {
    operations: &'a [&'a OperationRecord],
    limits: &'a CheckLimits,
    register: Register,
    steps: Vec<Step>,
    pruning: Pruning,
    nodes: Vec<Node>,
    zobrist: Vec<u64>,
    /// The returned operations placed, by operation index.
    placed: Vec<u64>,
    /// The xor of the Zobrist keys of `placed`.
    placed_hash: u64,
    /// For each operation: whether it is a put or an append no get can have observed.
    unobservable_writes: Vec<bool>,
    /// For each operation of unknown outcome, its index in `placed_unknown`; `NIL` for the
    /// others.
    unknown_slots: Vec<u32>,
    unknown_count: usize,
    /// The operations of unknown outcome placed, by slot.
    placed_unknown: Vec<u64>,
    stack: Vec<Frame>,
    cache: Cache,
    /// The deepest point a backtrack started from: the longest prefix and where it got stuck.
    deepest: Option<Deepest>,
    steps_taken: u64,
}

impl<'a> Search<'a> {
    fn new(
        operations: &'a [&'a OperationRecord],
        limits: &'a CheckLimits,
        failed: FailedConditions,
    ) -> Self {
        let count = operations.len();
        assert!(count < (u32::MAX / 2 - 1) as usize, "{count} operations on one key: too many");
        let compared: Vec<Option<Bytes>> =
            operations.iter().filter_map(|record| Some(record.compared()?.cloned())).collect();
        let mut register = Register::new(compared.iter());
        let steps = (0_u32..)
            .zip(operations)
            .map(|(index, record)| register.compile(record, index))
            .collect::<Vec<_>>();
        let pruning = Pruning::new(&steps, operations, &register);
        let observability = Observability::new(operations, failed);
        let unobservable_writes = operations
            .iter()
            .map(|record| {
                matches!(&record.operation, Operation::Put(_) | Operation::Append(_))
                    && observability.is_unobservable_write(record)
            })
            .collect();

        let nodes = event_list(operations);

        let mut rng = SplitMix64::new(ZOBRIST_SEED);
        let zobrist = (0..count).map(|_| rng.next_u64()).collect();
        let words = count.div_ceil(64);
        let mut unknown_count = 0_u32;
        let unknown_slots: Vec<u32> = operations
            .iter()
            .map(|record| {
                if record.return_time().is_some() {
                    return NIL;
                }
                unknown_count += 1;
                unknown_count - 1
            })
            .collect();
        let unknown_words = (unknown_count as usize).div_ceil(64);
        Self {
            operations,
            limits,
            register,
            steps,
            pruning,
            nodes,
            zobrist,
            placed: vec![0; words],
            placed_hash: 0,
            unobservable_writes,
            unknown_slots,
            unknown_count: unknown_count as usize,
            placed_unknown: vec![0; unknown_words],
            stack: Vec::with_capacity(count),
            cache: Cache::new(words, unknown_words, limits.cache_bytes_max),
            deepest: None,
            steps_taken: 0,
        }
    }

    fn run(mut self) -> SearchResult {
        let outcome = self.explore();
        SearchResult {
            outcome,
            steps: self.steps_taken,
            cached_configurations: self.cache.len() as u64,
        }
    }

    fn explore(&mut self) -> KeyOutcome {
        let mut state = StateId::ABSENT;
        // Where the walk goes on in the current configuration; `None` when it was just reached.
        let mut resume: Option<Cursor> = None;
        loop {
            let cursor = match resume {
                Some(cursor) => cursor,
                None => {
                    if self.nodes[HEAD as usize].next == NIL {
                        let order =
                            self.stack.iter().map(|frame| self.record_of(frame.call_node).id);
                        return KeyOutcome::Linearizable { order: order.collect() };
                    }
                    let Some(free) = self.free_candidate(state) else {
                        let node = self.nodes[HEAD as usize].next;
                        resume = Some(Cursor { node, unknown_pass: false });
                        continue;
                    };
                    if !self.take_step() {
                        return KeyOutcome::Unknown;
                    }
                    let operation = self.nodes[free as usize].operation as usize;
                    let next_state = self
                        .register
                        .apply(state, &self.steps[operation])
                        .expect("a free operation fits");
                    if self.place(free, state, next_state, true) {
                        state = next_state;
                        continue;
                    }
                    // The configuration after the free operation was refuted before, so this
                    // one is too.
                    match self.backtrack(&mut state) {
                        Some(cursor) => cursor,
                        None => return self.violation(),
                    }
                }
            };
            // The list is not empty and every call is followed by its return, so the walk
            // meets a return before it runs off the end.
            assert!(cursor.node != NIL, "walked off the list with {} placed", self.stack.len());
            let current = self.nodes[cursor.node as usize];
            if !current.is_call() {
                if !cursor.unknown_pass && self.unknown_count > 0 {
                    let node = self.nodes[HEAD as usize].next;
                    resume = Some(Cursor { node, unknown_pass: true });
                    continue;
                }
                // `current` returned with its operation unplaced: nothing can go next here.
                self.note_dead_end(cursor.node);
                resume = self.backtrack(&mut state);
                if resume.is_none() {
                    return self.violation();
                }
                continue;
            }
            resume = Some(Cursor { node: current.next, ..cursor });
            let operation = current.operation as usize;
            if matches!(self.steps[operation], Step::Get { .. } | Step::Differs { .. }) {
                // No get fits this configuration (else it would have been placed), nor does a
                // compare-and-set that failed.
                continue;
            }
            if self.is_unknown(operation) != cursor.unknown_pass {
                continue;
            }
            if !self.take_step() {
                return KeyOutcome::Unknown;
            }
            // A compare-and-set that took effect fits only the value it expected.
            let Some(next_state) = self.register.apply(state, &self.steps[operation]) else {
                continue;
            };
            if self.place(cursor.node, state, next_state, false) {
                state = next_state;
                resume = None;
            }
        }
    }

    /// Whether `operation` has an unknown outcome (it never returned).
    fn is_unknown(&self, operation: usize) -> bool {
        self.unknown_slots[operation] != NIL
    }

    /// Counts one placement tried; false once [`CheckLimits::steps_max`] is reached.
    fn take_step(&mut self) -> bool {
        if self.steps_taken >= self.limits.steps_max {
            return false;
        }
        self.steps_taken += 1;
        true
    }

    /// An operation that may go next and whose placement is free, if there is one: a get that
    /// reads `state`, a compare-and-set that failed and expected another value than `state`,
    /// or, when `state` is [`StateId::UNREADABLE`], a put or append no get can have observed.
    ///
    /// Placing it next is never a wrong choice, so the search need not try anything else here
    /// if it fails: in any linearization from this configuration, the operation can move to
    /// the front. No operation left returned before its call, so real time allows it. A get,
    /// or a compare-and-set that failed, changes nothing. An unobservable write leaves the
    /// value unreadable at the front, and where it stood nothing that compares follows it
    /// before the next put or delete but compare-and-sets of unknown outcome that changed
    /// nothing (see [`Observability`]), which move to the end: taking it away from there
    /// changes no get's value and no outcome.
    fn free_candidate(&self, state: StateId) -> Option<u32> {
        let unreadable = state == StateId::UNREADABLE;
        let mut node = self.nodes[HEAD as usize].next;
        while node != NIL && self.nodes[node as usize].is_call() {
            let operation = self.nodes[node as usize].operation as usize;
            let free = match self.steps[operation] {
                Step::Get { observed } => observed == state,
                Step::Differs { from } => from != state,
                Step::Set { .. } | Step::Append { .. } => {
                    unreadable && self.unobservable_writes[operation]
                }
                Step::SetIf { .. } => false,
            };
            if free {
                return Some(node);
            }
            node = self.nodes[node as usize].next;
        }
        None
    }

    /// Places the operation of `call` if the configuration it leads to (value `next_state`)
    /// is new and strands no get (see [`Pruning`]), and returns whether it did. A `forced`
    /// placement is the only one tried in its configuration (see [`Self::free_candidate`]);
    /// it produces no value any get read, so it strands nothing.
    fn place(&mut self, call: u32, state: StateId, next_state: StateId, forced: bool) -> bool {
        let operation = self.nodes[call as usize].operation as usize;
        self.pruning.place(operation);
        if !forced && self.pruning.dead_end(next_state) {
            self.pruning.unplace(operation);
            return false;
        }
        self.flip(operation);
        self.lift(call);
        let stranding = !forced
            && self
                .pruning
                .stranded_get_ahead(next_state, front(&self.nodes), &self.register)
                .is_some();
        let hash = self.placed_hash ^ mix(u64::from(next_state.0));
        let visit = if stranding {
            Visit::Seen
        } else {
            self.cache.visit(hash, &self.placed, &self.placed_unknown, next_state)
        };
        let Visit::New(cache_entry) = visit else {
            self.unlift(call);
            self.flip(operation);
            self.pruning.unplace(operation);
            return false;
        };
        let cache_entry = cache_entry.unwrap_or(NIL);
        self.stack.push(Frame { call_node: call, state_before: state, forced, cache_entry });
        true
    }

    /// Takes back placed operations up to the latest one that was a choice among others, and
    /// returns where the walk goes on (the node after it), with `state` restored; `None` if
    /// nothing is left to take back.
    fn backtrack(&mut self, state: &mut StateId) -> Option<Cursor> {
        loop {
            let frame = self.stack.pop()?;
            if frame.cache_entry != NIL {
                self.cache.finish(frame.cache_entry);
            }
            self.unlift(frame.call_node);
            let operation = self.nodes[frame.call_node as usize].operation as usize;
            self.flip(operation);
            self.pruning.unplace(operation);
            *state = frame.state_before;
            if !frame.forced {
                let node = self.nodes[frame.call_node as usize].next;
                return Some(Cursor { node, unknown_pass: self.is_unknown(operation) });
            }
        }
    }

    /// The report of the deepest dead end, once the search has failed (and so taken every
    /// placement back): places its prefix again to find why each operation could not go next.
    fn violation(&mut self) -> KeyOutcome {
        let Deepest { prefix, first_return } =
            self.deepest.take().expect("a failed search noted a dead end");
        assert!(self.stack.is_empty(), "the report is built after the search failed");
        let mut state = StateId::ABSENT;
        for &call in &prefix {
            let operation = self.nodes[call as usize].operation as usize;
            state = self.register.apply(state, &self.steps[operation]).expect("it was placed");
            self.pruning.place(operation);
            self.flip(operation);
            self.lift(call);
        }
        let mut stuck = Vec::new();
        let mut node = self.nodes[HEAD as usize].next;
        while node != first_return {
            stuck.push(Misfit {
                operation: self.record_of(node).clone(),
                stranded_get: self.stranded_by(node, state).cloned(),
            });
            node = self.nodes[node as usize].next;
        }
        let prefix: Vec<OperationRecord> =
            prefix.iter().map(|call| self.record_of(*call).clone()).collect();
        let unplaced_count = self.operations.len() - prefix.len() - stuck.len();
        KeyOutcome::NotLinearizable(Box::new(Violation::DeadEnd(DeadEnd {
            value_after_prefix: replay(prefix.iter()),
            prefix,
            stuck,
            unplaced_count,
        })))
    }

    fn record_of(&self, node: u32) -> &'a OperationRecord {
        self.operations[self.nodes[node as usize].operation as usize]
    }

    /// Adds `operation` to the placed set or takes it out.
    fn flip(&mut self, operation: usize) {
        match self.unknown_slots[operation] {
            NIL => {
                self.placed[operation / 64] ^= 1 << (operation % 64);
                self.placed_hash ^= self.zobrist[operation];
            }
            slot => self.placed_unknown[slot as usize / 64] ^= 1 << (slot % 64),
        }
    }

    /// Takes the call `call` and its return out of the list.
    fn lift(&mut self, call: u32) {
        let return_node = self.nodes[call as usize].return_node;
        self.unlink(call);
        self.unlink(return_node);
    }

    /// Puts the call `call` and its return back, undoing [`Self::lift`]: the nodes still
    /// point at their old neighbours, which are back in place (dancing links).
    fn unlift(&mut self, call: u32) {
        let return_node = self.nodes[call as usize].return_node;
        self.relink(return_node);
        self.relink(call);
    }

    fn unlink(&mut self, node: u32) {
        let Node { prev, next, .. } = self.nodes[node as usize];
        self.nodes[prev as usize].next = next;
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn relink(&mut self, node: u32) {
        let Node { prev, next, .. } = self.nodes[node as usize];
        self.nodes[prev as usize].next = node;
        if next != NIL {
            self.nodes[next as usize].prev = node;
        }
    }

    /// Remembers this dead end if it is deeper than every earlier one: the placed operations,
    /// and `first_return`, the first return left, before which are the operations that could
    /// not go next. The report is built from it at the end ([`Self::violation`]).
    fn note_dead_end(&mut self, first_return: u32) {
        if self.deepest.as_ref().is_some_and(|deepest| deepest.prefix.len() >= self.stack.len()) {
            return;
        }
        let prefix = self.stack.iter().map(|frame| frame.call_node).collect();
        self.deepest = Some(Deepest { prefix, first_return });
    }

    /// For a write that cannot go next from `state`: a get left that could no longer be
    /// placed after it. `None` for a get.
    fn stranded_by(&mut self, call: u32, state: StateId) -> Option<&'a OperationRecord> {
        let operation = self.nodes[call as usize].operation as usize;
        if matches!(self.steps[operation], Step::Get { .. } | Step::Differs { .. }) {
            return None;
        }
        let next_state = self.register.apply(state, &self.steps[operation])?;
        self.pruning.place(operation);
        self.flip(operation);
        self.lift(call);
        let stranded = self
            .pruning
            .stranded_get_ahead(next_state, front(&self.nodes), &self.register)
            .or_else(|| {
                (0..self.operations.len()).find(|get| {
                    let unplaced = self.placed[get / 64] & (1 << (get % 64)) == 0;
                    let read = self.pruning.read_by(*get);
                    unplaced
                        && read.is_some_and(|value| {
                            value != next_state && self.pruning.is_stranded(value)
                        })
                })
            });
        self.unlift(call);
        self.flip(operation);
        self.pruning.unplace(operation);
        stranded.map(|get| self.operations[get])
    }
}

/// The list of calls and returns of `operations` in time order, after the head: calls before
/// returns at equal times (equal times are concurrent), unknown returns last, ties broken by
/// operation so that the order is deterministic.
fn event_list(operations: &[&OperationRecord]) -> Vec<Node> {
    let count = operations.len();
    let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * count);
    for (index, record) in (0_u32..).zip(operations) {
        events.push((record.call_time, 0, index));
        events.push(match record.return_time() {
            Some(time) => (time, 1, index),
            None => (u64::MAX, 2, index),
        });
    }
    events.sort_unstable();
    let mut return_nodes = vec![NIL; count];
    for (node, &(_, kind, index)) in (1_u32..).zip(&events) {
        if kind != 0 {
            return_nodes[index as usize] = node;
        }
    }
    let mut nodes = Vec::with_capacity(events.len() + 1);
    nodes.push(Node { operation: u32::MAX, return_node: NIL, prev: NIL, next: NIL });
    for (node, &(_, kind, index)) in (1_u32..).zip(&events) {
        let return_node = if kind == 0 { return_nodes[index as usize] } else { NIL };
        nodes.push(Node { operation: index, return_node, prev: node - 1, next: NIL });
    }
    for node in 0..nodes.len() - 1 {
        nodes[node].next = u32::try_from(node + 1).expect("fewer than u32::MAX nodes");
    }
    nodes
}

/// The calls and returns left in the list, from the front.
fn front(nodes: &[Node]) -> impl Iterator<Item = Event> + '_ {
    let mut node = nodes[HEAD as usize].next;
    std::iter::from_fn(move || {
        let current = *nodes.get(node as usize)?;
        node = current.next;
        let operation = current.operation as usize;
        Some(if current.is_call() { Event::Call(operation) } else { Event::Return(operation) })
    })
}
