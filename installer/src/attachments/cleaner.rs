//! The real [`AttachmentCleaner`]: undoes an orphaned attachment from its record the way the
//! plugins' own GC does (`Attachment::tear_down_recorded`), under the same per-network lock,
//! so a late DEL or a GC of the runtime never interleaves with it. Only the attachment's own
//! devices, leases and record go: another attachment of the same pod (`net2` beside `net1`) is
//! another record, judged and cleaned up on its own.
//!
//! It works in the network namespace of the thread that runs it: the DaemonSet runs the agent
//! on the host network, where the plugins put the host ends of their veths.

use std::path::PathBuf;

use krafty_cni::lock::NodeLock;
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
    async fn clean_up(&self, stored: &StoredRecord) -> Result<(), CleanupError> {
        let cleaner = self.clone();
        let stored = stored.clone();
        // Flock waits and the IPAM plugin's process are blocking; so is the netlink work's
        // own runtime, which must not nest inside the agent's.
        tokio::task::spawn_blocking(move || cleaner.clean_up_blocking(&stored))
            .await
            .map_err(|error| CleanupError::Failed(Box::new(error)))?
            .map_err(|error| CleanupError::Failed(Box::new(error)))
    }
}

impl NodeCleaner {
    fn clean_up_blocking(&self, stored: &StoredRecord) -> Result<(), krafty_cni::Error> {
        let attachment = &stored.attachment;
        let _lock = NodeLock::network(&self.run_dir, attachment.network())?;
        let records = Records::new(&self.state_dir);
        let Some(record) = records.read(attachment)? else {
            // A DEL or GC got there first, while we waited for the lock.
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| krafty_cni::Error::io("starting the cleanup runtime", e))?;
        runtime.block_on(async {
            let netlink = Netlink::connect()?;
            attachment
                .tear_down_recorded(&netlink, &records, &record, &self.ipam_path)
                .await
        })
    }
}
