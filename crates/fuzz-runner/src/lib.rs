//! Runs the coverage-guided fuzz targets of `crates/fuzz-runner/fuzz/` (docs/testing.md
//! "Fuzzing").
//!
//! `fuzz/` is a workspace of its own, built here with `cargo build` and the sanitizer-coverage
//! flags libFuzzer needs ([`COVERAGE_FLAGS`]: stable codegen options, no `-Z`), for the host
//! target named explicitly (so that the flags reach the targets, not build scripts), into its
//! own target directory (so that the main workspace is never rebuilt with them). Each target
//! then runs for a bounded time over its committed corpus `fuzz/corpus/TARGET` (read only;
//! what it finds goes to a working corpus beside the build), and fails on the first input
//! that makes it panic, leaving that input in `artifacts/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The fuzz targets, the binaries of `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 6] = [
    "controller_records",
    "shardkv_records",
    "engine_records",
    "proto_messages",
    "node_requests",
    "controller_requests",
];

/// The flags of a libFuzzer build (those `cargo fuzz build -s none` passes), with debug
/// assertions and overflow checks on.
pub const COVERAGE_FLAGS: [&str; 12] = [
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "--cfg=fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
    "-Ccodegen-units=1",
    "-Copt-level=3",
];

/// Where the fuzz workspace is: beside this crate's manifest, as cargo says when it runs the
/// test (a checkout in another directory may share the target directory and this binary,
/// whose compiled-in path would name the other checkout), else as compiled.
#[must_use]
pub fn fuzz_dir() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.join("fuzz")
}

/// The host's target triple, from `rustc -vV`.
///
/// # Errors
/// Why rustc could not say.
pub fn host_triple() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc).arg("-vV").output().map_err(|e| format!("{rustc}: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| format!("{rustc} -vV names no host"))
}

/// Builds every target with `cargo` into `target_dir`; returns where the binaries are.
///
/// # Errors
/// The build's failure, with its output.
pub fn build(cargo: &str, target_dir: &Path) -> Result<PathBuf, String> {
    let host = host_triple()?;
    let output = Command::new(cargo)
        .args(["build", "--release", "--bins", "--locked", "--target", &host])
        .arg("--manifest-path")
        .arg(fuzz_dir().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", COVERAGE_FLAGS.join("\x1f"))
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|error| format!("{cargo}: {error}"))?;
    if !output.status.success() {
        return Err(format!("building fuzz/: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(target_dir.join(host).join("release"))
}

/// Runs `target` (built into `bin_dir`) for `time`, its working files under `work_dir`.
///
/// # Errors
/// The end of its output when it found an input that fails, or could not run.
pub fn run(bin_dir: &Path, work_dir: &Path, target: &str, time: Duration) -> Result<(), String> {
    let corpus = work_dir.join("corpus").join(target);
    let artifacts = work_dir.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    }
    let output = Command::new(bin_dir.join(target))
        .arg(&corpus)
        .arg(fuzz_dir().join("corpus").join(target))
        .arg(format!("-max_total_time={}", time.as_secs().max(1)))
        .arg("-use_value_profile=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .map_err(|error| format!("{target}: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    let log = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{target} failed (inputs in {}):\n{}", artifacts.display(), tail.join("\n")))
}
