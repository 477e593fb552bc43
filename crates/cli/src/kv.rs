//! `mosaic kv`: reads and writes keys, routed by shard like any Mosaic client.
//!
//! ```text
//! mosaic kv --controllers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 put greeting hello
//! mosaic kv --controllers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 get greeting
//! mosaic kv --nodes 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 --group 1 put greeting hello
//! mosaic kv --nodes 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 --group 1 get greeting
//! printf 'binary\0value' | mosaic kv --controllers ... append log
//! mosaic kv --controllers ... get --print-version counter       # the version, then the value
//! mosaic kv --controllers ... cas counter --expect-version 7 8  # only if still at version 7
//! mosaic kv --controllers ... put --if-absent lock owner-1      # only if the key has no value
//! mosaic kv --controllers ... batch if '{u}:a' 3 put '{u}:a' x delete '{u}:b'  # all or nothing
//! mosaic kv --controllers ... scan user/ --limit 100            # keys with a prefix, in order
//! mosaic kv --controllers ... watch user/                       # every change, as it comes
//! ```
//!
//! Versions: every shard counts its changes, and a key's version is the count when the key was
//! last written (0: the key has no value); `cas`, `put --if-absent` and `delete
//! --expect-version` write only if the key's version is the one named, and otherwise change
//! nothing and exit 4 (docs/api.md).
//!
//! The command routes each key one of two ways, and exactly one must be given:
//! - `--controllers HOST:PORT,...`: by the controller's latest configuration, which names the
//!   group that owns the key's shard and where its nodes listen (the shard count too). The
//!   client asks the controller first, and again when a node says the configuration it used is
//!   stale; one ask takes at most half of `--timeout`. A key whose shard no group owns yet
//!   (no group was added) fails, exit code 1, with advice to add one;
//! - `--nodes ID=HOST:PORT,... --group G`: without a controller, every shard is routed to the
//!   one group `G`, whose members are the nodes of `--nodes`; `--shard-count` must match the
//!   cluster's.
//!
//! Giving both, neither, `--nodes` without `--group` (or the reverse), or `--shard-count` with
//! `--controllers`, is bad usage.
//!
//! # Output contract
//!
//! Keys and values are bytes: a KEY or VALUE argument is taken as the raw bytes of the
//! command-line argument, and a VALUE that is omitted is read from stdin (all of it, up to end
//! of file, as bytes: nothing is trimmed).
//!
//! On success, stdout carries exactly:
//!
//! | command | `--output human` (default) | `--output json` |
//! |---|---|---|
//! | `get`, key found | the value's raw bytes, then `\n` (`--print-version`: the version and `\n` first) | `{"found":true,"value":"...","version":V}` |
//! | `get`, key absent | nothing (`--print-version`: `0\n`) | `{"found":false}` |
//! | `put`, `append`, `delete` | nothing | `{"ok":true,"index":N}` |
//! | `cas`, `put --if-absent`, `delete --expect-version` | the key's new version (a delete: the shard's revision after it), then `\n` | `{"ok":true,"version":V}` |
//! | `batch` | the shard's revision after the writes, then `\n` | `{"ok":true,"revision":R}` |
//! | `scan` | a line a key, in key order: the key, a tab, the value (`--keys-only`: the key) | a line a key: `{"key":"...","value":"...","version":V}` (no `value` with `--keys-only`) |
//! | `watch` | a line a change, as it comes: shard, revision, `put`, key, value (or shard, revision, `delete`, key), tab-separated | a line a change: `{"shard":S,"revision":R,"op":"put","key":"...","value":"..."}` (no `value` for `"op":"delete"`) |
//!
//! When the condition of `cas`, `put --if-absent` or `delete --expect-version` does not hold,
//! nothing is written: stdout carries nothing (`--output json`: `{"ok":false,"current":V}`,
//! the key's version, 0 when absent), stderr says the key's version, and the exit code is 4.
//! When a condition of `batch` does not hold, the same, with the first that did not by its
//! place among the conditions (from 0): `{"ok":false,"condition":N,"current":V}`.
//!
//! `batch` takes its steps as words, in order: `if KEY VERSION` (a condition), `put KEY VALUE`,
//! `append KEY VALUE`, `delete KEY`; every key must be in one shard (give them one hash tag,
//! `{...}`: docs/api.md), and at least one step must write.
//!
//! `scan` prints each page as soon as it is read, so a scan of many keys shows them as it
//! goes and holds one page at a time; a page that fails ends it with exit code 1 after the
//! keys already printed (stderr says how many); a scan stopped by `--limit` with keys left
//! says so on stderr. Its human lines are raw bytes: a key or value
//! holding a tab or a newline is only unambiguous in JSON.
//!
//! `watch` runs until stopped, or until `--count N` changes are printed (whole revisions:
//! exit code 0); each shard's changes come in revision order, once each, through leader
//! changes and shard moves (docs/api.md "Watches"). To resume after the last line seen, pass
//! `--from-revision SHARD=REV` with the revision after it for each shard. An error (the
//! changes asked for are no longer kept: `Compacted`) ends it with exit code 1 after the
//! changes printed, stderr naming the `--from-revision` flags that go on from there.
//!
//! In JSON, a value that is valid UTF-8 is the string field `value`; any other value is the
//! field `value_base64` instead (standard alphabet, padded), so that no bytes are lost (a
//! scanned key likewise: `key` or `key_base64`). Each JSON document is one line. `index` is
//! the log index at which the write was applied.
//!
//! On failure, stdout carries nothing, and stderr one line that says what went wrong and what
//! to do. The exit code says what a script should do next:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (a `get` of an absent key included) |
//! | 1 | failure: a write that was certainly **not** applied (safe to retry), or a read that failed |
//! | 2 | bad usage: a malformed flag or argument (clap's usage errors), nothing was sent |
//! | 3 | a write whose outcome is unknown: it may or may not have been applied (the deadline passed while it was in flight); read the key before retrying it |
//! | 4 | a conditional write whose condition did not hold: nothing was written |

use std::ffi::OsString;
use std::io::{Read, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand, ValueEnum};
use mosaic_client::{
    Batch, BatchOutcome, Bytes, Cas, Client, ClientError, ClientOptions, Consistency, LogIndex,
    RoutingError, RoutingSource, ScanEntry, ScanOptions, ScanRange, ShardId, StaticRouting,
    Versioned, WatchOptions, WatchedChange, WatchedRevision, WriteOutcome,
};

use crate::nodes::{KeyRoute, KeySource};
use crate::tls::TlsArgs;

/// Exit code: success.
pub const EXIT_SUCCESS: u8 = 0;
/// Exit code: a write certainly not applied, or a failed read.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage (as clap exits on a usage error).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a write that may or may not have been applied.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;
/// Exit code: a conditional write whose condition did not hold; nothing was written.
pub const EXIT_CONDITION_FAILED: u8 = 4;

/// Flags of `mosaic kv`.
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    route: KeyRoute,
    /// How long the command may take, retries included (for example 500ms, 10s, 2m).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: KvCommand,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Raw values for people and pipes.
    Human,
    /// One JSON document per line, for scripts.
    Json,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReadConsistency {
    /// The leader confirms its leadership with a heartbeat round first (ReadIndex).
    Linearizable,
    /// The leader reads under its lease, without a round trip.
    Lease,
    /// Any replica reads what it has applied (the replicas take turns); may be behind.
    Stale,
}

impl From<ReadConsistency> for Consistency {
    fn from(consistency: ReadConsistency) -> Self {
        match consistency {
            ReadConsistency::Linearizable => Self::Linearizable,
            ReadConsistency::Lease => Self::Lease,
            ReadConsistency::Stale => Self::Stale,
        }
    }
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Prints the value of KEY and a newline; prints nothing if KEY has no value.
    Get {
        /// The key.
        key: OsString,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
        consistency: ReadConsistency,
        /// Print the key's version (0 when it has no value) on a line of its own first.
        #[arg(long)]
        print_version: bool,
    },
    /// Sets KEY to VALUE.
    Put {
        /// The key.
        key: OsString,
        /// The value; when omitted, all of stdin is read as the value.
        value: Option<OsString>,
        /// Only if KEY has no value (a create); otherwise nothing is written, exit code 4.
        #[arg(long)]
        if_absent: bool,
    },
    /// Sets KEY to VALUE only if KEY's version is N (compare-and-set); prints the new version.
    Cas {
        /// The key.
        key: OsString,
        /// The version KEY must have (`get --print-version` shows it; 0: KEY has no value).
        #[arg(long, value_name = "N")]
        expect_version: u64,
        /// The value; when omitted, all of stdin is read as the value.
        value: Option<OsString>,
    },
    /// Appends VALUE to the value of KEY (an absent key counts as empty).
    Append {
        /// The key.
        key: OsString,
        /// The bytes to append; when omitted, all of stdin is read as the value.
        value: Option<OsString>,
    },
    /// Removes KEY (removing an absent key succeeds).
    Delete {
        /// The key.
        key: OsString,
        /// Only if KEY's version is N; otherwise nothing is removed, exit code 4.
        #[arg(long, value_name = "N")]
        expect_version: Option<u64>,
    },
    /// Applies conditions and writes on keys of one shard all together or not at all; prints
    /// the shard's revision after them.
    Batch {
        /// The steps, in order: `if KEY VERSION`, `put KEY VALUE`, `append KEY VALUE`,
        /// `delete KEY`.
        #[arg(required = true, num_args = 1.., value_name = "STEP")]
        steps: Vec<OsString>,
    },
    /// Prints the keys that start with PREFIX (every key without it), or those from `--from`
    /// to `--to`, in key order, one line each, page by page as they are read.
    Scan {
        #[command(flatten)]
        keys: KeyRangeArgs,
        /// At most N keys (all of them when omitted).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Print the keys only.
        #[arg(long)]
        keys_only: bool,
        /// How fresh each shard's part of each page must be.
        #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
        consistency: ReadConsistency,
    },
    /// Prints every change to the keys that start with PREFIX (every key without it), or to
    /// those from `--from` to `--to`, a line each, as they are made, until stopped (or
    /// `--count` changes).
    Watch {
        #[command(flatten)]
        keys: KeyRangeArgs,
        /// Start shard SHARD at revision REV (to resume: the one after the last printed);
        /// repeatable. Other shards start with the changes after the watch begins.
        #[arg(long = "from-revision", value_name = "SHARD=REV", value_parser = parse_shard_revision)]
        from_revisions: Vec<(u32, u64)>,
        /// Stop once N changes are printed (after the revision that reaches N: a batch's
        /// changes are printed together).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// How the replicas serving the watch are checked (stale: any replica serves it).
        #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
        consistency: ReadConsistency,
    },
}

/// The keys `scan` and `watch` name: those with a prefix, or from `--from` to `--to`.
#[derive(Args, Debug)]
pub struct KeyRangeArgs {
    /// Only the keys that start with this.
    #[arg(conflicts_with_all = ["from", "to"])]
    prefix: Option<OsString>,
    /// The first key (included).
    #[arg(long, value_name = "KEY")]
    from: Option<OsString>,
    /// The key to stop before (excluded).
    #[arg(long, value_name = "KEY")]
    to: Option<OsString>,
}

impl KeyRangeArgs {
    /// The range these name.
    fn range(self) -> ScanRange {
        match (self.prefix, self.from, self.to) {
            (Some(prefix), _, _) => ScanRange::prefix(prefix.into_encoded_bytes()),
            (None, from, to) => ScanRange::between(
                from.map(OsString::into_encoded_bytes).unwrap_or_default(),
                to.map(|to| Bytes::from(to.into_encoded_bytes())),
            ),
        }
    }
}

/// Parses `SHARD=REV` (`--from-revision`).
fn parse_shard_revision(text: &str) -> Result<(u32, u64), String> {
    let usage = || format!("{text:?} is not SHARD=REV (a shard id, a revision of 1 or more)");
    let (shard, revision) = text.split_once('=').ok_or_else(usage)?;
    let shard = shard.parse().map_err(|_| usage())?;
    let revision: u64 = revision.parse().map_err(|_| usage())?;
    if revision == 0 {
        return Err(usage());
    }
    Ok((shard, revision))
}

/// Keys a page of `mosaic kv scan` asks for.
const SCAN_PAGE_KEYS: u64 = 1_000;

/// Parses `batch`'s steps (see [`KvCommand::Batch`]).
fn parse_batch(steps: Vec<OsString>) -> Result<Batch, String> {
    let mut words = steps.into_iter();
    let mut batch = Batch::new();
    while let Some(step) = words.next() {
        let mut operand = |what: &str| {
            words
                .next()
                .map(OsString::into_encoded_bytes)
                .ok_or_else(|| format!("{} needs {what}", step.to_string_lossy()))
        };
        batch = match step.to_str() {
            Some("if") => {
                let key = operand("a key")?;
                let version = operand("a version")?;
                let version = std::str::from_utf8(&version)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| {
                        format!("{:?} is not a version", String::from_utf8_lossy(&version))
                    })?;
                batch.expect_version(key, version)
            }
            Some("put") => batch.put(operand("a key")?, operand("a value")?),
            Some("append") => batch.append(operand("a key")?, operand("a value")?),
            Some("delete") => batch.delete(operand("a key")?),
            _ => {
                return Err(format!(
                    "{:?} is not a step: if KEY VERSION, put KEY VALUE, append KEY VALUE or \
                     delete KEY",
                    step.to_string_lossy()
                ));
            }
        };
    }
    Ok(batch)
}

impl KvCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::Put { .. } => "put",
            Self::Cas { .. } => "cas",
            Self::Append { .. } => "append",
            Self::Delete { .. } => "delete",
            Self::Batch { .. } => "batch",
            Self::Scan { .. } => "scan",
            Self::Watch { .. } => "watch",
        }
    }
}

/// Parses a positive duration: an integer followed by `ms`, `s` or `m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let usage = || format!("{text:?} is not a duration such as 500ms, 10s or 2m");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(usage)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| usage())?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.checked_mul(60).ok_or_else(usage)?),
        _ => return Err(usage()),
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: the timeout must be positive"));
    }
    Ok(duration)
}

/// Returns `value` as bytes, or when it is absent, everything `stdin` holds.
fn value_or_read(value: Option<OsString>, stdin: &mut impl Read) -> std::io::Result<Vec<u8>> {
    match value {
        Some(value) => Ok(value.into_encoded_bytes()),
        None => {
            let mut bytes = Vec::new();
            stdin.read_to_end(&mut bytes)?;
            Ok(bytes)
        }
    }
}

/// What `get` prints for `read` (see the module's output contract).
fn render_get(read: Option<&Versioned>, output: Output, print_version: bool) -> Vec<u8> {
    let version = read.map_or(0, |read| read.version);
    let first_line = if print_version { format!("{version}\n") } else { String::new() };
    match (output, read) {
        (Output::Human, Some(read)) => [first_line.as_bytes(), &read.value, b"\n"].concat(),
        (Output::Human, None) => first_line.into_bytes(),
        (Output::Json, None) => json_line(&serde_json::json!({ "found": false })),
        (Output::Json, Some(read)) => match std::str::from_utf8(&read.value) {
            Ok(text) => {
                json_line(&serde_json::json!({ "found": true, "value": text, "version": version }))
            }
            Err(_) => json_line(&serde_json::json!({
                "found": true, "value_base64": BASE64.encode(&read.value), "version": version,
            })),
        },
    }
}

/// What `scan` prints for one key: `KEY TAB VALUE` (`KEY` alone with `--keys-only`), or a
/// JSON document.
fn render_scanned(entry: &ScanEntry, output: Output, keys_only: bool) -> Vec<u8> {
    match output {
        Output::Human if keys_only => [&entry.key[..], b"\n"].concat(),
        Output::Human => [&entry.key[..], b"\t", &entry.value, b"\n"].concat(),
        Output::Json => {
            let mut document = serde_json::Map::new();
            let mut field = |name: &str, bytes: &[u8]| match std::str::from_utf8(bytes) {
                Ok(text) => document.insert(name.into(), text.into()),
                Err(_) => document.insert(format!("{name}_base64"), BASE64.encode(bytes).into()),
            };
            field("key", &entry.key);
            if !keys_only {
                field("value", &entry.value);
            }
            document.insert("version".into(), entry.version.into());
            json_line(&serde_json::Value::Object(document))
        }
    }
}

/// What a conditional write prints once it took effect at `version`.
fn render_cas(version: u64, output: Output) -> Vec<u8> {
    match output {
        Output::Human => format!("{version}\n").into_bytes(),
        Output::Json => format!("{{\"ok\":true,\"version\":{version}}}\n").into_bytes(),
    }
}

/// What a batch prints once its writes took effect at `revision`.
fn render_batch(revision: u64, output: Output) -> Vec<u8> {
    match output {
        Output::Human => format!("{revision}\n").into_bytes(),
        Output::Json => format!("{{\"ok\":true,\"revision\":{revision}}}\n").into_bytes(),
    }
}

/// What a write prints once applied at `index`.
fn render_write(index: LogIndex, output: Output) -> Vec<u8> {
    match output {
        Output::Human => Vec::new(),
        // Written out so that the field order is the documented one whatever serde_json's
        // map order is (`ok` would sort after `index`).
        Output::Json => format!("{{\"ok\":true,\"index\":{}}}\n", index.0).into_bytes(),
    }
}

fn json_line(value: &serde_json::Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Which flags a command routed by, for the advice of its error line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteFlags {
    /// `--controllers`.
    Controllers,
    /// `--nodes`, `--group` and `--shard-count`.
    Nodes,
}

/// The exit code of a failed command.
fn exit_code_for(error: &ClientError, is_write: bool) -> u8 {
    if is_write && error.outcome() == WriteOutcome::Unknown {
        EXIT_OUTCOME_UNKNOWN
    } else {
        EXIT_FAILED
    }
}

/// The one line printed on stderr for a failed command: what went wrong and what to do.
fn error_line(command: &str, error: &ClientError, is_write: bool, route: RouteFlags) -> String {
    let advice = match error {
        ClientError::InvalidArgument { .. } => "fix the request; retrying it will not help",
        ClientError::SessionExpired { .. } => {
            "the write may or may not have been applied (not twice): read the key to check \
             before retrying"
        }
        _ if is_write && error.outcome() == WriteOutcome::Unknown => {
            "the write may or may not have been applied: read the key to check before retrying"
        }
        ClientError::AccessDenied { message, .. } if message.starts_with("permission denied") => {
            "use a certificate with the role the message names (docs/security.md \
             \"Authorization\"); nothing was applied"
        }
        ClientError::AccessDenied { .. } => {
            "give --tls-cert, --tls-key and --tls-ca with a certificate of the cluster's CA"
        }
        ClientError::StorageFull { .. } => {
            "free space in the node's data directory (or raise its disk); writes resume by \
             themselves, reads are served meanwhile; nothing was written"
        }
        ClientError::Compacted { .. } => {
            "read the keys afresh, then watch from the revision that read returns"
        }
        ClientError::WrongShard { .. } if route == RouteFlags::Nodes => {
            "give --shard-count the cluster's shard count (the node names it); nothing was \
             written"
        }
        ClientError::WrongShard { .. } => {
            "the client computes shards differently from the cluster: report it as a bug; \
             nothing was written"
        }
        ClientError::Timeout { .. } if is_write && route == RouteFlags::Nodes => {
            "the write was not applied: check that the nodes of --nodes are up and that --group \
             and --shard-count are right, then retry (or raise --timeout)"
        }
        ClientError::Timeout { .. } if route == RouteFlags::Nodes => {
            "check that the nodes of --nodes are up and that --group and --shard-count are \
             right, then retry (or raise --timeout)"
        }
        ClientError::Timeout { .. } if is_write => {
            "the write was not applied: check that the controllers of --controllers and the \
             storage nodes of its configuration are up, then retry (or raise --timeout)"
        }
        ClientError::Timeout { .. } => {
            "check that the controllers of --controllers and the storage nodes of its \
             configuration are up, then retry (or raise --timeout)"
        }
        ClientError::Routing { reason: RoutingError::Source { .. } } => {
            "check that the controllers of --controllers are up and reachable, then retry (or \
             raise --timeout)"
        }
        ClientError::Routing { .. } if route == RouteFlags::Controllers => {
            "the controller's configuration cannot be routed by: check it with `mosaic admin \
             --controllers ... config show` and the node registry with `node list`"
        }
        ClientError::ShardUnassigned { .. } => {
            "add a group with `mosaic admin --controllers ... group add GROUP --members ID,...`, \
             then retry"
        }
        ClientError::Routing { .. }
        | ClientError::InvalidOptions { .. }
        | ClientError::InvalidControllerAddresses { .. }
        | ClientError::UnknownConfig { .. } => "fix the flags",
        ClientError::MalformedResponse { .. } => {
            "a server answered what this client cannot read: check that they run the same version"
        }
        ClientError::Randomness { .. } => {
            "retry; if it persists, check the system's entropy source"
        }
    };
    let line = format!("mosaic kv {command}: {error}; {advice}");
    line.replace(['\n', '\r'], " ")
}

/// Runs `mosaic kv` and returns its exit code (see the module's output contract).
///
/// # Errors
/// Only when the command's own input or output fails (stdin cannot be read, stdout cannot be
/// written); every failure of the operation itself is reported on stderr and in the exit code.
pub async fn run(args: KvArgs) -> anyhow::Result<ExitCode> {
    let KvArgs { route, timeout, output, tls, command } = args;
    let tls = match tls.load() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("mosaic kv: {error}; fix --tls-cert, --tls-key or --tls-ca");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let options = ClientOptions { timeout, tls, ..ClientOptions::default() };
    match route.source() {
        Err(message) => {
            eprintln!("mosaic kv: {message}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
        Ok(KeySource::Static(routing)) => {
            let client = Client::new(StaticRouting::new(routing), options)?;
            run_command(&client, command, output, RouteFlags::Nodes).await
        }
        Ok(KeySource::Controllers(addresses)) => {
            let client = match Client::connect(addresses, options) {
                Ok(client) => client,
                Err(error @ ClientError::InvalidControllerAddresses { .. }) => {
                    eprintln!("mosaic kv: {error}; fix --controllers");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
                Err(error) => return Err(error.into()),
            };
            run_command(&client, command, output, RouteFlags::Controllers).await
        }
    }
}

/// Runs `command` with `client`, whichever source it routes by, and returns the exit code.
///
/// # Errors
/// As [`run`].
async fn run_command<S: RoutingSource>(
    client: &Client<S>,
    command: KvCommand,
    output: Output,
    route: RouteFlags,
) -> anyhow::Result<ExitCode> {
    let name = command.name();
    let is_write = !matches!(
        command,
        KvCommand::Get { .. } | KvCommand::Scan { .. } | KvCommand::Watch { .. }
    );

    let printed = match command {
        KvCommand::Get { key, consistency, print_version } => client
            .get_versioned(key.into_encoded_bytes(), consistency.into())
            .await
            .map(|read| Printed::Out(render_get(read.as_ref(), output, print_version))),
        KvCommand::Put { key, value, if_absent: true } => {
            let value = read_value(value)?;
            let cas = client.compare_and_set(key.into_encoded_bytes(), 0, value).await;
            cas.map(|cas| Printed::of_cas(cas, output))
        }
        KvCommand::Cas { key, expect_version, value } => {
            let value = read_value(value)?;
            let cas = client.compare_and_set(key.into_encoded_bytes(), expect_version, value).await;
            cas.map(|cas| Printed::of_cas(cas, output))
        }
        KvCommand::Put { key, value, if_absent: false } => {
            let value = read_value(value)?;
            let put = client.put(key.into_encoded_bytes(), value).await;
            put.map(|i| Printed::Out(render_write(i, output)))
        }
        KvCommand::Append { key, value } => {
            let value = read_value(value)?;
            let append = client.append(key.into_encoded_bytes(), value).await;
            append.map(|i| Printed::Out(render_write(i, output)))
        }
        KvCommand::Delete { key, expect_version: Some(expected) } => {
            let cas = client.compare_and_delete(key.into_encoded_bytes(), expected).await;
            cas.map(|cas| Printed::of_cas(cas, output))
        }
        KvCommand::Delete { key, expect_version: None } => {
            let delete = client.delete(key.into_encoded_bytes()).await;
            delete.map(|i| Printed::Out(render_write(i, output)))
        }
        KvCommand::Scan { keys, limit, keys_only, consistency } => {
            let range = keys.range();
            let consistency = consistency.into();
            let options = ScanOptions { keys_only, consistency, ..ScanOptions::default() };
            return scan(client, range, options, limit, output, route).await;
        }
        KvCommand::Watch { keys, from_revisions, count, consistency } => {
            let range = keys.range();
            let from = from_revisions
                .into_iter()
                .map(|(shard, revision)| (ShardId(shard), revision))
                .collect();
            let options = WatchOptions { consistency: consistency.into(), from };
            return watch(client, range, options, count, output, route).await;
        }
        KvCommand::Batch { steps } => match parse_batch(steps) {
            Ok(batch) => client.batch(batch).await.map(|outcome| match outcome {
                BatchOutcome::Written { revision } => Printed::Out(render_batch(revision, output)),
                BatchOutcome::Failed { condition, current } => {
                    Printed::ConditionFailed { current, condition: Some(condition) }
                }
            }),
            Err(reason) => {
                eprintln!("mosaic kv batch: {reason}; nothing was sent");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        },
    };
    let (stdout_bytes, code) = match printed {
        Ok(Printed::Out(bytes)) => (bytes, EXIT_SUCCESS),
        Ok(Printed::ConditionFailed { current, condition }) => {
            let (which, json) = match condition {
                None => {
                    ("the key's".to_owned(), format!("{{\"ok\":false,\"current\":{current}}}\n"))
                }
                Some(condition) => (
                    format!("condition {condition}: its key's"),
                    format!("{{\"ok\":false,\"condition\":{condition},\"current\":{current}}}\n"),
                ),
            };
            eprintln!(
                "mosaic kv {name}: {which} version is {current}, not the one expected; nothing \
                 was written (read the key, then decide)"
            );
            (
                if output == Output::Json { json.into_bytes() } else { Vec::new() },
                EXIT_CONDITION_FAILED,
            )
        }
        Err(error) => {
            eprintln!("{}", error_line(name, &error, is_write, route));
            return Ok(ExitCode::from(exit_code_for(&error, is_write)));
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&stdout_bytes).and_then(|()| stdout.flush()).context("writing to stdout")?;
    Ok(ExitCode::from(code))
}

/// Prints the keys of `range`, at most `limit`, page by page as they are read; a page that
/// fails ends the command with the keys printed so far, stderr saying how many.
///
/// # Errors
/// As [`run`].
async fn scan<S: RoutingSource>(
    client: &Client<S>,
    range: ScanRange,
    options: ScanOptions,
    limit: Option<u64>,
    output: Output,
    route: RouteFlags,
) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let (mut next, mut printed) = (Some(range), 0_u64);
    while let Some(range) = next.take() {
        let left = limit.map_or(SCAN_PAGE_KEYS, |limit| (limit - printed).min(SCAN_PAGE_KEYS));
        let options = ScanOptions { limit: u32::try_from(left).unwrap_or(u32::MAX), ..options };
        let page = match client.scan(&range, options).await {
            Ok(page) => page,
            Err(error) => {
                eprintln!(
                    "{} (after {printed} keys printed)",
                    error_line("scan", &error, false, route)
                );
                return Ok(ExitCode::from(exit_code_for(&error, false)));
            }
        };
        for entry in &page.entries {
            stdout
                .write_all(&render_scanned(entry, output, options.keys_only))
                .context("writing to stdout")?;
        }
        stdout.flush().context("writing to stdout")?;
        printed += page.entries.len() as u64;
        match (limit, page.next) {
            (Some(limit), Some(_)) if printed >= limit => {
                eprintln!("mosaic kv scan: stopped at --limit {limit}; more keys follow");
            }
            (_, rest) => next = rest,
        }
    }
    Ok(ExitCode::from(EXIT_SUCCESS))
}

/// Prints every change to the keys of `range` as it comes, a revision at a time, until
/// `count` changes (or for ever); an error ends the command after the changes printed.
///
/// # Errors
/// As [`run`].
async fn watch<S: RoutingSource>(
    client: &Client<S>,
    range: ScanRange,
    options: WatchOptions,
    count: Option<u64>,
    output: Output,
    route: RouteFlags,
) -> anyhow::Result<ExitCode> {
    let mut watch = match client.watch(&range, options).await {
        Ok(watch) => watch,
        Err(error) => {
            eprintln!("{}", error_line("watch", &error, false, route));
            return Ok(ExitCode::from(exit_code_for(&error, false)));
        }
    };
    let mut printed = 0_u64;
    while let Some(next) = watch.next().await {
        let revision = match next {
            Ok(revision) => revision,
            Err(error) => {
                eprintln!(
                    "{} (after {printed} changes printed; to go on from there: {})",
                    error_line("watch", &error, false, route),
                    resume_flags(&watch.resume_from())
                );
                return Ok(ExitCode::from(exit_code_for(&error, false)));
            }
        };
        let mut stdout = std::io::stdout().lock();
        for change in &revision.changes {
            stdout
                .write_all(&render_watched(&revision, change, output))
                .context("writing to stdout")?;
        }
        stdout.flush().context("writing to stdout")?;
        // Whole revisions: a resume from the one after the last printed misses nothing.
        printed += revision.changes.len() as u64;
        if count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    Ok(ExitCode::from(EXIT_SUCCESS))
}

/// The `--from-revision` flags that resume a watch at `resume_from`.
fn resume_flags(resume_from: &std::collections::BTreeMap<ShardId, u64>) -> String {
    let flags: Vec<String> = resume_from
        .iter()
        .map(|(shard, revision)| format!("--from-revision {shard}={revision}"))
        .collect();
    if flags.is_empty() { "watch again".to_string() } else { flags.join(" ") }
}

/// What `watch` prints for one change: `SHARD TAB REVISION TAB put TAB KEY TAB VALUE` or
/// `SHARD TAB REVISION TAB delete TAB KEY`, or a JSON document.
fn render_watched(revision: &WatchedRevision, change: &WatchedChange, output: Output) -> Vec<u8> {
    let (shard, number) = (revision.shard.0, revision.revision);
    match (output, &change.value) {
        (Output::Human, Some(value)) => {
            let head = format!("{shard}\t{number}\tput\t");
            [head.as_bytes(), &change.key[..], b"\t", value, b"\n"].concat()
        }
        (Output::Human, None) => {
            let head = format!("{shard}\t{number}\tdelete\t");
            [head.as_bytes(), &change.key[..], b"\n"].concat()
        }
        (Output::Json, value) => {
            let mut document = serde_json::Map::new();
            document.insert("shard".into(), shard.into());
            document.insert("revision".into(), number.into());
            document.insert("op".into(), if value.is_some() { "put" } else { "delete" }.into());
            let mut field = |name: &str, bytes: &[u8]| match std::str::from_utf8(bytes) {
                Ok(text) => document.insert(name.into(), text.into()),
                Err(_) => document.insert(format!("{name}_base64"), BASE64.encode(bytes).into()),
            };
            field("key", &change.key);
            if let Some(value) = value {
                field("value", value);
            }
            json_line(&serde_json::Value::Object(document))
        }
    }
}

/// What a command that reached the cluster prints.
enum Printed {
    /// These bytes on stdout, exit code 0.
    Out(Vec<u8>),
    /// A conditional write found the key at version `current` (for a batch: the key of its
    /// condition `condition`): nothing written, exit code 4.
    ConditionFailed { current: u64, condition: Option<usize> },
}

impl Printed {
    fn of_cas(cas: Cas, output: Output) -> Self {
        match cas {
            Cas::Written { version } => Self::Out(render_cas(version, output)),
            Cas::Failed { current } => Self::ConditionFailed { current, condition: None },
        }
    }
}

/// The value argument, or all of stdin when it is omitted.
fn read_value(value: Option<OsString>) -> anyhow::Result<Vec<u8>> {
    value_or_read(value, &mut std::io::stdin().lock()).context("reading the value from stdin")
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use clap::error::ErrorKind;
    use clap::{CommandFactory as _, Parser};
    use mosaic_client::{GroupId, NodeId, ShardId};

    use super::*;
    use crate::nodes::NodeAddress;

    #[test]
    fn batch_steps_are_words_in_order_and_malformed_ones_are_refused() {
        let words = |text: &str| text.split(' ').map(OsString::from).collect::<Vec<_>>();
        let batch = parse_batch(words("if {u}:a 3 put {u}:a x append {u}:a y delete {u}:b"));
        let expected =
            Batch::new().expect_version("{u}:a", 3).put("{u}:a", "x").append("{u}:a", "y");
        assert_eq!(batch, Ok(expected.delete("{u}:b")));
        for (bad, says) in [
            ("if k", "needs a version"),
            ("if k seven put k v", "not a version"),
            ("put k", "needs a value"),
            ("delete", "needs a key"),
            ("set k v", "not a step"),
        ] {
            let refused = parse_batch(words(bad)).unwrap_err();
            assert!(refused.contains(says), "{bad}: {refused}");
        }
    }

    /// The shape `main.rs` gives the command: `mosaic kv ...`.
    #[derive(Parser, Debug)]
    #[command(name = "mosaic")]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Subcommand, Debug)]
    enum TestCommand {
        Kv(KvArgs),
    }

    const NODES: &str = "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103";
    const CONTROLLERS: &str = "127.0.0.1:7001,127.0.0.1:7002";

    fn parse(args: &[&str]) -> Result<KvArgs, clap::Error> {
        let argv = ["mosaic", "kv"].iter().chain(args);
        TestCli::try_parse_from(argv).map(|cli| match cli.command {
            TestCommand::Kv(args) => args,
        })
    }

    /// `mosaic kv --controllers ... VERB` followed by the words of `line`, parsed.
    fn parse_verb(verb: &str, line: &str) -> Result<KvArgs, clap::Error> {
        let args: Vec<&str> = ["--controllers", CONTROLLERS, verb]
            .into_iter()
            .chain(line.split_whitespace())
            .collect();
        parse(&args)
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        match parse(args) {
            Ok(parsed) => panic!("{args:?} parsed as {parsed:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn a_get_parses_with_the_documented_defaults() {
        let args = parse(&["--nodes", NODES, "--group", "7", "get", "user:1"]).unwrap();
        assert_eq!(args.route.nodes.len(), 3);
        assert_eq!(
            args.route.nodes[1],
            NodeAddress { node: NodeId(2), address: "127.0.0.1:7102".to_string() }
        );
        assert_eq!(args.route.group, Some(7));
        assert_eq!(args.route.shard_count, 64);
        assert!(args.route.controllers.is_empty());
        assert_eq!(args.timeout, Duration::from_secs(10));
        assert_eq!(args.output, Output::Human);
        match args.command {
            KvCommand::Get { key, consistency, .. } => {
                assert_eq!(key, "user:1");
                assert_eq!(consistency, ReadConsistency::Linearizable);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn every_flag_parses() {
        let line = "--group 2 --shard-count 8 --timeout 1500ms --output json get k \
                    --consistency stale";
        let args: Vec<&str> =
            ["--nodes", NODES].into_iter().chain(line.split_whitespace()).collect();
        let args = parse(&args).unwrap();
        assert_eq!((args.route.shard_count, args.output), (8, Output::Json));
        assert_eq!(args.timeout, Duration::from_millis(1500));
        assert!(matches!(args.command, KvCommand::Get { consistency: ReadConsistency::Stale, .. }));
    }

    #[test]
    fn a_scan_takes_a_prefix_or_a_range_never_both() {
        let scan = |line: &str| parse_verb("scan", line);
        let args = scan("user/ --limit 5 --keys-only --consistency lease").unwrap();
        let KvCommand::Scan { keys, limit, keys_only, consistency } = args.command else {
            panic!("parsed as {:?}", args.command)
        };
        assert_eq!(keys.range(), ScanRange::prefix("user/"));
        assert_eq!((limit, keys_only, consistency), (Some(5), true, ReadConsistency::Lease));
        let KvCommand::Scan { keys, .. } = scan("--from a --to b").unwrap().command else {
            panic!("a scan")
        };
        assert_eq!(keys.range(), ScanRange::between("a", Some(Bytes::from("b"))));
        let KvCommand::Scan { keys, .. } = scan("").unwrap().command else { panic!("a scan") };
        assert_eq!(keys.range(), ScanRange::all());
        for (bad, kind) in [
            ("user/ --from a", ErrorKind::ArgumentConflict),
            ("user/ --to b", ErrorKind::ArgumentConflict),
            ("--limit 0", ErrorKind::ValueValidation),
            ("--limit many", ErrorKind::ValueValidation),
        ] {
            assert_eq!(usage_error_of(scan(bad)), kind, "{bad}");
        }
    }

    #[test]
    fn a_watch_takes_a_range_revisions_to_resume_from_and_a_count() {
        let watch = |line: &str| parse_verb("watch", line);
        let args = watch("user/ --from-revision 3=17 --from-revision 5=1 --count 2").unwrap();
        let KvCommand::Watch { keys, from_revisions, count, consistency } = args.command else {
            panic!("parsed as {:?}", args.command)
        };
        assert_eq!(keys.range(), ScanRange::prefix("user/"));
        assert_eq!(from_revisions, [(3, 17), (5, 1)]);
        assert_eq!((count, consistency), (Some(2), ReadConsistency::Linearizable));
        for (bad, kind) in [
            ("user/ --from a", ErrorKind::ArgumentConflict),
            ("--from-revision 3=0", ErrorKind::ValueValidation),
            ("--from-revision 3", ErrorKind::ValueValidation),
            ("--from-revision x=1", ErrorKind::ValueValidation),
            ("--count 0", ErrorKind::ValueValidation),
        ] {
            assert_eq!(usage_error_of(watch(bad)), kind, "{bad}");
        }
    }

    #[test]
    fn a_watched_change_is_a_line_of_raw_bytes_or_of_json() {
        let revision = WatchedRevision { shard: ShardId(3), revision: 9, changes: Vec::new() };
        let put = WatchedChange { key: Bytes::from("k"), value: Some(Bytes::from("v")) };
        let delete = WatchedChange { key: Bytes::from("k"), value: None };
        assert_eq!(render_watched(&revision, &put, Output::Human), b"3\t9\tput\tk\tv\n");
        assert_eq!(render_watched(&revision, &delete, Output::Human), b"3\t9\tdelete\tk\n");
        assert_eq!(
            render_watched(&revision, &put, Output::Json),
            b"{\"key\":\"k\",\"op\":\"put\",\"revision\":9,\"shard\":3,\"value\":\"v\"}\n"
        );
        let binary = WatchedChange { key: Bytes::from_static(b"\xff"), value: None };
        assert_eq!(
            render_watched(&revision, &binary, Output::Json),
            b"{\"key_base64\":\"/w==\",\"op\":\"delete\",\"revision\":9,\"shard\":3}\n"
        );
    }

    fn usage_error_of(parsed: Result<KvArgs, clap::Error>) -> ErrorKind {
        match parsed {
            Ok(parsed) => panic!("parsed as {parsed:?}"),
            Err(error) => error.kind(),
        }
    }

    #[test]
    fn a_scanned_key_is_a_line_of_raw_bytes_or_of_json() {
        let entry = |key: &'static [u8], value: &'static [u8]| ScanEntry {
            key: Bytes::from_static(key),
            value: Bytes::from_static(value),
            version: 7,
        };
        let text = entry(b"k", b"v");
        assert_eq!(render_scanned(&text, Output::Human, false), b"k\tv\n");
        assert_eq!(render_scanned(&text, Output::Human, true), b"k\n");
        assert_eq!(
            render_scanned(&text, Output::Json, false),
            b"{\"key\":\"k\",\"value\":\"v\",\"version\":7}\n"
        );
        let binary = entry(b"\xff", b"\xfe");
        assert_eq!(
            render_scanned(&binary, Output::Json, false),
            b"{\"key_base64\":\"/w==\",\"value_base64\":\"/g==\",\"version\":7}\n"
        );
        assert_eq!(render_scanned(&text, Output::Json, true), b"{\"key\":\"k\",\"version\":7}\n");
    }

    #[test]
    fn output_and_timeout_may_follow_the_verb() {
        let args = ["--nodes", NODES, "--group", "1", "put", "k", "--output", "json"];
        assert_eq!(parse(&args).unwrap().output, Output::Json);
        let args = ["--nodes", NODES, "--group", "1", "get", "k", "--timeout", "2s"];
        assert_eq!(parse(&args).unwrap().timeout, Duration::from_secs(2));
    }

    #[test]
    fn writes_parse_with_and_without_a_value() {
        let put = parse(&["--nodes", NODES, "--group", "1", "put", "k", "v"]).unwrap();
        assert!(matches!(put.command, KvCommand::Put { value: Some(ref v), .. } if v == "v"));
        let put = parse(&["--nodes", NODES, "--group", "1", "put", "k"]).unwrap();
        assert!(matches!(put.command, KvCommand::Put { value: None, .. }));
        let append = parse(&["--nodes", NODES, "--group", "1", "append", "k"]).unwrap();
        assert!(matches!(append.command, KvCommand::Append { value: None, .. }));
        let delete = parse(&["--nodes", NODES, "--group", "1", "delete", "k"]).unwrap();
        assert!(matches!(
            delete.command,
            KvCommand::Delete { ref key, expect_version: None } if key == "k"
        ));
    }

    #[test]
    fn conditional_writes_parse_and_need_their_version() {
        let route = ["--nodes", NODES, "--group", "1"];
        let with = |args: &[&'static str]| -> Vec<&'static str> {
            route.iter().chain(args).copied().collect()
        };
        let cas = parse(&with(&["cas", "k", "--expect-version", "7", "v"])).unwrap();
        assert!(matches!(
            cas.command,
            KvCommand::Cas { expect_version: 7, value: Some(ref v), .. } if v == "v"
        ));
        let create = parse(&with(&["put", "--if-absent", "k", "v"])).unwrap();
        assert!(matches!(create.command, KvCommand::Put { if_absent: true, .. }));
        let delete = parse(&with(&["delete", "k", "--expect-version", "3"])).unwrap();
        assert!(matches!(delete.command, KvCommand::Delete { expect_version: Some(3), .. }));
        let get = parse(&with(&["get", "--print-version", "k"])).unwrap();
        assert!(matches!(get.command, KvCommand::Get { print_version: true, .. }));
        for bad in [&["cas", "k", "v"][..], &["cas", "k", "--expect-version", "-1", "v"]] {
            assert_eq!(usage_error(&with(bad)).exit_code(), i32::from(EXIT_USAGE), "{bad:?}");
        }
    }

    #[test]
    fn controllers_replace_nodes_and_group() {
        let args = parse(&["--controllers", CONTROLLERS, "put", "k", "v"]).unwrap();
        assert_eq!(args.route.controllers, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert!(args.route.nodes.is_empty());
        assert_eq!(args.route.group, None);
        assert_eq!(
            args.route.source(),
            Ok(KeySource::Controllers(vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()]))
        );
        let args =
            ["--controllers", CONTROLLERS, "--timeout", "2s", "get", "k", "--output", "json"];
        let args = parse(&args).unwrap();
        assert_eq!((args.timeout, args.output), (Duration::from_secs(2), Output::Json));
    }

    #[test]
    fn exactly_one_way_of_routing_must_be_given() {
        let both: &[&[&str]] = &[
            &["--controllers", CONTROLLERS, "--nodes", NODES, "--group", "1", "get", "k"],
            &["--controllers", CONTROLLERS, "--nodes", NODES, "get", "k"],
            &["--controllers", CONTROLLERS, "--group", "1", "get", "k"],
            &["--controllers", CONTROLLERS, "--shard-count", "8", "get", "k"],
        ];
        for args in both {
            let error = usage_error(args);
            assert_eq!(error.kind(), ErrorKind::ArgumentConflict, "{args:?}: {error}");
            assert_eq!(error.exit_code(), i32::from(EXIT_USAGE), "{args:?}: {error}");
        }
        let incomplete: &[&[&str]] = &[
            &["--nodes", NODES, "get", "k"], // --nodes without --group
            &["--group", "1", "get", "k"],   // --group without --nodes
            &["--controllers", "--group", "1", "get", "k"], // --controllers without a value
        ];
        for args in incomplete {
            let error = usage_error(args);
            assert_eq!(error.exit_code(), i32::from(EXIT_USAGE), "{args:?}: {error}");
        }
        // Neither flag: the environment must name the controllers.
        for args in [&["get", "k"][..], &["--shard-count", "8", "get", "k"]] {
            let message = parse(args).unwrap().route.source_from(None).unwrap_err();
            assert!(message.contains("--controllers") && message.contains("--nodes"), "{message}");
            assert!(message.contains("MOSAIC_CONTROLLERS"), "{message}");
        }
    }

    #[test]
    fn the_environment_names_the_controllers_when_no_flag_routes() {
        let env = || Some(" 10.0.0.1:7000, 10.0.0.2:7000 ,".to_string());
        let unflagged = parse(&["get", "k"]).unwrap();
        assert_eq!(
            unflagged.route.source_from(env()),
            Ok(KeySource::Controllers(vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()]))
        );
        assert!(unflagged.route.source_from(Some(" , ".into())).is_err(), "no address in it");
        // Flags win over the environment.
        let flagged = parse(&["--controllers", CONTROLLERS, "get", "k"]).unwrap();
        assert_eq!(
            flagged.route.source_from(env()),
            Ok(KeySource::Controllers(vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()]))
        );
        let nodes = parse(&["--nodes", NODES, "--group", "1", "get", "k"]).unwrap();
        assert!(matches!(nodes.route.source_from(env()), Ok(KeySource::Static(_))));
    }

    #[tokio::test]
    async fn an_invalid_controller_address_exits_with_the_usage_code_before_sending() {
        for controllers in ["127.0.0.1", "127.0.0.1:7001,127.0.0.1:7001", ""] {
            let args = parse(&["--controllers", controllers, "delete", "k"]).unwrap();
            let code = run(args).await.unwrap();
            assert_eq!(code, ExitCode::from(EXIT_USAGE), "--controllers {controllers:?}");
        }
    }

    #[tokio::test]
    async fn a_write_while_no_controller_answers_fails_as_not_applied() {
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let args = parse(&["--controllers", &address, "--timeout", "400ms", "put", "k", "v"]);
        let started = std::time::Instant::now();
        let code = run(args.unwrap()).await.unwrap();
        assert_eq!(code, ExitCode::from(EXIT_FAILED));
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn bad_usage_is_a_clap_error_with_exit_code_2() {
        let cases: &[&[&str]] = &[
            &["--group", "1", "get", "k"],                           // no --nodes
            &["--nodes", NODES, "get", "k"],                         // no --group
            &["--nodes", NODES, "--group", "0", "get", "k"],         // group 0
            &["--nodes", "1=h:1,x=h:2", "--group", "1", "get", "k"], // bad node id
            &["--nodes", "0=h:1", "--group", "1", "get", "k"],       // node 0
            &["--nodes", "1=nowhere", "--group", "1", "get", "k"],   // no port
            &["--nodes", NODES, "--group", "1", "--shard-count", "0", "get", "k"],
            &["--nodes", NODES, "--group", "1", "--timeout", "0s", "get", "k"],
            &["--nodes", NODES, "--group", "1", "--timeout", "10", "get", "k"],
            &["--nodes", NODES, "--group", "1", "--output", "xml", "get", "k"],
            &["--nodes", NODES, "--group", "1", "get", "k", "--consistency", "strong"],
            &["--nodes", NODES, "--group", "1", "get"], // no key
            &["--nodes", NODES, "--group", "1", "delete", "k", "extra"],
            &["--nodes", NODES, "--group", "1", "frobnicate", "k"], // no such command
        ];
        for args in cases {
            let error = usage_error(args);
            assert_eq!(error.exit_code(), i32::from(EXIT_USAGE), "{args:?}: {error}");
        }
        let error = usage_error(&["--group", "1", "get", "k"]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "10", "10h", "1.5s", "-1s", "0ms", "99999999999999999999m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_flags_describe_a_single_group_routing() {
        let args =
            parse(&["--nodes", NODES, "--group", "4", "--shard-count", "16", "get", "k"]).unwrap();
        let Ok(KeySource::Static(routing)) = args.route.source() else {
            panic!("--nodes and --group describe a static routing");
        };
        assert_eq!(routing.shard_count(), 16);
        assert_eq!(routing.members(GroupId(4)), &[NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(routing.address(NodeId(3)), Some("127.0.0.1:7103"));
    }

    #[test]
    fn groups_own_the_shards_in_turn() {
        let flags = ["--nodes", NODES, "--group", "4", "--groups", "3", "--shard-count", "8"];
        let args = parse(&[&flags[..], &["get", "k"]].concat()).unwrap();
        let Ok(KeySource::Static(routing)) = args.route.source() else {
            panic!("--nodes, --group and --groups describe a static routing");
        };
        let owners: Vec<u64> =
            (0..8).map(|shard| routing.group_of(ShardId(shard)).unwrap().0).collect();
        assert_eq!(owners, [4, 5, 6, 4, 5, 6, 4, 5]);
        assert_eq!(routing.members(GroupId(6)), &[NodeId(1), NodeId(2), NodeId(3)]);
    }

    #[test]
    fn more_groups_than_shards_or_group_ids_are_refused() {
        let flags = ["--nodes", NODES, "--group", "1", "--groups", "9", "--shard-count", "8"];
        let args = parse(&[&flags[..], &["get", "k"]].concat());
        let message = args.unwrap().route.source().unwrap_err();
        assert!(message.contains("more than --shard-count 8"), "{message}");
        let last = u64::MAX.to_string();
        let args = parse(&["--nodes", NODES, "--group", &last, "--groups", "2", "get", "k"]);
        let message = args.unwrap().route.source().unwrap_err();
        assert!(message.contains("runs past the group ids"), "{message}");
        let error = parse(&["--controllers", "h:1", "--groups", "2", "get", "k"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn a_node_named_twice_is_refused() {
        let args = parse(&["--nodes", "1=h:1,1=h:2", "--group", "1", "get", "k"]).unwrap();
        let message = args.route.source().unwrap_err();
        assert!(message.contains("node 1 twice"), "{message}");
    }

    #[tokio::test]
    async fn an_invalid_routing_exits_with_the_usage_code_before_sending() {
        let args = parse(&["--nodes", "1=h:port", "--group", "1", "delete", "k"]).unwrap();
        let code = run(args).await.unwrap();
        assert_eq!(code, ExitCode::from(EXIT_USAGE));
    }

    #[test]
    fn an_omitted_value_is_all_of_stdin_as_bytes() {
        let input = b"line one\nline two\n\0\xff trailing  \n\n".to_vec();
        let value = value_or_read(None, &mut Cursor::new(input.clone())).unwrap();
        assert_eq!(value, input);
        let empty = value_or_read(None, &mut Cursor::new(Vec::new())).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn a_given_value_does_not_read_stdin() {
        let mut stdin = Cursor::new(b"ignored".to_vec());
        let value = value_or_read(Some(OsString::from("given")), &mut stdin).unwrap();
        assert_eq!(value, b"given");
        assert_eq!(stdin.position(), 0);
    }

    fn read(value: &[u8], version: u64) -> Option<Versioned> {
        Some(Versioned { value: mosaic_client::Bytes::copy_from_slice(value), version })
    }

    #[test]
    fn human_get_prints_exactly_the_value_and_a_newline() {
        let get = |value: Option<Versioned>| render_get(value.as_ref(), Output::Human, false);
        assert_eq!(get(read(b"hello", 3)), b"hello\n");
        assert_eq!(get(read(b"a\0\xff\n", 3)), b"a\0\xff\n\n");
        assert_eq!(get(read(b"", 3)), b"\n");
        assert_eq!(get(None), b"");
        let with_version =
            |value: Option<Versioned>| render_get(value.as_ref(), Output::Human, true);
        assert_eq!(with_version(read(b"hello", 3)), b"3\nhello\n");
        assert_eq!(with_version(None), b"0\n");
    }

    #[test]
    fn json_get_holds_utf8_as_value_and_other_bytes_as_base64() {
        let get = |value: Option<Versioned>| render_get(value.as_ref(), Output::Json, false);
        assert_eq!(get(None), b"{\"found\":false}\n");
        assert_eq!(
            get(read("h\u{e9}llo \"q\"".as_bytes(), 12)),
            "{\"found\":true,\"value\":\"h\u{e9}llo \\\"q\\\"\",\"version\":12}\n".as_bytes()
        );
        assert_eq!(
            get(read(b"\xff\x00", 1)),
            b"{\"found\":true,\"value_base64\":\"/wA=\",\"version\":1}\n"
        );
    }

    #[test]
    fn writes_print_nothing_or_one_json_line() {
        assert_eq!(render_write(LogIndex(42), Output::Human), b"");
        assert_eq!(render_write(LogIndex(42), Output::Json), b"{\"ok\":true,\"index\":42}\n");
        assert_eq!(render_cas(8, Output::Human), b"8\n");
        assert_eq!(render_cas(8, Output::Json), b"{\"ok\":true,\"version\":8}\n");
    }

    fn timeout(outcome: WriteOutcome) -> ClientError {
        ClientError::Timeout {
            outcome,
            timeout: Duration::from_secs(10),
            attempts: 12,
            last_failure: "node 1 at h:1: cannot connect:\nrefused".to_string(),
        }
    }

    #[test]
    fn exit_codes_tell_unapplied_from_unknown_writes() {
        let invalid = ClientError::InvalidArgument {
            reason: "the key is empty".into(),
            outcome: WriteOutcome::NotApplied,
        };
        let routing = ClientError::Routing { reason: RoutingError::NoShards };
        assert_eq!(exit_code_for(&timeout(WriteOutcome::NotApplied), true), EXIT_FAILED);
        assert_eq!(exit_code_for(&timeout(WriteOutcome::Unknown), true), EXIT_OUTCOME_UNKNOWN);
        assert_eq!(exit_code_for(&timeout(WriteOutcome::NotApplied), false), EXIT_FAILED);
        assert_eq!(exit_code_for(&invalid, true), EXIT_FAILED);
        assert_eq!(exit_code_for(&invalid, false), EXIT_FAILED);
        assert_eq!(exit_code_for(&routing, true), EXIT_FAILED);
    }

    #[test]
    fn error_lines_are_one_line_with_advice() {
        let unknown = error_line("put", &timeout(WriteOutcome::Unknown), true, RouteFlags::Nodes);
        assert!(unknown.starts_with("mosaic kv put: "), "{unknown}");
        assert!(unknown.contains("read the key to check before retrying"), "{unknown}");
        let not_applied =
            error_line("append", &timeout(WriteOutcome::NotApplied), true, RouteFlags::Nodes);
        assert!(not_applied.contains("was not applied"), "{not_applied}");
        let read = error_line("get", &timeout(WriteOutcome::NotApplied), false, RouteFlags::Nodes);
        assert!(read.contains("raise --timeout") && !read.contains("applied"), "{read}");
        for line in [unknown, not_applied, read] {
            assert!(!line.contains('\n'), "{line:?}");
        }
    }

    #[test]
    fn error_lines_of_a_command_routed_by_the_controller_advise_on_the_controller() {
        let read =
            error_line("get", &timeout(WriteOutcome::NotApplied), false, RouteFlags::Controllers);
        assert!(read.contains("--controllers") && !read.contains("--group"), "{read}");
        let source = ClientError::Routing {
            reason: RoutingError::Source { reason: "no replica answered".into() },
        };
        let down = error_line("put", &source, true, RouteFlags::Controllers);
        assert!(down.contains("no replica answered"), "{down}");
        assert!(down.contains("controllers of --controllers are up"), "{down}");
        let unassigned = ClientError::ShardUnassigned {
            shard: ShardId(3),
            config_num: 0,
            outcome: WriteOutcome::NotApplied,
        };
        let line = error_line("put", &unassigned, true, RouteFlags::Controllers);
        assert!(line.contains("shard 3 is not assigned to any group"), "{line}");
        assert!(line.contains("group add"), "{line}");
        assert_eq!(exit_code_for(&unassigned, true), EXIT_FAILED);
        let maybe_applied = ClientError::ShardUnassigned {
            shard: ShardId(3),
            config_num: 0,
            outcome: WriteOutcome::Unknown,
        };
        assert_eq!(exit_code_for(&maybe_applied, true), EXIT_OUTCOME_UNKNOWN);
        let line = error_line("put", &maybe_applied, true, RouteFlags::Controllers);
        assert!(line.contains("read the key to check"), "{line}");
    }
}
