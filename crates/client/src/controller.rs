//! The client of the controller group ([`ControllerClient`]): runs commands through the
//! controller's Raft log (`Execute`) and reads configurations and the node registry (`Query`),
//! finding the leader among the controller replicas and retrying until a final answer or the
//! operation's deadline. The admin CLI uses it, and so do storage nodes that register and
//! follow the configurations.
//!
//! [`ControllerClient`]'s documentation says how it finds the leader, what it retries and why
//! a command applies once; [`crate::classify`] says how a status is read, [`crate::backoff`]
//! how long the pauses are.
//!
//! # Shared state
//!
//! Every clone shares one `Arc`: the replica list (fixed), the client id and next seq, the
//! leader's address, and the channels. Invariant: channels exist only for the listed replicas
//! and at most one address outside the list (the last one a hint named), so hints cannot make
//! the map grow.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mosaic_controller::{Command, ConfigNum, Request};
use mosaic_engine::ClientId;
use mosaic_proto::controller::{
    QueryAnswer, RefusalInfo, execute_response_from_pb, query_request_to_pb,
    query_response_from_pb, request_to_pb,
};
use mosaic_proto::pb;
use mosaic_raft::NodeId;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::backoff::JitterSeeds;
use crate::channel::{Channels, endpoint_for, with_timeout};
use crate::classify::{Failure, classify_controller_status};
use crate::client::{ClientOptions, lock};
use crate::controller_retry::{ControllerRetry, first_replica};
use crate::error::{ClientError, Progress, Result, WriteOutcome};
use crate::session::random_client_id;

/// How a [`ControllerClient`] retries and how long it waits: the same bounds as a
/// [`crate::Client`]'s, with the same defaults (an operation 10 s, an attempt 2 s, pauses from
/// 10 ms up to 500 ms) and the same [validation](ClientOptions::validate).
pub type ControllerClientOptions = ClientOptions;

/// What the controller answered to a command: `Ok` with what the applied command did, or `Err`
/// with why it refused it (a refused command changed nothing). A refusal is a final answer,
/// not a failure of the client, so it is not a [`ClientError`]: callers match on it, or turn it
/// into an error with `?` ([`RefusalInfo`] is an [`std::error::Error`]).
pub type CommandAnswer = std::result::Result<mosaic_controller::Outcome, RefusalInfo>;

/// The generated gRPC client of the `Controller` service, on one channel.
type ControllerGrpc = pb::controller_client::ControllerClient<Channel>;

/// A client of the controller group. Cheap to clone (clones share connections, the leader
/// hint and the command session) and safe to use from many tasks at once.
///
/// # Finding the leader
///
/// Each attempt of an operation goes to one replica, chosen so:
/// - the first, to the replica last seen answering as leader ([`ControllerClient::leader`]),
///   else to the first listed replica;
/// - after a `NotLeader` or `OutcomeUnknown` that names the leader's address: that address, at
///   once (even one outside the list: the replicas know their peers better than the caller);
/// - after no usable hint, an unreachable replica, a transport error or an attempt that timed
///   out: the next listed replica, round-robin (following a hint does not move the
///   round-robin, so a stale hint to a dead replica cannot hide the others);
/// - after `ServerBusy` or the replica's own `Timeout`: the same replica, after a backoff;
/// - after as many failed attempts in a row as there are listed replicas, a backoff
///   (exponential, with jitter) before the next attempt: a full round of failures, or two
///   replicas naming each other, cannot make the client spin.
///
/// Final, never retried: a command's refusal (a normal answer: [`CommandAnswer`]), a request
/// the controller calls invalid ([`ClientError::InvalidArgument`]), a query for a configuration
/// past the latest ([`ClientError::UnknownConfig`]), a response that does not decode
/// ([`ClientError::MalformedResponse`]). At the deadline
/// ([`ClientOptions::timeout`](crate::ClientOptions::timeout)) the operation ends with
/// [`ClientError::Timeout`], whose outcome says whether a command may have been applied.
///
/// # Commands apply once
///
/// A client draws a random, non-zero client id once, and gives each command the next sequence
/// number. Every attempt of one command carries the same `(client id, seq)`, so the controller
/// applies it at most once and answers a retry with the first result (6.824 Lab 4A, the
/// shardctrler's duplicate detection). That makes retrying after `OutcomeUnknown`,
/// `Unavailable`, `DeadlineExceeded` or a lost answer safe.
///
/// The controller keeps one session per client id and refuses a request older than the latest
/// it applied for that client (the `stale-request` refusal). So the seqs of one client must
/// reach it in order, and [`ControllerClient::execute`] calls are serialized: one lock, shared
/// by every clone, is held for the whole call, and a second call waits for the first to end.
/// Commands are rare (an operator's, a node registering), so the lost concurrency costs
/// nothing that matters. Queries change nothing and are not serialized.
///
/// # Example
///
/// ```no_run
/// # async fn example() -> mosaic_client::Result<()> {
/// use mosaic_client::{Command, ControllerClient, ControllerClientOptions, NodeId};
///
/// let addresses = vec!["10.0.0.1:7000".to_string(), "10.0.0.2:7000".to_string()];
/// let controller = ControllerClient::new(addresses, ControllerClientOptions::default())?;
/// let command = Command::RegisterNode { node: NodeId(4), address: "10.0.1.4:7100".into() };
/// match controller.execute(command).await? {
///     Ok(outcome) => println!("{outcome:?}"),
///     Err(refusal) => eprintln!("refused ({}): {}", refusal.kind, refusal.message),
/// }
/// let latest = controller.query(None).await?;
/// println!("configuration {} of {} nodes", latest.config.num, latest.nodes.len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ControllerClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The controller replicas. Invariant: not empty, no address twice, each a valid
    /// endpoint.
    addresses: Vec<String>,
    options: ControllerClientOptions,
    /// This client's session at the controller; never 0.
    client_id: ClientId,
    /// The seq the next command takes (from 1). Its lock is held for a whole
    /// [`ControllerClient::execute`], which serializes them.
    next_seq: tokio::sync::Mutex<u64>,
    /// The replica last seen answering as leader, if it has not failed since.
    leader: Mutex<Option<String>>,
    channels: Channels,
    jitter_seeds: JitterSeeds,
    /// The storage node whose agent this client is, named in every query.
    node: Option<NodeId>,
}

/// The call an operation makes, for its retries and its logs.
#[derive(Clone, Copy, Debug)]
enum Call {
    Execute { seq: u64 },
    Query { num: Option<ConfigNum> },
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Self::Execute { .. } => "execute",
            Self::Query { .. } => "query",
        }
    }

    fn is_write(self) -> bool {
        matches!(self, Self::Execute { .. })
    }

    /// The command's sequence number (`None` for a query).
    fn seq(self) -> Option<u64> {
        match self {
            Self::Execute { seq } => Some(seq),
            Self::Query { .. } => None,
        }
    }

    /// The configuration a query asks for (`None` for the latest, and for a command).
    fn queried(self) -> Option<ConfigNum> {
        match self {
            Self::Execute { .. } => None,
            Self::Query { num } => num,
        }
    }
}

impl ControllerClient {
    /// A client of the controller replicas at `addresses` (`host:port`). Connects to nothing
    /// yet: each replica's channel is opened on first use.
    ///
    /// # Errors
    /// [`ClientError::InvalidControllerAddresses`] when `addresses` is empty, lists an address
    /// twice or holds one that is not `host:port`; [`ClientError::InvalidOptions`] when
    /// `options` do not [validate](ClientOptions::validate); [`ClientError::Randomness`] when
    /// the operating system cannot provide a client id (or a jitter seed, when none is given).
    pub fn new(addresses: Vec<String>, options: ControllerClientOptions) -> Result<Self> {
        Self::build(addresses, options, None)
    }

    /// The client of storage node `node`'s agent: as [`ControllerClient::new`], and every query
    /// names the node, so that the controller's leader hears from it (docs/controller.md
    /// "Node liveness").
    ///
    /// # Errors
    /// As [`ControllerClient::new`].
    pub fn of_node(
        addresses: Vec<String>,
        options: ControllerClientOptions,
        node: NodeId,
    ) -> Result<Self> {
        Self::build(addresses, options, Some(node))
    }

    fn build(
        addresses: Vec<String>,
        options: ControllerClientOptions,
        node: Option<NodeId>,
    ) -> Result<Self> {
        let invalid = |reason: String| ClientError::InvalidControllerAddresses { reason };
        options.validate()?;
        if addresses.is_empty() {
            return Err(invalid("no controller address was given".to_string()));
        }
        let mut seen = BTreeSet::new();
        for address in &addresses {
            endpoint_for(address).map_err(|reason| invalid(format!("{address:?}: {reason}")))?;
            if !seen.insert(address) {
                return Err(invalid(format!("{address:?} is listed twice")));
            }
        }
        let jitter_seeds = JitterSeeds::new(options.jitter_seed)?;
        let client_id = random_client_id()?;
        Ok(Self {
            inner: Arc::new(Inner {
                channels: Channels::new(options.connect_timeout, options.tls.clone()),
                addresses,
                options,
                client_id,
                next_seq: tokio::sync::Mutex::new(1),
                leader: Mutex::new(None),
                jitter_seeds,
                node,
            }),
        })
    }

    /// The controller replicas, as given.
    #[must_use]
    pub fn addresses(&self) -> &[String] {
        &self.inner.addresses
    }

    /// The options the client was built with.
    #[must_use]
    pub fn options(&self) -> &ControllerClientOptions {
        &self.inner.options
    }

    /// The client id every command of this client (and of its clones) carries.
    #[must_use]
    pub fn client_id(&self) -> ClientId {
        self.inner.client_id
    }

    /// The address of the replica last seen answering as leader; `None` before any answer,
    /// or once that replica has said it no longer leads or stopped answering.
    #[must_use]
    pub fn leader(&self) -> Option<String> {
        lock(&self.inner.leader).clone()
    }

    /// Runs `command` through the controller's log and returns the controller's answer: what
    /// the command did, or why it was refused.
    ///
    /// Takes the next sequence number, and carries it on every retry, so the command applies
    /// at most once. Calls are serialized: one waits for any other `execute` of this client or
    /// its clones to end (see [`ControllerClient`]). A call dropped before its end
    /// still used its sequence number; the next command takes a greater one.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when no replica answered finally by the deadline,
    /// [`ClientError::InvalidArgument`] when the controller calls the request malformed,
    /// [`ClientError::MalformedResponse`] when its answer does not decode.
    /// [`ClientError::outcome`] says whether the command may have been applied: check the
    /// controller's state before repeating one whose outcome is unknown (a new call is a new
    /// command, with a new sequence number).
    pub async fn execute(&self, command: Command) -> Result<CommandAnswer> {
        let inner = &*self.inner;
        let mut next_seq = inner.next_seq.lock().await;
        let seq = *next_seq;
        // Taken before the first attempt: no seq ever goes to two commands.
        *next_seq += 1;
        let request = request_to_pb(&Request { client: inner.client_id, seq, command });
        let response = inner
            .run(Call::Execute { seq }, |mut grpc, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { grpc.execute(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        drop(next_seq);
        execute_response_from_pb(response).map_err(|error| ClientError::MalformedResponse {
            reason: error.to_string(),
            outcome: WriteOutcome::Unknown,
        })
    }

    /// Returns configuration `num` (the latest for `None`), the latest configuration's number
    /// and the node registry, read linearizably at the leader.
    ///
    /// # Errors
    /// [`ClientError::UnknownConfig`] when the controller has no configuration `num` (it is
    /// past the latest); [`ClientError::Timeout`] when no replica answered by the deadline;
    /// [`ClientError::MalformedResponse`] when the answer does not decode, or is not the
    /// configuration asked for.
    pub async fn query(&self, num: Option<ConfigNum>) -> Result<QueryAnswer> {
        let request = query_request_to_pb(num, self.inner.node);
        let response = self
            .inner
            .run(Call::Query { num }, |mut grpc, timeout| {
                let request = with_timeout(request, timeout);
                async move { grpc.query(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        let malformed = |reason: String| ClientError::MalformedResponse {
            reason,
            outcome: WriteOutcome::NotApplied,
        };
        let answer =
            query_response_from_pb(response).map_err(|error| malformed(error.to_string()))?;
        if let Some(num) = num
            && answer.config.num != num
        {
            return Err(malformed(format!(
                "it answered configuration {} to a query for configuration {num}",
                answer.config.num
            )));
        }
        Ok(answer)
    }
}

impl Inner {
    /// Runs one call to its final answer or its deadline: `send` makes one attempt on the
    /// channel it is given, within the timeout it is given.
    async fn run<T, F, Fut>(&self, call: Call, mut send: F) -> Result<T>
    where
        F: FnMut(ControllerGrpc, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let options = &self.options;
        let deadline = Instant::now() + options.timeout;
        let mut progress = Progress::new(call.is_write());
        let mut backoff = self.jitter_seeds.backoff(options.backoff_initial, options.backoff_max);
        let mut target = first_replica(&self.addresses, lock(&self.leader).as_deref());
        let mut retry = ControllerRetry::new(&self.addresses, &target);

        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(progress.timed_out(options.timeout));
            }
            progress.attempts += 1;
            let attempt_timeout = options.attempt_timeout.min(remaining);
            let limit = options.message_bytes_max;
            let result = match self.channel(&target) {
                Err(message) => {
                    Err(Failure::ConnectFailed { message: format!("unusable address: {message}") })
                }
                Ok(channel) => {
                    let grpc = ControllerGrpc::new(channel)
                        .max_decoding_message_size(limit)
                        .max_encoding_message_size(limit);
                    match tokio::time::timeout(attempt_timeout, send(grpc, attempt_timeout)).await {
                        Ok(Ok(reply)) => Ok(reply),
                        Ok(Err(status)) => Err(classify_controller_status(&status, call.queried())),
                        Err(_elapsed) => Err(Failure::AttemptTimedOut),
                    }
                }
            };
            let failure = match result {
                Ok(reply) => {
                    // Both calls are answered by the leader only.
                    *lock(&self.leader) = Some(target);
                    return Ok(reply);
                }
                Err(failure) => failure,
            };
            progress.record_failure(&failure, &format!("controller {target}"));
            tracing::debug!(
                call = call.name(),
                client_id = %self.client_id,
                seq = call.seq().map(tracing::field::display),
                config_num = call.queried().map(tracing::field::display),
                peer = %target,
                attempt = progress.attempts,
                %failure,
                "controller attempt failed"
            );
            if !failure.node_may_lead() {
                let mut leader = lock(&self.leader);
                if leader.as_deref() == Some(target.as_str()) {
                    *leader = None;
                }
            }

            if let Failure::UnknownConfig { .. } = failure {
                // Said after a linearizable read: by the leader.
                *lock(&self.leader) = Some(target.clone());
            }
            let Some((next, pause)) = retry.after(&self.addresses, &failure, &target) else {
                return Err(progress.failed(failure));
            };
            if pause {
                let pause = backoff.next_pause();
                tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
            }
            target = next;
        }
    }

    /// The index of `address` in the list, if listed.
    fn position(&self, address: &str) -> Option<usize> {
        self.addresses.iter().position(|listed| listed == address)
    }

    /// The channel to `address`. An address outside the list drops the channel of any other
    /// such address first (see the module invariant).
    fn channel(&self, address: &str) -> std::result::Result<Channel, String> {
        if self.position(address).is_none() {
            self.channels.retain(|known| known == address || self.position(known).is_some());
        }
        self.channels.get(address)
    }
}

#[cfg(test)]
mod tests;
