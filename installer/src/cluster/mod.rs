//! The Kubernetes side, on only with `--node-name` and credentials.
//!
//! - [`annotation`]: the `krafty.dev/plugins` annotation on this node (server-side apply).
//! - [`events`]: Events about installs, restores, failures and cleanups.
//! - [`pods`]: the watch of this node's pods that drives the orphan reconciler.
//! - [`nodes`]: the watch of the Nodes that keeps multi-node networks' tunnel peers
//!   (`--peers-source`, see `crate::peers`), with [`remote_pods`]: where the pods of other
//!   nodes are, from every pod's Multus network-status.
//!
//! RBAC needed: nodes get/patch (own node), pods list/watch, events.k8s.io events
//! create/patch (patch: repeated Events are counted as a series on the first one); with
//! `--address-pools` (see `crate::blocks`) also nodes get/list and krafty.io kraftyblocks
//! get/list/create/delete; with the Nodes as peers source, nodes list/watch (and the pods of
//! every node, which pods list/watch grants already).

pub mod annotation;
pub mod events;
pub mod nodes;
pub mod pods;
pub mod remote_pods;

use std::time::Duration;

use thiserror::Error;

/// The server-side-apply field manager, and the Events' reporting component.
pub const FIELD_MANAGER: &str = "krafty-installer";

/// Retries against the API server start here and double up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("no Kubernetes credentials found: {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from the in-cluster service account (or a kubeconfig, for development).
pub async fn connect() -> Result<kube::Client, ConnectError> {
    let config = kube::Config::infer().await?;
    Ok(kube::Client::try_from(config)?)
}

/// The next delay of a doubling backoff.
pub fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(MAX_RETRY_DELAY)
}
