//! How a long operation shows its progress on stderr: a bar (indicatif) when stderr is a
//! terminal, otherwise a plain line each time the progress says something new (a log file, a
//! pipe or a CI log gets no escape codes and no line per poll).

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar's spinner turns while nothing changes.
const TICK: Duration = Duration::from_millis(120);

/// The progress of one operation, counted in `unit`s.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// The last line printed, in plain mode.
    printed: Option<String>,
}

impl Progress {
    /// A bar of `unit`s on a terminal, plain lines otherwise.
    pub(crate) fn new(unit: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = format!("{{spinner}} [{{bar:30}}] {{pos}}/{{len}} {unit} · {{msg}}");
            let style = ProgressStyle::with_template(&template)
                .expect("a valid template")
                .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar.enable_steady_tick(TICK);
            bar
        });
        Self { bar, printed: None }
    }

    /// `done` of `total` units, and what is going on.
    pub(crate) fn update(&mut self, done: u64, total: u64, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(message.to_string());
            }
            None => {
                if let Some(line) = self.plain_line(message) {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// The line plain mode prints for `message`: none when it says what the last one said.
    fn plain_line(&mut self, message: &str) -> Option<String> {
        if self.printed.as_deref() == Some(message) {
            return None;
        }
        self.printed = Some(message.to_string());
        Some(format!("waiting: {message}"))
    }

    /// The operation is over: the bar goes away (what follows says how it ended).
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mode_prints_a_line_only_when_the_progress_changes() {
        let mut progress = Progress { bar: None, printed: None };
        assert_eq!(progress.plain_line("2 moving").as_deref(), Some("waiting: 2 moving"));
        assert_eq!(progress.plain_line("2 moving"), None);
        assert_eq!(progress.plain_line("1 moving").as_deref(), Some("waiting: 1 moving"));
        assert_eq!(progress.plain_line("2 moving").as_deref(), Some("waiting: 2 moving"));
    }
}
