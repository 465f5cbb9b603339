//! The attachment records the plugins write (`krafty_cni::state`), as the orphan scan reads
//! them: every readable one, and a warning for each that cannot be read.

use std::path::Path;

use krafty_cni::state::Records;
pub use krafty_cni::state::{AttachmentRecord, StoredRecord};

/// Every readable record under `state_dir`, sorted by path. A missing directory holds no
/// records.
pub fn read_records(state_dir: &Path) -> Vec<StoredRecord> {
    let (records, errors) = Records::new(state_dir).list_all();
    for error in errors {
        tracing::warn!("skipping an attachment record: {error}");
    }
    records
}
