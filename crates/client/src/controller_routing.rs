//! Routing by the controller's configurations ([`ControllerRouting`]): the [`RoutingSource`]
//! that answers with the latest configuration the controller group has, read linearizably at
//! its leader.
//!
//! What the client does with it is [`crate::Client`]'s to say: it asks once before its first
//! operation, and again when a node says its placement is stale or a key's shard has no owner.
//! This module only turns one query's answer into a [`Routing`] ([`Routing::from_configuration`])
//! and a failed query into [`RoutingError::Source`] (or, when the controller refused the
//! client's identity, [`ClientError::AccessDenied`]).

use crate::client::{Client, ClientOptions};
use crate::controller::ControllerClient;
use crate::error::RoutingError;
use crate::error::{ClientError, Result};
use crate::routing::{Routing, RoutingSource};

impl Client<ControllerRouting> {
    /// A client that routes by the configurations of the controller replicas at `controllers`
    /// (`host:port` each; a leader hint may lead it to others). Connects to nothing yet. One
    /// ask of the controller takes at most half of `options.timeout`, so that a controller
    /// that does not answer fails an operation with the controller's own error, which names
    /// the replicas tried, rather than with the operation's timeout.
    ///
    /// # Errors
    /// [`ClientError::InvalidControllerAddresses`] when `controllers` is empty, lists an
    /// address twice or holds one that is not `host:port`; otherwise as [`Client::new`].
    pub fn connect(controllers: Vec<String>, options: ClientOptions) -> Result<Self> {
        let controller_options = ClientOptions { timeout: options.timeout / 2, ..options.clone() };
        let controller = ControllerClient::new(controllers, controller_options)?;
        Self::new(ControllerRouting::new(controller), options)
    }
}

/// A [`RoutingSource`] backed by the controller group: each [`RoutingSource::latest`] queries
/// the controller for its latest configuration and the node registry, and answers the
/// placement they describe. Shards the configuration leaves unassigned (configuration 0 assigns
/// none) are unassigned in the placement too.
///
/// One query runs for at most the [`ControllerClient`]'s own timeout
/// ([`crate::ControllerClientOptions`]), and within an operation's deadline: give the
/// controller client a timeout shorter than the [`crate::Client`]'s, so that a controller that
/// does not answer fails the first load with the controller's own error (which names the
/// replicas tried) rather than with the operation's timeout.
///
/// # Example
///
/// ```no_run
/// # async fn example() -> mosaic_client::Result<()> {
/// use mosaic_client::{Client, ClientOptions, Consistency};
///
/// let controllers = ["10.0.0.1:7000", "10.0.0.2:7000"].map(String::from).to_vec();
/// let client = Client::connect(controllers, ClientOptions::default())?;
/// client.put("greeting", "hello").await?;
/// let value = client.get("greeting", Consistency::Linearizable).await?;
/// assert_eq!(value.as_deref(), Some(&b"hello"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ControllerRouting {
    controller: ControllerClient,
}

impl ControllerRouting {
    /// A source that asks `controller` for each placement.
    #[must_use]
    pub fn new(controller: ControllerClient) -> Self {
        Self { controller }
    }

    /// The controller client the source asks.
    #[must_use]
    pub fn controller(&self) -> &ControllerClient {
        &self.controller
    }
}

impl RoutingSource for ControllerRouting {
    /// Returns the placement of the controller's latest configuration.
    ///
    /// # Errors
    /// [`ClientError::AccessDenied`] when the controller refuses the client's identity;
    /// [`ClientError::Routing`] with [`RoutingError::Source`] when the query fails otherwise
    /// (no replica answered by the controller client's deadline, or its answer does not
    /// decode), and with
    /// the broken invariant when the configuration is no usable placement
    /// ([`Routing::from_configuration`]).
    async fn latest(&self) -> Result<Routing> {
        let answer = self.controller.query(None).await.map_err(|error| match error {
            // Who the client is does not change by asking again, and the advice differs.
            ClientError::AccessDenied { .. } => error,
            error => ClientError::Routing {
                reason: RoutingError::Source {
                    reason: format!(
                        "the controller at {} gave no configuration: {error}",
                        self.controller.addresses().join(",")
                    ),
                },
            },
        })?;
        Routing::from_configuration(&answer.config, &answer.nodes)
    }
}

#[cfg(test)]
mod tests;
