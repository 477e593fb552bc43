//! Where a controller replica reaches the other replicas: its `--peers`, then every address
//! the controller's state records (`SetControllerAddress`, sent by `mosaic admin controller
//! add`), which wins over the flag. A replica added after the others started is in no one's
//! `--peers`; its record reaches every replica through the log (or a snapshot), and this task
//! copies it into the replica's [`Directory`] (the Raft transport's and the leader hints'
//! addresses) within [`FOLLOW_EVERY`].

use std::time::Duration;

use mosaic_controller::{ControllerMachine, ControllerQuery, ControllerView};
use mosaic_raft::NodeId;
use mosaic_raftstore::{Consistency, StoreMsg};
use mosaic_types::CONTROLLER_GROUP;
use tokio::sync::watch;

use crate::backend::NodeEngine;
use crate::runner::StoreHandle;
use crate::status::Directory;

/// How often the recorded addresses are read.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// How long a read of the replica's own state may take.
pub const APPLIED_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads the controller state this replica applied (a stale read: no quorum, any replica).
///
/// # Errors
/// Why it could not be read, in words (the replica holds no group yet, the store is busy or
/// stopped).
pub async fn read_applied(
    store: &StoreHandle<NodeEngine, ControllerMachine>,
) -> Result<ControllerView, String> {
    let (group, query, consistency) =
        (CONTROLLER_GROUP, ControllerQuery { num: None }, Consistency::Stale);
    let read = store
        .ask_within(APPLIED_READ_TIMEOUT, |callback| StoreMsg::Read {
            group,
            query,
            consistency,
            callback,
        })
        .await
        .map_err(|error| error.to_string())?;
    read.output.map_err(|error| error.to_string())
}

/// Copies the recorded controller addresses into `directory` every [`FOLLOW_EVERY`] until
/// `closing` turns true. This replica's own address stays its own.
pub async fn follow(
    node: NodeId,
    store: StoreHandle<NodeEngine, ControllerMachine>,
    directory: Directory,
    mut closing: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(FOLLOW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = closing.changed() => return,
        }
        if *closing.borrow() {
            return;
        }
        match read_applied(&store).await {
            Ok(view) => {
                for (replica, address) in view.controllers.iter().filter(|(id, _)| **id != node) {
                    if directory.set(*replica, address) {
                        tracing::info!(replica = %replica, %address,
                            "controller replica address recorded");
                    }
                }
            }
            // A replica waiting for init holds no group: nothing to follow yet.
            Err(error) => tracing::trace!(%error, "cannot read the recorded controller addresses"),
        }
    }
}
