//! The controller client against a fake controller group ([`FakeController`]): leader
//! finding, retries with one seq per command, final answers, deadlines.

use std::collections::BTreeSet;

use bytes::Bytes;
use mosaic_controller::Outcome;
use mosaic_raft::NodeId;
use prost::Message as _;
use tonic::Code;

use super::*;
use crate::testing::fake_controller::{
    FAKE_SHARD_COUNT, FakeController, Fault, ReceivedCall, Role, refused_command,
};
use crate::testing::{closed_port_address, silent_listener};

/// Options for tests that must succeed: a deadline far beyond what they need, short pauses.
fn patient_options() -> ControllerClientOptions {
    ControllerClientOptions {
        timeout: Duration::from_secs(20),
        attempt_timeout: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        jitter_seed: Some(1),
        ..ControllerClientOptions::default()
    }
}

/// Options for tests that must time out.
fn hasty_options() -> ControllerClientOptions {
    ControllerClientOptions {
        timeout: Duration::from_millis(300),
        attempt_timeout: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(50),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(40),
        jitter_seed: Some(1),
        ..ControllerClientOptions::default()
    }
}

fn client_of(addresses: Vec<String>, options: ControllerClientOptions) -> ControllerClient {
    ControllerClient::new(addresses, options).expect("valid controller addresses and options")
}

fn register(node: u64) -> Command {
    Command::RegisterNode { node: NodeId(node), address: format!("10.0.0.{node}:7100") }
}

/// Runs `command`, which must be applied; returns its outcome.
async fn must_execute(client: &ControllerClient, command: Command) -> Outcome {
    match client.execute(command.clone()).await {
        Ok(Ok(outcome)) => outcome,
        other => panic!("{command:?} answered {other:?}"),
    }
}

/// The `(client, seq)` of every `Execute` the fake received, in order.
fn executes(fake: &FakeController) -> Vec<(u64, u64)> {
    fake.received()
        .into_iter()
        .filter_map(|received| match received.call {
            ReceivedCall::Execute { client, seq } => Some((client, seq)),
            ReceivedCall::Query { .. } => None,
        })
        .collect()
}

fn status_with(code: Code, kind: pb::error_detail::Kind) -> Status {
    let detail = pb::ErrorDetail { kind: Some(kind) };
    Status::with_details(code, "refused", Bytes::from(detail.encode_to_vec()))
}

#[tokio::test]
async fn an_empty_duplicated_or_invalid_address_list_is_refused() {
    let a = "127.0.0.1:7000".to_string();
    for addresses in [vec![], vec![a.clone(), a.clone()], vec![a.clone(), "no-port".into()]] {
        let error = ControllerClient::new(addresses.clone(), patient_options()).unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidControllerAddresses { .. }),
            "{addresses:?}: {error:?}"
        );
    }
    let options = ControllerClientOptions { timeout: Duration::ZERO, ..patient_options() };
    let error = ControllerClient::new(vec![a.clone()], options).unwrap_err();
    assert!(matches!(error, ClientError::InvalidOptions { .. }), "{error:?}");

    let client = client_of(vec![a.clone()], patient_options());
    assert_eq!(client.addresses(), [a]);
    assert_ne!(client.client_id(), ClientId(0));
    assert_eq!(client.leader(), None);
}

#[test]
fn default_options_are_the_documented_ones() {
    let options = ControllerClientOptions::default();
    assert_eq!(options.timeout, Duration::from_secs(10));
    assert_eq!(options.attempt_timeout, Duration::from_secs(2));
    options.validate().unwrap();
}

#[tokio::test]
async fn a_command_follows_the_leader_hint_and_later_ones_start_at_the_leader() {
    let fake = FakeController::start(&[Role::Redirect(2), Role::Redirect(2), Role::Leader]).await;
    let client = client_of(fake.addresses(), patient_options());

    let outcome = must_execute(&client, register(1)).await;
    assert_eq!(outcome, Outcome::NodeRegistered { node: NodeId(1) });
    assert_eq!(fake.replicas_reached(), [0, 2], "the first attempt is redirected once");
    assert_eq!(client.leader().as_deref(), Some(fake.addresses()[2].as_str()));

    must_execute(&client, register(2)).await;
    let answer = client.query(None).await.unwrap();
    assert_eq!(fake.replicas_reached(), [0, 2, 2, 2], "later calls go to the leader directly");
    assert_eq!(answer.nodes.keys().copied().collect::<Vec<_>>(), [NodeId(1), NodeId(2)]);

    let id = client.client_id().0;
    assert_eq!(executes(&fake), [(id, 1), (id, 1), (id, 2)], "one seq per command");
    assert_eq!(fake.applied().len(), 2);
}

#[tokio::test]
async fn without_a_hint_the_replicas_are_tried_in_turn() {
    let fake = FakeController::start(&[Role::Follower, Role::Follower, Role::Leader]).await;
    let client = client_of(fake.addresses(), patient_options());
    let answer = client.query(None).await.unwrap();
    assert_eq!(answer.config.num, ConfigNum(0));
    assert_eq!(answer.config.shard_count(), FAKE_SHARD_COUNT);
    assert_eq!(answer.leader, NodeId(3));
    assert_eq!(fake.replicas_reached(), [0, 1, 2]);
    assert_eq!(client.leader().as_deref(), Some(fake.addresses()[2].as_str()));
}

#[tokio::test]
async fn a_hint_to_a_replica_outside_the_list_is_followed_and_remembered() {
    let fake = FakeController::start(&[Role::Redirect(1), Role::Leader]).await;
    let leader = fake.addresses()[1].clone();
    let client = client_of(vec![fake.addresses()[0].clone()], patient_options());
    must_execute(&client, register(1)).await;
    assert_eq!(client.leader(), Some(leader.clone()));
    must_execute(&client, register(2)).await;
    assert_eq!(fake.replicas_reached(), [0, 1, 1]);
    assert_eq!(client.inner.channels.addresses().len(), 2, "the listed replica and the leader");
}

#[tokio::test]
async fn a_stale_hint_does_not_hide_the_other_replicas() {
    // Replica 0 names replica 2, which is down; the round-robin goes on from replica 0.
    let fake = FakeController::start(&[Role::Redirect(2), Role::Leader, Role::Down]).await;
    let client = client_of(fake.addresses(), patient_options());
    must_execute(&client, register(1)).await;
    assert_eq!(fake.replicas_reached(), [0, 1]);
}

#[tokio::test]
async fn unavailable_and_busy_attempts_are_retried_with_the_same_seq() {
    let fake = FakeController::start(&[Role::Leader]).await;
    fake.inject(Fault::Before(Status::unavailable("starting up")));
    fake.inject(Fault::Before(Status::deadline_exceeded("too slow")));
    fake.inject(Fault::Before(status_with(
        Code::ResourceExhausted,
        pb::error_detail::Kind::ServerBusy(pb::ServerBusy {}),
    )));
    fake.inject(Fault::Before(status_with(
        Code::DeadlineExceeded,
        pb::error_detail::Kind::Timeout(pb::Timeout {}),
    )));
    let client = client_of(fake.addresses(), patient_options());
    must_execute(&client, register(1)).await;
    let id = client.client_id().0;
    assert_eq!(executes(&fake), [(id, 1); 5]);
    assert_eq!(fake.applied().len(), 1);
}

#[tokio::test]
async fn a_command_whose_answer_was_lost_is_applied_once() {
    let fake = FakeController::start(&[Role::Leader]).await;
    fake.inject(Fault::After(Status::unavailable("connection reset")));
    let client = client_of(fake.addresses(), patient_options());
    // The retry is answered with the first attempt's result, not re-applied.
    let outcome = must_execute(&client, register(1)).await;
    assert_eq!(outcome, Outcome::NodeRegistered { node: NodeId(1) });
    let id = client.client_id().0;
    assert_eq!(executes(&fake), [(id, 1), (id, 1)]);
    assert_eq!(fake.applied().len(), 1);
}

#[tokio::test]
async fn an_outcome_unknown_command_is_retried_through_the_other_replicas_with_its_seq() {
    let fake = FakeController::start(&[Role::Leader, Role::Redirect(0)]).await;
    fake.inject(Fault::After(status_with(
        Code::Unavailable,
        pb::error_detail::Kind::OutcomeUnknown(pb::OutcomeUnknown {
            leader_node: None,
            leader_address: String::new(),
        }),
    )));
    let client = client_of(fake.addresses(), patient_options());
    let outcome = must_execute(&client, register(1)).await;
    assert_eq!(outcome, Outcome::NodeRegistered { node: NodeId(1) });
    assert_eq!(fake.replicas_reached(), [0, 1, 0]);
    let id = client.client_id().0;
    assert_eq!(executes(&fake), [(id, 1); 3]);
    assert_eq!(fake.applied().len(), 1);
}

#[tokio::test]
async fn a_refusal_is_a_final_answer() {
    let fake = FakeController::start(&[Role::Leader]).await;
    let client = client_of(fake.addresses(), patient_options());
    let refusal = client.execute(refused_command()).await.unwrap().unwrap_err();
    assert_eq!(refusal.kind, "unknown-group");
    assert!(refusal.message.contains("group 7"), "{refusal:?}");
    assert_eq!(fake.received().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn an_invalid_argument_is_final_and_the_next_command_takes_the_next_seq() {
    let fake = FakeController::start(&[Role::Leader]).await;
    fake.inject(Fault::Before(Status::invalid_argument("ExecuteRequest.command is missing")));
    let client = client_of(fake.addresses(), patient_options());
    let error = client.execute(register(1)).await.unwrap_err();
    let ClientError::InvalidArgument { ref reason, outcome } = error else {
        panic!("expected an invalid argument, got {error:?}");
    };
    assert_eq!(
        (reason.as_str(), outcome),
        ("ExecuteRequest.command is missing", WriteOutcome::NotApplied)
    );
    must_execute(&client, register(1)).await;
    let id = client.client_id().0;
    assert_eq!(executes(&fake), [(id, 1), (id, 2)]);
}

#[tokio::test]
async fn a_query_for_an_unknown_configuration_is_a_distinct_error() {
    let fake = FakeController::start(&[Role::Redirect(1), Role::Leader]).await;
    let client = client_of(fake.addresses(), patient_options());
    let error = client.query(Some(ConfigNum(9))).await.unwrap_err();
    let ClientError::UnknownConfig { num, ref message } = error else {
        panic!("expected an unknown configuration, got {error:?}");
    };
    assert_eq!(num, ConfigNum(9));
    assert!(message.contains("does not exist"), "{message}");
    assert_eq!(error.outcome(), WriteOutcome::NotApplied);
    assert_eq!(fake.replicas_reached(), [0, 1], "not retried once the leader answered");
    // The leader that said so is remembered, and a known configuration is answered.
    assert_eq!(client.leader().as_deref(), Some(fake.addresses()[1].as_str()));
    let answer = client.query(Some(ConfigNum(0))).await.unwrap();
    assert_eq!((answer.config.num, answer.latest), (ConfigNum(0), ConfigNum(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_reach_the_controller_in_seq_order() {
    let fake = FakeController::start(&[Role::Leader]).await;
    // The first command's first attempt fails, and its retry waits 100 to 200 ms: a command
    // sent meanwhile with the next seq would make that retry stale.
    fake.inject(Fault::Before(Status::unavailable("starting up")));
    let options = ControllerClientOptions {
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_millis(200),
        ..patient_options()
    };
    let client = client_of(fake.addresses(), options);
    let commands: Vec<_> = (1..=8)
        .map(|node| {
            let client = client.clone();
            tokio::spawn(async move { client.execute(register(node)).await })
        })
        .collect();
    for command in commands {
        let answer = command.await.expect("the command task ran");
        assert!(matches!(answer, Ok(Ok(Outcome::NodeRegistered { .. }))), "{answer:?}");
    }
    let id = client.client_id().0;
    let mut expected = vec![(id, 1)];
    expected.extend((1..=8).map(|seq| (id, seq)));
    assert_eq!(executes(&fake), expected, "no seq is stale when it arrives");
    let nodes: BTreeSet<_> = client.query(None).await.unwrap().nodes.into_keys().collect();
    assert_eq!(nodes.len(), 8);
}

#[tokio::test]
async fn unreachable_controllers_time_out_with_the_command_not_applied() {
    let addresses = vec![closed_port_address().await, closed_port_address().await];
    let client = client_of(addresses, hasty_options());
    let error = client.execute(register(1)).await.unwrap_err();
    let ClientError::Timeout { outcome, attempts, ref last_failure, .. } = error else {
        panic!("expected a timeout, got {error:?}");
    };
    assert_eq!(outcome, WriteOutcome::NotApplied, "{error}");
    assert!(attempts >= 2, "{error}");
    assert!(last_failure.contains("cannot connect"), "{error}");
    assert_eq!(client.leader(), None);
}

#[tokio::test]
async fn a_command_sent_to_a_controller_that_never_answers_may_have_been_applied() {
    let (address, _listener) = silent_listener().await;
    let client = client_of(vec![address], hasty_options());
    let started = std::time::Instant::now();
    let error = client.execute(register(1)).await.unwrap_err();
    assert!(
        matches!(error, ClientError::Timeout { outcome: WriteOutcome::Unknown, .. }),
        "{error:?}"
    );
    // A query that fails the same way applied nothing.
    let error = client.query(None).await.unwrap_err();
    assert!(
        matches!(error, ClientError::Timeout { outcome: WriteOutcome::NotApplied, .. }),
        "{error:?}"
    );
    let elapsed = started.elapsed();
    let options = hasty_options();
    assert!(elapsed >= options.timeout * 2, "two operations ended after {elapsed:?}");
}

#[tokio::test]
async fn replicas_naming_each_other_are_retried_with_pauses() {
    let fake = FakeController::start(&[Role::Redirect(1), Role::Redirect(0)]).await;
    let options = hasty_options();
    let client = client_of(fake.addresses(), options.clone());
    let error = client.query(None).await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    // Each pause lasts at least half of `backoff_initial`, and comes after at most two
    // attempts (a full round of the two replicas).
    let pauses_max = options.timeout.as_millis() / (options.backoff_initial.as_millis() / 2);
    let attempts = fake.received().len();
    assert!(attempts >= 2, "{attempts} attempts");
    assert!(attempts as u128 <= 2 * (pauses_max + 1), "{attempts} attempts, {pauses_max} pauses");
}

#[test]
fn clients_and_their_calls_can_cross_tasks() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<ControllerClient>();
    let client = client_of(vec!["127.0.0.1:1".into()], patient_options());
    assert_send(&client.execute(register(1)));
    assert_send(&client.query(None));
}
