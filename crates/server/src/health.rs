//! The standard gRPC services a node serves beside Mosaic's own, for generic tools (grpcurl,
//! grpc_health_probe, an orchestrator's gRPC probe, any language's gRPC health and reflection
//! clients), which know nothing of Mosaic's protos.
//!
//! - Health (`grpc.health.v1.Health`, tonic-health): the overall status (service `""`) and
//!   that of each Mosaic service the node serves are `SERVING` from the moment it listens (a
//!   controller replica waiting for `mosaic admin init`: from the moment it holds its group,
//!   `NOT_SERVING` until then, [`crate::bootstrap`]). When it stops (a signal, or its store
//!   thread ended) every status turns `NOT_SERVING` before the listener closes, so a watcher
//!   hears it before its connection drops. A service the node does not serve is `NOT_FOUND`.
//! - Server reflection (`grpc.reflection.v1.ServerReflection` and the older `v1alpha` that
//!   some clients still ask for, tonic-reflection): the services this node serves, described
//!   by the descriptors compiled into `mosaic_proto` ([`mosaic_proto::FILE_DESCRIPTOR_SET`]).
//!
//! Every role may call both (docs/security.md "Authorization").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The health statuses of a node's services.
#[derive(Clone, Debug)]
pub struct Health {
    reporter: HealthReporter,
    /// The Mosaic services the node serves.
    services: Vec<&'static str>,
    /// The overall status, for the HTTP health endpoint ([`crate::http`]).
    serving: Arc<AtomicBool>,
}

impl Health {
    /// The statuses of `services` (and of the node as a whole), and the health service that
    /// reports them.
    #[must_use]
    pub fn new(
        services: Vec<&'static str>,
    ) -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let serving = Arc::new(AtomicBool::new(false));
        (Self { reporter, services, serving }, server)
    }

    /// Every service of the node, and the node, is serving.
    pub async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
        self.serving.store(true, Ordering::Release);
    }

    /// Every service of the node, and the node, is stopping.
    pub async fn not_serving(&self) {
        self.serving.store(false, Ordering::Release);
        self.set(ServingStatus::NotServing).await;
    }

    /// Whether the node serves (as the overall `""` entry says).
    #[must_use]
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    async fn set(&self, status: ServingStatus) {
        for service in std::iter::once("").chain(self.services.iter().copied()) {
            self.reporter.set_service_status(service, status).await;
        }
    }
}

/// The reflection services (`v1` and `v1alpha`) describing `services`, the health service
/// and themselves.
///
/// # Panics
/// If a compiled-in descriptor set does not decode (a build defect; a unit test decodes
/// them).
#[must_use]
pub fn reflection(
    services: &[&'static str],
) -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(mosaic_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
            .with_service_name(tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME)
            .with_service_name(
                tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
            );
        services.iter().fold(builder, |builder, service| builder.with_service_name(*service))
    };
    let v1 = builder().build_v1().expect("the compiled-in descriptor sets decode");
    let v1alpha = builder().build_v1alpha().expect("the compiled-in descriptor sets decode");
    (v1, v1alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_descriptor_sets_decode() {
        let _ = reflection(&[mosaic_proto::pb::kv_server::SERVICE_NAME]);
    }
}
