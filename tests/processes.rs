//! End-to-end tests of the real `mosaic` binary: three `mosaic server` processes on loopback,
//! a group created with `mosaic admin`, writes through the client library and `mosaic kv`,
//! the leader killed with SIGKILL and restarted, a replica whose data was wiped added back,
//! a stopped follower catching up, a leader woken from SIGSTOP serving no stale lease read, a
//! leadership moved by hand.
//! Logs are compacted every 50 entries, so catching up takes snapshots.
//!
//! The soak (ignored by default) runs N seconds of appends while a random node is killed and
//! restarted every few seconds; every acknowledged append must be there exactly once:
//! `MOSAIC_E2E_SOAK_SECS=N cargo test --workspace --all-targets -- --ignored a_soak`.

mod support;

use std::time::{Duration, Instant};

use mosaic_client::{Client, Consistency};
use support::{GROUP, Processes, Role, stderr};

async fn create_group(processes: &Processes) {
    let output = processes.admin(&["group", "create", &GROUP.to_string()]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("created"), "{output:?}");
    processes.leader().await;
}

/// Appends `token` to `key` until acknowledged.
async fn must_append(client: &Client, key: &str, token: &str) {
    client
        .append(key.as_bytes().to_vec(), token.as_bytes().to_vec())
        .await
        .unwrap_or_else(|error| panic!("append {token} to {key}: {error}"));
}

/// Appends tokens `range` to "log" and records them.
async fn append_tokens(client: &Client, tokens: &mut Vec<String>, range: std::ops::Range<u32>) {
    for i in range {
        let token = format!("<{i}>");
        must_append(client, "log", &token).await;
        tokens.push(token);
    }
}

async fn value(client: &Client, key: &str) -> String {
    let value = client.get(key.as_bytes().to_vec(), Consistency::Linearizable).await.unwrap();
    String::from_utf8(value.unwrap_or_default().to_vec()).unwrap()
}

fn assert_each_once(value: &str, tokens: &[String], context: &str) {
    for token in tokens {
        assert_eq!(value.matches(token.as_str()).count(), 1, "{context}: {token} in {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_rejoins_with_every_acknowledged_write() {
    let mut processes = Processes::start(3);
    create_group(&processes).await;
    let client = processes.client();
    let mut tokens = Vec::new();
    append_tokens(&client, &mut tokens, 0..30).await;
    let leader = processes.leader().await;
    processes.kill(leader);
    append_tokens(&client, &mut tokens, 30..60).await;
    assert_ne!(processes.leader().await, leader);
    processes.spawn(leader);
    processes.wait_caught_up().await;
    assert_each_once(&value(&client, "log").await, &tokens, "after the restart");
    // The restarted node serves reads of everything once it leads.
    let current = processes.leader().await;
    if current != leader {
        processes.kill(current);
        processes.spawn(current);
    }
    assert_each_once(&value(&client, "log").await, &tokens, "after a second failover");
}

/// Issue 13: a leader stopped (SIGSTOP) while the others elect a new leader and overwrite a
/// key must not answer a lease read sent straight to it with the old value when it wakes up:
/// its lease is timed with the clock, which ran on while it counted no ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_woken_from_sigstop_serves_no_stale_lease_read() {
    let processes = Processes::start(3);
    create_group(&processes).await;
    let client = processes.client();
    client.put(b"k".to_vec(), b"old".to_vec()).await.unwrap();
    let old = processes.leader().await;
    let stopped_at = Instant::now();
    processes.signal(old, "STOP");
    // The others elect a new leader (the client retries around the stopped node) and write.
    client.put(b"k".to_vec(), b"new".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped_at.elapsed())).await;
    let read = processes.kv_at(old, &["--timeout", "3s", "get", "k", "--consistency", "lease"]);
    // Let the request reach the stopped process's socket before it wakes up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    processes.signal(old, "CONT");
    let output = read.wait_with_output().unwrap();
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(!answer.contains("old"), "the woken leader served a stale lease read: {answer}");
    // The cluster is whole again: a linearizable read anywhere sees the new value.
    assert_eq!(value(&client, "k").await, "new");
}

/// `mosaic admin group transfer-leader` with leader balance off: the leadership moves to the
/// voter named, or to the group's preferred voter, and stays there; a node that is not a
/// voter is refused with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_moves_a_leadership_to_the_voter_named() {
    let processes =
        Processes::start_configured(Role::Servers, 3, "[raft]\nleader-balance-ticks = 0");
    create_group(&processes).await;
    let group = GROUP.to_string();
    let leader = processes.leader().await;
    let to = leader % 3 + 1;
    let output = processes.admin(&["group", "transfer-leader", &group, "--to", &to.to_string()]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("led by node {to} (was node {leader})")), "{output:?}");
    assert_eq!(processes.leader().await, to);
    // Group 1 prefers node 2 (the voter at position 1 % 3).
    let output = processes.admin(&["--output", "json", "group", "transfer-leader", &group]);
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["leader"], 2, "{answer}");
    assert_eq!(processes.leader().await, 2);
    let refused = processes.try_admin(&["group", "transfer-leader", &group, "--to", "9"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(stderr(&refused).contains("node 9 is not a voter"), "{}", stderr(&refused));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(processes.leader().await, 2, "with balance off, the leadership stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_command_keeps_its_output_contract() {
    let processes = Processes::start(3);
    create_group(&processes).await;
    let put = processes.kv(&["put", "greeting", "hello"], None);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(put.stdout.is_empty(), "a put prints nothing: {:?}", put.stdout);
    let get = processes.kv(&["get", "greeting"], None);
    assert_eq!((get.status.code(), get.stdout.as_slice()), (Some(0), &b"hello\n"[..]));
    let missing = processes.kv(&["get", "nothing-here"], None);
    assert_eq!((missing.status.code(), missing.stdout.len()), (Some(0), 0));
    let json = processes.kv(&["--output", "json", "get", "nothing-here"], None);
    assert!(String::from_utf8_lossy(&json.stdout).contains("\"found\":false"), "{json:?}");
    let piped = processes.kv(&["append", "greeting"], Some(b", world"));
    assert!(piped.status.success(), "{}", stderr(&piped));
    let get = processes.kv(&["get", "greeting"], None);
    assert_eq!(get.stdout.as_slice(), &b"hello, world\n"[..]);
    let delete = processes.kv(&["delete", "greeting"], None);
    assert!(delete.status.success(), "{}", stderr(&delete));
    let gone = processes.kv(&["get", "greeting"], None);
    assert_eq!((gone.status.code(), gone.stdout.len()), (Some(0), 0));
    let empty_key = processes.kv(&["put", "", "v"], None);
    assert_eq!(empty_key.status.code(), Some(1), "{}", stderr(&empty_key));
    assert!(!stderr(&empty_key).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of N seconds: MOSAIC_E2E_SOAK_SECS=N cargo test --workspace --all-targets \
            -- --ignored a_soak"]
async fn a_soak_of_appends_under_random_kills_loses_nothing() {
    let secs: u64 = std::env::var("MOSAIC_E2E_SOAK_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .expect("the soak needs MOSAIC_E2E_SOAK_SECS=N, its length in seconds");
    let seed: u64 =
        std::env::var("MOSAIC_E2E_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    eprintln!("soak: {secs} s, seed {seed} (MOSAIC_E2E_SOAK_SEED)");
    let mut processes = Processes::start(3);
    create_group(&processes).await;
    let client = processes.client();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut next_kill = Instant::now() + Duration::from_secs(3);
    let mut state = seed;
    let mut tokens = Vec::new();
    let mut down: Option<u64> = None;
    while Instant::now() < end {
        let token = format!("<{}>", tokens.len());
        must_append(&client, "soak", &token).await;
        tokens.push(token);
        if Instant::now() >= next_kill {
            match down.take() {
                Some(id) => processes.spawn(id),
                None => {
                    state =
                        state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let id = (state >> 33) % 3 + 1;
                    processes.kill(id);
                    down = Some(id);
                }
            }
            next_kill = Instant::now() + Duration::from_secs(3);
        }
    }
    if let Some(id) = down {
        processes.spawn(id);
    }
    processes.wait_caught_up().await;
    assert_each_once(&value(&client, "soak").await, &tokens, "after the soak");
    eprintln!("soak: {} appends acknowledged and present once each", tokens.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_is_removed_and_added_back_by_snapshot() {
    let mut processes = Processes::start(3);
    create_group(&processes).await;
    let client = processes.client();
    let mut tokens = Vec::new();
    append_tokens(&client, &mut tokens, 0..120).await;
    let wiped = processes.follower().await;
    processes.kill(wiped);
    std::fs::remove_dir_all(processes.data_dir(wiped)).unwrap();
    processes.spawn(wiped);
    processes.wait_listening(wiped);
    let group = GROUP.to_string();
    let node = wiped.to_string();

    // Still a voter: adding it again is refused, with what to do instead.
    let refused = processes.try_admin(&["group", "add-replica", &group, "--node", &node]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("remove it first"), "{}", stderr(&refused));

    processes.admin(&["group", "remove-replica", &group, "--node", &node]);
    append_tokens(&client, &mut tokens, 120..150).await;
    let added = processes.admin(&["group", "add-replica", &group, "--node", &node]);
    assert!(String::from_utf8_lossy(&added.stdout).contains("added"), "{added:?}");
    // The command returns once the leader applied the promotion; the new replica applies it
    // a moment later (under load, after this test read its status: seen once in a loaded run).
    processes.wait_caught_up().await;
    let status = processes.status(wiped).await.expect("the new replica answers");
    assert!(status.voters.contains(&wiped), "{status:?}");
    assert!(status.first_index > 1, "it caught up from a snapshot: {status:?}");

    // The new replica is a working voter: with the third node down it forms the majority,
    // then it hands the entries the third node missed to it.
    let leader = processes.leader().await;
    let other = *processes.children.keys().find(|id| **id != leader && **id != wiped).unwrap();
    processes.kill(other);
    append_tokens(&client, &mut tokens, 150..180).await;
    processes.kill(leader);
    processes.spawn(other);
    assert_each_once(&value(&client, "log").await, &tokens, "after losing the old leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_follower_catches_up_after_the_log_moved_past_it() {
    let processes = Processes::start(3);
    create_group(&processes).await;
    let client = processes.client();
    let mut tokens = Vec::new();
    append_tokens(&client, &mut tokens, 0..10).await;
    let stopped = processes.follower().await;
    processes.signal(stopped, "STOP");
    append_tokens(&client, &mut tokens, 10..130).await;
    let leader = processes.leader().await;
    let leader_first = processes.status(leader).await.unwrap().first_index;
    processes.signal(stopped, "CONT");
    processes.wait_caught_up().await;
    let status = processes.status(stopped).await.unwrap();
    assert!(leader_first > 11, "the leader compacted past the stopped follower: {leader_first}");
    assert_eq!(status.role, "follower", "{status:?}");
    assert_each_once(&value(&client, "log").await, &tokens, "after the follower resumed");
}

/// Issue: `group add-replica` on a young group (its log never compacted) left the new node
/// believing it was the group's only voter; cut off from the leader, it elected itself alone.
/// It now learns every voter from the bootstrap snapshot, and with the leader and another
/// member gone no majority of four is left to elect anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_to_a_young_group_learns_every_voter_and_never_leads_alone() {
    let mut processes = Processes::start(4);
    let group = GROUP.to_string();
    let output = processes.admin(&["group", "create", &group, "--members", "1,2,3"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("created"), "{output:?}");
    processes.leader().await;
    let added = processes.admin(&["group", "add-replica", &group, "--node", "4"]);
    assert!(String::from_utf8_lossy(&added.stdout).contains("added"), "{added:?}");
    let status = processes.status(4).await.expect("the new replica answers");
    assert_eq!(status.voters, vec![1, 2, 3, 4], "{status:?}");
    let client = processes.client();
    let mut tokens = Vec::new();
    append_tokens(&client, &mut tokens, 0..10).await;

    let leader = processes.leader().await;
    let other = (1..=3).find(|id| *id != leader).unwrap();
    processes.kill(leader);
    processes.kill(other);
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let status = processes.status(4).await;
        assert!(status.is_none_or(|s| s.role != "leader"), "node 4 leads without a majority");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    processes.spawn(leader);
    append_tokens(&client, &mut tokens, 10..20).await;
    assert_each_once(&value(&client, "log").await, &tokens, "after the leader came back");
}

/// A membership change plans from a view confirmed by a quorum round (found in review: a
/// deposed leader's applied membership can be older than the group's). A leader woken from
/// SIGSTOP after the others elected a new one never answers a confirming `GroupStatus` as the
/// leader of its old term. (Without the quorum round it fails only when the request wins the
/// race with the new leader's messages: 1 run of 3 here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_woken_from_sigstop_never_confirms_its_old_leadership() {
    use mosaic_proto::pb::{self, node_admin_client::NodeAdminClient};
    let processes = Processes::start(3);
    create_group(&processes).await;
    let client = processes.client();
    client.put(b"k".to_vec(), b"old".to_vec()).await.unwrap();
    let old = processes.leader().await;
    let old_term = processes.status(old).await.expect("the leader answers").term;
    processes.signal(old, "STOP");
    client.put(b"k".to_vec(), b"new".to_vec()).await.unwrap();
    let endpoint = processes.endpoint(old, "admin", Duration::from_secs(5));
    let asked = tokio::spawn(async move {
        let channel = endpoint.timeout(Duration::from_secs(5)).connect().await.unwrap();
        let request = pb::GroupStatusRequest { group_id: GROUP, confirm_leadership: true };
        NodeAdminClient::new(channel).group_status(request).await
    });
    // Let the request reach the stopped process's socket before it wakes up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    processes.signal(old, "CONT");
    let answer = asked.await.unwrap();
    if let Ok(answer) = answer {
        let answer = answer.into_inner();
        assert!(
            !answer.leadership_confirmed || answer.term > old_term,
            "the woken leader confirmed its leadership of term {old_term}: {answer:?}"
        );
    }
    assert_eq!(value(&client, "k").await, "new");
}
