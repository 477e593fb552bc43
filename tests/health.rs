//! The standard gRPC health and reflection services of every process, called by the generic
//! clients of tonic-health and tonic-reflection, which know nothing of Mosaic's protos (as
//! grpcurl, grpc_health_probe or an orchestrator's probe would): each process is `SERVING`
//! for itself and the services it serves, lists exactly those, describes them, and turns
//! `NOT_SERVING` when it is asked to stop. Over TLS with `MOSAIC_TEST_TLS=1`.

mod support;

use std::process::Command;
use std::time::Duration;

use prost::Message;
use support::{Processes, Role, SHARDS, wait_for_text};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

async fn channel(processes: &Processes, id: u64) -> Channel {
    processes.endpoint(id, "admin", Duration::from_secs(5)).connect().await.unwrap()
}

/// The health of `service` as the process answers it: a status, or the gRPC code of a refusal.
async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Code> {
    let request = HealthCheckRequest { service: service.into() };
    match HealthClient::new(channel.clone()).check(request).await {
        Ok(response) => Ok(response.into_inner().status()),
        Err(status) => Err(status.code()),
    }
}

/// Asks the reflection service one question.
async fn reflect(channel: &Channel, question: MessageRequest) -> MessageResponse {
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(question) };
    let mut answers = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer: ServerReflectionResponse = answers.message().await.unwrap().expect("an answer");
    answer.message_response.expect("a response")
}

async fn services(channel: &Channel) -> Vec<String> {
    match reflect(channel, MessageRequest::ListServices(String::new())).await {
        MessageResponse::ListServicesResponse(list) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("not a list of services: {other:?}"),
    }
}

/// The methods of `service` (`package.Service`), from the file that reflection says defines it.
async fn methods(channel: &Channel, service: &str) -> Vec<String> {
    let MessageResponse::FileDescriptorResponse(files) =
        reflect(channel, MessageRequest::FileContainingSymbol(service.into())).await
    else {
        panic!("no file defines {service}");
    };
    let (package, name) = service.rsplit_once('.').unwrap();
    files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .filter(|file| file.package() == package)
        .flat_map(|file| file.service)
        .filter(|described| described.name() == name)
        .flat_map(|described| described.method)
        .map(|method| method.name().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_reports_its_health_and_describes_its_services_to_generic_clients() {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let addresses = controllers.addresses.values().cloned().collect();
    let node = Processes::start_as(Role::Following(addresses), 1);
    let storage = channel(&node, 1).await;
    assert_eq!(health(&storage, "").await, Ok(ServingStatus::Serving));
    assert_eq!(health(&storage, "mosaic.v1.Kv").await, Ok(ServingStatus::Serving));
    assert_eq!(health(&storage, "mosaic.v1.NodeAdmin").await, Ok(ServingStatus::Serving));
    assert_eq!(health(&storage, "mosaic.v1.Controller").await, Err(tonic::Code::NotFound));
    assert_eq!(
        services(&storage).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "mosaic.v1.Kv",
            "mosaic.v1.NodeAdmin",
            "mosaic.v1.RaftTransport",
            "mosaic.v1.ShardMigration",
        ]
    );
    assert_eq!(
        methods(&storage, "mosaic.v1.Kv").await,
        ["Get", "Put", "Append", "Delete", "Batch", "Scan", "Watch"]
    );

    let controller = channel(&controllers, 1).await;
    assert_eq!(health(&controller, "").await, Ok(ServingStatus::Serving));
    assert_eq!(health(&controller, "mosaic.v1.Controller").await, Ok(ServingStatus::Serving));
    assert_eq!(health(&controller, "mosaic.v1.Kv").await, Err(tonic::Code::NotFound));
    assert!(services(&controller).await.contains(&"mosaic.v1.Controller".to_string()));
    // For `admin controller add/remove`: the controller group's own membership.
    assert_eq!(health(&controller, "mosaic.v1.NodeAdmin").await, Ok(ServingStatus::Serving));
    assert_eq!(
        methods(&controller, "mosaic.v1.Controller").await,
        ["Execute", "Query", "Bootstrap"]
    );
}

/// Python's generic gRPC tools (grpcio with its health and reflection packages) check a
/// controller replica: `tests/health_probe.py`. Needs a Python that has them, for example
/// `python3 -m venv /tmp/grpc && /tmp/grpc/bin/pip install grpcio grpcio-health-checking
/// grpcio-reflection`, then `MOSAIC_TEST_PYTHON=/tmp/grpc/bin/python cargo test --workspace
/// --all-targets -- --ignored python_grpc`. In plaintext (whatever `MOSAIC_TEST_TLS` says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MOSAIC_TEST_PYTHON, a Python with grpcio and its health and reflection packages"]
async fn python_grpc_tools_check_health_and_read_the_descriptors() {
    let python = std::env::var("MOSAIC_TEST_PYTHON")
        .expect("MOSAIC_TEST_PYTHON names a Python with grpcio, grpcio-health-checking and grpcio-reflection");
    let controllers = Processes::start_plaintext(Role::Controllers(SHARDS), 3);
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let script = std::path::Path::new(&manifest_dir).join("../../tests/health_probe.py");
    let output = Command::new(python)
        .arg(script)
        .args([&controllers.addresses[&1], "mosaic.v1.Controller", "mosaic.v1.Kv"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("mosaic.v1.Controller listed: True"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_asked_to_stop_turns_not_serving_before_it_closes() {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let controller = channel(&controllers, 1).await;
    let request = HealthCheckRequest { service: "mosaic.v1.Controller".into() };
    let mut watch = HealthClient::new(controller).watch(request).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().expect("the current status");
    assert_eq!(first.status(), ServingStatus::Serving);
    let pid = controllers.children[&1].id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a status within 10 s of the signal")
        .expect("sent before the connection closed")
        .expect("a status, not the end of the stream");
    assert_eq!(next.status(), ServingStatus::NotServing);
}

/// A stop signal that comes while a process starts (from the moment it logs that it starts,
/// before it has opened its data or bound its ports) is kept: the process starts, then stops
/// gracefully, rather than dying by the signal.
#[test]
fn a_process_signalled_while_it_starts_stops_gracefully() {
    let mut nodes = Processes::start(3);
    nodes.kill(3);
    let log = nodes.log(3);
    let before = std::fs::read_to_string(&log).unwrap().len();
    nodes.spawn(3);
    wait_for_text(&log, "mosaic starting", before);
    nodes.signal(3, "TERM");
    let status = nodes.children.get_mut(&3).unwrap().wait().unwrap();
    assert!(status.success(), "node 3 stopped with {status}; see {}", log.display());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text[before..].contains("node stopped"), "{}", &text[before..]);
}
