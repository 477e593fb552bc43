//! The ways to deploy Mosaic in deploy/, checked by the tools their platforms use:
//!
//! - the systemd units pass `systemd-analyze verify` without a warning and keep their
//!   hardening (`systemd-analyze security`), and their example settings are valid;
//! - the Kubernetes manifests validate against the Kubernetes schemas, offline
//!   (`kubernetes-validate --strict`, from PyPI; behind `MOSAIC_TEST_K8S`);
//! - the compose cluster passes deploy/compose/test.sh against real containers (behind
//!   `MOSAIC_TEST_COMPOSE`: it needs Docker and a release build).

use std::path::{Path, PathBuf};
use std::process::Command;

use mosaic_server::ServerConfig;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn run(command: &mut Command) -> (bool, String) {
    let output = command.output().unwrap_or_else(|error| panic!("{command:?}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The overall exposure `systemd-analyze security` may give a unit, in tenths (1.4 now, of
/// 10): more means a hardening option was lost.
const EXPOSURE_MAX: &str = "20";

#[test]
fn the_systemd_units_verify_cleanly_stay_hardened_and_their_settings_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["controller", "server"] {
        let unit = format!("mosaic-{role}.service");
        let text = std::fs::read_to_string(deploy().join("systemd").join(&unit)).unwrap();
        let exec_start =
            format!("ExecStart=/usr/local/bin/mosaic {role} --config /etc/mosaic/{role}.toml");
        assert!(text.contains(&exec_start), "{unit} does not run {exec_start}");
        for option in [
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ProtectSystem=strict",
            "StateDirectory=mosaic",
        ] {
            assert!(text.lines().any(|line| line == option), "{unit} lacks {option}");
        }
        // The binary where this build has it: verify checks that the command exists.
        let local = text.replace("/usr/local/bin/mosaic", env!("CARGO_BIN_EXE_mosaic"));
        let path = dir.path().join(&unit);
        std::fs::write(&path, local).unwrap();
        let (ok, output) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
        assert!(ok && output.trim().is_empty(), "systemd-analyze verify {unit}: {output}");
        let (ok, output) = run(Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--threshold={EXPOSURE_MAX}"))
            .arg(&path));
        assert!(ok, "systemd-analyze security {unit}: {output}");

        let settings = deploy().join("systemd").join(format!("{role}.toml"));
        let config = ServerConfig::from_toml(&std::fs::read_to_string(&settings).unwrap())
            .and_then(|config| config.validate().map(|()| config))
            .unwrap_or_else(|error| panic!("{}: {error}", settings.display()));
        assert!(config.data_dir.starts_with("/var/lib/mosaic"), "{}", settings.display());
        assert!(config.metrics_listen.is_some(), "{}: no HTTP port", settings.display());
    }
}

/// A unit the test above must refuse: an option systemd does not know only warns.
#[test]
fn systemd_analyze_verify_reports_an_unknown_option() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(deploy().join("systemd/mosaic-server.service")).unwrap();
    let broken = text
        .replace("/usr/local/bin/mosaic", env!("CARGO_BIN_EXE_mosaic"))
        .replace("NoNewPrivileges=yes", "NoNewPrivilegez=yes");
    let path = dir.path().join("broken.service");
    std::fs::write(&path, broken).unwrap();
    let (_, output) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(output.contains("NoNewPrivilegez"), "not reported: {output}");
}

/// Needs `kubernetes-validate` (PyPI); `.ci/run` installs it and runs:
/// `MOSAIC_TEST_K8S=$(command -v kubernetes-validate) cargo test --workspace --all-targets -- --ignored kubernetes_manifests`
#[test]
#[ignore = "needs kubernetes-validate from PyPI: set MOSAIC_TEST_K8S to its path"]
fn kubernetes_manifests_validate_against_the_schemas_offline() {
    let validate = std::env::var("MOSAIC_TEST_K8S").expect(
        "set MOSAIC_TEST_K8S to the kubernetes-validate command (pip install kubernetes-validate)",
    );
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(deploy().join("k8s"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    manifests.sort();
    assert_eq!(manifests.len(), 3, "{manifests:?}");
    // The oldest Kubernetes still supported, and the newest the validator knows.
    for version in ["1.30.0", "1.37.0"] {
        let (ok, output) = run(Command::new(&validate)
            .args(["--strict", "--kubernetes-version", version])
            .args(&manifests));
        assert!(ok, "kubernetes-validate {version}: {output}");
        for kind in [
            "statefulset/mosaic-controller",
            "statefulset/mosaic-node",
            "poddisruptionbudget/mosaic-node",
            "service/mosaic-controller",
            "job/mosaic-setup",
        ] {
            assert!(output.contains(&format!("passed for resource {kind}")), "{kind}: {output}");
        }
    }
}

/// Needs Docker, docker-compose and a release build (about 20 minutes the first time, for
/// RocksDB); runs deploy/compose/test.sh:
/// `MOSAIC_TEST_COMPOSE=1 cargo test --workspace --all-targets -- --ignored compose_cluster`
#[test]
#[ignore = "needs Docker and a release build: set MOSAIC_TEST_COMPOSE=1"]
fn compose_cluster_passes_its_story_partitions_kills_and_rolling_restarts() {
    assert!(
        std::env::var_os("MOSAIC_TEST_COMPOSE").is_some(),
        "set MOSAIC_TEST_COMPOSE=1 to run deploy/compose/test.sh"
    );
    let (ok, output) = run(&mut Command::new(deploy().join("compose/test.sh")));
    assert!(ok, "deploy/compose/test.sh failed:\n{output}");
}
