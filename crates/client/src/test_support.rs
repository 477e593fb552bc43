//! Network conditions for tests that need no server: a port nothing listens on, and a listener
//! that accepts connections and never answers (a hung node).

use tokio::net::TcpListener;

/// Returns `127.0.0.1:PORT` for a port that was just free: connecting to it is refused.
pub(crate) async fn closed_port_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("a bound listener has an address");
    drop(listener);
    address.to_string()
}

/// Returns the address of a listener that accepts connections and never reads or writes,
/// and the task holding it (dropping the handle does not stop it; the test's runtime does).
pub(crate) async fn silent_listener() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("a bound listener has an address").to_string();
    let task = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    (address, task)
}
