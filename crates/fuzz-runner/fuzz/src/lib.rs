//! What the fuzz targets share: the framing of a sequence of requests in one input, and the
//! frames that are faults.
//!
//! An input of `node_requests` or `controller_requests` is a sequence of frames, each a
//! selector byte, a length byte and that many bytes of body (the last frame takes what is
//! left if it is short). The selector names the node the request goes to (its high nibble)
//! and the request (its low nibble); the body is the request's protobuf encoding, as a
//! service would receive it, or a parameter of a fault.

use mosaic_engine::MemKv;
use mosaic_raft::NodeId;
use mosaic_raftstore::StateMachine;
use mosaic_raftstore::testing::Cluster;

/// One frame of an input: which node, which request, and its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The node, 1 up to the number of nodes.
    pub node: u64,
    /// The request, 0 to 15.
    pub kind: u8,
    /// The request's body.
    pub body: &'a [u8],
}

/// The frames of `input` for a cluster of `nodes` nodes.
pub fn frames(input: &[u8], nodes: u64) -> impl Iterator<Item = Frame<'_>> {
    let mut rest = input;
    std::iter::from_fn(move || {
        let (&selector, after) = rest.split_first()?;
        let (&len, after) = after.split_first().unwrap_or((&0, after));
        let (body, after) = after.split_at(usize::from(len).min(after.len()));
        rest = after;
        let node = u64::from(selector >> 4) % nodes + 1;
        Some(Frame { node, kind: selector & 0x0f, body })
    })
}

/// The bytes of one frame: request `kind` to `node` (of `nodes`) with `body`, as
/// [`frames`] reads it back.
///
/// # Panics
/// If `kind` is over 15, `node` is not 1 to `nodes`, or `body` is over 255 bytes.
#[must_use]
pub fn frame(node: u64, kind: u8, body: &[u8]) -> Vec<u8> {
    assert!(kind < 16 && (1..=16).contains(&node), "a frame has 16 nodes and 16 kinds");
    let len = u8::try_from(body.len()).expect("a frame's body is at most 255 bytes");
    let node = u8::try_from(node - 1).expect("checked");
    let mut bytes = vec![node << 4 | kind, len];
    bytes.extend_from_slice(body);
    bytes
}

/// Ticks `cluster`'s clock as many times as the body's first byte says (mod 32; once for an
/// empty body), as a frame that is no request.
pub fn tick<SM: StateMachine<MemKv>>(cluster: &mut Cluster<SM>, body: &[u8]) {
    for _ in 0..body.first().map_or(1, |ticks| ticks % 32) {
        cluster.tick();
    }
}

/// Crashes `node` keeping as many of its unsynced writes as the body's first byte says
/// (mod 4; none for an empty body), and restarts it.
pub fn crash_restart<SM: StateMachine<MemKv>>(
    cluster: &mut Cluster<SM>,
    node: NodeId,
    body: &[u8],
) {
    let kept = body.first().map_or(0, |kept| usize::from(kept % 4));
    cluster.crash(node, kept);
    cluster.restart(node);
}

/// Restarts every node of `cluster` (nodes 1 to `nodes`) with everything it wrote, synced or
/// not (applied state is written unsynced): each reloads all it applied, with the checks
/// loading makes.
pub fn restart_all<SM: StateMachine<MemKv>>(cluster: &mut Cluster<SM>, nodes: u64) {
    for node in 1..=nodes {
        cluster.crash(NodeId(node), usize::MAX);
        cluster.restart(NodeId(node));
    }
    cluster.settle();
}
