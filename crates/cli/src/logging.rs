//! Log lines on stderr: their level from `MOSAIC_LOG` (default `info`), their form from
//! `--log-format` (`MOSAIC_LOG_FORMAT`).

use std::io::IsTerminal;

use clap::ValueEnum;

/// The form of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// and the current span's fields in `span` and `spans`.
    Json,
}

impl LogFormat {
    /// The format's name, as `--log-format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// Sends this process's log lines to stderr in `format`.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOSAIC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        // Colour codes only where a person reads them: not in a log file or a pipe, and not
        // when NO_COLOR is set (no-color.org).
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}
