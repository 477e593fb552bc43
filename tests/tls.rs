//! Mutual TLS end to end: a cluster whose every process runs with `--tls-cert`, `--tls-key`
//! and `--tls-ca` serves the clients and admins that present a certificate of its CA, and a
//! client without TLS, or with a certificate of another CA, is refused and changes nothing.
//! (Every other end-to-end test runs over TLS too with `MOSAIC_TEST_TLS=1`.)

mod support;

use std::process::Output;

use mosaic_client::Consistency;
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
