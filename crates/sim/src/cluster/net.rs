//! The simulated network: what travels between endpoints, and the faults it suffers.
//!
//! [`Network::route`] decides, when a packet is sent, whether it is lost, how long it takes
//! (a random delay per packet, so packets overtake each other) and whether a copy is
//! delivered as well (not for a client's request); [`Network::connected`] decides, when it arrives, whether a partition
//! cuts it off. Snapshots are never lost or copied at random (their sender waits for one
//! delivery report each), but partitions and crashed receivers stop them like anything
//! else.
//!
//! Invariant: two endpoints can talk exactly when the current partition puts them on the
//! same side (every endpoint not named is on side 0).

use std::collections::BTreeMap;

use bytes::Bytes;
use mosaic_engine::GroupId;
use mosaic_raft::{Message, SplitMix64};

use crate::cluster::Time;
use crate::cluster::config::FaultConfig;
use crate::cluster::rpc::{Endpoint, Request, RequestId, Response};

/// What travels.
#[derive(Debug)]
pub(crate) enum Packet {
    /// Raft messages for groups hosted on the receiving node, from the sender's incarnation.
    Raft(u64, Vec<(GroupId, Message)>),
    /// A whole snapshot stream; the sender (at `sender_incarnation`) learns whether it
    /// arrived.
    Snapshot {
        /// The group.
        group: GroupId,
        /// The `InstallSnapshot` message.
        message: Message,
        /// The encoded chunks.
        chunks: Vec<Bytes>,
        /// The sending node's incarnation.
        sender_incarnation: u64,
    },
    /// A request.
    Request {
        /// Its id.
        id: RequestId,
        /// What it asks.
        request: Request,
    },
    /// The answer to request `id`.
    Response {
        /// The request.
        id: RequestId,
        /// The answer.
        response: Response,
    },
}

impl Packet {
    /// A copy, for the packets the network may duplicate: Raft messages, and the requests
    /// of every endpoint but a client (whose requests travel on one gRPC stream each: lost
    /// with the connection, never delivered twice; its decision table counts on it, as a
    /// refusal of a request that may still arrive again says nothing).
    fn duplicate(&self, from: Endpoint) -> Option<Self> {
        match self {
            Self::Raft(incarnation, messages) => Some(Self::Raft(*incarnation, messages.clone())),
            Self::Request { .. } if matches!(from, Endpoint::Client(_)) => None,
            Self::Request { id, request } => {
                Some(Self::Request { id: *id, request: request.clone() })
            }
            Self::Snapshot { .. } | Self::Response { .. } => None,
        }
    }
}

/// A packet between two endpoints.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) from: Endpoint,
    pub(crate) to: Endpoint,
    pub(crate) packet: Packet,
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Packets handed to the network.
    pub sent: u64,
    /// Packets lost at random.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Packets that arrived across a partition, or at a crashed node, and were dropped.
    pub cut: u64,
}

/// The network's fault policy and partition. See the module documentation.
pub(crate) struct Network {
    faults: FaultConfig,
    sides: BTreeMap<Endpoint, u8>,
    pub(crate) stats: NetStats,
}

impl Network {
    pub(crate) fn new(faults: FaultConfig) -> Self {
        Self { faults, sides: BTreeMap::new(), stats: NetStats::default() }
    }

    /// Replaces the fault policy (the liveness phase calms the network).
    pub(crate) fn set_faults(&mut self, faults: FaultConfig) {
        self.faults = faults;
    }

    /// The packets to deliver for `envelope`, each with its delay: none if it is lost, two
    /// if it is duplicated.
    pub(crate) fn route(
        &mut self,
        rng: &mut SplitMix64,
        envelope: Envelope,
    ) -> Vec<(Time, Envelope)> {
        self.stats.sent += 1;
        let is_snapshot = matches!(envelope.packet, Packet::Snapshot { .. });
        if !is_snapshot && chance(rng, self.faults.loss_per_mille) {
            self.stats.lost += 1;
            return Vec::new();
        }
        let mut routed = Vec::with_capacity(2);
        if chance(rng, self.faults.duplicate_per_mille)
            && let Some(packet) = envelope.packet.duplicate(envelope.from)
        {
            self.stats.duplicated += 1;
            let copy = Envelope { from: envelope.from, to: envelope.to, packet };
            routed.push((self.delay(rng), copy));
        }
        routed.push((self.delay(rng), envelope));
        routed
    }

    fn delay(&self, rng: &mut SplitMix64) -> Time {
        let faults = &self.faults;
        if faults.long_delay_ms_max > 0 && chance(rng, faults.long_delay_per_mille) {
            return 1 + rng.below(faults.long_delay_ms_max);
        }
        faults.delay_ms_min + rng.below(faults.delay_ms_max - faults.delay_ms_min + 1)
    }

    /// True when `a` and `b` are on the same side of the partition.
    pub(crate) fn connected(&self, a: Endpoint, b: Endpoint) -> bool {
        self.side(a) == self.side(b)
    }

    fn side(&self, endpoint: Endpoint) -> u8 {
        self.sides.get(&endpoint).copied().unwrap_or(0)
    }

    /// Splits the endpoints: those in `minority` on side 1, the rest on side 0.
    pub(crate) fn partition(&mut self, minority: impl IntoIterator<Item = Endpoint>) {
        self.sides = minority.into_iter().map(|endpoint| (endpoint, 1)).collect();
    }

    /// Ends the partition.
    pub(crate) fn heal(&mut self) {
        self.sides.clear();
    }
}

/// True with probability `per_mille / 1000`.
pub(crate) fn chance(rng: &mut SplitMix64, per_mille: u64) -> bool {
    per_mille > 0 && rng.below(1000) < per_mille
}
