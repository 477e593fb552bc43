//! The store's tracing spans (`mosaic_raftstore`'s `span` module): a line logged in a
//! replica's work, the Raft core's included, is in the `group` span of its group and term,
//! under the `node` span of its node; and spans are made per store, replica and term, never
//! per message or per Ready pass.
//!
//! Each test records what the store logs with a small subscriber of its own, the thread's
//! default while the test runs (the deterministic cluster runs in the test's thread).

#[allow(dead_code, reason = "the support module is shared: this test uses part of it")]
mod support;

use std::sync::{Arc, Mutex};

use mosaic_engine::GroupId;
use mosaic_raftstore::testing;
use support::{Command, Counters};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

type Cluster = testing::Cluster<Counters>;

const GROUP: GroupId = GroupId(1);

/// A span as made: its name, its fields (`name=value`), its parent's id.
#[derive(Clone, Debug)]
struct SpanRecord {
    name: &'static str,
    fields: Vec<String>,
    parent: Option<u64>,
}

/// An event as logged: its message, its fields, and the spans it is in, innermost first
/// (each as `name{field,...}`).
#[derive(Clone, Debug)]
struct EventRecord {
    message: String,
    fields: Vec<String>,
    scope: Vec<String>,
}

#[derive(Default)]
struct Recorded {
    spans: Vec<SpanRecord>,
    /// The entered spans of the thread, innermost last.
    stack: Vec<u64>,
    events: Vec<EventRecord>,
}

/// Records every span and event at `level` or below (more severe).
#[derive(Clone)]
struct Recorder {
    level: Level,
    recorded: Arc<Mutex<Recorded>>,
}

impl Recorder {
    fn new(level: Level) -> Self {
        Self { level, recorded: Arc::default() }
    }

    fn spans_made(&self) -> usize {
        self.recorded.lock().unwrap().spans.len()
    }

    fn events(&self, message: &str) -> Vec<EventRecord> {
        let recorded = self.recorded.lock().unwrap();
        recorded.events.iter().filter(|event| event.message == message).cloned().collect()
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push(format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.push(format!("{}={value}", field.name()));
    }
}

impl Subscriber for Recorder {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked again at every call site use: tests in other threads record at other levels.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.level
    }

    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        let mut recorded = self.recorded.lock().unwrap();
        let parent = if attributes.is_contextual() {
            recorded.stack.last().copied()
        } else {
            attributes.parent().map(Id::into_u64)
        };
        let name = attributes.metadata().name();
        recorded.spans.push(SpanRecord { name, fields: fields.fields, parent });
        Id::from_u64(recorded.spans.len() as u64)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut recorded = self.recorded.lock().unwrap();
        let mut next = if event.is_contextual() {
            recorded.stack.last().copied()
        } else {
            event.parent().map(Id::into_u64)
        };
        let mut scope = Vec::new();
        while let Some(id) = next {
            let span = &recorded.spans[usize::try_from(id).unwrap() - 1];
            scope.push(format!("{}{{{}}}", span.name, span.fields.join(",")));
            next = span.parent;
        }
        let event = EventRecord { message: fields.message, fields: fields.fields, scope };
        recorded.events.push(event);
    }

    fn enter(&self, id: &Id) {
        self.recorded.lock().unwrap().stack.push(id.into_u64());
    }

    fn exit(&self, id: &Id) {
        let mut recorded = self.recorded.lock().unwrap();
        assert_eq!(recorded.stack.pop(), Some(id.into_u64()), "spans exited out of order");
    }
}

/// A three-node cluster hosting `GROUP`, with a leader; returns it and the leader.
fn cluster_with_leader(seed: u64) -> (Cluster, mosaic_raft::NodeId) {
    let mut cluster = Cluster::new(3, seed);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let leader = cluster.must_elect(GROUP);
    (cluster, leader)
}

/// Applies `count` writes through `leader`, panicking unless each is applied.
fn must_apply_writes(cluster: &mut Cluster, leader: mosaic_raft::NodeId, count: u64) {
    for value in 0..count {
        let slot = cluster.propose(leader, GROUP, Command::set("key", value));
        match cluster.wait(&slot, 50) {
            Some(Ok(_)) => {}
            other => panic!("write {value} at node {leader} answered {other:?}"),
        }
    }
}

#[test]
fn raft_lines_are_in_the_span_of_their_group_term_and_node_at_debug() {
    let recorder = Recorder::new(Level::DEBUG);
    let (_cluster, leader) =
        tracing::subscriber::with_default(recorder.clone(), || cluster_with_leader(5));

    // A line of the Raft core, which knows no group: the span says it.
    let became_leader = recorder.events("became leader");
    let line = became_leader.last().expect("a leader was elected");
    assert!(line.fields.contains(&format!("node_id={leader}")), "{line:?}");
    let term = line.fields.iter().find(|field| field.starts_with("term=")).expect("a term");
    assert_eq!(
        line.scope,
        [format!("group{{group_id=1,{term}}}"), format!("node{{node_id={leader}}}")],
        "{line:?}"
    );
    // Every replica's start is in its group's span under its own node's.
    let started = recorder.events("raft replica started");
    assert_eq!(started.len(), 3, "{started:?}");
    for line in &started {
        let node = line.fields.iter().find(|field| field.starts_with("node_id=")).unwrap();
        assert_eq!(line.scope.last(), Some(&format!("node{{{node}}}")), "{line:?}");
        assert!(line.scope[0].starts_with("group{group_id=1,term="), "{line:?}");
    }
}

#[test]
fn lines_are_in_the_node_span_the_runner_entered_at_info() {
    let recorder = Recorder::new(Level::INFO);
    tracing::subscriber::with_default(recorder.clone(), || cluster_with_leader(6));

    // The store's own lines say their group as a field; the group spans are off at INFO.
    let created = recorder.events("created group");
    assert_eq!(created.len(), 3, "{created:?}");
    for line in &created {
        assert!(line.fields.contains(&"group_id=1".to_string()), "{line:?}");
        assert_eq!(line.scope.len(), 1, "only the node span is on at INFO: {line:?}");
        assert!(line.scope[0].starts_with("node{node_id="), "{line:?}");
    }
    // The Raft core's, in a replica's work, are in the node span of that replica's node.
    let became_leader = recorder.events("became leader");
    let line = became_leader.last().expect("a leader was elected");
    let node = line.fields.iter().find(|field| field.starts_with("node_id=")).unwrap();
    assert_eq!(line.scope, [format!("node{{{node}}}")], "{line:?}");
}

#[test]
fn spans_are_made_per_store_replica_and_term_never_per_message_or_pass() {
    for level in [Level::INFO, Level::DEBUG] {
        let recorder = Recorder::new(level);
        tracing::subscriber::with_default(recorder.clone(), || {
            let (mut cluster, leader) = cluster_with_leader(7);
            let before = recorder.spans_made();
            // Many messages and Ready passes, in one term.
            must_apply_writes(&mut cluster, leader, 20);
            assert_eq!(cluster.leader(GROUP), Some(leader), "the term changed: reseed");
            assert_eq!(
                recorder.spans_made(),
                before,
                "spans made at {level} while writing in one term"
            );
        });
        // 3 node spans; at DEBUG, a group span per replica and term too (the bootstrap term
        // and the first leader's, and a few more if an election was split).
        let made = recorder.spans_made();
        if level == Level::INFO {
            assert_eq!(made, 3, "at INFO only the node spans are on");
        } else {
            assert!((9..=3 + 3 * 4).contains(&made), "{made} spans made at DEBUG");
        }
    }
}
