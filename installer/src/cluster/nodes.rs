//! The nodes of the cluster from the Kubernetes API: a watch of every Node feeds the node
//! list and the tunnels' flood lists ([`crate::peers::keep`]) with each Node's InternalIP
//! addresses (IPv4 and IPv6), so that a Node that appears or goes reaches them within a pass;
//! a watch of every pod ([`remote_pods`]) feeds the tunnels where other nodes' pods are.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use krafty_cni::multinode::NodeList;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::remote_pods;
use crate::peers::{self, RemotePods, Topology};

/// The address type the node list takes: the one the nodes reach each other on.
const INTERNAL_IP: &str = "InternalIP";

/// The node list of the Nodes in `store`: every InternalIP of each. A Node without one, or
/// with a name or address the list refuses, is left out (logged at debug: it stays so until
/// the Node changes, and every pass would repeat a warning).
pub fn node_list(store: &Store<Node>) -> NodeList {
    let mut list = NodeList::default();
    for node in store.state() {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for address in addresses.into_iter().flatten() {
            if address.type_ != INTERNAL_IP {
                continue;
            }
            let inserted = address
                .address
                .parse()
                .map_err(|_| format!("{:?} is not an IP address", address.address))
                .and_then(|ip| list.insert(name, ip));
            if let Err(reason) = inserted {
                tracing::debug!("node {name}: {reason}; left out of the node list");
            }
        }
    }
    list
}

/// Watches the Nodes of `nodes_api` and the pods of `pods_api` and keeps the node list below
/// `state_root`, the tunnels' flood lists to the Nodes and their remote MACs to the pods of
/// other nodes than `this_node`, until `shutdown`. Nothing is changed before the first full
/// list of Nodes; no MAC before the first of pods. Runs in the calling thread's network
/// namespace.
pub async fn run_peer_watch(
    nodes_api: Api<Node>,
    pods_api: Api<Pod>,
    this_node: String,
    state_root: PathBuf,
    shutdown: CancellationToken,
) {
    let (store, writer) = reflector::store();
    let listed = AtomicBool::new(false);
    let remote_pods: Mutex<Option<RemotePods>> = Mutex::new(None);
    let wake = Notify::new();
    let events = watcher(nodes_api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let watch_nodes = async {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    listed.store(true, Ordering::Release);
                    wake.notify_one();
                }
                // The store changes only at InitDone while a (re)list is under way.
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => wake.notify_one(),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(error) => tracing::warn!("watching the Nodes: {error}"),
            }
        }
    };
    let watch_pods = remote_pods::watch(pods_api, &this_node, |known| {
        *remote_pods.lock().unwrap_or_else(PoisonError::into_inner) = Some(known);
        wake.notify_one();
    });
    let topology = || {
        Ok(listed.load(Ordering::Acquire).then(|| Topology {
            nodes: node_list(&store),
            remote_pods: remote_pods
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }))
    };
    let keep = peers::keep(
        &state_root,
        "the Nodes and pods of the cluster",
        topology,
        &wake,
        shutdown,
    );
    tokio::select! {
        () = watch_nodes => tracing::warn!("the Node watch ended; the tunnels keep their peers"),
        () = watch_pods => tracing::warn!("the pod watch ended; the tunnels keep their remote MACs"),
        () = keep => {},
    }
}
