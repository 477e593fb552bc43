//! A storage node whose data directory was lost brings itself back into the groups it was a
//! member of: it never creates a replica of such a group (a voter with an empty log and no
//! memory of its votes could elect a leader that misses acknowledged writes); the group's
//! leader removes it, it joins in the leader's term, catches up by snapshot as a learner and is
//! promoted ([`mosaic_client::membership`], docs/raftstore.md "Changing a group's membership").
//!
//! Which groups: those of a configuration no later than the one the store was born under
//! ([`mosaic_shardkv::KvStateMachine::placed_since`]); they existed before this store, so the
//! node may have been their member with a disk it no longer has. The job is resumable: a
//! replica hosted here came from an earlier join of this store (it is brought on from there),
//! none means the node is removed first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mosaic_controller::GroupLife;
use tokio::task::{AbortHandle, JoinSet};

use mosaic_client::membership::{LeaderView, MembershipDriver, MembershipJob, MembershipStep};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;
use mosaic_raftstore::{Error as StoreError, StoreMsg};
use mosaic_shardkv::KvStateMachine;

use crate::node::NodeEngine;
use crate::runner::StoreHandle;
use crate::status::Directory;

/// How long one attempt may take before it is started again from a fresh view.
const ATTEMPT_MAX: Duration = Duration::from_secs(300);
/// Pause after a failed attempt.
const ATTEMPT_RETRY: Duration = Duration::from_secs(1);

/// What every rejoin of one node works with.
#[derive(Clone)]
pub(crate) struct RejoinContext {
    /// This node.
    pub(crate) node: NodeId,
    /// Its store.
    pub(crate) store: StoreHandle<NodeEngine, KvStateMachine>,
    /// Where the group's members are reached.
    pub(crate) directory: Directory,
    /// How long one call may take.
    pub(crate) call_timeout: Duration,
}

/// The rejoins a node runs: at most one per group while it runs, all stopped when dropped.
pub(crate) struct Rejoins {
    context: RejoinContext,
    started: BTreeSet<GroupId>,
    running: BTreeMap<GroupId, AbortHandle>,
    tasks: JoinSet<()>,
}

impl Rejoins {
    /// No rejoin running yet.
    pub(crate) fn new(context: RejoinContext) -> Self {
        let (started, running, tasks) = (BTreeSet::new(), BTreeMap::new(), JoinSet::new());
        Self { context, started, running, tasks }
    }

    /// Starts bringing back this node's replica of `group` (once). `members` are the members
    /// the configuration lists.
    pub(crate) fn start(&mut self, group: GroupId, members: Vec<NodeId>) {
        if self.started.insert(group) {
            let task = rejoin(self.context.clone(), group, members);
            self.running.insert(group, self.tasks.spawn(task));
        }
    }

    /// Stops the rejoins of retired groups (their replicas are being destroyed).
    pub(crate) fn stop_retired(&mut self, lives: &BTreeMap<GroupId, GroupLife>) {
        self.running.retain(|group, task| {
            let retired = lives.get(group).is_some_and(|life| life.retired);
            if retired {
                task.abort();
            }
            !retired && !task.is_finished()
        });
    }
}

/// Brings this node's replica of `group` back, until it is a voter again.
async fn rejoin(context: RejoinContext, group: GroupId, members: Vec<NodeId>) {
    let node = context.node;
    if members == [node] {
        tracing::error!(%node, %group,
            "this node was the group's only member and its data directory was lost: the \
             group's data is gone and its shards cannot be served");
        return;
    }
    tracing::warn!(%node, %group,
        "this store is newer than the group: its replica here was lost; rejoining through \
         the group's leader (removed, then added back as a learner and promoted)");
    loop {
        match attempt(&context, group).await {
            Ok(view) => {
                tracing::info!(%node, %group, voters = ?view.voters, "rejoined the group");
                return;
            }
            Err(error) => {
                tracing::warn!(%node, %group, %error, "cannot rejoin yet; retrying");
                tokio::time::sleep(ATTEMPT_RETRY).await;
            }
        }
    }
}

async fn attempt(context: &RejoinContext, group: GroupId) -> Result<LeaderView, String> {
    let node = context.node;
    let hosted = match context
        .store
        .ask(|callback| StoreMsg::Status { group, confirm: false, callback })
        .await
    {
        Ok(_) => true,
        Err(StoreError::GroupNotFound { .. }) => false,
        Err(error) => return Err(format!("reading the local replica: {error}")),
    };
    let deadline = Instant::now() + ATTEMPT_MAX;
    let driver = MembershipDriver::new(context.directory.all(), context.call_timeout);
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
    driver.run(group, job, deadline, report).await.map_err(|error| error.to_string())
}
