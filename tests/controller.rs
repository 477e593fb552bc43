//! End-to-end tests of the controller: three `mosaic controller` processes, storage nodes that
//! register with them and create the replicas placed on them, and `mosaic admin
//! --controllers` driving it all: every refused command says why and changes nothing, a
//! retried command reports that it was applied already, a controller replica killed in the
//! middle of the commands changes nothing that was acknowledged; a group that lost its
//! majority stops only its own shards (6.824's static shards).

mod support;

use std::time::{Duration, Instant};

use mosaic_client::{Consistency, shard_for_key};
use serde_json::Value;
use support::{NODE_DOWN_AFTER_MS, Processes, Role, WAIT_MAX, stderr};

const SHARDS: u32 = 8;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", stdout(output)))
}

/// Three controllers and three storage nodes following them.
fn cluster() -> (Processes, Processes) {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let controller_addresses = controllers.addresses.values().cloned().collect();
    let nodes = Processes::start_as(Role::Following(controller_addresses), 3);
    (controllers, nodes)
}

/// [`cluster`] with groups 1 and 2 on nodes 1, 2 and 3, settled.
fn cluster_of_two_groups() -> (Processes, Processes) {
    let (controllers, nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    controllers.admin(&["group", "add", "2", "--members", "1,2,3"]);
    controllers.admin(&["wait", "--max-wait", "60"]);
    (controllers, nodes)
}

/// `mosaic bench --controllers` routes every key by the controller's configuration: over two
/// groups, it preloads every key in batches (`Client::put_all`), which `mosaic kv get` then
/// reads, and runs every workload without an error or a get that finds no value, with the
/// servers' CPU measured. (Whether a workload completes an operation inside its window is left
/// to the load of the machine: a leader election under a loaded CI run can hold every request
/// of a short window, found in CI.)
#[test]
fn mosaic_bench_routes_by_the_controller_over_every_group() {
    let (controllers, nodes) = cluster_of_two_groups();
    let pids: Vec<String> = nodes.children.values().map(|child| child.id().to_string()).collect();
    let output = support::mosaic()
        .args(["bench", "--controllers", &controllers.addresses_flag()])
        .args(controllers.tls_flags_of("client"))
        .args(["--workload", "all", "--keys", "2000", "--secs", "2", "--warmup-secs", "0.3"])
        .args(["--concurrency", "8", "--server-pids", &pids.join(",")])
        .output()
        .unwrap();
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(output.status.success(), "{out}\n{err}");
    assert!(err.contains("preloaded 2000 keys in"), "{err}");
    let lines: Vec<Value> = out.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let workloads: Vec<&str> =
        lines.iter().map(|line| line["workload"].as_str().unwrap()).collect();
    assert_eq!(workloads, ["put-latency", "put-throughput", "get-throughput", "mixed"]);
    for line in &lines {
        assert_eq!(line["errors"], 0, "{line}");
        assert_eq!(line["get_misses"], 0, "{line}");
        assert_eq!(line["cpu"]["server_cores"].as_array().unwrap().len(), 3, "{line}");
    }
    let ops: u64 = lines.iter().map(|line| line["ops"].as_u64().unwrap()).sum();
    assert!(ops > 0, "{out}");
    // The keys the benchmark preloaded, in both groups' shards.
    for index in [0, 1, 999, 1_998, 1_999] {
        let key = format!("k{index:015}");
        let read = controllers.kv(&["get", &key], None);
        assert!(read.status.success() && !read.stdout.is_empty(), "{key}: {}", stderr(&read));
    }
}

/// `mosaic admin leaders balance` with leader balance off on the storage nodes: every group
/// ends led by its preferred voter (group g by node g % 3 + 1 of nodes 1-3), so each node
/// leads one of the three groups, and `admin status` shows it.
#[test]
fn leaders_balance_hands_every_group_to_its_preferred_voter() {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let controller_addresses = controllers.addresses.values().cloned().collect();
    let _nodes = Processes::start_configured(
        Role::Following(controller_addresses),
        3,
        "[raft]\nleader-balance-ticks = 0",
    );
    controllers.wait_registered(3);
    for group in ["1", "2", "3"] {
        controllers.admin(&["group", "add", group, "--members", "1,2,3"]);
    }
    controllers.admin(&["wait", "--max-wait", "60"]);
    let output = controllers.admin(&["--output", "json", "leaders", "balance", "--max-wait", "60"]);
    let answer = json(&output);
    assert_eq!(answer["balanced"], true, "{answer}");
    let status = json(&controllers.admin(&["--output", "json", "status"]));
    for group in status["groups"].as_array().unwrap() {
        let id = group["group"].as_u64().unwrap();
        assert_eq!(group["leader"].as_u64(), Some(id % 3 + 1), "{status}");
    }
    let leaders = &status["leaders"];
    assert_eq!((&leaders["1"], &leaders["2"], &leaders["3"]), (&1.into(), &1.into(), &1.into()));
    // Balanced already: nothing to ask.
    let again = controllers.admin(&["leaders", "balance"]);
    assert!(stdout(&again).contains("(0 handovers asked)"), "{}", stdout(&again));
}

fn latest(controllers: &Processes) -> Value {
    json(&controllers.admin(&["--output", "json", "config", "show"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_and_create_the_groups_the_controller_places_on_them() {
    let (controllers, nodes) = cluster();
    controllers.wait_registered(3);
    let list = stdout(&controllers.admin(&["node", "list"]));
    for address in nodes.addresses.values() {
        assert!(list.contains(address.as_str()), "{list}");
    }

    let added = stdout(&controllers.admin(&["group", "add", "1", "--members", "1,2,3"]));
    assert!(added.contains("configuration 1 created; 8 shard(s) move"), "{added}");
    // The retry uses `--nodes`, the name of earlier releases, still accepted.
    let again = stdout(&controllers.admin(&["group", "add", "1", "--nodes", "1,2,3"]));
    assert!(again.contains("nothing changed"), "{again}");
    let second =
        json(&controllers.admin(&["--output", "json", "group", "add", "2", "--members", "1,2,3"]));
    assert_eq!(second["result"], "config-created");
    assert_eq!(second["moves"].as_array().unwrap().len(), 4, "{second}");

    // The nodes create both groups' replicas by themselves; each group elects a leader.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let status = json(&controllers.admin(&["--output", "json", "status"]));
        let groups = status["groups"].as_array().unwrap().clone();
        if groups.len() == 2 && groups.iter().all(|group| group["leader"].is_u64()) {
            assert_eq!(groups[0]["shards"].as_array().unwrap().len(), 4, "{status}");
            assert!(status["controller_leader"]["id"].is_u64(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "groups never led: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let replica = json(&nodes.admin(&["--output", "json", "group", "status", "2"]));
    assert_eq!(replica["replicas"].as_array().unwrap().len(), 3, "{replica}");
    // Both groups serve writes on the same three processes, each its own shards.
    let client = controllers.routed_client();
    for i in 0..16 {
        let key = format!("key-{i}");
        client.put(key.clone(), "v").await.unwrap();
        let value = client.get(key, Consistency::Linearizable).await.unwrap();
        assert_eq!(value.as_deref(), Some(&b"v"[..]), "key-{i}");
    }

    let plan = stdout(&controllers.admin(&["shard", "move", "0", "2"]));
    assert!(plan.contains("shard 0: group 1 -> group 2"), "{plan}");
    let dry = json(&controllers.admin(&["--output", "json", "rebalance", "--dry-run"]));
    assert_eq!(dry["moves"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(latest(&controllers)["num"], 3, "a dry run changes nothing");
    controllers.admin(&["rebalance"]);
    assert_eq!(latest(&controllers)["num"], 4);
}

/// What the controller's leader says of storage node `id` in `admin node list --output json`:
/// `up`, `down` or `unknown`, and the milliseconds since it heard the node.
fn liveness(list: &Value, id: u64) -> (String, Option<u64>) {
    let node = list["nodes"].as_array().unwrap().iter().find(|node| node["id"] == id).unwrap();
    (node["liveness"].as_str().unwrap().to_string(), node["last_heard_ms"].as_u64())
}

/// Lists the nodes until `done` holds of the list (a failed call, during an election, is
/// tried again); returns that list.
fn list_until(controllers: &Processes, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT_MAX;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let output = controllers.try_admin(&["--output", "json", "node", "list"]);
        if output.status.success() {
            last = json(&output);
            if done(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("never {what}: {last:#}");
}

/// The controller's leader hears every storage node's agent: each is `up`, a stopped one
/// `down` once unheard for node-down-after-ms, `up` again once it is back. A new leader says
/// only what it heard itself: a node that was down before it led is not said to have been
/// heard, first `unknown`, then `down`, never heard.
#[test]
fn the_controller_leader_says_which_nodes_it_hears_and_a_new_one_only_what_it_heard() {
    let (mut controllers, mut nodes) = cluster();
    controllers.wait_registered(3);
    let up = |id| move |list: &Value| liveness(list, id).0 == "up";
    list_until(&controllers, "every node up", |list| (1..=3).all(|id| up(id)(list)));

    nodes.kill(3);
    let down = list_until(&controllers, "node 3 down", |list| liveness(list, 3).0 == "down");
    let heard = liveness(&down, 3).1.expect("heard before it stopped");
    assert!(heard >= NODE_DOWN_AFTER_MS, "{down:#}");
    assert!(up(1)(&down) && up(2)(&down), "{down:#}");
    let status = stdout(&controllers.admin(&["status"]));
    assert!(status.contains("nodes: 2 of 3 up; node 3 down (last heard "), "{status}");

    let leader = down["controller_leader"]["id"].as_u64().unwrap();
    controllers.kill(leader);
    let new_leader = |list: &Value| list["controller_leader"]["id"].as_u64() != Some(leader);
    let first = list_until(&controllers, "a new controller leader", new_leader);
    let (state, heard) = liveness(&first, 3);
    assert!(state == "unknown" || state == "down", "{first:#}");
    assert_eq!(heard, None, "the new leader never heard node 3: {first:#}");
    let never = list_until(&controllers, "node 3 down under the new leader", |list| {
        new_leader(list) && liveness(list, 3).0 == "down"
    });
    assert_eq!(liveness(&never, 3).1, None, "{never:#}");
    assert!(up(1)(&never) && up(2)(&never), "{never:#}");

    nodes.spawn(3);
    list_until(&controllers, "node 3 up again", up(3));
}

/// Waits until the migration to the latest configuration is over: reads every key through a
/// client routed by the controller (a read waits out `ShardNotReady` and follows
/// `WrongGroup`), and checks each value.
async fn check_values(
    client: &mosaic_client::Client<mosaic_client::ControllerRouting>,
    expected: &[String],
) {
    for (i, value) in expected.iter().enumerate() {
        let read = client.get(format!("key-{i}"), Consistency::Linearizable).await.unwrap();
        assert_eq!(read.as_deref(), Some(value.as_bytes()), "key-{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_move_with_their_data_as_groups_join_and_leave_while_clients_write() {
    let (controllers, _nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    let client = controllers.routed_client();
    let mut expected: Vec<String> = (0..32).map(|i| format!("v{i}")).collect();
    for (i, value) in expected.iter().enumerate() {
        client.put(format!("key-{i}"), value.clone()).await.unwrap();
    }
    // A writer appends to its own keys throughout; every acknowledged append must be there
    // exactly once at the end.
    let writer = {
        let client = controllers.routed_client();
        tokio::spawn(async move {
            let mut acked = 0usize;
            let stop = Instant::now() + Duration::from_secs(6);
            while Instant::now() < stop {
                client.append(format!("hot-{}", acked % 4), "x").await.unwrap();
                acked += 1;
            }
            acked
        })
    };

    // Group 2 joins: half the shards move to it, with their data.
    controllers.admin(&["group", "add", "2", "--members", "1,2,3"]);
    let waited = controllers.admin(&["wait", "--max-wait", "60"]);
    assert!(
        stdout(&waited).contains("configuration 2: every shard is served"),
        "{}",
        stdout(&waited)
    );
    let status = json(&controllers.admin(&["--output", "json", "status"]));
    assert_eq!(status["settled"], true, "{status}");
    for group in status["groups"].as_array().unwrap() {
        assert_eq!(group["config_num"], 2, "{status}");
        assert_eq!(group["moving"].as_array().unwrap().len(), 0, "{status}");
    }
    check_values(&client, &expected).await;
    for (i, value) in expected.iter_mut().enumerate().step_by(3) {
        client.append(format!("key-{i}"), "+").await.unwrap();
        value.push('+');
    }
    // Group 1 leaves: every shard ends at group 2.
    controllers.admin(&["group", "remove", "1"]);
    check_values(&client, &expected).await;
    controllers.admin(&["wait", "--max-wait", "60"]);
    let acked = writer.await.unwrap();
    let mut total = 0;
    for j in 0..4 {
        let value = client.get(format!("hot-{j}"), Consistency::Linearizable).await.unwrap();
        total += value.map_or(0, |value| value.len());
    }
    assert_eq!(total, acked, "acknowledged appends lost or applied twice");
    // The command-line client routes by the controller too.
    let output = controllers.kv(&["get", "key-1"], None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("{}\n", expected[1]));
    let shards = latest(&controllers)["shards"].clone();
    assert!(shards.as_array().unwrap().iter().all(|owner| owner == 2), "{shards}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_command_is_refused_with_its_reason_and_changes_nothing() {
    let (controllers, _nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2"]);
    let before = latest(&controllers);
    for (args, expected) in [
        (&["group", "add", "2", "--members", "1,9"][..], "not registered"),
        (&["group", "add", "1", "--members", "1,2,3"][..], "already exists"),
        (&["group", "add", "2", "--members", "1,1"][..], "listed twice"),
        (&["group", "add", "0", "--members", "1"][..], "reserved"),
        (&["group", "remove", "7"][..], "does not exist"),
        (&["group", "remove", "1"][..], "without an owner"),
        (&["shard", "move", "8", "1"][..], "out of range"),
        (&["shard", "move", "0", "5"][..], "does not exist"),
        (&["config", "show", "99"][..], "does not exist"),
        (&["node", "replace", "1", "--with", "9"][..], "node 9 is not registered"),
        (&["node", "replace", "1", "--with", "1"][..], "cannot replace itself"),
        (&["node", "replace", "3", "--with", "1"][..], "node 3 is not a member"),
        (&["node", "replace", "1", "--with", "2"][..], "already has a replica on node 2"),
        (&["node", "replace", "1", "--with", "3", "--group", "7"][..], "does not exist"),
    ] {
        let output = controllers.try_admin(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", stdout(&output));
        assert!(stderr(&output).contains(expected), "{args:?}: {}", stderr(&output));
    }
    let refused = json(&controllers.try_admin(&["--output", "json", "group", "remove", "7"]));
    assert_eq!(refused["refused"]["kind"], "unknown-group", "{refused}");
    let refused =
        json(&controllers.try_admin(&["--output", "json", "node", "replace", "1", "--with", "2"]));
    assert_eq!(refused["refused"]["kind"], "already-a-member", "{refused}");
    assert_eq!(latest(&controllers), before, "a refused command changed the configuration");
}

/// A storage node checks every key's shard against the cluster's shard count: a hand-built
/// put naming another shard, and a client that counts 4 shards in a cluster of 8, are
/// refused as the client's bug, and nothing is written or changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_naming_the_wrong_shard_is_refused_by_the_node_and_nothing_is_written() {
    use mosaic_client::{ClientError, ClientOptions, Routing, StaticRouting};
    use mosaic_proto::pb::{self, error_detail::Kind, kv_client::KvClient};
    use prost::Message as _;

    let (controllers, nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    let client = controllers.routed_client();
    client.put("warm-up", "v").await.unwrap();
    let before = latest(&controllers);
    // A key whose shard differs between 4 and 8 shards.
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| shard_for_key(key.as_bytes(), 4).0 != shard_for_key(key.as_bytes(), 8).0)
        .unwrap();
    let (key_shard, named) = (shard_for_key(key.as_bytes(), 8), shard_for_key(key.as_bytes(), 4));

    // The hand-built request: every replica checks the key's shard before anything else
    // (before it looks at whether it leads), so each answers WrongShard or NotLeader.
    let mut refusal = None;
    for id in nodes.addresses.keys() {
        let mut kv =
            KvClient::new(nodes.endpoint(*id, "client", WAIT_MAX).connect().await.unwrap());
        let request = pb::WriteRequest {
            group_id: 1,
            shard_id: named.0,
            config_num: before["num"].as_u64().unwrap(),
            key: key.clone().into(),
            value: "misplaced".into(),
            client_id: 77,
            seq: 1,
            expects_session: false,
            expected_version: None,
        };
        let status = kv.put(request).await.expect_err("a wrong shard is never written");
        let kind = pb::ErrorDetail::decode(status.details()).unwrap().kind.unwrap();
        if !matches!(kind, Kind::NotLeader(_)) {
            refusal = Some((status.code(), kind));
        }
    }
    let wrong = pb::WrongShard { named_shard: named.0, key_shard: key_shard.0, shard_count: 8 };
    assert_eq!(refusal, Some((tonic::Code::InvalidArgument, Kind::WrongShard(wrong))));

    // A client that counts 4 shards gives up at once with the reason, nothing written.
    let members = nodes.addresses.iter().map(|(id, a)| (mosaic_client::NodeId(*id), a.clone()));
    let routing = Routing::single_group(mosaic_client::GroupId(1), members.collect(), 4).unwrap();
    let options = ClientOptions { tls: nodes.tls_of("client"), ..ClientOptions::default() };
    let miscounting = mosaic_client::Client::new(StaticRouting::new(routing), options).unwrap();
    let error = miscounting.put(key.clone(), "misplaced").await.unwrap_err();
    assert!(matches!(error, ClientError::WrongShard { shard_count: 8, .. }), "{error:?}");
    assert!(error.to_string().contains("shard count is not the cluster's"), "{error}");

    assert_eq!(latest(&controllers), before, "a refused write changed the configuration");
    assert_eq!(client.get(key.clone(), Consistency::Linearizable).await.unwrap(), None);
    client.put(key.clone(), "placed").await.unwrap();
    let value = client.get(key, Consistency::Linearizable).await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"placed"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_controller_failures_and_a_killed_leader_loses_nothing() {
    let (mut controllers, _nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    controllers.admin(&["group", "add", "2", "--members", "1,2"]);
    let first = json(&controllers.admin(&["--output", "json", "config", "show", "1"]));
    let second = json(&controllers.admin(&["--output", "json", "config", "show", "2"]));

    // Each replica stopped in turn: the others keep answering with the same history.
    for id in 1..=3 {
        controllers.kill(id);
        let mut again = json(&controllers.admin(&["--output", "json", "config", "show", "1"]));
        again["controller_leader"] = first["controller_leader"].clone();
        assert_eq!(again, first, "configuration 1 with replica {id} down");
        controllers.spawn(id);
        controllers.wait_listening(id);
    }

    // The leader killed while a command is in flight: the command is applied exactly once
    // (by the old leader before it died, or by the new one after the client's retry with the
    // same seq), and the new leader has every earlier configuration.
    let leader = latest(&controllers)["controller_leader"]["id"].as_u64().unwrap();
    let command = controllers.admin_command(&["group", "add", "3", "--members", "2,3"]);
    std::thread::sleep(Duration::from_millis(30));
    controllers.kill(leader);
    let output = command.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let third = stdout(&output);
    assert!(third.contains("configuration 3 created"), "{third}");
    let mut again = json(&controllers.admin(&["--output", "json", "config", "show", "2"]));
    assert_eq!(again["latest"], 3);
    again["controller_leader"] = second["controller_leader"].clone();
    again["latest"] = second["latest"].clone();
    assert_eq!(again, second);
    let now = latest(&controllers);
    assert_ne!(now["controller_leader"]["id"].as_u64(), Some(leader));
    assert_eq!(now["num"], 3);
}

/// 6.824's static shards: two groups on disjoint nodes; with two of the second group's three
/// nodes down, the first group's shards still serve reads and writes while the second's do
/// not; once the nodes are back, every shard serves again with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_lost_its_majority_stops_only_its_own_shards() {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let controller_addresses = controllers.addresses.values().cloned().collect();
    let mut nodes = Processes::start_as(Role::Following(controller_addresses), 6);
    controllers.wait_registered(6);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    controllers.admin(&["group", "add", "2", "--members", "4,5,6"]);
    controllers.admin(&["wait", "--max-wait", "60"]);
    let client = controllers.routed_client();
    let keys: Vec<String> = (0..16).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        client.put(key.clone(), format!("{key}=1")).await.unwrap();
    }
    let owners = latest(&controllers)["shards"].clone();
    let owner = |key: &str| owners[shard_for_key(key.as_bytes(), SHARDS).0 as usize].clone();
    let (first, second): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|key| owner(key) == 1);
    assert!(!first.is_empty() && !second.is_empty(), "both groups own keys: {owners}");

    nodes.kill(4);
    nodes.kill(5);
    let impatient = controllers.routed_client_within(Duration::from_secs(3));
    for key in &first {
        impatient.put((*key).clone(), format!("{key}=2")).await.unwrap();
        let value = impatient.get((*key).clone(), Consistency::Linearizable).await.unwrap();
        assert_eq!(value.as_deref(), Some(format!("{key}=2").as_bytes()), "{key}");
    }
    for key in second.iter().take(2) {
        let read = impatient.get((*key).clone(), Consistency::Linearizable).await;
        assert!(read.is_err(), "{key}: group 2 has no majority, yet it answered {read:?}");
    }

    nodes.spawn(4);
    nodes.spawn(5);
    for key in &keys {
        let expected = if owner(key) == 1 { format!("{key}=2") } else { format!("{key}=1") };
        let value = client.get(key.clone(), Consistency::Linearizable).await.unwrap();
        assert_eq!(value.as_deref(), Some(expected.as_bytes()), "{key}");
    }
}

/// The HTTP health probe of replica `id`: its status code and body.
fn health(controllers: &Processes, id: u64) -> (u16, String) {
    support::http_get(&controllers.metrics_addresses[&id], "/health").unwrap()
}

/// Kills controller replica `id`, wipes its data directory and starts it again without
/// `--bootstrap`: it waits for `mosaic admin init`, not ready, and init refuses to create the
/// group on it beside the replicas that hold it (it would come back as a voter with an empty
/// log and no memory of its votes).
fn wipe_and_restart_waiting(controllers: &mut Processes, id: u64) {
    controllers.kill(id);
    std::fs::remove_dir_all(controllers.data_dir(id)).unwrap();
    controllers.spawn_bootstrapping(id, false);
    controllers.wait_listening(id);
    assert_eq!(health(controllers, id), (503, "NOT_SERVING\n".to_string()));
    let refused = controllers.try_admin(&["init"]);
    assert!(!refused.status.success(), "init created the group again: {}", stdout(&refused));
    let reason = stderr(&refused);
    assert!(reason.contains(&format!("and {{{id}}} hold nothing")), "{reason}");
    let log = std::fs::read_to_string(controllers.log(id)).unwrap();
    assert!(log.contains("holds no controller group yet"), "{log}");
    assert_eq!(health(controllers, id).0, 503, "init changed the wiped replica");
}

/// Issue: a controller replica restarted on an empty data directory re-created the controller
/// group as a voter with no log and no memory of its votes. Without `--bootstrap` it now waits
/// for `mosaic admin init`, which refuses to create the group beside replicas that hold it;
/// `--bootstrap` on a directory that holds the group is refused.
#[test]
fn a_wiped_controller_replica_waits_and_init_never_creates_the_group_on_it_again() {
    let mut controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    controllers.wait_registered(0);
    wipe_and_restart_waiting(&mut controllers, 3);

    controllers.kill(2);
    let again = controllers.command(2, true).stderr(std::process::Stdio::piped()).output().unwrap();
    assert!(!again.status.success(), "--bootstrap accepted twice: {}", stderr(&again));
    assert!(stderr(&again).contains("already holds it"), "{}", stderr(&again));

    // Restarted as it should be, replica 2 and replica 1 form a majority again.
    controllers.spawn(2);
    controllers.wait_listening(2);
    controllers.wait_registered(0);
    assert_eq!(health(&controllers, 3).0, 503, "the wiped replica joined");
}

/// Replicas started without `--bootstrap` on empty directories wait, not ready, answering
/// every controller call with the reason; `mosaic admin init` creates the group on each once
/// every one has answered, and changes nothing when run again.
#[test]
fn a_new_cluster_waits_for_admin_init_which_creates_the_controller_group_once() {
    let controllers = Processes::start_awaiting_init(SHARDS, 3);
    for id in 1..=3 {
        assert_eq!(health(&controllers, id), (503, "NOT_SERVING\n".to_string()), "replica {id}");
    }
    let waiting = controllers.try_admin(&["--timeout", "2", "node", "list"]);
    assert!(!waiting.status.success(), "a replica served before init: {}", stdout(&waiting));
    assert!(stderr(&waiting).contains("waits for `mosaic admin init`"), "{}", stderr(&waiting));

    let created = controllers.admin(&["--output", "json", "init", "--shard-count", "5"]);
    let created = json(&created);
    assert_eq!(created["created"], serde_json::json!([1, 2, 3]), "{created}");
    controllers.wait_registered(0);
    let config = latest(&controllers);
    assert_eq!(config["shards"].as_array().map(Vec::len), Some(5), "{config}");
    for id in 1..=3 {
        assert_eq!(health(&controllers, id), (200, "SERVING\n".to_string()), "replica {id}");
    }

    let again = controllers.admin(&["init", "--shard-count", "5"]);
    assert!(stdout(&again).contains("initialized already"), "{}", stdout(&again));
    let other = controllers.try_admin(&["init", "--shard-count", "9"]);
    assert!(!other.status.success(), "another shard count accepted: {}", stdout(&other));
    assert!(stderr(&other).contains("initialized with 5 shards, not 9"), "{}", stderr(&other));
    let config = latest(&controllers);
    assert_eq!(config["shards"].as_array().map(Vec::len), Some(5), "init ran twice: {config}");
}

/// Appends each of `tokens` to key `log`, each acknowledged.
async fn append_all(
    client: &mosaic_client::Client<mosaic_client::ControllerRouting>,
    tokens: &[String],
) {
    for token in tokens {
        client
            .append("log", token.clone())
            .await
            .unwrap_or_else(|error| panic!("{token}: {error}"));
    }
}

/// Appends `tokens` to key `log` in the background, each acknowledged.
fn append_in_background(
    client: &std::sync::Arc<mosaic_client::Client<mosaic_client::ControllerRouting>>,
    tokens: &[String],
) -> tokio::task::JoinHandle<()> {
    let (client, tokens) = (std::sync::Arc::clone(client), tokens.to_vec());
    tokio::spawn(async move { append_all(&client, &tokens).await })
}

/// Reads key `log` linearizably and checks that each of `tokens` is in it exactly once.
async fn assert_appended_once<'a>(
    client: &mosaic_client::Client<mosaic_client::ControllerRouting>,
    tokens: impl IntoIterator<Item = &'a String>,
) {
    let value = client.get("log", Consistency::Linearizable).await.unwrap().unwrap();
    let value = String::from_utf8(value.to_vec()).unwrap();
    for token in tokens {
        assert_eq!(value.matches(token.as_str()).count(), 1, "{token} in {value}");
    }
}

/// Issue: a storage node killed, its data directory wiped and restarted with the same flags
/// came back as a voter with an empty log; with the leader gone it voted for a lagging member
/// and acknowledged appends vanished. It now takes part in no quorum until its group removed
/// it, then joins again in the leader's term, catches up by snapshot and is promoted, all by
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_node_restarted_on_a_wiped_directory_rejoins_by_itself_and_loses_nothing() {
    let (controllers, mut nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    controllers.admin(&["wait", "--max-wait", "60"]);
    let client = controllers.routed_client();
    let tokens: Vec<String> = (0..60).map(|i| format!("<{i}>")).collect();
    append_all(&client, &tokens[..20]).await;
    let leader = nodes.leader().await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (wiped, lagging) = (others[0], others[1]);
    nodes.signal(lagging, "STOP");
    // Acknowledged by the leader and the node about to lose its disk.
    append_all(&client, &tokens[20..40]).await;
    nodes.kill(wiped);
    std::fs::remove_dir_all(nodes.data_dir(wiped)).unwrap();
    nodes.spawn(wiped);
    nodes.wait_listening(wiped);
    nodes.kill(leader);
    nodes.signal(lagging, "CONT");
    // With the wiped node's vote, the lagging member would win without appends 20..40.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        let status = nodes.status(lagging).await;
        assert!(status.is_none_or(|s| s.role != "leader"), "the lagging member leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(nodes.status(wiped).await.is_none(), "the wiped node hosts the group already");

    nodes.spawn(leader);
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let status = nodes.status(wiped).await;
        if let Some(status) = status.filter(|s| s.voters.contains(&wiped) && s.applied_index > 0) {
            assert!(status.first_index > 1, "it caught up from a snapshot: {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the wiped node never rejoined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    append_all(&client, &tokens[40..50]).await;
    // A working voter again: with the lagging member down, it forms the majority.
    nodes.kill(lagging);
    append_all(&client, &tokens[50..]).await;
    assert_appended_once(&client, &tokens).await;
}

/// A client appending to key `log` in the background: 20 appends acknowledged before, 130
/// on their way.
struct UnderLoad {
    client: std::sync::Arc<mosaic_client::Client<mosaic_client::ControllerRouting>>,
    tokens: Vec<String>,
    appending: tokio::task::JoinHandle<()>,
}

impl UnderLoad {
    /// Waits until every background append is acknowledged.
    async fn appended(&mut self) {
        (&mut self.appending).await.unwrap();
    }

    /// Appends one more and checks that every append is there exactly once (after
    /// [`UnderLoad::appended`]).
    async fn append_last_and_check(&self) {
        let last = "<last>".to_string();
        append_all(&self.client, std::slice::from_ref(&last)).await;
        assert_appended_once(&self.client, self.tokens.iter().chain([&last])).await;
    }
}

/// Three controller replicas (with `settings` in their configuration files), four storage
/// nodes following them, group 1 on nodes 1, 2 and 3, and a client appending to it.
async fn one_group_of_four_under_load(settings: &str) -> (Processes, Processes, UnderLoad) {
    let controllers = Processes::start_configured(Role::Controllers(SHARDS), 3, settings);
    let addresses = controllers.addresses.values().cloned().collect();
    let nodes = Processes::start_as(Role::Following(addresses), 4);
    controllers.wait_registered(4);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    controllers.admin(&["wait", "--max-wait", "60"]);
    let client = std::sync::Arc::new(controllers.routed_client());
    let tokens: Vec<String> = (0..150).map(|i| format!("<{i}>")).collect();
    append_all(&client, &tokens[..20]).await;
    let appending = append_in_background(&client, &tokens[20..]);
    (controllers, nodes, UnderLoad { client, tokens, appending })
}

/// `mosaic admin node replace` of a storage node killed for good, while a client appends:
/// the configuration lists the new node in the dead one's place, the group's leader adds it
/// (a learner catching up by snapshot, then a voter) and removes the dead one, and every
/// acknowledged append is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_storage_node_replaced_through_the_controller_loses_nothing() {
    let (controllers, mut nodes, mut under_load) = one_group_of_four_under_load("").await;
    nodes.kill(3);
    let replaced = controllers.admin(&["node", "replace", "3", "--with", "4"]);
    assert!(stdout(&replaced).contains("replaced by node 4"), "{}", stdout(&replaced));
    assert_eq!(latest(&controllers)["groups"]["1"], serde_json::json!([1, 2, 4]));
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let status = nodes.status(4).await;
        if let Some(status) = status.filter(|s| s.voters == [1, 2, 4] && s.learners.is_empty()) {
            assert!(status.first_index > 1, "it caught up from a snapshot: {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "node 4 never became a voter in node 3's place");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    under_load.appended().await;
    // `admin wait` waits for the members too, and `admin status` shows them.
    controllers.admin(&["wait", "--max-wait", "60"]);
    let status = json(&controllers.admin(&["--output", "json", "status"]));
    let group = &status["groups"][0];
    assert_eq!(
        (&group["voters"], &group["reshaping"]),
        (&serde_json::json!([1, 2, 4]), &serde_json::json!(false)),
        "{status}"
    );
    // The new member counts: with node 1 down too, nodes 2 and 4 are a majority.
    nodes.kill(1);
    under_load.append_last_and_check().await;
}

/// `mosaic admin node decommission` of a live storage node while a client appends: the
/// controller gives its replicas (of two groups) to the node hosting fewest, the groups move
/// them (learner, snapshot, promotion, removal), the command waits for that and marks the
/// node retired; the node then hosts no replica, and every acknowledged append is there
/// exactly once, also with the retired node stopped and another member down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_storage_node_decommissioned_under_load_retires_and_loses_nothing() {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let addresses = controllers.addresses.values().cloned().collect();
    let mut nodes = Processes::start_as(Role::Following(addresses), 5);
    controllers.wait_registered(5);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    controllers.admin(&["group", "add", "2", "--members", "2,3,4"]);
    controllers.admin(&["wait", "--max-wait", "60"]);
    let refused = controllers.try_admin(&["node", "decommission", "9"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("node 9 is not registered"), "{}", stderr(&refused));
    let client = std::sync::Arc::new(controllers.routed_client());
    let tokens: Vec<String> = (0..150).map(|i| format!("<{i}>")).collect();
    append_all(&client, &tokens[..20]).await;
    let appending = append_in_background(&client, &tokens[20..]);
    let decommissioned = tokio::task::block_in_place(|| {
        controllers.admin(&["node", "decommission", "2", "--max-wait", "120"])
    });
    let said = stdout(&decommissioned);
    // Node 5 hosts nothing, so it takes group 1's replica; then nodes 1 and 5 host one each
    // and group 2 = {2,3,4} takes the lower id.
    assert!(said.contains("group 1 -> node 5, group 2 -> node 1"), "{said}");
    assert!(said.contains("node 2 retired"), "{said}");
    let groups = &latest(&controllers)["groups"];
    assert_eq!(
        (&groups["1"], &groups["2"]),
        (&serde_json::json!([1, 3, 5]), &serde_json::json!([1, 3, 4]))
    );
    let listed = json(&controllers.admin(&["--output", "json", "node", "list"]));
    let states: Vec<Value> =
        listed["nodes"].as_array().unwrap().iter().map(|node| node["state"].clone()).collect();
    assert_eq!(
        serde_json::json!(states),
        serde_json::json!(["active", "retired", "active", "active", "active"]),
        "{listed}"
    );
    let status = json(&controllers.admin(&["--output", "json", "status"]));
    let voters: Vec<Value> =
        status["groups"].as_array().unwrap().iter().map(|group| group["voters"].clone()).collect();
    assert_eq!(serde_json::json!(voters), serde_json::json!([[1, 3, 5], [1, 3, 4]]), "{status}");
    // The retired node destroys its replicas once the leaders show it out.
    let deadline = Instant::now() + WAIT_MAX;
    while nodes.status(2).await.is_some() {
        assert!(Instant::now() < deadline, "node 2 still hosts a replica of group 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Sent again, the command changes nothing and says so.
    let again = controllers.admin(&["node", "decommission", "2"]);
    assert!(stdout(&again).contains("retired already"), "{}", stdout(&again));
    appending.await.unwrap();
    nodes.kill(2);
    nodes.kill(3);
    append_all(&client, &["<last>".to_string()]).await;
    assert_appended_once(&client, tokens.iter().chain([&"<last>".to_string()])).await;
}

/// Automatic repair (`auto-repair-after-ms`): a storage node killed for good while a client
/// appends is held down by the controller's leader, which after the set time gives its
/// replica to the node hosting fewest (the groups move it: learner, snapshot, promotion,
/// removal of the dead one) and marks it retired once no group's leader shows it; every
/// acknowledged append is there exactly once, also with another original member down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_node_down_for_good_is_repaired_by_the_controller_and_nothing_is_lost() {
    let settings = format!("auto-repair-after-ms = {}", 2 * NODE_DOWN_AFTER_MS);
    let (controllers, mut nodes, mut under_load) = one_group_of_four_under_load(&settings).await;
    nodes.kill(3);
    tokio::task::block_in_place(|| {
        list_until(&controllers, "node 3 retired", |list| {
            list["nodes"][2]["state"] == serde_json::json!("retired")
        })
    });
    assert_eq!(latest(&controllers)["groups"]["1"], serde_json::json!([1, 2, 4]));
    let status = json(&controllers.admin(&["--output", "json", "status"]));
    assert_eq!(status["groups"][0]["voters"], serde_json::json!([1, 2, 4]), "{status}");
    under_load.appended().await;
    // The new member counts: with node 1 down too, nodes 2 and 4 are a majority.
    nodes.kill(1);
    under_load.append_last_and_check().await;
}

/// A controller replica restarted on a wiped directory while a client appends: it waits,
/// outside the group (it would come back as a voter with an empty log), the other two
/// replicas go on serving configurations, and every acknowledged append is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_replica_wiped_while_a_client_appends_stays_out_and_nothing_is_lost() {
    let (mut controllers, _nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    controllers.admin(&["wait", "--max-wait", "60"]);
    let client = std::sync::Arc::new(controllers.routed_client());
    let tokens: Vec<String> = (0..200).map(|i| format!("<{i}>")).collect();
    append_all(&client, &tokens[..20]).await;
    let appending = append_in_background(&client, &tokens[20..]);
    wipe_and_restart_waiting(&mut controllers, 3);
    // The two replicas left still apply commands.
    controllers.admin(&["rebalance"]);
    appending.await.unwrap();
    assert_appended_once(&client, &tokens).await;
}

/// The controller group's voters as its leader shows them (`admin controller list`).
fn controller_voters(controllers: &Processes) -> Vec<u64> {
    let list = json(&controllers.admin(&["--output", "json", "controller", "list"]));
    let replicas = list["replicas"].as_array().unwrap_or_else(|| panic!("{list}"));
    replicas
        .iter()
        .filter(|replica| replica["role"] == "voter")
        .map(|replica| replica["id"].as_u64().unwrap())
        .collect()
}

/// A dead controller host replaced without downtime (`mosaic admin controller add/remove`)
/// while `group add` runs: a new replica, known to the others only by the address the
/// controller records, joins as a learner, catches up by snapshot and becomes a voter, and
/// the dead one is removed; a replica restarted on a wiped directory is removed and added
/// back the same way. The group stays available throughout, the command running meanwhile
/// applies once, and the two replicas added are a working majority afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_controller_replica_is_replaced_while_groups_are_added_and_nothing_is_lost() {
    let (mut controllers, _nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    controllers.kill(3);
    let new = controllers.add_process();
    assert_eq!(health(&controllers, new), (503, "NOT_SERVING\n".to_string()));
    let address = controllers.addresses[&new].clone();
    let adding = controllers.admin_command(&["group", "add", "2", "--members", "1,2,3"]);
    let added = tokio::task::block_in_place(|| {
        controllers.admin(&["controller", "add", &new.to_string(), "--address", &address])
    });
    assert!(
        stdout(&added).contains(&format!("controller replica {new} added")),
        "{}",
        stdout(&added)
    );
    let output = adding.wait_with_output().unwrap();
    assert!(stdout(&output).contains("configuration 2 created"), "{}", stderr(&output));
    let removed = controllers.admin(&["controller", "remove", "3"]);
    // Every voter left is up and applies the removal: the replica's data may go.
    assert!(
        stdout(&removed).contains(
            "controller replica 3 removed (stop its process and clear its data directory"
        ),
        "{}",
        stdout(&removed)
    );
    assert_eq!(controller_voters(&controllers), [1, 2, new]);
    assert_eq!(health(&controllers, new), (200, "SERVING\n".to_string()));
    // Sent again, each changes nothing and says so.
    let again = controllers.admin(&["controller", "add", &new.to_string(), "--address", &address]);
    assert!(stdout(&again).contains("is a voter already"), "{}", stdout(&again));
    let again = controllers.admin(&["controller", "remove", "3"]);
    assert!(stdout(&again).contains("is not a member"), "{}", stdout(&again));

    // A replica that lost its data is removed first, then joins again like a new one.
    controllers.kill(2);
    std::fs::remove_dir_all(controllers.data_dir(2)).unwrap();
    controllers.spawn_bootstrapping(2, false);
    controllers.wait_listening(2);
    let rejoined = tokio::task::block_in_place(|| {
        controllers.admin(&["controller", "add", "2", "--address", &controllers.addresses[&2]])
    });
    assert!(stderr(&rejoined).contains("removed first, then added back"), "{}", stderr(&rejoined));
    assert_eq!(controller_voters(&controllers), [1, 2, new]);

    // Replicas 2 and the new one are a majority of their own: with replica 1 gone too, the
    // controller applies commands and has the whole history.
    controllers.kill(1);
    let third = controllers.admin(&["group", "add", "3", "--members", "1,2"]);
    assert!(stdout(&third).contains("configuration 3 created"), "{}", stdout(&third));
    let config = latest(&controllers);
    assert_eq!(
        (config["num"].as_u64(), config["groups"]["2"].clone()),
        (Some(3), serde_json::json!([1, 2, 3])),
        "{config}"
    );
}

/// Found in review: a controller replica down while a new replica was added and an old one
/// removed never applied the new replica's recorded address; back (with its old `--peers`)
/// after the replica that led was gone, it could not answer the new one's vote request, and
/// two of three voters alive elected no one. Every Raft batch carries its sender's address,
/// which a replica that knows none for the sender learns: the two elect a leader and serve.
#[test]
fn a_controller_replica_that_missed_a_new_replicas_address_learns_it_from_its_messages() {
    let mut controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    controllers.wait_registered(0);
    controllers.kill(2);
    let new = controllers.add_process();
    let address = controllers.addresses[&new].clone();
    controllers.admin(&["controller", "add", &new.to_string(), "--address", &address]);
    // The old leader stays; the other old replica is removed (replica 2 is down: it does not
    // work, yet the leader and the new one are a majority of the voters left).
    let list = json(&controllers.admin(&["--output", "json", "controller", "list"]));
    let leader = list["leader"].as_u64().unwrap();
    assert!(leader == 1 || leader == 3, "{list}");
    let other = 4 - leader;
    let removed = controllers.admin(&["controller", "remove", &other.to_string()]);
    // Replica 2, down, has not applied the removal and may still count the removed
    // replica's vote: its data must stay.
    assert!(
        stdout(&removed).contains("keep its data directory until every voter is up"),
        "{}",
        stdout(&removed)
    );
    assert_eq!(controller_voters(&controllers), [2.min(leader), 2.max(leader), new]);
    // The leader gone, the new replica needs replica 2's vote, and 2 never heard of it: it
    // comes back with the `--peers` it was started with.
    controllers.kill(leader);
    controllers.kill(other);
    let new_address = controllers.addresses.remove(&new).unwrap();
    controllers.spawn(2);
    controllers.addresses.insert(new, new_address);
    controllers.wait_listening(2);
    // Replicas 2 and 4 elect a leader: the controller answers over its whole history.
    let config = latest(&controllers);
    assert_eq!(config["num"], 0, "{config}");
    let log = std::fs::read_to_string(controllers.log(2)).unwrap();
    assert!(log.contains("learned a peer's address from its raft messages"), "{log}");
}

/// A node's limits on moving state hold while shards move, and the moves still finish: each
/// node serves one shard stream at a time, within a bandwidth budget that keeps each stream
/// open about a fifth of a second, while the pulling node starts four pulls at once. The pulls
/// past a source's limit are refused (the source logs it) and retried after a pause; every
/// shard ends served, with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_move_within_each_nodes_stream_limit_and_bandwidth() {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let addresses = controllers.addresses.values().cloned().collect();
    // About the lowest rate the configuration takes (4 of its largest chunks a second).
    let settings =
        "shard-streams-max = 1\nmigration-pulls-max = 4\nsnapshot-bytes-per-sec = 5000000";
    let nodes = Processes::start_configured(Role::Following(addresses), 3, settings);
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    let client = controllers.routed_client();
    // 1 MiB per shard: a stream takes its bytes from the budget for a fifth of a second.
    let value = |i: usize| format!("{i:04}{}", "x".repeat(128 << 10));
    for i in 0..64 {
        client.put(format!("key-{i}"), value(i)).await.unwrap();
    }
    let started = Instant::now();
    controllers.admin(&["group", "add", "2", "--members", "1,2,3"]);
    let waited = controllers.admin(&["wait", "--max-wait", "60"]);
    assert!(stdout(&waited).contains("every shard is served"), "{}", stdout(&waited));
    let logs: String = (1..=3).map(|id| std::fs::read_to_string(nodes.log(id)).unwrap()).collect();
    assert!(
        logs.contains("shard streams served at once (shard-streams-max = 1)"),
        "no pull was refused at a source's limit in {:?}",
        started.elapsed()
    );
    for i in 0..64 {
        let read = client.get(format!("key-{i}"), Consistency::Linearizable).await.unwrap();
        assert_eq!(read.as_deref(), Some(value(i).as_bytes()), "key-{i}");
    }
}

/// `admin wait` draws a progress bar when stderr is a terminal (under `script`, which gives it
/// one) and prints plain lines, each saying something new, when it is not; `admin` and `kv`
/// find the controllers in `MOSAIC_CONTROLLERS` when no flag names them.
#[test]
fn admin_wait_shows_a_bar_on_a_terminal_and_plain_lines_in_a_pipe() {
    let (controllers, mut nodes) = cluster();
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2"]);
    controllers.admin(&["wait"]);
    // The controllers may come from the environment instead of --controllers.
    let by_env = |args: &[&str], cert: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .env("MOSAIC_CONTROLLERS", controllers.addresses_flag())
            .args(&args[..1])
            .args(controllers.tls_flags_of(cert))
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stdout(&output)
    };
    let listed: Value =
        serde_json::from_str(&by_env(&["admin", "--output", "json", "node", "list"], "admin"))
            .unwrap();
    assert_eq!(listed["nodes"].as_array().map(Vec::len), Some(3), "{listed}");
    by_env(&["kv", "put", "from-env", "yes"], "client");
    assert_eq!(by_env(&["kv", "get", "from-env"], "client"), "yes\n");
    // A group whose only member is stopped never applies its configuration: the cluster stays
    // unsettled.
    nodes.kill(3);
    controllers.admin(&["group", "add", "2", "--members", "3"]);

    let piped = controllers.try_admin(&["wait", "--max-wait", "2"]);
    assert!(!piped.status.success(), "settled without group 2");
    let text = stderr(&piped);
    assert!(text.contains("waiting: configuration 2:"), "{text}");
    assert!(text.contains("still not settled: configuration 2:"), "{text}");
    assert!(!text.contains('\x1b'), "no escape codes in a pipe: {text:?}");
    let lines: Vec<&str> = text.lines().filter(|line| line.starts_with("waiting:")).collect();
    assert!(lines.windows(2).all(|pair| pair[0] != pair[1]), "a line per change: {text}");

    let mut command = vec![env!("CARGO_BIN_EXE_mosaic").to_string(), "admin".into()];
    command.extend(["--controllers".to_string(), controllers.addresses_flag()]);
    command.extend(controllers.tls_flags_of("admin"));
    command.extend(["wait", "--max-wait", "2"].map(String::from));
    let terminal = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!terminal.status.success());
    let text = String::from_utf8_lossy(&terminal.stdout);
    assert!(text.contains("shards served"), "a bar on a terminal: {text:?}");
    assert!(text.contains("group(s) behind"), "{text:?}");
    assert!(text.contains("still not settled"), "{text:?}");
}

/// `mosaic kv` as docs/api.md describes it: a create-only put, a compare-and-set on the version
/// `get --print-version` shows, refusals with exit code 4 that change nothing, an atomic batch
/// on keys of one hash tag (all or nothing; across shards refused), and a version read before
/// the key's shard moved to another group still the one a compare-and-set or a batch takes
/// after the move (the revision moves with the shard; versions go on growing there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_batches_and_scans_through_mosaic_kv_keep_their_versions_across_a_shard_move()
 {
    let (controllers, _nodes) = cluster_of_two_groups();
    let kv = |args: &[&str]| {
        let output = controllers.kv(args, None);
        (output.status.code(), stdout(&output), stderr(&output))
    };
    let version_and_value = |key: &str| {
        let (code, out, err) = kv(&["get", "--print-version", key]);
        assert_eq!(code, Some(0), "{err}");
        let (version, value) = out.split_once('\n').expect("a version line");
        (version.parse::<u64>().expect("a version"), value.trim_end().to_string())
    };
    let key = "cas-key";

    let (code, out, err) = kv(&["put", "--if-absent", key, "one"]);
    assert_eq!(code, Some(0), "{err}");
    let created: u64 = out.trim().parse().expect("the new version");
    assert_eq!(version_and_value(key), (created, "one".to_string()));
    let (code, out, err) = kv(&["put", "--if-absent", key, "two"]);
    assert_eq!((code, out.as_str()), (Some(4), ""), "{err}");
    assert!(err.contains(&format!("version is {created}")), "{err}");
    let (code, _, err) = kv(&["cas", key, "--expect-version", &(created + 100).to_string(), "x"]);
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(version_and_value(key), (created, "one".to_string()), "nothing changed");

    // Keys tagged with the key are in its shard: a batch changes them together, or not at all.
    let (a, b) = ("{cas-key}:a", "{cas-key}:b");
    let (code, out, err) = kv(&["batch", "if", a, "0", "put", a, "A", "put", b, "B"]);
    assert_eq!(code, Some(0), "{err}");
    let batched: u64 = out.trim().parse().expect("the revision");
    assert!(batched > created, "{batched} after {created}");
    assert_eq!(version_and_value(a), (batched, "A".to_string()));
    assert_eq!(version_and_value(b), (batched, "B".to_string()));
    let failing = ["--output", "json", "batch", "if", b, &batched.to_string(), "if", a, "0"];
    let (code, out, err) = kv(&[&failing[..], &["delete", a, "delete", b]].concat());
    assert_eq!(code, Some(4), "{err}");
    let refused: Value = serde_json::from_str(&out).expect("one JSON line");
    assert_eq!(refused, serde_json::json!({ "ok": false, "condition": 1, "current": batched }));
    assert_eq!(version_and_value(a), (batched, "A".to_string()), "nothing changed");
    // Keys of two shards are refused before anything is sent; so are malformed steps.
    let elsewhere = (0..)
        .map(|n| format!("other-{n}"))
        .find(|other| shard_for_key(other.as_bytes(), SHARDS) != shard_for_key(b"cas-key", SHARDS))
        .expect("a key in another shard");
    let (code, _, err) = kv(&["batch", "put", a, "x", "put", &elsewhere, "y"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("must be in one shard"), "{err}");
    let (code, _, err) = kv(&["batch", "put", a]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(version_and_value(a), (batched, "A".to_string()), "nothing changed");

    // Keys with a prefix, spread over the shards, scanned in key order with their versions.
    let scanned: Vec<String> = (0..12).map(|n| format!("scan/{n:02}")).collect();
    for (n, key) in scanned.iter().enumerate().rev() {
        let (code, _, err) = kv(&["put", key, &format!("value {n}")]);
        assert_eq!(code, Some(0), "{err}");
    }
    let scan_json = |args: &[&str]| -> Vec<Value> {
        let (code, out, err) = kv(&[&["--output", "json", "scan"], args].concat());
        assert_eq!(code, Some(0), "{err}");
        out.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
    };
    let before = scan_json(&["scan/"]);
    let keys: Vec<&str> = before.iter().map(|entry| entry["key"].as_str().unwrap()).collect();
    assert_eq!(keys, scanned, "every key once, in key order");
    for (n, entry) in before.iter().enumerate() {
        let version = version_and_value(&scanned[n]).0;
        assert_eq!(entry["value"], format!("value {n}"));
        assert_eq!(entry["version"], version, "{entry}");
    }
    let (code, out, err) = kv(&["scan", "--keys-only", "--limit", "5", "scan/"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("stopped at --limit 5; more keys follow"), "{err}");
    assert_eq!(out, scanned[..5].iter().map(|key| format!("{key}\n")).collect::<String>());
    let (code, out, err) = kv(&["scan", "--from", "scan/03", "--to", "scan/05"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "scan/03\tvalue 3\nscan/04\tvalue 4\n");
    let tagged = scan_json(&["--keys-only", "{cas-key}:"]);
    assert_eq!(tagged.len(), 2, "{tagged:?}");
    assert_eq!((tagged[0]["key"].as_str(), tagged[1]["key"].as_str()), (Some(a), Some(b)));
    let (code, _, err) = kv(&["scan", "p", "--from", "a"]);
    assert_eq!(code, Some(2), "{err}");

    // The key's shard moves to the other group.
    let shard = shard_for_key(key.as_bytes(), SHARDS).0;
    let owner = latest(&controllers)["shards"][shard as usize].as_u64().expect("owned");
    let other = if owner == 1 { "2" } else { "1" };
    let moved = controllers.admin(&["shard", "move", &shard.to_string(), other]);
    assert!(moved.status.success(), "{}", stderr(&moved));
    controllers.admin(&["wait", "--max-wait", "60"]);
    assert_eq!(latest(&controllers)["shards"][shard as usize].to_string(), other);

    let (code, out, err) = kv(&["cas", key, "--expect-version", &created.to_string(), "two"]);
    assert_eq!(code, Some(0), "{err}");
    let second: u64 = out.trim().parse().expect("the new version");
    assert!(second > created, "{second} after {created}");
    assert_eq!(version_and_value(key), (second, "two".to_string()));
    let stale = ["--output", "json", "cas", key, "--expect-version", &created.to_string(), "3"];
    let (code, out, err) = kv(&stale);
    assert_eq!(code, Some(4), "{err}");
    let refused: Value = serde_json::from_str(&out).expect("one JSON line");
    assert_eq!(refused, serde_json::json!({ "ok": false, "current": second }));
    let (code, _, err) = kv(&["delete", key, "--expect-version", &second.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(version_and_value(key), (0, String::new()), "deleted");

    // The batch's versions moved with the shard: one on them takes effect at the new owner.
    let (code, out, err) =
        kv(&["batch", "if", a, &batched.to_string(), "append", a, "+", "delete", b]);
    assert_eq!(code, Some(0), "{err}");
    let last: u64 = out.trim().parse().expect("the revision");
    assert!(last > second, "{last} after {second}");
    assert_eq!(version_and_value(a), (last, "A+".to_string()));
    assert_eq!(version_and_value(b), (0, String::new()));
    // The scan reads the moved shard at its new owner: the same keys, values and versions.
    assert_eq!(scan_json(&["scan/"]), before);
    let tagged = scan_json(&["{cas-key}:"]);
    assert_eq!(tagged.len(), 1, "{tagged:?}");
    assert_eq!((tagged[0]["key"].as_str(), tagged[0]["version"].as_u64()), (Some(a), Some(last)));
}

/// `mosaic kv watch` in one process shows the changes `put`, `cas`, `batch` and `delete` make in
/// others, as they are made, through a `shard move` of the watched keys' shard: each change
/// once, in revision order (a batch's at one revision), none of a key outside the prefix.
#[test]
fn mosaic_kv_watch_shows_every_change_once_in_order_through_a_shard_move() {
    let (controllers, _nodes) = cluster_of_two_groups();
    let kv = |args: &[&str]| {
        let output = controllers.kv(args, None);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", stderr(&output));
        String::from_utf8(output.stdout).expect("text")
    };
    let (a, b) = ("{w}:a", "{w}:b");
    let shard = shard_for_key(a.as_bytes(), SHARDS).0;
    // From the shard's first revision: what the watch misses before it is registered is kept.
    let from = format!("{shard}=1");
    let args = ["--output", "json", "watch", "{w}:", "--from-revision", &from, "--count", "6"];
    let mut watching = controllers.kv_command(&args);
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = watching.stdout.take().expect("piped");
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = || {
        let line = seen.recv_timeout(Duration::from_secs(60)).expect("a change within 60 s");
        serde_json::from_str::<Value>(&line).expect("a JSON line")
    };
    let change = |revision: u64, op: &str, key: &str, value: Option<&str>| {
        let mut change = serde_json::json!({
            "shard": shard, "revision": revision, "op": op, "key": key,
        });
        if let Some(value) = value {
            change["value"] = value.into();
        }
        change
    };

    kv(&["put", a, "1"]);
    assert_eq!(kv(&["cas", a, "--expect-version", "1", "2"]).trim(), "2");
    assert_eq!(kv(&["batch", "put", a, "3", "put", b, "x"]).trim(), "3");
    // In the watched keys' shard (their tag), outside the prefix: not shown.
    kv(&["put", "{w}other", "z"]);
    for expected in [
        change(1, "put", a, Some("1")),
        change(2, "put", a, Some("2")),
        change(3, "put", a, Some("3")),
        change(3, "put", b, Some("x")),
    ] {
        assert_eq!(next_line(), expected);
    }

    // The shard moves to the other group; the watch follows it there.
    let owner = latest(&controllers)["shards"][shard as usize].as_u64().expect("owned");
    let other = if owner == 1 { "2" } else { "1" };
    let moved = controllers.admin(&["shard", "move", &shard.to_string(), other]);
    assert!(moved.status.success(), "{}", stderr(&moved));
    controllers.admin(&["wait", "--max-wait", "60"]);
    kv(&["delete", a]);
    assert_eq!(kv(&["cas", b, "--expect-version", "3", "y"]).trim(), "6");
    assert_eq!(next_line(), change(5, "delete", a, None));
    assert_eq!(next_line(), change(6, "put", b, Some("y")));
    let output = watching.wait_with_output().expect("the watch ends after --count changes");
    assert!(output.status.success(), "{}", stderr(&output));
}
