//! Servers for tests, on loopback ports: a port nothing listens on, a listener that accepts
//! connections and never answers (a hung node), and gRPC services served in-process
//! ([`serve`]): the fake controller group of [`fake_controller`] and the fake storage nodes of
//! [`fake_node`].

pub(crate) mod fake_controller;
pub(crate) mod fake_node;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::{Router, TcpIncoming};

/// Returns a listener on a free loopback port, and its address (`127.0.0.1:PORT`).
pub(crate) async fn loopback_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("a bound listener has an address").to_string();
    (listener, address)
}

/// Returns `127.0.0.1:PORT` for a port that was just free: connecting to it is refused.
pub(crate) async fn closed_port_address() -> String {
    let (listener, address) = loopback_listener().await;
    drop(listener);
    address
}

/// Returns the address of a listener that accepts connections and never reads or writes,
/// and the task holding it (dropping the handle does not stop it; the test's runtime does).
pub(crate) async fn silent_listener() -> (String, JoinHandle<()>) {
    let (listener, address) = loopback_listener().await;
    let task = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    (address, task)
}

/// Serves the gRPC services of `router` on `listener` (from [`loopback_listener`]) until the
/// test's runtime stops; returns the serving task.
pub(crate) fn serve(listener: TcpListener, router: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(error) = router.serve_with_incoming(incoming).await {
            panic!("the test server failed: {error}");
        }
    })
}
