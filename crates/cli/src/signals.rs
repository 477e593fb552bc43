//! The signals that ask a long-running command (a node, the playground) to stop: Ctrl-C
//! (SIGINT) and SIGTERM. They are listened for from the moment [`StopSignals::listen`]
//! returns, which a command calls before it starts anything: one that arrives while a node
//! still opens its data or binds its ports is kept and stops the node gracefully once it
//! runs, instead of killing the process by the signal's default action (an orchestrator may
//! send SIGTERM at any moment, also while the process starts).

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which signal asked the command to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// Ctrl-C (SIGINT); in a terminal, the command's children got it too.
    Interrupt,
    /// SIGTERM, to this process alone.
    Terminate,
}

/// Listens for the [`StopSignal`]s.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// Listens from now on (inside the async runtime).
    ///
    /// # Errors
    /// The process cannot install a signal handler.
    pub fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C (SIGINT)")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// The next stop signal, or one received since the last call (or since [`Self::listen`]).
    pub async fn recv(&mut self) -> StopSignal {
        let signal = tokio::select! {
            Some(()) = self.interrupt.recv() => StopSignal::Interrupt,
            Some(()) = self.terminate.recv() => StopSignal::Terminate,
            // Neither can be received any more: the runtime itself is shutting down.
            else => {
                tracing::info!("no more signals can be received: stopping");
                return StopSignal::Terminate;
            }
        };
        match signal {
            StopSignal::Interrupt => tracing::info!("Ctrl-C received"),
            StopSignal::Terminate => tracing::info!("SIGTERM received"),
        }
        signal
    }
}
