//! Connections to servers: an address becomes a gRPC endpoint ([`endpoint`], over TLS when the
//! process has a [`Tls`] identity), each address gets one lazily connected channel that every
//! operation reuses ([`Channels`]), and every attempt carries its deadline to the server
//! ([`with_timeout`]).
//!
//! A channel connects on its first request (TCP_NODELAY on, within the connect timeout) and
//! reconnects by itself after the connection breaks, so a cached channel stays usable. While
//! a request is open on it, HTTP/2 pings check the peer every [`KEEPALIVE_INTERVAL`]; a peer
//! that answers none within [`KEEPALIVE_TIMEOUT`] (a stopped or hung process, whose kernel
//! still acknowledges TCP) has its connection closed, so a long-lived stream to it fails
//! rather than hanging, with whatever slot or memory it held.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::tls::Tls;

/// How often a connection with open requests pings its peer (both sides: the node's server
/// pings its clients too).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns the gRPC endpoint for a server address: `HOST:PORT`, or a URI that already names a
/// scheme (`http://HOST:PORT`).
///
/// # Errors
/// A description of why the address is not usable.
pub(crate) fn endpoint_for(address: &str) -> std::result::Result<Endpoint, String> {
    if address.is_empty() {
        return Err("the address is empty".to_string());
    }
    let uri =
        if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    let endpoint = Endpoint::from_shared(uri).map_err(|error| error.to_string())?;
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err("it names no host".to_string());
    }
    if endpoint.uri().port_u16().is_none() {
        return Err("it names no numeric port".to_string());
    }
    Ok(endpoint)
}

/// Returns the gRPC endpoint for a server address ([`endpoint_for`]) whose connection (the
/// TCP connect, and the TLS handshake, each) must be made within `connect_timeout`; with
/// `tls`, an `https` one that presents the process's certificate and accepts only a server
/// certificate signed by its CA and naming the address's host. Every connection of a Mosaic
/// process is made through it. (Without a handshake timeout, a connection to a process that
/// is stopped, or hung, waits forever: its kernel accepts the TCP connection.)
///
/// # Errors
/// A description of why the address is not usable.
pub fn endpoint(
    address: &str,
    tls: Option<&Tls>,
    connect_timeout: Duration,
) -> std::result::Result<Endpoint, String> {
    let plain = endpoint_for(address)?;
    let endpoint = match tls {
        None => plain,
        Some(tls) => {
            let authority = plain.uri().authority().map(ToString::to_string).unwrap_or_default();
            let config = tls.client_config().timeout(connect_timeout);
            Endpoint::from_shared(format!("https://{authority}"))
                .and_then(|endpoint| endpoint.tls_config(config))
                .map_err(|error| error.to_string())?
        }
    };
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT))
}

/// A channel to `address` that connects on its first call, every call (connecting included)
/// bounded by `timeout`: for a tool's one-off calls to one process.
///
/// # Errors
/// `address` is not usable ([`endpoint`]).
pub(crate) fn lazy_channel(
    address: &str,
    tls: Option<&Tls>,
    timeout: Duration,
) -> std::result::Result<Channel, String> {
    Ok(endpoint(address, tls, timeout)?.timeout(timeout).connect_lazy())
}

/// Wraps `message` in a request that carries `timeout` to the server (`grpc-timeout`), which
/// can then drop work nobody waits for.
pub(crate) fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// One channel per server address, created on first use. The owner bounds the map by
/// [`Channels::retain`]ing only the addresses it may still use.
#[derive(Debug)]
pub(crate) struct Channels {
    /// How long opening a connection may take.
    connect_timeout: Duration,
    /// The identity connections are made with; `None`: plaintext.
    tls: Option<Tls>,
    by_address: Mutex<BTreeMap<String, Channel>>,
}

impl Channels {
    /// No channels yet; each will connect within `connect_timeout`, over TLS with `tls`.
    pub(crate) fn new(connect_timeout: Duration, tls: Option<Tls>) -> Self {
        Self { connect_timeout, tls, by_address: Mutex::new(BTreeMap::new()) }
    }

    /// The channel to `address`, created (unconnected) on first use. Must be called within a
    /// tokio runtime (a new channel spawns its worker task).
    ///
    /// # Errors
    /// Why the address is not usable ([`endpoint`]).
    pub(crate) fn get(&self, address: &str) -> std::result::Result<Channel, String> {
        let mut channels = self.lock();
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint(address, self.tls.as_ref(), self.connect_timeout)?
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Drops the channels of the addresses for which `keep` is false.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|address, _| keep(address));
    }

    /// The addresses that have a channel, in order.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Channel>> {
        // Every critical section is one lookup, insert or retain: the map is valid after a
        // panic.
        self.by_address.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_host_or_port_are_refused() {
        for address in ["", "host", "host:port", "http://:7"] {
            assert!(endpoint_for(address).is_err(), "{address:?} was accepted");
        }
        for address in ["127.0.0.1:7100", "node-1:7100", "http://node-1:7100"] {
            assert!(endpoint_for(address).is_ok(), "{address:?} was refused");
        }
    }

    #[tokio::test]
    async fn a_channel_is_created_once_per_address_and_can_be_dropped() {
        let channels = Channels::new(Duration::from_millis(50), None);
        channels.get("127.0.0.1:1").unwrap();
        channels.get("127.0.0.1:1").unwrap();
        channels.get("127.0.0.1:2").unwrap();
        assert!(channels.get("no-port").is_err());
        assert_eq!(channels.addresses(), ["127.0.0.1:1", "127.0.0.1:2"]);
        channels.retain(|address| address.ends_with(":2"));
        assert_eq!(channels.addresses(), ["127.0.0.1:2"]);
    }
}
