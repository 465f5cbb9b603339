//! The watch of this node's pods, and the orphan reconciler it drives.
//!
//! Scans run only once the watch has listed every pod on the node: before that, an empty
//! store would make every attachment look orphaned. After that, a scan runs on start, after
//! pod deletions (and relists) have settled, and every `interval` as a safety net for network
//! namespaces that disappear after their pod.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::attachments::{AttachmentCleaner, PodsOnNode, Reconciler};
use crate::metrics::{ErrorKind, Metrics};
use crate::watch::debounced;

/// Lists and watches only the pods scheduled to `node`.
pub fn pod_watch_config(node: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("spec.nodeName={node}"))
}

pub fn pods_on_node(store: &Store<Pod>) -> PodsOnNode {
    let mut pods = PodsOnNode::default();
    for pod in store.state() {
        let meta = &pod.metadata;
        if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
            pods.insert(namespace, name, meta.uid.as_deref());
        }
    }
    pods
}

/// Watches `node`'s pods and runs the reconciler as described above, until shutdown.
pub async fn run_orphan_reconciler<C: AttachmentCleaner>(
    api: Api<Pod>,
    node: String,
    reconciler: Reconciler<C>,
    interval: Duration,
    settle: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let (store, writer) = reflector::store();
    let deletions = Notify::new();
    let events = watcher(api, pod_watch_config(&node))
        .default_backoff()
        .reflect(writer);
    let watch = async {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Delete(_) | watcher::Event::InitDone) => deletions.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!("watching the pods of node {node}: {error}");
                    metrics.count_error(ErrorKind::PodWatch);
                }
            }
        }
    };
    let scans = async {
        if store.wait_until_ready().await.is_err() {
            return;
        }
        tracing::info!("pod watch on node {node} is synced; reconciling attachments");
        loop {
            reconciler.reconcile(&pods_on_node(&store)).await;
            tokio::select! {
                () = tokio::time::sleep(interval) => {},
                () = debounced(&deletions, settle) => {},
            }
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => {},
        () = watch => {},
        () = scans => {},
    }
}
