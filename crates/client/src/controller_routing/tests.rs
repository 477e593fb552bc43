//! A [`Client`] routing by a fake controller group ([`FakeController`]) to fake storage nodes
//! ([`FakeNode`]): following configuration changes, unassigned shards, a controller that is
//! down or behind a node.

use std::collections::BTreeMap;
use std::time::Duration;

use mosaic_controller::{ConfigNum, Configuration};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;

use super::*;
use crate::client::{Client, ClientOptions, Consistency};
use crate::controller::ControllerClientOptions;
use crate::error::WriteOutcome;
use crate::testing::closed_port_address;
use crate::testing::fake_controller::{FAKE_SHARD_COUNT, FakeController, Fault, Role};
use crate::testing::fake_node::{FakeNode, NodeRequest, shard_not_ready, wrong_group};
use mosaic_types::shard_for_key;

/// Client options for tests that must succeed: a deadline far beyond what they need.
fn patient_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        jitter_seed: Some(1),
        ..ClientOptions::default()
    }
}

/// Client options for tests that must time out: every pause at least 10 ms.
fn hasty_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(400),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(20),
        ..patient_options()
    }
}

/// Controller client options: each query gives up well within a client operation's deadline.
fn controller_options() -> ControllerClientOptions {
    ControllerClientOptions {
        timeout: Duration::from_millis(200),
        attempt_timeout: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(50),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        jitter_seed: Some(2),
        ..ControllerClientOptions::default()
    }
}

fn client_of(fake: &FakeController, options: ClientOptions) -> Client<ControllerRouting> {
    let controller = ControllerClient::new(fake.addresses(), controller_options())
        .expect("valid controller addresses and options");
    Client::new(ControllerRouting::new(controller), options).expect("valid client options")
}

/// Configuration `num`, in which group `group` of `members` owns every shard.
fn one_group_config(num: u64, group: u64, members: &[u64]) -> Configuration {
    Configuration {
        num: ConfigNum(num),
        shards: vec![Some(GroupId(group)); FAKE_SHARD_COUNT as usize],
        groups: BTreeMap::from([(GroupId(group), members.iter().map(|n| NodeId(*n)).collect())]),
    }
}

/// A controller with nodes 1 and 2 registered at `nodes`, whose configuration 1 gives every
/// shard to group 1 of `members`.
async fn controller_with_group_1(nodes: &[&FakeNode], members: &[u64]) -> FakeController {
    let fake = FakeController::start(&[Role::Leader]).await;
    for (id, node) in (1u64..).zip(nodes) {
        fake.register(NodeId(id), &node.address());
    }
    fake.publish(one_group_config(1, 1, members));
    fake
}

/// The `(group, config_num)` every request to `node` named, in order.
fn routes(node: &FakeNode) -> Vec<(u64, u64)> {
    node.received()
        .iter()
        .map(|NodeRequest { group, config_num, .. }| (group.0, *config_num))
        .collect()
}

#[tokio::test]
async fn a_wrong_group_answer_makes_the_client_follow_the_new_configuration() {
    let (node_1, node_2) = (FakeNode::start().await, FakeNode::start().await);
    let fake = controller_with_group_1(&[&node_1, &node_2], &[1]).await;
    let client = client_of(&fake, patient_options());
    client.put("k", "v1").await.unwrap();
    assert_eq!(routes(&node_1), [(1, 1)]);

    // Configuration 2 moves every shard to group 2 on node 2, and node 1 has applied it.
    fake.publish(one_group_config(2, 2, &[2]));
    node_1.refuse_all(Some(wrong_group(2)));
    client.put("k", "v2").await.unwrap();
    assert_eq!(routes(&node_1), [(1, 1), (1, 1)], "one refused attempt at the old owner");
    assert_eq!(routes(&node_2), [(2, 2)]);
    // Later operations route by configuration 2 from the start.
    let value = client.get("k", Consistency::Linearizable).await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"v2"[..]));
    assert_eq!(routes(&node_2), [(2, 2), (2, 2)]);
    assert_eq!(fake.queries_received(), 2, "one load, one refresh");
}

#[tokio::test]
async fn a_shard_no_group_owns_fails_after_one_more_refresh() {
    // Configuration 0: no groups, every shard unassigned.
    let fake = FakeController::start(&[Role::Leader]).await;
    let options = patient_options();
    let client = client_of(&fake, options.clone());
    let started = std::time::Instant::now();
    let error = client.put("k", "v").await.unwrap_err();
    let expected_shard = shard_for_key(b"k", FAKE_SHARD_COUNT);
    assert_eq!(
        error,
        ClientError::ShardUnassigned {
            shard: expected_shard,
            config_num: 0,
            outcome: WriteOutcome::NotApplied
        }
    );
    assert!(error.to_string().contains("not assigned to any group"), "{error}");
    assert_eq!(fake.queries_received(), 2, "one load, one refresh");
    assert!(started.elapsed() < options.timeout / 2, "answered without waiting for the deadline");
}

#[tokio::test]
async fn a_shard_assigned_since_the_last_load_is_found_by_the_refresh() {
    let node_1 = FakeNode::start().await;
    let fake = FakeController::start(&[Role::Leader]).await;
    fake.register(NodeId(1), &node_1.address());
    let client = client_of(&fake, patient_options());
    let error = client.get("k", Consistency::Linearizable).await.unwrap_err();
    assert!(matches!(error, ClientError::ShardUnassigned { config_num: 0, .. }), "{error:?}");

    // The client still holds configuration 0; its refresh finds configuration 1.
    fake.publish(one_group_config(1, 1, &[1]));
    client.put("k", "v").await.unwrap();
    assert_eq!(routes(&node_1), [(1, 1)]);
    assert_eq!(fake.queries_received(), 3);
}

#[tokio::test]
async fn a_controller_that_is_down_fails_the_first_operation_with_a_routing_error() {
    let fake = FakeController::start(&[Role::Down, Role::Down]).await;
    let client = client_of(&fake, patient_options());
    let error = client.put("k", "v").await.unwrap_err();
    let ClientError::Routing { reason: RoutingError::Source { ref reason } } = error else {
        panic!("expected a routing source error, got {error:?}");
    };
    assert!(reason.contains(&fake.addresses()[0]), "names the controllers: {reason}");
    assert!(reason.contains("cannot connect"), "says what failed: {reason}");
    assert_eq!(error.outcome(), WriteOutcome::NotApplied);

    // The same from a controller address nothing listens on, through the source alone.
    let controller =
        ControllerClient::new(vec![closed_port_address().await], controller_options()).unwrap();
    let error = ControllerRouting::new(controller).latest().await.unwrap_err();
    assert!(
        matches!(error, ClientError::Routing { reason: RoutingError::Source { .. } }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_controller_that_refuses_the_client_fails_the_first_operation_with_access_denied() {
    let fake = FakeController::start(&[Role::Leader]).await;
    let refusal = "permission denied: the certificate \"x\" has no Mosaic role";
    fake.inject(Fault::Before(tonic::Status::permission_denied(refusal)));
    let client = client_of(&fake, patient_options());
    let error = client.put("k", "v").await.unwrap_err();
    let ClientError::AccessDenied { ref message, outcome } = error else {
        panic!("expected access denied, not a routing failure: {error:?}");
    };
    assert_eq!(message, refusal);
    assert_eq!(outcome, WriteOutcome::NotApplied);
}

#[tokio::test]
async fn a_controller_that_fails_later_leaves_the_cached_placement_in_place() {
    let node_1 = FakeNode::start().await;
    let fake = controller_with_group_1(&[&node_1], &[1]).await;
    let client = client_of(&fake, patient_options());
    client.put("k", "v1").await.unwrap();

    // The node has not applied configuration 1 yet; the refresh it asks for fails.
    fake.fail_queries(true);
    node_1.refuse_next(wrong_group(0));
    client.put("k", "v2").await.unwrap();
    assert_eq!(routes(&node_1), [(1, 1), (1, 1), (1, 1)], "retried by the cached placement");
    assert!(fake.queries_received() >= 2, "the refresh was asked for");
}

#[tokio::test]
async fn a_controller_behind_a_node_is_asked_again_until_it_catches_up() {
    let (node_1, node_2) = (FakeNode::start().await, FakeNode::start().await);
    let fake = controller_with_group_1(&[&node_1, &node_2], &[1]).await;
    let client = client_of(&fake, patient_options());
    client.put("k", "v1").await.unwrap();

    // Node 1 has applied configuration 2, which the controller publishes only later.
    node_1.refuse_all(Some(wrong_group(2)));
    let publisher = {
        let fake = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            fake.publish(one_group_config(2, 2, &[2]));
        })
    };
    client.put("k", "v2").await.unwrap();
    publisher.await.unwrap();
    assert_eq!(routes(&node_1), [(1, 1), (1, 1)], "nothing resent while the placement lagged");
    assert_eq!(routes(&node_2), [(2, 2)]);
    assert!(fake.queries_received() >= 3, "{} queries", fake.queries_received());
}

#[tokio::test]
async fn a_controller_that_never_catches_up_ends_the_operation_by_its_deadline_with_pauses() {
    let node_1 = FakeNode::start().await;
    let fake = controller_with_group_1(&[&node_1], &[1]).await;
    let options = hasty_options();
    let client = client_of(&fake, options.clone());
    client.put("k", "v1").await.unwrap();
    let queries_before = fake.queries_received();

    node_1.refuse_all(Some(wrong_group(2)));
    let started = std::time::Instant::now();
    let error = client.put("k", "v2").await.unwrap_err();
    let elapsed = started.elapsed();
    let ClientError::Timeout { outcome, ref last_failure, .. } = error else {
        panic!("expected a timeout, got {error:?}");
    };
    assert_eq!(outcome, WriteOutcome::NotApplied);
    assert!(last_failure.contains("configuration 2"), "{last_failure}");
    assert!(
        elapsed >= options.timeout && elapsed < options.timeout + Duration::from_millis(300),
        "ended after {elapsed:?} with a deadline of {:?}",
        options.timeout
    );
    assert_eq!(routes(&node_1).len(), 2, "nothing resent while the placement lagged");
    // Each refresh after the first follows a pause of at least half of `backoff_initial`.
    let refreshes = fake.queries_received() - queries_before;
    let pauses_max = options.timeout.as_millis() / (options.backoff_initial.as_millis() / 2);
    assert!(refreshes >= 3, "{refreshes} refreshes");
    assert!(refreshes as u128 <= pauses_max + 1, "{refreshes} refreshes, {pauses_max} pauses");
}

#[tokio::test]
async fn a_shard_not_ready_is_retried_at_the_same_node_without_a_refresh() {
    let (node_1, node_2) = (FakeNode::start().await, FakeNode::start().await);
    let fake = controller_with_group_1(&[&node_1, &node_2], &[1, 2]).await;
    let client = client_of(&fake, patient_options());
    node_1.refuse_next(shard_not_ready());
    node_1.refuse_next(shard_not_ready());
    client.put("k", "v").await.unwrap();
    assert_eq!(routes(&node_1), [(1, 1); 3]);
    assert!(node_2.received().is_empty(), "the other member was not tried");
    assert_eq!(fake.queries_received(), 1, "the placement was not refreshed");
    assert_eq!(node_1.received()[0].shard, shard_for_key(b"k", FAKE_SHARD_COUNT));
}

/// `Client::connect` routes by the controller in one line, and gives one ask of the controller
/// half the operation's deadline: `warm_up` of a client whose controller never answers fails
/// with the controller's own error, which names it, before the deadline.
#[tokio::test]
async fn a_client_connected_to_the_controllers_routes_by_them_and_a_silent_one_is_named() {
    let node_1 = FakeNode::start().await;
    let fake = controller_with_group_1(&[&node_1], &[1]).await;
    let client = Client::connect(fake.addresses(), patient_options()).unwrap();
    assert_eq!(client.warm_up().await.unwrap().config_num(), 1);
    client.put("k", "v").await.unwrap();
    assert_eq!(routes(&node_1), [(1, 1)]);

    let (silent, _listener) = crate::testing::silent_listener().await;
    let options = ClientOptions { attempt_timeout: Duration::from_secs(5), ..hasty_options() };
    let client = Client::connect(vec![silent.clone()], options).unwrap();
    let Err(error) = client.warm_up().await else { panic!("a silent controller gave a placement") };
    let ClientError::Routing { reason: RoutingError::Source { ref reason } } = error else {
        panic!("expected the controller's own error, got {error:?}");
    };
    assert!(reason.contains(&silent), "names the controller: {reason}");

    let refused = Client::connect(Vec::new(), patient_options()).err();
    assert!(matches!(refused, Some(ClientError::InvalidControllerAddresses { .. })), "{refused:?}");
}
