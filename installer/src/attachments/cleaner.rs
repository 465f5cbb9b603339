//! The real [`AttachmentCleaner`]: undoes an orphaned attachment the way the plugins' own GC
//! does, with `krafty_cni::cleanup::undo_attachment`, under the same per-network lock, so a
//! late DEL or a GC of the runtime never interleaves with it.
//!
//! It works in the network namespace of the thread that runs it: the DaemonSet runs the agent
//! on the host network, where the plugins put the host ends of their veths.

use std::path::PathBuf;

use krafty_cni::cleanup::undo_attachment;
use krafty_cni::lock::NodeLock;
use krafty_cni::naming;
use krafty_cni::netlink::Netlink;
use krafty_cni::state::Records;

use super::reconciler::{AttachmentCleaner, CleanupError};
use super::record::StoredRecord;

#[derive(Debug, Clone)]
pub struct NodeCleaner {
    /// Where the plugins keep their attachment records (`stateDir`).
    pub state_dir: PathBuf,
    /// Where the plugins keep their locks (`KRAFTY_RUN_DIR`, /run/krafty on a node).
    pub run_dir: PathBuf,
    /// Replaces the CNI_PATH recorded at ADD when the IPAM plugin's DEL is replayed. The
    /// recorded one names node paths; in the installer's container the node's CNI bin
    /// directory is mounted elsewhere. Empty: use the recorded path.
    pub ipam_path: Vec<PathBuf>,
}

impl AttachmentCleaner for NodeCleaner {
    async fn clean_up(&self, attachment: &StoredRecord) -> Result<(), CleanupError> {
        let cleaner = self.clone();
        let attachment = attachment.clone();
        // Flock waits and the IPAM plugin's process are blocking; so is the netlink work's
        // own runtime, which must not nest inside the agent's.
        tokio::task::spawn_blocking(move || cleaner.clean_up_blocking(&attachment))
            .await
            .map_err(|error| CleanupError::Failed(Box::new(error)))?
            .map_err(|error| CleanupError::Failed(Box::new(error)))
    }
}

impl NodeCleaner {
    fn clean_up_blocking(&self, attachment: &StoredRecord) -> Result<(), krafty_cni::Error> {
        let summary = &attachment.record;
        // The record file could have been written by anyone who can write the state
        // directory: its names become lock and record paths only once they pass the plugins'
        // own rules.
        naming::validate_network_name(&summary.network)
            .and_then(|()| naming::validate_container_id(&summary.container_id))
            .and_then(|()| naming::validate_ifname(&summary.ifname))
            .map_err(krafty_cni::Error::InvalidConfig)?;
        let _lock = NodeLock::network(&self.run_dir, &summary.network)?;
        let records = Records::new(&self.state_dir);
        let Some(mut record) =
            records.read(&summary.network, &summary.container_id, &summary.ifname)?
        else {
            // A DEL or GC got there first, while we waited for the lock.
            return Ok(());
        };
        if let Some(ipam) = record.ipam.as_mut().filter(|_| !self.ipam_path.is_empty()) {
            ipam.cni_path.clone_from(&self.ipam_path);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| krafty_cni::Error::io("starting the cleanup runtime", e))?;
        runtime.block_on(async {
            let netlink = Netlink::connect()?;
            undo_attachment(&netlink, &records, &record).await
        })
    }
}
