//! Events about what the installer did, posted (events.k8s.io/v1) about this node.
//!
//! The install loop and the reconciler only queue [`Notice`]s; a separate task posts them, so
//! a slow or unreachable API server never delays an install.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::attachments::StoredRecord;
use crate::install::InstalledPlugin;
use crate::metrics::{ErrorKind, Metrics};

/// Events are for people; when this many are waiting, further ones are dropped (and logged).
const QUEUE_LENGTH: usize = 64;

/// The Events API's limits on these fields.
const MAX_NOTE_BYTES: usize = 1024;
const MAX_INSTANCE_BYTES: usize = 128;

/// The Events' reporting controller.
pub const REPORTING_CONTROLLER: &str = "krafty.dev/installer";

#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    PluginInstalled(InstalledPlugin),
    PluginRestored(InstalledPlugin),
    InstallFailed(String),
    AttachmentCleanedUp(Box<StoredRecord>),
}

impl Notice {
    pub fn to_event(&self) -> Event {
        let (type_, reason, action, note) = match self {
            Notice::PluginInstalled(plugin) => (
                EventType::Normal,
                "PluginInstalled",
                "Install",
                format!(
                    "installed {} {} (sha256 {})",
                    plugin.name, plugin.version, plugin.sha256
                ),
            ),
            Notice::PluginRestored(plugin) => (
                EventType::Warning,
                "PluginRestored",
                "Restore",
                format!(
                    "{} was deleted or altered; restored {} (sha256 {})",
                    plugin.name, plugin.version, plugin.sha256
                ),
            ),
            Notice::InstallFailed(message) => (
                EventType::Warning,
                "PluginInstallFailed",
                "Install",
                message.clone(),
            ),
            Notice::AttachmentCleanedUp(stored) => (
                EventType::Normal,
                "OrphanedAttachmentCleanedUp",
                "CleanUp",
                format!(
                    "cleaned up attachment {} of deleted pod {}/{} (netns {})",
                    stored.attachment,
                    stored.record.pod_namespace,
                    stored.record.pod_name,
                    stored.record.netns
                ),
            ),
        };
        Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, MAX_NOTE_BYTES)),
            action: action.into(),
            secondary: None,
        }
    }
}

/// Queues notices for the Event publisher; does nothing when the cluster side is off.
#[derive(Debug, Clone, Default)]
pub struct Notifier(Option<mpsc::Sender<Notice>>);

impl Notifier {
    /// A notifier and the receiving end for [`run_publisher`].
    pub fn channel() -> (Notifier, mpsc::Receiver<Notice>) {
        let (sender, receiver) = mpsc::channel(QUEUE_LENGTH);
        (Notifier(Some(sender)), receiver)
    }

    /// A notifier that drops everything (file-only mode).
    pub fn disabled() -> Notifier {
        Notifier(None)
    }

    pub fn send(&self, notice: Notice) {
        if let Some(sender) = &self.0 {
            if let Err(error) = sender.try_send(notice) {
                tracing::debug!("not posting an Event: {error}");
            }
        }
    }
}

/// How Events refer to this node. Like the kubelet, the node's name stands in for its UID.
pub fn node_reference(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        ..ObjectReference::default()
    }
}

/// Posts queued notices as Events about `node` until the queue closes or shutdown.
pub async fn run_publisher(
    client: kube::Client,
    node: String,
    mut notices: mpsc::Receiver<Notice>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let reporter = Reporter {
        controller: REPORTING_CONTROLLER.into(),
        instance: Some(truncate(
            format!("{}-{node}", super::FIELD_MANAGER),
            MAX_INSTANCE_BYTES,
        )),
    };
    let recorder = Recorder::new(client, reporter);
    let reference = node_reference(&node);
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            notice = notices.recv() => match notice {
                Some(notice) => notice,
                None => return,
            },
        };
        if let Err(error) = recorder.publish(&notice.to_event(), &reference).await {
            tracing::warn!("cannot post an Event about node {node}: {error}");
            metrics.count_error(ErrorKind::Event);
        }
    }
}

fn truncate(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("hello".into(), 10), "hello");
    }

    #[test]
    fn failures_are_warnings() {
        let event = Notice::InstallFailed("x".repeat(5000)).to_event();
        assert!(matches!(event.type_, EventType::Warning));
        assert_eq!(event.note.unwrap().len(), MAX_NOTE_BYTES);
    }
}
