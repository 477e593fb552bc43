//! Who may call what (docs/security.md "Authorization").
//!
//! On a node with TLS every connection carries what its peer's certificate says ([`Peer`]: a
//! name and a [`Role`]). [`AuthorizeLayer`], over all of the node's services, lets a request
//! through only when that role may call the request's method ([`roles_for`]); the controller's
//! `Execute` is checked once more for its command ([`check_command`]): storage nodes register
//! and retire groups, admins change the configuration. A refusal is `PermissionDenied` naming
//! the certificate, what it asked for and the roles that may; it is logged as a warning. A
//! method without a rule is refused to everyone: a new RPC is closed until it is given one.
//!
//! A plaintext request to a TLS node is refused `Unauthenticated` with what to do. A node
//! without TLS has no identities to check: it lets every request through.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use mosaic_client::Role;
use mosaic_controller::Command;
use mosaic_proto::pb::{
    controller_server, kv_server, node_admin_server, raft_transport_server, shard_migration_server,
};
use tonic::Status;
use tonic::codegen::http;
use tonic_health::pb::health_server;
use tonic_reflection::pb::v1::server_reflection_server as reflection_v1;
use tonic_reflection::pb::v1alpha::server_reflection_server as reflection_v1alpha;
use tower_service::Service;

use crate::incoming::{ConnectionInfo, Peer, Security};

/// The message a plaintext client of a TLS node gets.
pub const PLAINTEXT_REFUSED: &str = "this node requires mutual TLS: connect with --tls-cert, \
     --tls-key and --tls-ca (a certificate signed by the cluster's CA)";

/// Storage nodes and controller replicas only.
const NODES: &[Role] = &[Role::Node];
/// Storage nodes and operators.
const NODES_AND_ADMINS: &[Role] = &[Role::Node, Role::Admin];
/// Operators only.
const ADMINS: &[Role] = &[Role::Admin];
/// Applications and operators.
const USERS: &[Role] = &[Role::Admin, Role::Client];
/// Every role.
const EVERY_ROLE: &[Role] = &Role::ALL;

/// The roles that may call `path` (`/package.Service/Method`); `None` for a method without a
/// rule, which no one may call.
#[must_use]
pub fn roles_for(path: &str) -> Option<&'static [Role]> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    match (service, method) {
        (
            kv_server::SERVICE_NAME,
            "Get" | "Put" | "Append" | "Delete" | "Batch" | "Scan" | "Watch",
        ) => Some(USERS),
        // Clients route by the configuration; nodes follow it; admins show it.
        (controller_server::SERVICE_NAME, "Query") => Some(EVERY_ROLE),
        // Checked for its command by [`check_command`] (so a refusal names the command).
        (controller_server::SERVICE_NAME, "Execute") => Some(EVERY_ROLE),
        // Creating the controller group is `mosaic admin init`'s.
        (controller_server::SERVICE_NAME, "Bootstrap") => Some(ADMINS),
        // Admins create groups and change their members; a node rejoining its group asks
        // the group's leader to change the members.
        (
            node_admin_server::SERVICE_NAME,
            "CreateGroup" | "GroupStatus" | "JoinGroup" | "ChangeMembership",
        ) => Some(NODES_AND_ADMINS),
        // Moving a leadership by hand is an operator's.
        (node_admin_server::SERVICE_NAME, "TransferLeader") => Some(ADMINS),
        (raft_transport_server::SERVICE_NAME, "Send" | "SendSnapshot") => Some(NODES),
        (shard_migration_server::SERVICE_NAME, "PullShard" | "DeleteShard") => Some(NODES),
        // The standard services of every process, for generic tools (`crate::health`).
        (health_server::SERVICE_NAME, "Check" | "Watch")
        | (
            reflection_v1::SERVICE_NAME | reflection_v1alpha::SERVICE_NAME,
            "ServerReflectionInfo",
        ) => Some(EVERY_ROLE),
        _ => None,
    }
}

/// The roles that may have the controller apply `command`.
#[must_use]
pub fn command_roles(command: &Command) -> &'static [Role] {
    match command {
        // Sent by storage nodes: a node's address, and a removed group's hand-off.
        Command::RegisterNode { .. } | Command::RetireGroup { .. } => NODES,
        Command::AddGroups { .. }
        | Command::RemoveGroups { .. }
        | Command::MoveShard { .. }
        | Command::Rebalance { .. }
        | Command::ReplaceNode { .. }
        | Command::DecommissionNode { .. }
        | Command::RetireNode { .. }
        | Command::SetControllerAddress { .. } => &[Role::Admin],
    }
}

/// Checks a request for `path` that came on `connection`.
///
/// # Errors
/// `Unauthenticated` for a plaintext request to a TLS node; `PermissionDenied` when the peer's
/// role may not call `path`; `Internal` for a request without connection information (every
/// connection of a node has it).
pub fn check(path: &str, connection: Option<&ConnectionInfo>) -> Result<(), Status> {
    let Some(peer) = peer_of(connection)? else { return Ok(()) };
    let method = path.strip_prefix('/').unwrap_or(path);
    match roles_for(path) {
        Some(roles) => permit(peer, roles, || method.to_string()),
        None => Err(refuse(peer, &format!("{method}, a method no one may call"))),
    }
}

/// Checks that the peer of `connection` may have the controller apply `command` (its method,
/// `Execute`, has passed [`check`]).
///
/// # Errors
/// As [`check`].
pub fn check_command(connection: Option<&ConnectionInfo>, command: &Command) -> Result<(), Status> {
    let Some(peer) = peer_of(connection)? else { return Ok(()) };
    permit(peer, command_roles(command), || {
        format!("the controller command {}", command_name(command))
    })
}

/// Checks that the peer of `connection` may name a storage node in a `Controller.Query` (its
/// agent's: the leader then counts the node heard), which only nodes may.
///
/// # Errors
/// As [`check`].
pub fn check_node_query(connection: Option<&ConnectionInfo>) -> Result<(), Status> {
    let Some(peer) = peer_of(connection)? else { return Ok(()) };
    permit(peer, NODES, || "a query naming a storage node (node_id)".to_string())
}

/// Checks that the peer of `connection` is an admin: a `NodeAdmin` call on a controller
/// replica (`crate::controller_admin`), which changes who replicates the controller, is
/// for admins alone even though storage nodes may call `NodeAdmin` on one another.
///
/// # Errors
/// As [`check`].
pub fn check_admin(connection: Option<&ConnectionInfo>) -> Result<(), Status> {
    let Some(peer) = peer_of(connection)? else { return Ok(()) };
    permit(peer, ADMINS, || "a change to the controller group's replicas".to_string())
}

/// The peer to check, or `None` on a node without TLS.
fn peer_of(connection: Option<&ConnectionInfo>) -> Result<Option<&Peer>, Status> {
    match connection.map(|connection| &connection.security) {
        Some(Security::Plaintext) => Ok(None),
        Some(Security::RefusedPlaintext) => Err(Status::unauthenticated(PLAINTEXT_REFUSED)),
        Some(Security::Tls { peer }) => Ok(Some(peer)),
        None => Err(Status::internal("a request without connection information; refused")),
    }
}

/// Lets `peer` through if its role is one of `roles`; refuses it for `what` (named only then:
/// an allowed request builds no message).
fn permit(peer: &Peer, roles: &[Role], what: impl FnOnce() -> String) -> Result<(), Status> {
    if peer.role.is_some_and(|role| roles.contains(&role)) {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|role| role.name()).collect();
    Err(refuse(peer, &format!("{}, which needs the role {}", what(), names.join(" or "))))
}

/// The refusal of `peer`'s request for `what`, logged.
fn refuse(peer: &Peer, what: &str) -> Status {
    let holder = match peer.role {
        Some(role) => format!("the certificate {:?} has the role {role}", peer.name),
        None => format!(
            "the certificate {:?} has no Mosaic role (its OU {:?} is not node, admin or client)",
            peer.name, peer.unit
        ),
    };
    let message = format!("permission denied: {holder} and asked for {what}");
    tracing::warn!(certificate = %peer.name, "{message}");
    Status::permission_denied(message)
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::RegisterNode { .. } => "RegisterNode",
        Command::AddGroups { .. } => "AddGroups",
        Command::RemoveGroups { .. } => "RemoveGroups",
        Command::MoveShard { .. } => "MoveShard",
        Command::Rebalance { .. } => "Rebalance",
        Command::RetireGroup { .. } => "RetireGroup",
        Command::ReplaceNode { .. } => "ReplaceNode",
        Command::DecommissionNode { .. } => "DecommissionNode",
        Command::RetireNode { .. } => "RetireNode",
        Command::SetControllerAddress { .. } => "SetControllerAddress",
    }
}

/// The layer that checks every request of a node's server ([`check`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthorizeLayer;

impl<S> tower_layer::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize { inner }
    }
}

/// A service that answers the requests [`check`] refuses and passes the rest to `S`.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Authorize<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    ResponseBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        match check(request.uri().path(), request.extensions().get::<ConnectionInfo>()) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use mosaic_engine::GroupId;

    use super::*;

    fn connection(role: Option<Role>) -> ConnectionInfo {
        let peer =
            Peer { name: "someone".into(), unit: role.map_or("sales", Role::name).into(), role };
        let remote = SocketAddr::from(([127, 0, 0, 1], 4000));
        ConnectionInfo { remote, security: Security::Tls { peer: Arc::new(peer) } }
    }

    /// Every method of every service in proto/ has a rule: a new RPC must be given one.
    #[test]
    fn every_method_in_the_protos_has_a_rule() {
        // As cargo says when it runs the test: another checkout sharing the target directory
        // may have built this binary, with its own path compiled in.
        let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let dir = std::path::Path::new(&manifest_dir).join("../../proto/mosaic/v1");
        let mut methods = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap();
                    let path = format!("/mosaic.v1.{}/{method}", service.unwrap());
                    assert!(roles_for(&path).is_some(), "{path} has no authorization rule");
                    methods += 1;
                }
            }
        }
        assert_eq!(methods, 19, "the protos' methods");
        assert_eq!(roles_for("/mosaic.v1.Kv/NoSuchMethod"), None);
        assert_eq!(roles_for("nonsense"), None);
    }

    #[test]
    fn each_role_calls_what_it_needs_and_nothing_else() {
        let allowed = |role, path: &str| check(path, Some(&connection(Some(role)))).is_ok();
        for role in Role::ALL {
            assert!(allowed(role, "/mosaic.v1.Controller/Query"), "{role}");
            for path in [
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/Watch",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ] {
                assert!(allowed(role, path), "{role}: {path}");
            }
            assert!(!allowed(role, "/grpc.health.v1.Health/List"), "{role}: no rule, no call");
            assert!(!allowed(role, "/mosaic.v1.Kv/NoSuchMethod"), "{role}: no rule, no call");
        }
        assert!(allowed(Role::Client, "/mosaic.v1.Kv/Put"));
        assert!(allowed(Role::Admin, "/mosaic.v1.Kv/Get"));
        assert!(allowed(Role::Client, "/mosaic.v1.Kv/Scan"));
        assert!(!allowed(Role::Node, "/mosaic.v1.Kv/Scan"));
        assert!(allowed(Role::Client, "/mosaic.v1.Kv/Watch"));
        assert!(!allowed(Role::Node, "/mosaic.v1.Kv/Watch"));
        assert!(!allowed(Role::Node, "/mosaic.v1.Kv/Get"));
        assert!(!allowed(Role::Client, "/mosaic.v1.NodeAdmin/ChangeMembership"));
        assert!(allowed(Role::Admin, "/mosaic.v1.NodeAdmin/ChangeMembership"));
        assert!(allowed(Role::Node, "/mosaic.v1.NodeAdmin/ChangeMembership"));
        assert!(allowed(Role::Admin, "/mosaic.v1.NodeAdmin/TransferLeader"));
        assert!(!allowed(Role::Node, "/mosaic.v1.NodeAdmin/TransferLeader"));
        assert!(!allowed(Role::Client, "/mosaic.v1.NodeAdmin/TransferLeader"));
        // Only an operator creates the controller group (`mosaic admin init`).
        assert!(allowed(Role::Admin, "/mosaic.v1.Controller/Bootstrap"));
        assert!(!allowed(Role::Node, "/mosaic.v1.Controller/Bootstrap"));
        assert!(!allowed(Role::Client, "/mosaic.v1.Controller/Bootstrap"));
        for path in ["/mosaic.v1.RaftTransport/Send", "/mosaic.v1.ShardMigration/PullShard"] {
            assert!(allowed(Role::Node, path), "{path}");
            assert!(!allowed(Role::Admin, path), "{path}");
            assert!(!allowed(Role::Client, path), "{path}");
        }
    }

    #[test]
    fn admins_change_the_configuration_and_nodes_register() {
        let register =
            Command::RegisterNode { node: mosaic_raft::NodeId(4), address: "a:1".into() };
        let remove = Command::RemoveGroups { groups: vec![GroupId(1)], max_moves: None };
        let admin = connection(Some(Role::Admin));
        let node = connection(Some(Role::Node));
        let client = connection(Some(Role::Client));
        assert!(check_command(Some(&admin), &remove).is_ok());
        assert!(check_command(Some(&node), &register).is_ok());
        assert!(check_command(Some(&admin), &register).is_err());
        assert!(check_command(Some(&node), &remove).is_err());
        let refused = check_command(Some(&client), &remove).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            refused.message(),
            "permission denied: the certificate \"someone\" has the role client and asked for \
             the controller command RemoveGroups, which needs the role admin"
        );
    }

    #[test]
    fn only_nodes_name_a_storage_node_in_a_query() {
        assert!(check_node_query(Some(&connection(Some(Role::Node)))).is_ok());
        for role in [Role::Admin, Role::Client] {
            let refused = check_node_query(Some(&connection(Some(role)))).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied);
            assert!(refused.message().contains("a query naming a storage node"), "{refused}");
        }
        let plaintext = ConnectionInfo {
            remote: SocketAddr::from(([127, 0, 0, 1], 4000)),
            security: Security::Plaintext,
        };
        assert!(check_node_query(Some(&plaintext)).is_ok());
    }

    #[test]
    fn only_admins_change_the_controller_groups_replicas_or_record_their_addresses() {
        assert!(check_admin(Some(&connection(Some(Role::Admin)))).is_ok());
        for role in [Role::Node, Role::Client] {
            let refused = check_admin(Some(&connection(Some(role)))).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied);
            assert!(refused.message().contains("the controller group's replicas"), "{refused}");
        }
        let record = Command::SetControllerAddress {
            replica: mosaic_raft::NodeId(4),
            address: "a:1".into(),
        };
        assert!(check_command(Some(&connection(Some(Role::Admin))), &record).is_ok());
        assert!(check_command(Some(&connection(Some(Role::Node))), &record).is_err());
    }

    #[test]
    fn a_certificate_without_a_role_may_call_nothing() {
        let stranger = connection(None);
        let refused = check("/mosaic.v1.Controller/Query", Some(&stranger)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("has no Mosaic role (its OU \"sales\""), "{refused}");
    }

    #[test]
    fn plaintext_is_refused_on_a_tls_node_and_everything_passes_without_tls() {
        let remote = SocketAddr::from(([127, 0, 0, 1], 4000));
        let refused = ConnectionInfo { remote, security: Security::RefusedPlaintext };
        let status = check("/mosaic.v1.Kv/Get", Some(&refused)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let plaintext = ConnectionInfo { remote, security: Security::Plaintext };
        assert!(check("/mosaic.v1.RaftTransport/Send", Some(&plaintext)).is_ok());
        assert_eq!(check("/mosaic.v1.Kv/Get", None).unwrap_err().code(), tonic::Code::Internal);
    }
}
