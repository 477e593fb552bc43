//! Which shards a storage group holds, and in which state, as of the configuration it has
//! applied (6.824 Lab 4B's per-shard state, DESIGN.md "Shard migration").
//!
//! A group follows the controller's configurations strictly in order, each switch a log entry
//! ([`Ownership::reconfigure`]), and switches to configuration N+1 only once every shard of N
//! is settled (every shard it holds is [`ShardState::Serving`]). Per shard:
//!
//! | state | serves | what happens next |
//! |---|---|---|
//! | `Serving` | yes | stays until a configuration gives the shard to another group |
//! | `Pulling { from }` | no (`ShardNotReady`) | the data arrives in chunks through the log, each continuing where the last stopped ([`Ownership::resume`]); the last one makes it `Confirming` |
//! | `Confirming { from }` | yes | the old owner deletes its copy, then `Serving` |
//! | `Sending { to }` | no (`WrongGroup`) | kept, frozen, until the new owner has it; then deleted |
//!
//! Invariants:
//! - A shard is in `shards` exactly when this group holds its data (or is about to receive it).
//! - A `Sending` shard is never written: its data is exactly the data as of the switch, so any
//!   replica may stream it, any number of times.
//! - Every group named by a `Pulling` or `Confirming` shard is a key of `sources`.
//! - Every shard of `resume` is `Pulling`: the chunks installed so far hold the previous
//!   owner's shard up to that position, so a pull (by this leader or the next) continues from
//!   it, not from the start.
//! - `shard_count` is the cluster's shard count (every configuration has it) once the group
//!   has applied a configuration in this record's version, 0 before (not known yet); every
//!   shard held is below it.
//!
//! The last three are checked ([`Ownership::check_invariants`]) before every record is written
//! and after every record is read.
//!
//! A group whose node does not follow a controller has no ownership at all (`None` in the
//! state machine): it serves every shard it is asked about, as a static single-group cluster
//! does.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_controller::codec::{Reader, put_groups, put_len};
use mosaic_controller::{ConfigNum, Configuration};
use mosaic_engine::{GroupId, ShardCursor, ShardId};
use mosaic_raft::NodeId;
use mosaic_raftstore::Error;

use crate::encoding::{DecodeError, put_cursor, read_cursor};

/// The shard of a group's data where the group keeps its own records (its ownership); never
/// a user shard (clients asking for it are refused), but inside the group's key range, so a
/// group snapshot carries it.
pub const METADATA_SHARD: ShardId = ShardId(u32::MAX);

/// The key of the ownership record in [`METADATA_SHARD`].
pub(crate) const OWNERSHIP_KEY: &[u8] = b"ownership";

/// The node metadata record that says the node's groups are placed by a controller (value
/// [`PLACED_BY_CONTROLLER`]). Without it, groups serve every shard.
pub const PLACEMENT_RECORD: &[u8] = b"shard-placement";

/// The value of [`PLACEMENT_RECORD`] on a node that follows a controller.
pub const PLACED_BY_CONTROLLER: &[u8] = b"controller";

/// The node metadata record of a store placed by a controller that holds the latest
/// configuration number when the store first followed it (a big-endian `u64`; empty until it
/// is known, see [`PlacedSince`]): the groups of that configuration or an earlier one existed
/// before this store, so a replica of them here must come back through a join, never be
/// created (docs/migration.md "Placed and static groups").
pub const PLACED_SINCE_RECORD: &[u8] = b"shard-placement-since";

/// What a placed store knows of when it first followed the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacedSince {
    /// No record: a store from before the record existed.
    Unrecorded,
    /// A new store that has not learned the latest configuration number yet.
    Pending,
    /// The latest configuration number when the store first followed the controller.
    Config(ConfigNum),
}

/// Version 2 added `resume`, version 3 `shard_count`; records of versions 1 and 2 (without
/// them) are still read.
const OWNERSHIP_VERSION: u8 = 3;
const SERVING_TAG: u8 = 1;
const PULLING_TAG: u8 = 2;
const CONFIRMING_TAG: u8 = 3;
const SENDING_TAG: u8 = 4;

/// The state of one shard a group holds. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardState {
    /// The group serves the shard.
    Serving,
    /// The group owns the shard but its data is still at `from`, the previous owner.
    Pulling {
        /// The previous owner.
        from: GroupId,
    },
    /// The data has arrived and the group serves the shard; `from` has not yet deleted its
    /// copy.
    Confirming {
        /// The previous owner.
        from: GroupId,
    },
    /// The group no longer owns the shard and keeps it until the new owner has it.
    Sending {
        /// The new owner (`None` when the configuration assigns the shard to no group).
        to: Option<GroupId>,
    },
}

impl ShardState {
    /// True when the group answers reads and writes of the shard.
    #[must_use]
    pub fn serves(self) -> bool {
        matches!(self, Self::Serving | Self::Confirming { .. })
    }
}

impl fmt::Display for ShardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serving => f.write_str("serving"),
            Self::Pulling { from } => write!(f, "pulling from group {from}"),
            Self::Confirming { from } => write!(f, "serving, group {from} not yet told"),
            Self::Sending { to: Some(to) } => write!(f, "sending to group {to}"),
            Self::Sending { to: None } => f.write_str("sending to no group"),
        }
    }
}

/// Why a reconfiguration does not apply now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotApplied {
    /// The group is past it, or it does not follow from where the group is: it will never
    /// apply.
    Stale(String),
    /// It may apply later (shards of the current configuration are still moving).
    NotYet(String),
}

/// The shards a group holds as of configuration `num`. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The configuration the group has applied (0: none yet).
    pub num: ConfigNum,
    /// Every shard the group holds, and its state.
    pub shards: BTreeMap<ShardId, ShardState>,
    /// The members, as of configuration `num - 1`, of every group a shard is pulled from or
    /// confirmed to.
    pub sources: BTreeMap<GroupId, Vec<NodeId>>,
    /// For a `Pulling` shard of which chunks have been installed: where the next chunk starts.
    pub resume: BTreeMap<ShardId, ShardCursor>,
    /// The cluster's shard count, which the group checks every key's shard against; 0 until
    /// the group applies a configuration in a record of version 3 (a group written by an
    /// older build knows it from its next reconfiguration on).
    pub shard_count: u32,
}

impl Ownership {
    /// True when every shard the group holds is `Serving`: the group may move on.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.shards.values().all(|state| *state == ShardState::Serving)
    }

    /// The state of `shard`, if the group holds it.
    #[must_use]
    pub fn state(&self, shard: ShardId) -> Option<ShardState> {
        self.shards.get(&shard).copied()
    }

    /// Where the next chunk of the pulled `shard` starts: after the chunks installed so far.
    #[must_use]
    pub fn resume_point(&self, shard: ShardId) -> ShardCursor {
        self.resume.get(&shard).cloned().unwrap_or_default()
    }

    /// Checks that `key` is in `shard` (when the group knows the cluster's shard count): a
    /// request that names another shard comes from a client whose shard count or hash is not
    /// the cluster's, and must not read or write the key where other clients never look.
    ///
    /// # Errors
    /// [`Error::WrongShard`] when the key hashes to another shard.
    pub fn check_key(&self, shard: ShardId, key: &[u8]) -> Result<(), Error> {
        if self.shard_count == 0 {
            return Ok(());
        }
        let key_shard = mosaic_types::shard_for_key(key, self.shard_count);
        if key_shard == shard {
            Ok(())
        } else {
            Err(Error::WrongShard { named: shard, key_shard, shard_count: self.shard_count })
        }
    }

    /// Checks that a request naming no key (a scan) routes by the cluster's shard count
    /// (known once the group applied a configuration): a client with another count would
    /// read only some shards, or the wrong ones.
    ///
    /// # Errors
    /// [`Error::WrongShard`] naming `shard` twice (there is no key) and the cluster's count.
    pub fn check_shard_count(&self, shard: ShardId, shard_count: u32) -> Result<(), Error> {
        if self.shard_count == 0 || shard_count == self.shard_count {
            return Ok(());
        }
        Err(Error::WrongShard { named: shard, key_shard: shard, shard_count: self.shard_count })
    }

    /// Checks that the group serves `shard` now.
    ///
    /// # Errors
    /// [`Error::ShardNotReady`] while its data is on its way; [`Error::WrongGroup`] when the
    /// group does not own it in its configuration.
    pub fn check_serves(&self, shard: ShardId) -> Result<(), Error> {
        match self.state(shard) {
            Some(state) if state.serves() => Ok(()),
            Some(ShardState::Pulling { .. }) => Err(Error::ShardNotReady),
            _ => Err(Error::WrongGroup { config_num: self.num.0 }),
        }
    }

    /// The ownership after `group` switches from configuration `previous` to `next`.
    ///
    /// A group at configuration 0 that `previous` does not list may start at `next` directly:
    /// it held nothing in any earlier configuration (the configurations before it are no-ops
    /// for it), so a new group does not walk the whole history.
    ///
    /// # Errors
    /// [`NotApplied::Stale`] when `next` is not the configuration after the group's;
    /// [`NotApplied::NotYet`] while a shard of the current configuration is still moving.
    pub fn reconfigure(
        &self,
        group: GroupId,
        previous: &Configuration,
        next: &Configuration,
    ) -> Result<Self, NotApplied> {
        let stale = |reason: String| Err(NotApplied::Stale(reason));
        if next.num.0 != previous.num.0 + 1 || next.shards.len() != previous.shards.len() {
            return stale(format!(
                "configuration {} ({} shards) does not follow configuration {} ({} shards)",
                next.num,
                next.shards.len(),
                previous.num,
                previous.shards.len()
            ));
        }
        let fresh = self.num == ConfigNum(0)
            && self.shards.is_empty()
            && !previous.groups.contains_key(&group);
        if self.num != previous.num && !fresh {
            if next.num > self.num {
                return Err(NotApplied::NotYet(format!(
                    "at configuration {}, configuration {} must apply first",
                    self.num,
                    self.num.0 + 1
                )));
            }
            return stale(format!("already at configuration {}", self.num));
        }
        if !self.is_settled() {
            return Err(NotApplied::NotYet(format!(
                "shards of configuration {} are still moving",
                self.num
            )));
        }
        let mut shards = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for (index, (before, after)) in previous.shards.iter().zip(&next.shards).enumerate() {
            let shard = ShardId(u32::try_from(index).expect("shard counts fit in u32"));
            let held = self.shards.contains_key(&shard);
            let state = match (held, *after == Some(group)) {
                (true, true) => ShardState::Serving,
                (true, false) => ShardState::Sending { to: *after },
                (false, true) => match before {
                    Some(from) if *from != group => {
                        let members = previous.groups.get(from).cloned().unwrap_or_default();
                        sources.insert(*from, members);
                        ShardState::Pulling { from: *from }
                    }
                    // Unassigned before (or, impossibly, ours without data): it starts empty.
                    _ => ShardState::Serving,
                },
                (false, false) => continue,
            };
            shards.insert(shard, state);
        }
        let shard_count = u32::try_from(next.shards.len()).expect("shard counts fit in u32");
        Ok(Self { num: next.num, shards, sources, resume: BTreeMap::new(), shard_count })
    }

    /// Records that the pulled `shard` has been installed up to `next`.
    pub(crate) fn installed(&mut self, shard: ShardId, next: ShardCursor) {
        if matches!(self.state(shard), Some(ShardState::Pulling { .. })) {
            self.resume.insert(shard, next);
        }
    }

    /// Marks the pulled `shard` as arrived: `Pulling` becomes `Confirming`.
    pub(crate) fn arrived(&mut self, shard: ShardId) {
        self.resume.remove(&shard);
        if let Some(state) = self.shards.get_mut(&shard)
            && let ShardState::Pulling { from } = *state
        {
            *state = ShardState::Confirming { from };
        }
    }

    /// Marks `shard` as confirmed by its old owner: `Confirming` becomes `Serving`.
    pub(crate) fn confirmed(&mut self, shard: ShardId) {
        if let Some(state) = self.shards.get_mut(&shard)
            && matches!(state, ShardState::Confirming { .. })
        {
            *state = ShardState::Serving;
        }
        self.forget_unused_sources();
    }

    /// Forgets a sent shard once the new owner has it.
    pub(crate) fn handed_off(&mut self, shard: ShardId) {
        self.shards.remove(&shard);
    }

    fn forget_unused_sources(&mut self) {
        let shards = &self.shards;
        self.sources.retain(|group, _| {
            shards.values().any(|state| {
                matches!(state, ShardState::Pulling { from } | ShardState::Confirming { from }
                    if from == group)
            })
        });
    }

    /// Encodes the record: `version u8 (3) ‖ num u64 ‖ shards (count u32, then per shard:
    /// shard u32 ‖ tag u8 ‖ fields) ‖ sources (a map of groups to member nodes) ‖ resume
    /// (count u32, then per shard: shard u32 ‖ cursor) ‖ shard_count u32`. Tags: 1 serving,
    /// 2 pulling (from u64), 3 confirming (from u64), 4 sending (0, or 1 and to u64). Cursors
    /// as in [`crate::MigrationCommand`]'s encoding. Version 2 is the same without
    /// `shard_count`, version 1 also without `resume`.
    ///
    /// # Panics
    /// If the ownership breaks an invariant ([`Ownership::check_invariants`]): a bug.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        if let Err(broken) = self.check_invariants() {
            panic!("an ownership that breaks its invariants is never written: {broken}: {self:?}");
        }
        let mut out = BytesMut::new();
        out.put_u8(OWNERSHIP_VERSION);
        out.put_u64(self.num.0);
        put_len(&mut out, self.shards.len());
        for (shard, state) in &self.shards {
            out.put_u32(shard.0);
            match state {
                ShardState::Serving => out.put_u8(SERVING_TAG),
                ShardState::Pulling { from } => {
                    out.put_u8(PULLING_TAG);
                    out.put_u64(from.0);
                }
                ShardState::Confirming { from } => {
                    out.put_u8(CONFIRMING_TAG);
                    out.put_u64(from.0);
                }
                ShardState::Sending { to } => {
                    out.put_u8(SENDING_TAG);
                    mosaic_controller::codec::put_option_group(&mut out, *to);
                }
            }
        }
        put_groups(&mut out, &self.sources);
        put_len(&mut out, self.resume.len());
        for (shard, cursor) in &self.resume {
            out.put_u32(shard.0);
            put_cursor(&mut out, cursor);
        }
        out.put_u32(self.shard_count);
        out.freeze()
    }

    /// Decodes a record.
    ///
    /// # Errors
    /// [`DecodeError`] for anything [`Ownership::encode`] does not write.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let error = |error: mosaic_controller::codec::DecodeError| DecodeError(error.0);
        let mut reader = Reader::new(bytes, "ownership record");
        let version = reader.u8().map_err(error)?;
        if !(1..=OWNERSHIP_VERSION).contains(&version) {
            return Err(DecodeError(format!("unknown ownership version {version}")));
        }
        let num = ConfigNum(reader.u64().map_err(error)?);
        let count = reader.count(5).map_err(error)?;
        let mut shards = BTreeMap::new();
        for _ in 0..count {
            let shard = ShardId(reader.u32().map_err(error)?);
            let state = match reader.u8().map_err(error)? {
                SERVING_TAG => ShardState::Serving,
                PULLING_TAG => ShardState::Pulling { from: GroupId(reader.u64().map_err(error)?) },
                CONFIRMING_TAG => {
                    ShardState::Confirming { from: GroupId(reader.u64().map_err(error)?) }
                }
                SENDING_TAG => ShardState::Sending { to: reader.option_group().map_err(error)? },
                tag => return Err(DecodeError(format!("unknown shard state tag {tag}"))),
            };
            if shards.insert(shard, state).is_some() {
                return Err(DecodeError(format!("shard {shard} listed twice")));
            }
        }
        let sources = reader.groups().map_err(error)?;
        let mut resume = BTreeMap::new();
        if version >= 2 {
            for _ in 0..reader.count(5).map_err(error)? {
                let shard = ShardId(reader.u32().map_err(error)?);
                if resume.insert(shard, read_cursor(&mut reader).map_err(error)?).is_some() {
                    return Err(DecodeError(format!("shard {shard} resumes twice")));
                }
            }
        }
        let shard_count = if version >= 3 { reader.u32().map_err(error)? } else { 0 };
        reader.finish().map_err(error)?;
        let ownership = Self { num, shards, sources, resume, shard_count };
        ownership.check_invariants().map_err(DecodeError)?;
        Ok(ownership)
    }

    /// Checks the invariants of the module documentation that the types do not enforce:
    /// every group a shard is pulled from or confirmed to has its members in `sources`, only
    /// `Pulling` shards resume, and every shard held is below a known shard count. Called
    /// before every encode (a broken one is a bug, never written) and after every decode (a
    /// broken one is a corrupt record).
    ///
    /// # Errors
    /// The first invariant broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (shard, state) in &self.shards {
            if let ShardState::Pulling { from } | ShardState::Confirming { from } = state
                && !self.sources.contains_key(from)
            {
                return Err(format!("shard {shard} is {state} but group {from} has no members"));
            }
        }
        for shard in self.resume.keys() {
            if !matches!(self.shards.get(shard), Some(ShardState::Pulling { .. })) {
                return Err(format!("shard {shard} resumes but is not pulled"));
            }
        }
        if self.shard_count > 0
            && let Some(shard) = self.shards.keys().find(|shard| shard.0 >= self.shard_count)
        {
            return Err(format!(
                "shard {shard} is held but the cluster has {} shards",
                self.shard_count
            ));
        }
        Ok(())
    }
}
