//! The store's tracing spans, so that a line logged while the store works says which node,
//! group and term it is about, the Raft core's and the state machines' lines included:
//!
//! - `node` (`node_id`): one per store, made when it opens. The runner enters it around its
//!   loop ([`crate::Store::span`]); the store does not, as entering it in every call of
//!   `handle` and `process` would cost about a tenth more instructions per write with INFO
//!   on (measured on the in-memory test cluster). Every `group` span is its child, entered
//!   or not.
//! - `group` (`group_id`, `term`): one per replica, made again when the replica's term
//!   changes, entered around the replica's work: stepping its messages, ticking it, creating
//!   it, and each stage of a Ready pass that works on it (taking its `Ready`, sending and
//!   installing its snapshots, applying, advancing).
//!
//! Cost: spans are made only at those moments (a store's open, a replica's creation, a new
//! term), never per message or per Ready pass. A `group` span is at DEBUG level: with DEBUG
//! off (the default `info`) it is disabled, entering it does nothing and nothing is
//! allocated. Its target is this module, so `MOSAIC_LOG=info,mosaic_raftstore::span=debug`
//! turns on the group spans alone (an INFO line of the Raft core then says its group), at
//! the price of entering a live span per replica per stage of a pass and per message (about
//! a seventh more instructions per write).
//!
//! Lines the store itself logs about a group carry `group_id` as a field as well, so they say
//! their group at any level.

use mosaic_engine::GroupId;
use mosaic_raft::{NodeId, Term};
use tracing::Span;
use tracing::span::EnteredSpan;

/// The `node` span of the store of `node`. At ERROR level, so that it is on whenever any
/// line is: it is made once, and every line of the store should name its node (a WARN line
/// under `MOSAIC_LOG=warn` too).
pub(crate) fn node(node: NodeId) -> Span {
    tracing::error_span!("node", node_id = %node)
}

/// The `group` span of one replica, in the replica's current term.
#[derive(Debug)]
pub(crate) struct GroupSpan {
    /// The store's `node` span: the parent.
    node: Span,
    group: GroupId,
    /// The term `span` was made for.
    term: Term,
    span: Span,
}

impl GroupSpan {
    /// The span of `group`'s replica in `term`, a child of the `node` span.
    pub(crate) fn new(node: &Span, group: GroupId, term: Term) -> Self {
        let span = make(node, group, term);
        Self { node: node.clone(), group, term, span }
    }

    /// Enters the span of the replica, now in `term`: made again first if the term changed.
    pub(crate) fn enter(&mut self, term: Term) -> EnteredSpan {
        if term != self.term {
            self.term = term;
            self.span = make(&self.node, self.group, term);
        }
        // A clone, so that the replica can be borrowed while the span is entered (a disabled
        // span clones for nothing).
        self.span.clone().entered()
    }
}

fn make(node: &Span, group: GroupId, term: Term) -> Span {
    tracing::debug_span!(parent: node, "group", group_id = %group, term = %term)
}
