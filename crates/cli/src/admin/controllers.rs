//! `mosaic admin controller list|add|remove`: the controller group's own replicas, changed one
//! at a time through the group's log by the planner every storage group's change uses
//! ([`mosaic_client::membership`]): a new replica joins empty, is added as a learner, catches
//! up by snapshot and is promoted; a replica is removed through the leader (docs/controller.md
//! "Changing the controller's replicas").
//!
//! The replicas are found by asking every address known (`--controllers`, the addresses the
//! controller recorded, `--address`, then the replicas' own peers) which replica it is (a dry
//! run of `Controller.Bootstrap`, as `init` asks); a replica that does not answer is left out
//! of the search for the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use mosaic_client::Tls;
use mosaic_client::init::{ReplicaHolding, bootstrap};
use mosaic_client::membership::{LeaderView, MembershipDriver, MembershipJob};
use mosaic_client::{CONTROLLER_GROUP, NodeId};
use mosaic_controller::Command;
use mosaic_proto::pb;
use serde_json::json;

use super::cluster::Cluster;
use super::replicas::{self, Members};
use super::{CALL_TIMEOUT, Output, print_line};

/// How long `controller remove` waits for every voter to apply the removal before it says
/// whether the removed replica's data may go.
const VOTERS_APPLIED_WAIT: Duration = Duration::from_secs(5);

/// The controller replicas as the admin commands find them.
pub(super) struct Controllers<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) addresses: &'a [String],
    pub(super) tls: Option<&'a Tls>,
    pub(super) deadline: Instant,
}

/// The replicas that answered: each one's address and whether it holds the controller group.
type Found = BTreeMap<NodeId, ReplicaHolding>;

/// What a replica holds of the controller group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holding {
    /// No replica.
    Nothing,
    /// A replica that joined and has no membership yet (an add stopped after the join, or
    /// waiting for the leader's snapshot).
    Joined,
    /// A replica with a membership: created with the group, or a member once.
    Member,
    /// A replica with a membership whose log ends before what the leader knows it
    /// acknowledged: it lost its data and was created again (`--bootstrap`).
    Diverged,
}

/// What `controller add` does for replica `id` at `address`.
#[derive(Debug, PartialEq, Eq)]
enum AddPlan {
    /// A voter holding the group: nothing to do.
    VoterAlready,
    /// Run `job`; `lost`: the member lost its data and is removed first.
    Add { job: MembershipJob, lost: bool },
    /// Adding it would be wrong: why, and what to do.
    Refuse(String),
}

/// Decides `controller add` from the leader's `view`, what the replica holds, and where every
/// replica that answered reaches the others (`found`, the new one included). Two processes
/// must never answer as one replica (each would keep its own votes and log): a replica
/// another reaches at another address is refused (a replica on another host takes a new id).
/// A joiner must reach every voter: its replies to a leader it cannot reach are lost, and it
/// would never receive its snapshot.
fn plan_add(
    id: NodeId,
    address: &str,
    view: &LeaderView,
    holding: Holding,
    found: &Found,
) -> AddPlan {
    for (replica, answer) in found.iter().filter(|(replica, _)| **replica != id) {
        if let Some(known) = answer.peers.get(&id).filter(|known| *known != address) {
            return AddPlan::Refuse(format!(
                "controller replica {replica} reaches replica {id} at {known}, not {address}: two \
                 processes must never answer as one replica, so a replica on another host takes \
                 a new id (`controller add NEW --address {address}`, then `controller remove \
                 {id}`)"
            ));
        }
    }
    let unknown: Vec<String> = view
        .voters
        .iter()
        .filter(|voter| **voter != id && !found[&id].peers.contains_key(voter))
        .map(ToString::to_string)
        .collect();
    if !unknown.is_empty() {
        return AddPlan::Refuse(format!(
            "controller replica {id} does not know where voters {} are: restart it with --peers \
             naming every voter (`controller list` shows them)",
            unknown.join(", ")
        ));
    }
    let (voter, learner) = (view.voters.contains(&id), view.learners.contains(&id));
    let add = |lost: bool| {
        let job = MembershipJob::add(id);
        AddPlan::Add { job: if lost { job.lost(id) } else { job }, lost }
    };
    match holding {
        Holding::Member if voter => AddPlan::VoterAlready,
        // An add that stopped: it goes on.
        Holding::Member if learner => add(false),
        Holding::Joined if !voter => add(false),
        Holding::Nothing if !voter && !learner => add(false),
        // Its log is not the group's.
        Holding::Member | Holding::Diverged if !voter && !learner => AddPlan::Refuse(format!(
            "controller replica {id} holds a controller group but is not a member (it was started \
             with --bootstrap, or removed earlier): stop it, clear its data directory, start it \
             without --bootstrap, and run this again"
        )),
        // A member that holds no replica, a voter whose replica has no membership, or one
        // whose log lost what it acknowledged: it lost its data and may have voted or
        // acknowledged entries before (a replica created again by --bootstrap refuses the
        // join after its removal, saying to clear its directory).
        Holding::Nothing | Holding::Joined | Holding::Diverged | Holding::Member => add(true),
    }
}

/// Why `controller remove` of `id` is refused, unless `force`: the voters left that work (hold
/// the group and follow its leader, `working`) must be a majority of the voters left, or the
/// group could never elect a leader again. A replica that answers but lost its data does not
/// count (found in review).
fn refuse_remove(
    id: NodeId,
    view: &LeaderView,
    working: &BTreeSet<NodeId>,
    force: bool,
) -> Option<String> {
    if view.voters.len() == 1 && view.voters.contains(&id) {
        return Some(format!(
            "controller replica {id} is the group's only voter: add another one first"
        ));
    }
    let left: Vec<NodeId> = view.voters.iter().copied().filter(|voter| *voter != id).collect();
    let up = left.iter().filter(|voter| working.contains(voter)).count();
    (!force && 2 * up <= left.len()).then(|| {
        format!(
            "without replica {id}, {up} of the {} voters left hold the group and follow its \
             leader, not a majority: the group could not elect a leader. Bring the others \
             back (or add replicas) first, or pass --force",
            left.len()
        )
    })
}

fn addresses_of(found: &Found) -> BTreeMap<NodeId, String> {
    found.iter().map(|(id, holding)| (*id, holding.address.clone())).collect()
}

impl Controllers<'_> {
    /// Lists the controller group's members as its leader shows them.
    pub(super) async fn list(&self) -> anyhow::Result<ExitCode> {
        let found = self.find(None).await?;
        let view = self.driver(&found).leader_view(CONTROLLER_GROUP, self.deadline).await?;
        let output = self.cluster.output();
        let members = view
            .voters
            .iter()
            .map(|id| (*id, "voter"))
            .chain(view.learners.iter().map(|id| (*id, "learner")));
        let mut rows = Vec::new();
        for (id, role) in members {
            let address = found.get(&id).map(|holding| holding.address.clone());
            let matched = view.matched.get(&id).map_or(0, |index| index.0);
            rows.push((id, address, role, matched));
        }
        rows.sort_by_key(|row| row.0);
        let text = match output {
            Output::Human => {
                let mut text = format!(
                    "{:<8} {:<24} {:<8} {:<7} {:>10}",
                    "replica", "address", "role", "leader", "log"
                );
                for (id, address, role, matched) in &rows {
                    text.push_str(&format!(
                        "\n{:<8} {:<24} {:<8} {:<7} {:>10}",
                        id.0,
                        address.as_deref().unwrap_or("(did not answer)"),
                        role,
                        if *id == view.leader { "yes" } else { "" },
                        format!("{matched}/{}", view.commit.0),
                    ));
                }
                text
            }
            Output::Json => json!({
                "leader": view.leader.0,
                "commit": view.commit.0,
                "replicas": rows.iter().map(|(id, address, role, matched)| json!({
                    "id": id.0, "address": address, "role": role, "match": matched,
                })).collect::<Vec<_>>(),
            })
            .to_string(),
        };
        print_line(&text)?;
        Ok(ExitCode::SUCCESS)
    }

    /// Adds replica `id`, running at `address`, to the controller group: records its address,
    /// then joins, adds as a learner and promotes it ([`plan_add`] decides).
    pub(super) async fn add(&self, id: NodeId, address: &str) -> anyhow::Result<ExitCode> {
        mosaic_controller::validate_address(address).map_err(anyhow::Error::msg)?;
        let found = self.find(Some(address)).await?;
        match found.get(&id) {
            Some(holding) if holding.address == address => {}
            Some(holding) => bail!(
                "controller replica {id} answers at {}, not at {address}: a replica on another \
                 host takes a new id",
                holding.address
            ),
            None => bail!(
                "{address} did not answer as controller replica {id}: start it first, on an \
                 empty data directory, without --bootstrap, with --peers naming every voter \
                 (`mosaic controller --id {id} --listen {address} --data-dir ... --peers ...`)"
            ),
        }
        let driver = self.driver(&found);
        let view = driver.leader_view(CONTROLLER_GROUP, self.deadline).await?;
        let holding = self.holding(&found[&id], &view).await?;
        let job = match plan_add(id, address, &view, holding, &found) {
            AddPlan::VoterAlready => {
                return self.print(&view, &format!("controller replica {id} is a voter already"));
            }
            AddPlan::Refuse(reason) => bail!(reason),
            AddPlan::Add { job, lost } => {
                if lost {
                    eprintln!(
                        "controller replica {id} is a member but holds no replica (its data \
                         was lost): it is removed first, then added back"
                    );
                }
                job
            }
        };
        let command = Command::SetControllerAddress { replica: id, address: address.to_string() };
        if self.cluster.execute_quietly(command).await?.is_none() {
            return Ok(ExitCode::FAILURE);
        }
        let view = self.run(&found, &driver, job).await?;
        self.print(&view, &format!("controller replica {id} added"))
    }

    /// The replica's own status of the controller group (`NodeAdmin.GroupStatus`).
    async fn status(&self, holding: &ReplicaHolding) -> anyhow::Result<pb::GroupStatusResponse> {
        let request =
            pb::GroupStatusRequest { group_id: CONTROLLER_GROUP.0, confirm_leadership: false };
        let answer =
            replicas::client(&holding.address, self.tls).await?.group_status(request).await;
        answer.map(tonic::Response::into_inner).map_err(|status| {
            anyhow::anyhow!("replica {} ({}): {}", holding.node, holding.address, status.message())
        })
    }

    /// What the replica of `holding` holds, as the leader's `view` sees it.
    async fn holding(
        &self,
        holding: &ReplicaHolding,
        view: &LeaderView,
    ) -> anyhow::Result<Holding> {
        if holding.held.is_none() {
            return Ok(Holding::Nothing);
        }
        let status = self.status(holding).await?;
        let acknowledged = view.matched.get(&holding.node).map_or(0, |index| index.0);
        Ok(if status.voters.is_empty() && status.learners.is_empty() {
            Holding::Joined
        } else if status.last_index < acknowledged {
            Holding::Diverged
        } else {
            Holding::Member
        })
    }

    /// The voters of `view` other than `id` that hold the group with a membership and follow
    /// the leader of `view` in its term, each asked now (all at once: one that is down costs a
    /// call timeout, not one per voter).
    async fn working(&self, id: NodeId, view: &LeaderView, found: &Found) -> BTreeSet<NodeId> {
        let voters = view.voters.iter().filter(|voter| **voter != id);
        let asks = voters.filter_map(|voter| found.get(voter)).map(|holding| async move {
            let status = self.status(holding).await.ok()?;
            let follows = !status.voters.is_empty()
                && status.term == view.term.0
                && status.leader == Some(view.leader.0);
            follows.then_some(holding.node)
        });
        futures_util::future::join_all(asks).await.into_iter().flatten().collect()
    }

    /// Removes replica `id` from the controller group through its leader; unless `force`,
    /// refused when the voters left that work are not a majority of the voters left.
    pub(super) async fn remove(&self, id: NodeId, force: bool) -> anyhow::Result<ExitCode> {
        let found = self.find(None).await?;
        let driver = self.driver(&found);
        let view = driver.leader_view(CONTROLLER_GROUP, self.deadline).await?;
        if !view.voters.contains(&id) && !view.learners.contains(&id) {
            return self.print(&view, &format!("controller replica {id} is not a member"));
        }
        let working = self.working(id, &view, &found).await;
        if let Some(reason) = refuse_remove(id, &view, &working, force) {
            bail!(reason);
        }
        let view = self.run(&found, &driver, MembershipJob::remove(id)).await?;
        // Its data may go only once no voter counts it: a voter that has not applied the
        // removal may still need its vote (with the leader then lost, such a voter and the
        // others left may elect no one).
        let until = self.deadline.min(Instant::now() + VOTERS_APPLIED_WAIT);
        let awaited = MembershipJob::awaiting_removal(id);
        let done = match self.run_until(&found, &driver, awaited, until).await {
            Ok(_) => format!(
                "controller replica {id} removed (stop its process and clear its data directory; \
                 it never rejoins by itself)"
            ),
            Err(error) => format!(
                "controller replica {id} removed, but not every voter is known to have applied \
                 its removal ({error}): stop its process and keep its data directory until every \
                 voter is up and caught up (`mosaic admin controller list`); it never rejoins by \
                 itself"
            ),
        };
        self.print(&view, &done)
    }

    /// Every replica that answers at an address of `--controllers`, of the controller's
    /// records, or `extra`, then at the address a replica's peers give for a replica not
    /// found yet (asked in turn, until no new one comes up). One replica answering at two
    /// addresses asked is refused: the command cannot tell one process from two.
    async fn find(&self, extra: Option<&str>) -> anyhow::Result<Found> {
        let mut pending: BTreeSet<String> = self.addresses.iter().cloned().collect();
        match self.cluster.client().query(None).await {
            Ok(answer) => pending.extend(answer.controllers.into_values()),
            Err(error) => eprintln!("mosaic: could not read the recorded addresses: {error}"),
        }
        pending.extend(extra.map(str::to_string));
        let mut asked = BTreeSet::new();
        let mut found = Found::new();
        while !pending.is_empty() {
            let round: Vec<String> = std::mem::take(&mut pending).into_iter().collect();
            let mut discovered = BTreeMap::new();
            asked.extend(round.iter().cloned());
            let asks = round.iter().map(|address| async move {
                let answer = bootstrap(address, self.tls, CALL_TIMEOUT, 0, true).await;
                (address, answer.map(|answer| ReplicaHolding::from_pb(address, &answer)))
            });
            for (address, answer) in futures_util::future::join_all(asks).await {
                let holding = match answer {
                    Ok(holding) => holding,
                    Err(status) => {
                        eprintln!("mosaic: {address} did not answer: {}", status.message());
                        continue;
                    }
                };
                if let Some(other) = found.get(&holding.node) {
                    bail!(
                        "controller replica {} answers at both {} and {address}: if these are \
                         two names of one process, name it once, as the replicas' --peers do; \
                         if two processes answer as one replica, stop the one that should not \
                         run",
                        holding.node,
                        other.address
                    );
                }
                discovered.extend(holding.peers.clone());
                found.insert(holding.node, holding);
            }
            pending = discovered
                .into_iter()
                .filter(|(id, address)| !found.contains_key(id) && !asked.contains(address))
                .map(|(_, address)| address)
                .collect();
        }
        if found.is_empty() {
            bail!("no controller replica answered");
        }
        Ok(found)
    }

    fn driver(&self, found: &Found) -> MembershipDriver {
        MembershipDriver::new(addresses_of(found), CALL_TIMEOUT, self.tls.cloned())
    }

    /// Runs `job` on the controller group, reporting a learner's catch-up on stderr.
    async fn run(
        &self,
        found: &Found,
        driver: &MembershipDriver,
        job: MembershipJob,
    ) -> anyhow::Result<LeaderView> {
        self.run_until(found, driver, job, self.deadline).await
    }

    /// As [`Controllers::run`], given up at `deadline`.
    async fn run_until(
        &self,
        found: &Found,
        driver: &MembershipDriver,
        job: MembershipJob,
        deadline: Instant,
    ) -> anyhow::Result<LeaderView> {
        let nodes = addresses_of(found);
        let group = CONTROLLER_GROUP.0;
        Members { nodes: &nodes, tls: self.tls, group, deadline }.run(driver, job).await
    }

    fn print(&self, view: &LeaderView, done: &str) -> anyhow::Result<ExitCode> {
        let voters: Vec<u64> = view.voters.iter().map(|id| id.0).collect();
        let learners: Vec<u64> = view.learners.iter().map(|id| id.0).collect();
        let text = match self.cluster.output() {
            Output::Human => format!(
                "{done}: the controller group's voters are {voters:?}, learners {learners:?}"
            ),
            Output::Json => json!({
                "result": done, "leader": view.leader.0, "voters": voters, "learners": learners,
            })
            .to_string(),
        };
        print_line(&text)?;
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use mosaic_client::LogIndex;
    use mosaic_raft::Term;

    use super::*;

    fn view(voters: &[u64], learners: &[u64]) -> LeaderView {
        LeaderView {
            leader: NodeId(1),
            term: Term(3),
            commit: LogIndex(40),
            applied: LogIndex(40),
            last_index: LogIndex(40),
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: learners.iter().copied().map(NodeId).collect(),
            // Every voter has the commit index and answers the leader.
            matched: voters.iter().map(|node| (NodeId(*node), LogIndex(40))).collect(),
            active: voters.iter().chain(learners).copied().map(NodeId).collect(),
            changing: false,
            voters_applied: true,
        }
    }

    fn address(id: u64) -> String {
        format!("10.0.0.{id}:7000")
    }

    /// Replicas `ids` answering at their addresses, each reaching replicas 1 to 4 at theirs.
    fn found(ids: &[u64]) -> Found {
        let peers: BTreeMap<NodeId, String> = (1..=4).map(|id| (NodeId(id), address(id))).collect();
        ids.iter()
            .map(|id| {
                let holding = ReplicaHolding {
                    address: address(*id),
                    node: NodeId(*id),
                    members: BTreeSet::new(),
                    held: None,
                    peers: peers.clone(),
                };
                (NodeId(*id), holding)
            })
            .collect()
    }

    fn plan(voters: &[u64], learners: &[u64], holding: Holding, found: &Found) -> AddPlan {
        plan_add(NodeId(4), &address(4), &view(voters, learners), holding, found)
    }

    #[test]
    fn a_replica_is_added_resumed_removed_first_or_left_alone_by_what_it_holds() {
        let four = NodeId(4);
        let all = found(&[1, 2, 4]);
        let add = AddPlan::Add { job: MembershipJob::add(four), lost: false };
        let lost = AddPlan::Add { job: MembershipJob::add(four).lost(four), lost: true };
        assert_eq!(plan(&[1, 2, 3], &[], Holding::Nothing, &all), add, "a new replica");
        assert_eq!(plan(&[1, 2, 3], &[], Holding::Joined, &all), add, "stopped after the join");
        assert_eq!(plan(&[1, 2, 3], &[4], Holding::Member, &all), add, "stopped as a learner");
        assert_eq!(
            plan(&[1, 2, 3], &[4], Holding::Joined, &all),
            add,
            "a learner without its snapshot"
        );
        assert_eq!(plan(&[1, 2, 4], &[], Holding::Member, &all), AddPlan::VoterAlready);
        assert_eq!(plan(&[1, 2, 4], &[], Holding::Nothing, &all), lost, "a voter wiped");
        assert_eq!(plan(&[1, 2, 4], &[], Holding::Joined, &all), lost, "a voter wiped, joined");
        assert_eq!(plan(&[1, 2, 3], &[4], Holding::Nothing, &all), lost, "a learner wiped");
        // Wiped and started again with --bootstrap: its log lost what it acknowledged.
        assert_eq!(plan(&[1, 2, 4], &[], Holding::Diverged, &all), lost, "a voter re-created");
        assert_eq!(plan(&[1, 2, 3], &[4], Holding::Diverged, &all), lost, "a learner re-created");
    }

    #[test]
    fn a_replica_with_a_log_of_its_own_elsewhere_or_not_knowing_the_voters_is_refused() {
        let refused = |plan: AddPlan, said: &str| {
            assert!(matches!(&plan, AddPlan::Refuse(reason) if reason.contains(said)), "{plan:?}");
        };
        let all = found(&[1, 2, 4]);
        refused(plan(&[1, 2, 3], &[], Holding::Member, &all), "--bootstrap");
        // Replica 2 reaches replica 4 elsewhere: another process may answer as 4 there.
        let mut moved = found(&[1, 2, 4]);
        moved.get_mut(&NodeId(2)).unwrap().peers.insert(NodeId(4), "10.0.0.9:7000".into());
        refused(plan(&[1, 2, 4], &[], Holding::Nothing, &moved), "takes a new id");
        // The joiner does not know where voter 3 is.
        let mut blind = found(&[1, 2, 4]);
        blind.get_mut(&NodeId(4)).unwrap().peers.remove(&NodeId(3));
        refused(plan(&[1, 2, 3], &[], Holding::Nothing, &blind), "voters 3");
    }

    #[test]
    fn a_removal_that_leaves_no_majority_working_is_refused_unless_forced() {
        let three = view(&[1, 2, 3], &[]);
        let working = |ids: &[u64]| ids.iter().copied().map(NodeId).collect::<BTreeSet<_>>();
        // Replica 3 is down: removing it leaves 1 and 2, both working.
        assert_eq!(refuse_remove(NodeId(3), &three, &working(&[1, 2]), false), None);
        // Removing 2 instead leaves 1 and the dead (or wiped, answering) 3: no majority.
        let refused = refuse_remove(NodeId(2), &three, &working(&[1]), false);
        assert!(refused.is_some_and(|reason| reason.contains("not a majority")));
        assert_eq!(refuse_remove(NodeId(2), &three, &working(&[1]), true), None);
        let alone = view(&[1], &[2]);
        assert!(refuse_remove(NodeId(1), &alone, &working(&[2]), true).is_some(), "the only voter");
    }
}
