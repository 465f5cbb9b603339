//! The peers of networks stretched across nodes (`multiNode`), kept by the node agent.
//!
//! The agent takes the nodes of the cluster from one source: a peers file (`NAME ADDRESS`
//! lines, re-read on every change; [`run`]) or the Kubernetes API (a watch of the Nodes,
//! `cluster::nodes`). Either feeds [`keep`], which writes the nodes to the node list the
//! plugins read (`<state root>/nodes`) and keeps every multi-node network's VXLAN port on this
//! node flooding to exactly the other listed nodes: one all-zero forwarding entry per peer of
//! the port's underlay family. Where the API says which node a pod of the network runs on
//! (Multus' network-status, `cluster::remote_pods`), the port also sends that pod's MAC to its
//! node alone, and the bridge sends it to the port alone: known pods are reached without
//! flooding. A pass runs on every change of the source, on every new or changed VXLAN device
//! (a port a plugin created from an older node list), and every [`RESYNC_INTERVAL`] in case an
//! event was missed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use krafty_cni::config::UnderlayFamily;
use krafty_cni::multinode::{self, NodeList};
use krafty_cni::naming;
use krafty_cni::netlink::{self, format_mac, FdbTable, InfoKind, Link, Netlink, FLOOD_MAC};
use thiserror::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::watch::{debounced, DirWatcher};

/// A full pass even without events.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// The link a ConfigMap volume swaps to publish new contents.
const CONFIG_MAP_DATA: &str = "..data";

/// Quiet time after the last file or device event before a pass.
const SETTLE: Duration = Duration::from_millis(20);

#[derive(Debug, Error)]
pub enum PeersError {
    #[error("cannot read the peers file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the peers file {path} is not a node list: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write the node list {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kernel(#[from] krafty_cni::Error),
}

/// Where the pods of other nodes are: per network, the MAC of each of their interfaces on it
/// and the node the pod runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePods(pub BTreeMap<String, BTreeMap<[u8; 6], String>>);

/// What a pass keeps the tunnels to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub nodes: NodeList,
    /// `None` while the pods are not known yet: the ports keep the MACs they have.
    pub remote_pods: Option<RemotePods>,
}

/// What one pass changed on one VXLAN port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortChange {
    pub port: String,
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    /// Remote pods' MACs now sent to their node alone, and those no longer.
    pub macs_set: usize,
    pub macs_removed: usize,
}

impl PortChange {
    fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.macs_set == 0
            && self.macs_removed == 0
    }
}

/// Keeps the node list and the tunnels' flood lists of one node.
#[derive(Debug, Clone)]
pub struct PeerKeeper {
    pub peers_file: PathBuf,
    /// The node's state root, where the node list goes.
    pub state_root: PathBuf,
}

impl PeerKeeper {
    /// The peers file as a node list; `None` when it does not exist (nothing is changed then:
    /// a missing file is not an empty cluster).
    pub fn read_peers(&self) -> Result<Option<NodeList>, PeersError> {
        let text = match std::fs::read_to_string(&self.peers_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PeersError::Read {
                    path: self.peers_file.clone(),
                    source,
                })
            }
        };
        NodeList::parse(&text)
            .map(Some)
            .map_err(|reason| PeersError::Parse {
                path: self.peers_file.clone(),
                reason,
            })
    }
}

/// One pass: the node list written (when it changed), then every tunnel port's flood list
/// brought to the listed nodes but this one, and its known MACs to the remote pods. Returns
/// the ports it changed.
pub async fn pass(
    state_root: &Path,
    topology: &Topology,
    netlink: &Netlink,
) -> Result<Vec<PortChange>, PeersError> {
    write_node_list(state_root, &topology.nodes)?;
    sync_ports(netlink, topology).await
}

/// Writes `list` to the node list below `state_root`, atomically, unless it holds it already.
fn write_node_list(state_root: &Path, list: &NodeList) -> Result<(), PeersError> {
    let path = multinode::nodes_file(state_root);
    let text = list.render();
    if std::fs::read_to_string(&path).is_ok_and(|current| current == text) {
        return Ok(());
    }
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(state_root)?;
        let temporary = state_root.join(format!(".{}.tmp", multinode::NODES_FILE));
        std::fs::write(&temporary, &text)?;
        std::fs::rename(&temporary, &path)
    };
    write().map_err(|source| PeersError::Write { path, source })
}

/// Whether `link` is a multi-node network's VXLAN port, marked by the plugin that made it (an
/// unmarked one is still being made under its network's lock; the next pass finds it).
pub fn is_tunnel_port(link: &Link) -> bool {
    link.alias
        .as_deref()
        .and_then(naming::network_of)
        .is_some_and(|network| link.name == naming::shared_vxlan_name(network))
}

/// The node's own addresses: the listed address of this node is not a peer.
pub async fn own_addresses(netlink: &Netlink) -> Result<HashSet<IpAddr>, krafty_cni::Error> {
    Ok(netlink
        .all_addresses()
        .await?
        .into_iter()
        .map(|(_, net)| net.addr())
        .collect())
}

/// The VXLAN ports of multi-node networks on the node.
pub async fn tunnel_ports(netlink: &Netlink) -> Result<Vec<Link>, krafty_cni::Error> {
    Ok(netlink
        .links_of_kind(InfoKind::Vxlan)
        .await?
        .into_iter()
        .filter(is_tunnel_port)
        .collect())
}

fn underlay_family(port: &Link) -> UnderlayFamily {
    match port.vxlan.as_ref().and_then(|v| v.local) {
        Some(IpAddr::V6(_)) => UnderlayFamily::Ipv6,
        _ => UnderlayFamily::Ipv4,
    }
}

/// Where a tunnel port should flood: the listed addresses of its underlay's family that are
/// not this node's own.
pub fn flood_wanted(list: &NodeList, port: &Link, own: &HashSet<IpAddr>) -> BTreeSet<IpAddr> {
    list.addresses(underlay_family(port))
        .filter(|a| !own.contains(a))
        .collect()
}

/// Where a tunnel port should send each remote pod's MAC: to the first listed address of the
/// pod's node in the port's underlay family. Pods of unlisted nodes, or of this one, are left
/// to flooding.
pub fn macs_wanted(
    nodes: &NodeList,
    pods: &RemotePods,
    port: &Link,
    own: &HashSet<IpAddr>,
) -> BTreeMap<[u8; 6], IpAddr> {
    let family = underlay_family(port);
    let network = port.alias.as_deref().and_then(naming::network_of);
    let Some(macs) = network.and_then(|network| pods.0.get(network)) else {
        return BTreeMap::new();
    };
    let node_address = |node: &str| {
        let mut listed = nodes.entries().filter(|(name, _)| *name == node);
        listed
            .find(|(_, address)| family.contains(address))
            .map(|(_, address)| address)
            .filter(|address| !own.contains(address))
    };
    macs.iter()
        .filter_map(|(mac, node)| Some((*mac, node_address(node)?)))
        .collect()
}

/// What a tunnel port's forwarding entries say, read in one dump.
#[derive(Debug, Default)]
pub struct PortEntries {
    /// The destinations of its all-zero entries: where broadcast and unknown traffic go.
    pub flood_to: BTreeSet<IpAddr>,
    /// Its own entries for remote MACs: where it sends each.
    pub sent: BTreeMap<[u8; 6], Option<IpAddr>>,
    /// The remote MACs the bridge puts behind the port.
    pub behind: BTreeSet<[u8; 6]>,
}

/// Reads `port`'s forwarding entries (the port's own address, which the bridge keeps for it,
/// left out).
pub async fn port_entries(
    netlink: &Netlink,
    port: &Link,
) -> Result<PortEntries, krafty_cni::Error> {
    let mut entries = PortEntries::default();
    for entry in netlink.fdb(port.index).await? {
        match (entry.table, entry.mac == FLOOD_MAC) {
            (FdbTable::Device, true) => entries.flood_to.extend(entry.destination),
            (FdbTable::Device, false) => {
                entries.sent.insert(entry.mac, entry.destination);
            }
            (FdbTable::Bridge, false) if !entry.own_address => {
                entries.behind.insert(entry.mac);
            }
            (FdbTable::Bridge, _) => {}
        }
    }
    Ok(entries)
}

/// Brings every tunnel port's all-zero entries to the listed addresses of its family that
/// are not this node's own, and (when the pods are known) its remote MACs to [`macs_wanted`].
/// Keeps going past a failing port and reports the first error.
pub async fn sync_ports(
    netlink: &Netlink,
    topology: &Topology,
) -> Result<Vec<PortChange>, PeersError> {
    let own = own_addresses(netlink).await?;
    let mut changes = Vec::new();
    let mut first_error = None;
    for port in tunnel_ports(netlink).await? {
        match sync_port(netlink, &port, topology, &own).await {
            Ok(change) if change.is_empty() => {}
            Ok(change) => {
                tracing::info!(
                    "{}: flooding to {} more and {} fewer nodes ({:?} added, {:?} removed); \
                     {} remote MACs set, {} removed",
                    change.port,
                    change.added.len(),
                    change.removed.len(),
                    change.added,
                    change.removed,
                    change.macs_set,
                    change.macs_removed
                );
                changes.push(change);
            }
            Err(error) => {
                tracing::warn!("{}: {error}", port.name);
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error.into()),
        None => Ok(changes),
    }
}

async fn sync_port(
    netlink: &Netlink,
    port: &Link,
    topology: &Topology,
    own: &HashSet<IpAddr>,
) -> Result<PortChange, krafty_cni::Error> {
    let wanted = flood_wanted(&topology.nodes, port, own);
    let PortEntries {
        flood_to: current,
        sent,
        behind,
    } = port_entries(netlink, port).await?;
    let mut change = PortChange {
        port: port.name.clone(),
        ..PortChange::default()
    };
    for address in wanted.difference(&current) {
        netlink.add_flood_destination(port.index, *address).await?;
        change.added.push(*address);
    }
    for address in current.difference(&wanted) {
        netlink
            .remove_flood_destination(port.index, *address)
            .await?;
        change.removed.push(*address);
    }
    let Some(pods) = &topology.remote_pods else {
        return Ok(change);
    };
    let wanted = macs_wanted(&topology.nodes, pods, port, own);
    for (mac, destination) in &wanted {
        if sent.get(mac) != Some(&Some(*destination)) || !behind.contains(mac) {
            netlink
                .set_remote_mac(port.index, *mac, *destination)
                .await?;
            change.macs_set += 1;
        }
    }
    let known: BTreeSet<[u8; 6]> = sent.into_keys().chain(behind).collect();
    for mac in known.iter().filter(|mac| !wanted.contains_key(*mac)) {
        tracing::debug!("{}: forgetting {}", port.name, format_mac(mac));
        netlink.remove_remote_mac(port.index, *mac).await?;
        change.macs_removed += 1;
    }
    Ok(change)
}

/// The agent's loop on a peers file: [`keep`] fed by the file, woken by its changes. Runs in
/// the calling thread's network namespace.
pub async fn run(keeper: PeerKeeper, shutdown: CancellationToken) {
    let wake = Arc::new(Notify::new());
    let directory = keeper
        .peers_file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    // A file from a ConfigMap volume is a link through `..data`, which the kubelet swaps
    // with a rename: that rename is the change.
    let names: HashSet<OsString> = keeper
        .peers_file
        .file_name()
        .into_iter()
        .map(OsString::from)
        .chain([OsString::from(CONFIG_MAP_DATA)])
        .collect();
    let mut watcher = match DirWatcher::new(vec![directory], names, Arc::clone(&wake)) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!("{error}: re-reading the peers file every {RESYNC_INTERVAL:?} only");
            None
        }
    };
    let source = format!("the peers file {}", keeper.peers_file.display());
    let nodes = || {
        if let Some(Err(error)) = watcher.as_mut().map(DirWatcher::ensure_watching) {
            tracing::warn!("{error}; retrying with the next pass");
        }
        let list = keeper.read_peers()?;
        if list.is_none() {
            tracing::warn!(
                "the peers file {} does not exist; the tunnels keep their peers",
                keeper.peers_file.display()
            );
        }
        // A peers file names no pods: every remote MAC is left to flooding.
        Ok(list.map(|nodes| Topology {
            nodes,
            remote_pods: Some(RemotePods::default()),
        }))
    };
    keep(&keeper.state_root, &source, nodes, &wake, shutdown).await;
}

/// The loop both sources share: a pass over `topology()` now, whenever `wake` is notified, on
/// every VXLAN device event and every [`RESYNC_INTERVAL`], until `shutdown`. `topology()`
/// answers `None` while the nodes are unknown: nothing is changed then. Runs in the calling
/// thread's network namespace.
pub async fn keep(
    state_root: &Path,
    source: &str,
    mut topology: impl FnMut() -> Result<Option<Topology>, PeersError>,
    wake: &Notify,
    shutdown: CancellationToken,
) {
    let netlink = match Netlink::connect() {
        Ok(netlink) => netlink,
        Err(error) => {
            tracing::error!("keeping no tunnel peers: {error}");
            return;
        }
    };
    let mut devices = match netlink::link_changes() {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::warn!("{error}: new tunnel ports get their peers within {RESYNC_INTERVAL:?}");
            None
        }
    };
    tracing::info!("keeping the tunnels' peers from {source}");
    loop {
        let passed = match topology() {
            Ok(Some(topology)) => pass(state_root, &topology, &netlink).await.map(drop),
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = passed {
            tracing::warn!("{error}; retrying with the next event");
        }
        let device_event = async {
            match devices.as_mut() {
                Some(stream) => loop {
                    match stream.next().await {
                        Some(link) if link.is_kind(&InfoKind::Vxlan) => break,
                        Some(_) => {}
                        None => std::future::pending::<()>().await,
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = debounced(wake, SETTLE) => {},
            () = device_event => tokio::time::sleep(SETTLE).await,
            () = tokio::time::sleep(RESYNC_INTERVAL) => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(network: &str, local: &str) -> Link {
        Link {
            index: 7,
            name: naming::shared_vxlan_name(network),
            kind: Some(InfoKind::Vxlan),
            alias: Some(naming::network_mark(network)),
            vxlan: Some(netlink::VxlanInfo {
                local: Some(local.parse().unwrap()),
                ..netlink::VxlanInfo::default()
            }),
            ..Link::default()
        }
    }

    #[test]
    fn remote_macs_go_to_their_nodes_address_of_the_ports_family() {
        let nodes =
            NodeList::parse("a 10.0.0.1\na fd00::1\nb 10.0.0.2\nb fd00::2\nc 10.0.0.3\n").unwrap();
        let mac = |last: u8| [2, 0, 0, 0, 0, last];
        let on = |pairs: &[(u8, &str)]| -> BTreeMap<[u8; 6], String> {
            pairs
                .iter()
                .map(|(m, n)| (mac(*m), n.to_string()))
                .collect()
        };
        let pods = RemotePods(BTreeMap::from([
            (
                "net".to_string(),
                on(&[(2, "b"), (3, "c"), (9, "gone"), (1, "a")]),
            ),
            ("other".to_string(), on(&[(4, "b")])),
        ]));
        // Node a's own addresses: its own pods (a clash in the report) are never sent away.
        let own: HashSet<IpAddr> = ["10.0.0.1", "fd00::1"].map(|a| a.parse().unwrap()).into();
        let v4 = macs_wanted(&nodes, &pods, &port("net", "10.0.0.1"), &own);
        let address = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(
            v4,
            BTreeMap::from([(mac(2), address("10.0.0.2")), (mac(3), address("10.0.0.3"))])
        );
        // Over an IPv6 underlay node c, listed with IPv4 only, is left to flooding.
        let v6 = macs_wanted(&nodes, &pods, &port("net", "fd00::1"), &own);
        assert_eq!(v6, BTreeMap::from([(mac(2), address("fd00::2"))]));
        // A network without known pods wants none.
        assert!(macs_wanted(&nodes, &pods, &port("quiet", "10.0.0.1"), &own).is_empty());
    }
}
