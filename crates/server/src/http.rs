//! The node's plain HTTP port (`metrics-listen`), for the tools that scrape and probe:
//!
//! - `GET /metrics`: every metric ([`crate::metrics`]) in the OpenMetrics text format, which
//!   Prometheus reads. A controller replica first reads its applied state into its gauges.
//! - `GET /` and `GET /status.json`, on a controller replica: the live status page
//!   ([`crate::status_page`]).
//! - `GET /health`: `200 SERVING` while the node serves, `503 NOT_SERVING` once it stops (the
//!   same status as the gRPC health service's overall `""` entry), for probes that cannot
//!   present a client certificate (an orchestrator's HTTP probe, a container's health check).
//!
//! It carries no data and takes no commands, but it tells who is in the cluster: bind it to
//! a private address. It closes last, once the node has stopped (`/health` answers
//! `NOT_SERVING` until then).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::health::Health;
use crate::metrics::{ControllerGauges, NodeMetrics};
use crate::status_page::{PAGE, StatusPage};

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the HTTP port serves.
#[derive(Debug)]
pub struct HttpEndpoint {
    /// The node's metrics.
    pub metrics: Arc<NodeMetrics>,
    /// The node's health.
    pub health: Health,
    /// What a controller replica serves besides.
    pub controller: Option<ControllerHttp>,
}

/// What a controller replica's HTTP port serves besides the metrics and health of every node.
pub struct ControllerHttp {
    /// Its gauges, refreshed at each scrape.
    pub gauges: ControllerGauges,
    /// Its status page.
    pub status: StatusPage,
}

impl std::fmt::Debug for ControllerHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerHttp").field("gauges", &self.gauges).finish_non_exhaustive()
    }
}

/// Serves `endpoint` on `listener` until `close` is sent or dropped (requests in progress
/// finish).
pub fn spawn(
    listener: TcpListener,
    endpoint: HttpEndpoint,
    close: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/", get(page))
        .route("/status.json", get(status))
        .with_state(Arc::new(endpoint));
    tokio::spawn(async move {
        let stopped = async move {
            let _ = close.await;
        };
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
            tracing::error!(%error, "the metrics port stopped");
        }
    })
}

async fn metrics(State(endpoint): State<Arc<HttpEndpoint>>) -> impl IntoResponse {
    if let Some(controller) = &endpoint.controller {
        controller.gauges.refresh().await;
    }
    ([(header::CONTENT_TYPE, OPENMETRICS)], endpoint.metrics.encode())
}

async fn page(State(endpoint): State<Arc<HttpEndpoint>>) -> axum::response::Response {
    match &endpoint.controller {
        Some(_) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response(),
        None => no_status_page(),
    }
}

async fn status(State(endpoint): State<Arc<HttpEndpoint>>) -> axum::response::Response {
    let Some(controller) = &endpoint.controller else {
        return no_status_page();
    };
    match controller.status.json().await {
        Ok(json) => {
            ([(header::CONTENT_TYPE, "application/json")], json.as_ref().clone()).into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the cluster's status: {error}\n"),
        )
            .into_response(),
    }
}

fn no_status_page() -> axum::response::Response {
    (StatusCode::NOT_FOUND, "a storage node serves no status page\n").into_response()
}

async fn health(State(endpoint): State<Arc<HttpEndpoint>>) -> impl IntoResponse {
    if endpoint.health.is_serving() {
        (StatusCode::OK, "SERVING\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::InboxMetrics;

    /// `GET path` from `address`: the status, the content type and the body.
    async fn get(address: std::net::SocketAddr, path: &'static str) -> (u16, String, String) {
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent =
                ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut response = agent.get(format!("http://{address}{path}")).call().unwrap();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|value| value.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = response.body_mut().read_to_string().unwrap();
            (response.status().as_u16(), content_type, body)
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_follows_the_node_and_the_port_closes_when_told() {
        let (health, _service) = Health::new(vec!["mosaic.v1.Kv"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Arc::new(NodeMetrics::new(InboxMetrics::default(), 4));
        let endpoint = HttpEndpoint { metrics, health: health.clone(), controller: None };
        let (close, closed) = oneshot::channel();
        let task = spawn(listener, endpoint, closed);

        assert_eq!(get(address, "/health").await.0, 503, "not serving before it starts");
        health.serving().await;
        let (status, _, body) = get(address, "/health").await;
        assert_eq!((status, body.as_str()), (200, "SERVING\n"));
        let (status, content_type, body) = get(address, "/metrics").await;
        assert_eq!((status, content_type.as_str()), (200, OPENMETRICS));
        assert!(body.contains("mosaic_store_inbox_capacity_messages 4\n"), "{body}");
        health.not_serving().await;
        let (status, _, body) = get(address, "/health").await;
        assert_eq!((status, body.as_str()), (503, "NOT_SERVING\n"));
        assert_eq!(get(address, "/other").await.0, 404);

        close.send(()).unwrap();
        task.await.unwrap();
        assert!(std::net::TcpStream::connect(address).is_err(), "the port is closed");
    }
}
