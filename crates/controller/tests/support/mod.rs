//! The harness the state-machine tests share: a controller state with nodes registered, and
//! the log index and client sequence its requests take.

#![allow(dead_code)] // Each test binary uses its own subset.

use mosaic_controller::{
    Command, ConfigNum, Configuration, ControllerState, Error, Outcome, Request,
};
use mosaic_engine::ClientId;
use mosaic_raft::{LogIndex, NodeId};

/// A controller with nodes `1..=nodes` registered, and a log index counter.
pub struct Harness {
    pub state: ControllerState,
    index: u64,
    seq: u64,
}

impl Harness {
    /// A cluster of `shards` shards with nodes `1..=nodes` registered.
    pub fn with_nodes(shards: u32, nodes: u64) -> Self {
        let mut harness = Self { state: ControllerState::new(shards, 100), index: 0, seq: 0 };
        for node in 1..=nodes {
            let address = format!("127.0.0.1:{}", 7000 + node);
            harness.must(Command::RegisterNode { node: NodeId(node), address });
        }
        harness
    }

    /// Applies `command` as request `seq` of `client`, at the next log index.
    pub fn apply_as(&mut self, client: u64, seq: u64, command: Command) -> Result<Outcome, Error> {
        self.index += 1;
        let request = Request { client: ClientId(client), seq, command };
        self.state.apply(LogIndex(self.index), request)
    }

    /// Applies `command` as the next request of client 1.
    pub fn apply(&mut self, command: Command) -> Result<Outcome, Error> {
        self.seq += 1;
        self.apply_as(1, self.seq, command)
    }

    /// Applies `command`; panics if it is refused.
    pub fn must(&mut self, command: Command) -> Outcome {
        let description = format!("{command:?}");
        self.apply(command).unwrap_or_else(|error| panic!("{description}: {error}"))
    }

    /// The latest configuration.
    pub fn latest(&self) -> Configuration {
        self.state.latest().clone()
    }

    /// Applies a command that must be refused; checks that the configurations, the groups'
    /// lives, the registry and the nodes' states did not change (only the client's session
    /// remembers the refusal, for a retry).
    pub fn must_refuse(&mut self, command: Command) -> Error {
        let before = self.state.clone();
        let description = format!("{command:?}");
        let error = self.apply(command).expect_err(&description);
        let latest = before.latest().num;
        assert_eq!(self.state.latest(), before.latest(), "{description} changed the configuration");
        assert_eq!(
            self.state.config(Some(ConfigNum(latest.0 + 1))),
            Err(Error::UnknownConfig { num: ConfigNum(latest.0 + 1), latest }),
            "{description} created a configuration"
        );
        assert_eq!(self.state.lives(), before.lives(), "{description} changed a group's life");
        assert_eq!(self.state.nodes(), before.nodes(), "{description} changed the registry");
        assert_eq!(
            self.state.node_states(),
            before.node_states(),
            "{description} changed a node's state"
        );
        error
    }
}
