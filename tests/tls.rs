//! Mutual TLS end to end: a cluster whose every process runs with `--tls-cert`, `--tls-key`
//! and `--tls-ca` serves the clients and admins that present a certificate of its CA, and a
//! client without TLS, or with a certificate of another CA, is refused and changes nothing.
//! Each certificate's role (node, admin, client) calls only what it may. (Every other
//! end-to-end test runs over TLS too with `MOSAIC_TEST_TLS=1`.)

mod support;

use std::process::Output;
use std::time::Duration;

use mosaic_client::Consistency;
use mosaic_proto::pb::{
    self, node_admin_client::NodeAdminClient, shard_migration_client::ShardMigrationClient,
};
use support::{Processes, Role, SHARDS, certs, mosaic, stderr, tls_files, tls_flags};

/// Every log of `processes`, joined.
fn logs(processes: &Processes) -> String {
    processes
        .addresses
        .keys()
        .map(|id| std::fs::read_to_string(processes.log(*id)).unwrap())
        .collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `mosaic kv --controllers ... --timeout 2s` with `tls` flags, writing `value` to `key`.
fn put_with(controllers: &Processes, tls: &[String], key: &str, value: &str) -> Output {
    mosaic()
        .args(["kv", "--controllers", &controllers.addresses_flag(), "--timeout", "2s"])
        .args(tls)
        .args(["put", key, value])
        .output()
        .unwrap()
}

/// `mosaic admin --controllers ...` of `controllers` with certificate `name`, running `args`.
fn admin_as(controllers: &Processes, name: &str, args: &[&str]) -> Output {
    mosaic()
        .args(["admin", "--controllers", &controllers.addresses_flag()])
        .args(tls_flags(&tls_files(certs(), name)))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts that `output` is a refusal whose message contains `says`.
fn assert_refused(output: &Output, says: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    assert!(stderr(output).contains(says), "expected {says:?} in: {}", stderr(output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_its_own_certificates_and_refuses_plaintext_and_other_cas() {
    let controllers = Processes::start_tls(Role::Controllers(SHARDS), 3);
    let addresses = controllers.addresses.values().cloned().collect();
    let _nodes = Processes::start_tls(Role::Following(addresses), 3);
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);

    // The library client and `mosaic kv`, each with the client certificate.
    let client = controllers.routed_client();
    client.put("greeting", "hello").await.unwrap();
    let read = controllers.kv(&["get", "greeting"], None);
    assert!(read.status.success(), "{}", stderr(&read));
    assert_eq!(stdout(&read), "hello\n");
    let config = controllers.admin(&["--output", "json", "config", "show"]);

    // A client without TLS is told what it lacks, and the controller logs it.
    let plaintext = put_with(&controllers, &[], "greeting", "plaintext");
    assert_eq!(plaintext.status.code(), Some(1), "{}", stderr(&plaintext));
    assert!(stderr(&plaintext).contains("requires mutual TLS"), "{}", stderr(&plaintext));
    assert!(logs(&controllers).contains("refused a plaintext connection"));
    // A client of another CA refuses the cluster's certificates, and the cluster refuses its
    // certificate even when it trusts the cluster's CA.
    let other = tempfile::tempdir().unwrap();
    let made = mosaic().args(["certs", "init"]).arg(other.path()).output().unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let foreign = tls_files(other.path(), "client");
    let refused = put_with(&controllers, &tls_flags(&foreign), "greeting", "foreign");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        stderr(&refused)
    );
    let trusting = mosaic_client::TlsFiles { ca: certs().join("ca.pem"), ..foreign };
    let refused = put_with(&controllers, &tls_flags(&trusting), "greeting", "foreign");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(logs(&controllers).contains("refused a TLS connection"));

    // Nothing changed.
    let value = client.get("greeting", Consistency::Linearizable).await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(controllers.admin(&["--output", "json", "config", "show"]).stdout, config.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_role_calls_only_what_it_may_and_a_refusal_changes_nothing() {
    let controllers = Processes::start_tls(Role::Controllers(SHARDS), 3);
    let addresses = controllers.addresses.values().cloned().collect();
    let nodes = Processes::start_tls(Role::Following(addresses), 3);
    controllers.wait_registered(3);
    controllers.admin(&["group", "add", "1", "--members", "1,2,3"]);
    let client = controllers.routed_client();
    client.put("greeting", "hello").await.unwrap();
    let config = controllers.admin(&["--output", "json", "config", "show"]);

    // A KV client's certificate cannot change the configuration, nor a node's.
    let removed = admin_as(&controllers, "client", &["group", "remove", "1"]);
    assert_refused(
        &removed,
        "permission denied: the certificate \"client\" has the role client and asked for the \
         controller command RemoveGroups, which needs the role admin",
    );
    let added = admin_as(&controllers, "node", &["group", "add", "2", "--members", "1,2,3"]);
    assert_refused(
        &added,
        "asked for the controller command AddGroups, which needs the role admin",
    );
    // A node's certificate cannot read or write keys.
    let node_flags = tls_flags(&tls_files(certs(), "node"));
    let put = put_with(&controllers, &node_flags, "greeting", "from a node");
    assert_refused(&put, "asked for mosaic.v1.Kv/Put, which needs the role admin or client");
    // Only storage nodes pull shards and delete them; only nodes and admins change a group's
    // members.
    let channel = nodes.endpoint(1, "client", Duration::from_secs(2)).connect().await.unwrap();
    let pull = pb::PullShardRequest {
        from_group: 1,
        to_group: 2,
        shard_id: 0,
        config_num: 1,
        resume: None,
    };
    let pulled = ShardMigrationClient::new(channel.clone()).pull_shard(pull).await.unwrap_err();
    assert_eq!(pulled.code(), tonic::Code::PermissionDenied, "{pulled}");
    assert!(pulled.message().contains("mosaic.v1.ShardMigration/PullShard"), "{pulled}");
    let delete = pb::DeleteShardRequest { group_id: 1, shard_id: 0, config_num: 1 };
    let deleted =
        ShardMigrationClient::new(channel.clone()).delete_shard(delete).await.unwrap_err();
    assert_eq!(deleted.code(), tonic::Code::PermissionDenied, "{deleted}");
    let change = pb::ChangeMembershipRequest {
        group_id: 1,
        change: pb::MembershipChange::Remove.into(),
        node_id: 3,
        unchanged_since: None,
    };
    let changed = NodeAdminClient::new(channel).change_membership(change).await.unwrap_err();
    assert_eq!(changed.code(), tonic::Code::PermissionDenied, "{changed}");
    assert!(logs(&controllers).contains("permission denied"));
    assert!(logs(&nodes).contains("permission denied"));

    // Nothing changed, and the admin's certificate still does what it may.
    assert_eq!(controllers.admin(&["--output", "json", "config", "show"]).stdout, config.stdout);
    let value = client.get("greeting", Consistency::Linearizable).await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    for id in [1, 2, 3] {
        let status = nodes.status(id).await.expect("a member's status");
        assert_eq!(status.voters.len(), 3, "node {id}: {status:?}");
    }
    controllers.admin(&["group", "add", "2", "--members", "1,2,3"]);
}
