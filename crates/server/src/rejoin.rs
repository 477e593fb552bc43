//! A storage node whose data directory was lost brings itself back into the groups it was a
//! member of: it never creates a replica of such a group (a voter with an empty log and no
//! memory of its votes could elect a leader that misses acknowledged writes); the group's
//! leader removes it, it joins in the leader's term, catches up by snapshot as a learner and is
//! promoted ([`mosaic_client::membership`], docs/raftstore.md "Changing a group's membership").
//!
//! Which groups, and when to try again, the node's agent decides ([`mosaic_agent`]: those of
//! a configuration no later than the one the store was born under); this module runs one
//! attempt. The job is resumable: a replica hosted here came from an earlier join of this
//! store (it is brought on from there), none means the node is removed first.

use std::time::{Duration, Instant};

use mosaic_client::membership::{LeaderView, MembershipDriver, MembershipJob, MembershipStep};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;
use mosaic_raftstore::{Error as StoreError, StoreMsg};
use mosaic_shardkv::KvStateMachine;

use crate::backend::NodeEngine;
use crate::runner::StoreHandle;
use crate::status::Directory;

/// One attempt at bringing the replica of `group` on `node` (whose store is `store`) back,
/// until `deadline`, reaching the members through `directory`, each call within
/// `call_timeout`; `Ok` once it is a voter again.
pub(crate) async fn attempt(
    node: NodeId,
    store: &StoreHandle<NodeEngine, KvStateMachine>,
    directory: &Directory,
    call_timeout: Duration,
    group: GroupId,
    deadline: Instant,
) -> Result<(), String> {
    let hosted =
        match store.ask(|callback| StoreMsg::Status { group, confirm: false, callback }).await {
            Ok(_) => true,
            Err(StoreError::GroupNotFound { .. }) => false,
            Err(error) => return Err(format!("reading the local replica: {error}")),
        };
    let driver = MembershipDriver::new(directory.all(), call_timeout);
    let mut job = MembershipJob::add(node);
    if hosted {
        job.joined(node);
    } else {
        job = job.lost(node);
    }
    let report = |view: &LeaderView, step: &MembershipStep| {
        if *step != MembershipStep::Wait {
            tracing::info!(%node, %group, leader = %view.leader, ?step, "rejoining");
        }
    };
    let view = driver.run(group, job, deadline, report).await.map_err(|error| error.to_string())?;
    tracing::info!(%node, %group, voters = ?view.voters, "rejoined the group");
    Ok(())
}
