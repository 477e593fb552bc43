//! `mosaic`: one binary for every role (DESIGN.md "Processes and what users type").
//! Logs and diagnostics go to stderr; stdout carries only what a command is asked for.

mod admin;
mod bench;
mod certs;
mod kv;
mod logging;
mod nodes;
mod playground;
mod progress;
mod server;
mod signals;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use logging::LogFormat;

/// Mosaic: a sharded, replicated key-value store.
#[derive(Parser, Debug)]
#[command(name = "mosaic", version, about)]
struct Cli {
    /// How log lines on stderr look: `text` for people (coloured on a terminal only), `json`
    /// for log shippers (one object per line). The level is set with MOSAIC_LOG (default
    /// `info`, for example `MOSAIC_LOG=mosaic_raftstore=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MOSAIC_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a storage node: hosts replicas of Raft groups and serves the KV API.
    Server(server::ServerArgs),
    /// Runs a replica of the controller group: nodes, groups, shard configurations.
    Controller(server::ControllerArgs),
    /// Reads and writes keys: get, put, append, delete.
    Kv(kv::KvArgs),
    /// Administers storage nodes: create groups, show their status.
    Admin(admin::AdminArgs),
    /// Runs the benchmark workloads against a running cluster; one JSON line per workload.
    Bench(bench::BenchArgs),
    /// Starts a local cluster (3 controller replicas, 3 storage nodes, 3 groups) and runs it
    /// until Ctrl-C.
    Playground(playground::PlaygroundArgs),
    /// Makes a CA and certificates for mutual TLS.
    Certs(certs::CertsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mosaic: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Controller(args) => server::run_controller(args).await,
            Command::Kv(args) => kv::run(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Playground(args) => playground::run(args, cli.log_format).await,
            Command::Certs(args) => certs::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mosaic: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_log_format_is_taken_before_or_after_the_subcommand() {
        let before = ["mosaic", "--log-format", "json", "certs", "init", "dir"];
        assert_eq!(Cli::try_parse_from(before).unwrap().log_format, LogFormat::Json);
        let after = ["mosaic", "kv", "--controllers", "h:1", "get", "k", "--log-format", "json"];
        assert_eq!(Cli::try_parse_from(after).unwrap().log_format, LogFormat::Json);
        assert!(
            Cli::try_parse_from(["mosaic", "--log-format", "xml", "certs", "init", "d"]).is_err()
        );
    }
}
