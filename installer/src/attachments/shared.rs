//! Shared devices without GC: a `scope: network` network's VRF and bridge (and a stretched
//! network's VXLAN port) outlive its pods by design, and runtimes at CNI 1.0.0 never send the
//! GC that would remove them. The node agent removes them once no attachment of their network
//! has been seen on the node for a grace period.
//!
//! An attachment is seen while the network has a record on the node (the plugins begin one,
//! under the network's lock, before they release the lock on a shared device; see
//! `krafty_cni::state`) or a veth marked for it. The removal takes the same lock and looks
//! again, so a concurrent ADD either finds the devices it was given or, arriving after the
//! removal, creates them anew. A shared device left unmarked by an ADD killed right after
//! creating it (in the shared group range, with no network's name) is removed the same way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use krafty_cni::lock::NodeLock;
use krafty_cni::naming;
use krafty_cni::netlink::{InfoKind, Link, Netlink};
use krafty_cni::state::Records;
use krafty_cni::Attachment;

pub struct SharedDeviceSweeper {
    /// Where the plugins keep their attachment records.
    pub state_dir: PathBuf,
    /// Where the plugins keep their locks.
    pub run_dir: PathBuf,
    /// How long a network must have been without attachments before its devices go.
    pub grace: Duration,
    /// When each shared device's network was last seen in use (or the device first seen).
    last_used: HashMap<String, Instant>,
}

/// A shared device on the node, and the network it is for when known.
struct SharedDevice {
    link: Link,
    network: Option<String>,
}

impl SharedDeviceSweeper {
    pub fn new(state_dir: PathBuf, run_dir: PathBuf, grace: Duration) -> SharedDeviceSweeper {
        SharedDeviceSweeper {
            state_dir,
            run_dir,
            grace,
            last_used: HashMap::new(),
        }
    }

    /// One look at the node at `now`: removes the shared devices whose network has been unused
    /// for the grace period, and returns their names. Errors are logged and the device kept.
    pub async fn sweep(&mut self, netlink: &Netlink, now: Instant) -> Vec<String> {
        // Locks of invocations killed while holding them: their files outlive them.
        NodeLock::clear_stale(&self.run_dir);
        let devices = match shared_devices(netlink).await {
            Ok(devices) => devices,
            Err(error) => {
                tracing::warn!("listing shared devices: {error}");
                return Vec::new();
            }
        };
        if devices.is_empty() {
            self.last_used.clear();
            return Vec::new();
        }
        let in_use = match networks_in_use(netlink, &Records::new(&self.state_dir)).await {
            Ok(in_use) => in_use,
            Err(error) => {
                tracing::warn!("finding the networks in use: {error}");
                return Vec::new();
            }
        };
        let mut removed = Vec::new();
        for device in devices {
            // An unmarked device is its network's if a network in use gives that name.
            let network = device.network.clone().or_else(|| {
                in_use
                    .iter()
                    .find(|n| shared_names(n).contains(&device.link.name))
                    .cloned()
            });
            let key = network.clone().unwrap_or_else(|| device.link.name.clone());
            if network.as_ref().is_some_and(|n| in_use.contains(n)) {
                self.last_used.insert(key, now);
                continue;
            }
            let since = *self.last_used.entry(key.clone()).or_insert(now);
            if now.duration_since(since) < self.grace {
                continue;
            }
            match self.remove(netlink, &device, network.as_deref()).await {
                Ok(true) => {
                    tracing::info!(
                        "removed {} of network {} (no attachment for {}s)",
                        device.link.name,
                        network.as_deref().unwrap_or("unknown"),
                        self.grace.as_secs()
                    );
                    self.last_used.remove(&key);
                    removed.push(device.link.name);
                }
                Ok(false) => {
                    self.last_used.insert(key, now);
                }
                Err(error) => tracing::warn!("removing {}: {error}", device.link.name),
            }
        }
        removed
    }

    /// Removes `device` under its network's lock if the network still has no attachment;
    /// `false` when one appeared meanwhile.
    async fn remove(
        &self,
        netlink: &Netlink,
        device: &SharedDevice,
        network: Option<&str>,
    ) -> Result<bool, krafty_cni::Error> {
        let _lock = match network {
            Some(network) => Some(NodeLock::network(&self.run_dir, network)?),
            None => None,
        };
        if let Some(network) = network {
            let records = Records::new(&self.state_dir);
            let (recorded, _) = records.list(network);
            if !recorded.is_empty() || has_marked_veth(netlink, network).await? {
                return Ok(false);
            }
        }
        // Looked up again: under the lock it is the device an ADD would find.
        match netlink.link(&device.link.name).await? {
            Some(link) if link.index == device.link.index => {
                netlink.delete(&link).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The names of a network's shared VRF, bridge and VXLAN port.
fn shared_names(network: &str) -> [String; 3] {
    [
        naming::shared_vrf_name(network),
        naming::shared_bridge_name(network),
        naming::shared_vxlan_name(network),
    ]
}

/// Every VRF, bridge and VXLAN port that is a network's shared device: marked for a network, or
/// unmarked in the shared group range (its creator killed before it marked it).
async fn shared_devices(netlink: &Netlink) -> Result<Vec<SharedDevice>, krafty_cni::Error> {
    let mut devices = Vec::new();
    for kind in [InfoKind::Vrf, InfoKind::Bridge, InfoKind::Vxlan] {
        for link in netlink.links_of_kind(kind).await? {
            let network = link.alias.as_deref().and_then(naming::network_of);
            let unmarked =
                link.alias.is_none() && naming::NETWORK_GROUP_RANGE.contains(&link.group);
            match network {
                // A mark alone is not proof: the device must carry the name it would have.
                Some(network) if shared_names(network).contains(&link.name) => {
                    devices.push(SharedDevice {
                        network: Some(network.to_string()),
                        link,
                    })
                }
                None if unmarked => devices.push(SharedDevice {
                    network: None,
                    link,
                }),
                _ => {}
            }
        }
    }
    Ok(devices)
}

/// The networks with an attachment on the node: a record, or a veth marked for one.
async fn networks_in_use(
    netlink: &Netlink,
    records: &Records,
) -> Result<Vec<String>, krafty_cni::Error> {
    let (recorded, _) = records.list_all();
    let mut networks: Vec<String> = recorded
        .into_iter()
        .map(|stored| stored.attachment.network().to_string())
        .collect();
    for link in netlink.links_of_kind(InfoKind::Veth).await? {
        if let Some(attachment) = link.alias.as_deref().and_then(Attachment::from_any_mark) {
            networks.push(attachment.network().to_string());
        }
    }
    networks.sort();
    networks.dedup();
    Ok(networks)
}

async fn has_marked_veth(netlink: &Netlink, network: &str) -> Result<bool, krafty_cni::Error> {
    Ok(netlink
        .links_of_kind(InfoKind::Veth)
        .await?
        .iter()
        .any(|link| {
            link.alias
                .as_deref()
                .and_then(Attachment::from_any_mark)
                .is_some_and(|a| a.network() == network)
        }))
}

/// Sweeps every `interval` until `shutdown`, each sweep on a blocking thread with a runtime of
/// its own (the agent's network namespace, the flock waits).
pub async fn run(
    sweeper: SharedDeviceSweeper,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut sweeper = Some(sweeper);
    loop {
        let Some(mut current) = sweeper.take() else {
            return;
        };
        let swept = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async {
                    match Netlink::connect() {
                        Ok(netlink) => {
                            current.sweep(&netlink, Instant::now()).await;
                        }
                        Err(error) => tracing::warn!("shared-device sweep: {error}"),
                    }
                }),
                Err(error) => tracing::warn!("shared-device sweep: {error}"),
            }
            current
        })
        .await;
        match swept {
            Ok(back) => sweeper = Some(back),
            Err(error) => {
                tracing::warn!("the shared-device sweep stopped: {error}");
                return;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
