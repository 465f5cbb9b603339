//! The orphan scan: read every record, judge it, hand orphans to an [`AttachmentCleaner`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use super::decision::{decide, netns_present, PodsOnNode, Verdict};
use super::record::{read_records, StoredRecord};
use crate::cluster::events::{Notice, Notifier};
use crate::metrics::{ErrorKind, Metrics};

/// Cleans up one orphaned attachment: its kernel state, then its record file. The real cleaner
/// runs the plugins' DEL the way a runtime would; it plugs in here. A record that is still
/// there after `Ok` is offered again on the next scan, and so is one whose cleanup failed: the
/// cleanup must be idempotent.
pub trait AttachmentCleaner: Send + Sync {
    fn clean_up(
        &self,
        attachment: &StoredRecord,
    ) -> impl Future<Output = Result<(), CleanupError>> + Send;
}

#[derive(Debug, Error)]
pub enum CleanupError {
    #[error("no cleaner is available: {0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// `--orphan-cleanup=report`: orphans show up as warnings and in
/// `krafty_installer_errors_total{kind="cleanup"}`, and nothing is removed.
pub struct ReportOnlyCleaner;

impl AttachmentCleaner for ReportOnlyCleaner {
    async fn clean_up(&self, _attachment: &StoredRecord) -> Result<(), CleanupError> {
        Err(CleanupError::Unavailable(
            "--orphan-cleanup=report only reports orphaned attachments",
        ))
    }
}

/// What one scan found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReconcileSummary {
    pub kept: usize,
    pub cleaned: Vec<StoredRecord>,
    pub failed: Vec<StoredRecord>,
}

pub struct Reconciler<C> {
    state_dir: PathBuf,
    cleaner: C,
    metrics: Arc<Metrics>,
    notifier: Notifier,
}

impl<C: AttachmentCleaner> Reconciler<C> {
    pub fn new(state_dir: PathBuf, cleaner: C, metrics: Arc<Metrics>, notifier: Notifier) -> Self {
        Reconciler {
            state_dir,
            cleaner,
            metrics,
            notifier,
        }
    }

    /// One scan against `pods`, which must be a complete view of this node's pods.
    pub async fn reconcile(&self, pods: &PodsOnNode) -> ReconcileSummary {
        let judged = {
            let (dir, pods) = (self.state_dir.clone(), pods.clone());
            tokio::task::spawn_blocking(move || {
                read_records(&dir)
                    .into_iter()
                    .map(|stored| (decide(&stored.record, &pods, netns_present), stored))
                    .collect::<Vec<_>>()
            })
            .await
        };
        let judged = match judged {
            Ok(judged) => judged,
            Err(error) => {
                tracing::warn!("the attachment scan was interrupted: {error}");
                return ReconcileSummary::default();
            }
        };
        let mut summary = ReconcileSummary::default();
        for (verdict, stored) in judged {
            if verdict != Verdict::Orphaned {
                tracing::debug!("keeping {} ({verdict:?})", stored.attachment);
                summary.kept += 1;
                continue;
            }
            let (attachment, record) = (&stored.attachment, &stored.record);
            let pod = format!("{}/{}", record.pod_namespace, record.pod_name);
            match self.cleaner.clean_up(&stored).await {
                Ok(()) => {
                    tracing::info!("cleaned up orphaned attachment {attachment} of pod {pod}");
                    self.metrics.count_reconciled_attachment();
                    self.notifier
                        .send(Notice::AttachmentCleanedUp(Box::new(stored.clone())));
                    summary.cleaned.push(stored);
                }
                Err(error) => {
                    tracing::warn!(
                        "orphaned attachment {attachment} of pod {pod} ({}) is not cleaned up: {error}",
                        stored.path.display()
                    );
                    self.metrics.count_error(ErrorKind::Cleanup);
                    summary.failed.push(stored);
                }
            }
        }
        tracing::debug!(
            "attachment scan against {} pods: {} kept, {} cleaned up, {} failed",
            pods.len(),
            summary.kept,
            summary.cleaned.len(),
            summary.failed.len()
        );
        summary
    }
}
