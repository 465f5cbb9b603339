//! Attachments the plugins recorded on this node, and the cleanup of those whose pod is gone.
//!
//! - [`record`]: the per-attachment JSON record and its lenient reader.
//! - [`decision`]: when an attachment is orphaned (pure logic).
//! - [`reconciler`]: a scan that hands orphans to an [`AttachmentCleaner`].
//! - [`cleaner`]: the cleaner that undoes them on the node.
//! - [`shared`]: the removal of shared devices whose network has no attachment left.

pub mod cleaner;
pub mod decision;
pub mod reconciler;
pub mod record;
pub mod shared;

pub use cleaner::NodeCleaner;
pub use decision::{decide, PodsOnNode, Verdict};
pub use reconciler::{
    AttachmentCleaner, CleanupError, ReconcileSummary, Reconciler, ReportOnlyCleaner,
};
pub use record::{read_records, AttachmentRecord, StoredRecord};
