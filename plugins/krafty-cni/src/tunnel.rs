//! A multi-node network's tunnel on one node: the VXLAN port (`krx<id>`) on the network's
//! shared bridge that joins it to the same network's bridges on the other nodes.
//!
//! The port learns nothing (every remote MAC and flood destination is krafty's), its bridge
//! learns nothing behind it, and ARP and neighbour solicitations for the bridge's own addresses
//! are answered where they are asked (`neigh_suppress`): the gateway, with the same address and
//! MAC on every node, never crosses the tunnel. The bridge, its pods and the port get the
//! underlay's MTU less the encapsulation.

use std::net::IpAddr;
use std::path::Path;

use crate::chain::{self, NodeDeviceKind, Placement};
use crate::config::{ValidBridgeConfig, ValidMultiNode};
use crate::error::{code, Error};
use crate::multinode::{self, NodeList, Underlay};
use crate::naming;
use crate::netlink::{InfoKind, Link, Netlink, VxlanSpec};
use crate::skel::Request;

/// CHECK of a stretched network's VXLAN port: there, up, on the bridge, with the config's VNI
/// and port, learning nothing.
pub async fn verify(
    netlink: &Netlink,
    bridge: &Link,
    multi_node: &ValidMultiNode,
    network: &str,
) -> Result<(), Error> {
    let place = Placement::of_network(NodeDeviceKind::Vxlan, network);
    let name = &place.name;
    let port = place
        .existing(netlink, NodeDeviceKind::Vxlan, None)
        .await?
        .ok_or_else(|| Error::CheckFailed(format!("VXLAN port {name} does not exist")))?;
    let info = port.vxlan.clone().unwrap_or_default();
    let wanted = (multi_node.vni(network), multi_node.port);
    if (info.vni, info.port) != wanted || info.learning {
        return Err(Error::CheckFailed(format!(
            "VXLAN port {name} has VNI {} and UDP port {} (learning {}), expected VNI {} and UDP \
             port {} without learning",
            info.vni, info.port, info.learning, wanted.0, wanted.1
        )));
    }
    if port.controller != Some(bridge.index) || !port.up {
        return Err(Error::CheckFailed(format!(
            "VXLAN port {name} must be up on bridge {}",
            bridge.name
        )));
    }
    Ok(())
}

/// A stretched network's tunnel on this node, planned before anything is made.
pub struct Tunnel {
    place: Placement,
    vni: u32,
    port: u16,
    underlay: Underlay,
    /// The bridge's, the tunnel's and the pods' MTU.
    pub mtu: u32,
    /// Where broadcast and unknown traffic goes when the port is new: every other node.
    flood_to: Vec<IpAddr>,
}

impl Tunnel {
    /// krafty-bridge's ADD: the tunnel of `config`'s network, if it is stretched across nodes.
    pub async fn plan_for<C>(
        netlink: &Netlink,
        request: &Request<C>,
        config: &ValidBridgeConfig,
    ) -> Result<Option<Tunnel>, Error> {
        let Some(multi_node) = &config.multi_node else {
            return Ok(None);
        };
        let root = &request.state_root;
        Tunnel::plan(netlink, root, &request.network, multi_node, config.mtu)
            .await
            .map(Some)
    }

    /// Reads the node list the node agent keeps, finds this node's underlay in it, and checks
    /// the configured MTU against it.
    pub async fn plan(
        netlink: &Netlink,
        state_root: &Path,
        network: &str,
        multi_node: &ValidMultiNode,
        configured_mtu: Option<u32>,
    ) -> Result<Tunnel, Error> {
        let path = multinode::nodes_file(state_root);
        let list = NodeList::read(&path)?.ok_or_else(|| {
            Error::TryAgainLater(format!(
                "the node list {} does not exist yet: the node agent (krafty-installer) writes \
                 it once it knows the nodes of the cluster",
                path.display()
            ))
        })?;
        let underlay = multinode::find_underlay(netlink, &list, multi_node.underlay, &path).await?;
        let fits = underlay.inner_mtu();
        let mtu = match configured_mtu {
            None => fits,
            Some(mtu) if mtu <= fits => mtu,
            Some(mtu) => {
                return Err(Error::invalid_config(format!(
                    "mtu {mtu} does not fit the tunnel: the underlay {} has MTU {}, less {} bytes \
                     of VXLAN over {} leaves {fits}",
                    underlay.device.name,
                    underlay.device.mtu.unwrap_or(1500),
                    multi_node.underlay.overhead(),
                    multi_node.underlay.as_str()
                )))
            }
        };
        let flood_to = list
            .addresses(multi_node.underlay)
            .filter(|address| *address != underlay.address)
            .collect();
        Ok(Tunnel {
            place: Placement::of_network(NodeDeviceKind::Vxlan, network),
            vni: multi_node.vni(network),
            port: multi_node.port,
            underlay,
            mtu,
            flood_to,
        })
    }

    /// ADD, under the network's lock with the record begun: joins `bridge` to the other nodes.
    /// A VNI or UDP port taken on this node is the config's fault, and nothing of this ADD
    /// stays: the bridge goes too when this ADD made it (`bridge_is_new`; under the lock no
    /// other pod uses it yet), and the record when it holds nothing else.
    pub async fn join<C>(
        &self,
        netlink: &Netlink,
        bridge: &Link,
        bridge_is_new: bool,
        request: &Request<C>,
    ) -> Result<(), Error> {
        let Err(error) = self.attach(netlink, bridge).await else {
            return Ok(());
        };
        if error.code() == code::INVALID_CONFIG {
            if bridge_is_new {
                netlink.delete(bridge).await?;
            }
            request.records().remove_if_begun(request.attachment()?)?;
        }
        Err(error)
    }

    /// Finds or creates the VXLAN port on `bridge` and brings it to the wanted state (under the
    /// network's lock, the record begun). A port that is not up was cut short before it was
    /// configured (it goes up last): it is configured again.
    async fn attach(&self, netlink: &Netlink, bridge: &Link) -> Result<(), Error> {
        if bridge.mtu != Some(self.mtu) {
            netlink.set_mtu(bridge, self.mtu).await?;
        }
        let name = &self.place.name;
        let found = self
            .place
            .existing(netlink, NodeDeviceKind::Vxlan, Some(&self.place.mark))
            .await?;
        let (port, created) = match found {
            Some(port) => (port, false),
            None => (self.create(netlink, bridge).await?, true),
        };
        let info = port.vxlan.clone().unwrap_or_default();
        if (info.vni, info.port, info.local) != (self.vni, self.port, Some(self.underlay.address)) {
            return Err(Error::DeviceConflict {
                name: name.clone(),
                reason: format!(
                    "has VNI {}, UDP port {} and source {:?}, but this ADD asks for VNI {}, UDP \
                     port {} and source {}: the network's multiNode or this node's address \
                     changed while it had pods here",
                    info.vni, info.port, info.local, self.vni, self.port, self.underlay.address
                ),
            });
        }
        if port.controller != Some(bridge.index) {
            netlink.set_controller(&port, bridge.index).await?;
        }
        if port.mtu != Some(self.mtu) {
            netlink.set_mtu(&port, self.mtu).await?;
        }
        if port.up {
            return Ok(());
        }
        netlink.set_tunnel_port(&port).await?;
        for destination in &self.flood_to {
            netlink
                .add_flood_destination(port.index, *destination)
                .await?;
        }
        match netlink.set_up(&port).await {
            Err(Error::Netlink {
                errno: Some(libc::EADDRINUSE | libc::EBUSY),
                ..
            }) => {
                if created {
                    netlink.delete(&port).await?;
                }
                Err(Error::invalid_config(format!(
                    "multiNode.port {} is taken on this node by a socket other than a VXLAN \
                     device krafty can share it with: give the network another multiNode.port",
                    self.port
                )))
            }
            other => other,
        }
    }

    async fn create(&self, netlink: &Netlink, bridge: &Link) -> Result<Link, Error> {
        let spec = VxlanSpec {
            name: &self.place.name,
            alias: &self.place.mark,
            vni: self.vni,
            port: self.port,
            local: self.underlay.address,
            mtu: self.mtu,
            bridge: bridge.index,
            group: self.place.group(),
        };
        if !netlink.create_vxlan(&spec).await? {
            // Not our name (it was not there under the lock): the kernel's "exists" is about
            // the VNI, taken on this UDP port by another device.
            if netlink.link(&self.place.name).await?.is_none() {
                let holder = netlink
                    .links_of_kind(InfoKind::Vxlan)
                    .await?
                    .into_iter()
                    .find(|l| {
                        l.vxlan
                            .as_ref()
                            .is_some_and(|v| (v.vni, v.port) == (self.vni, self.port))
                    });
                return Err(Error::invalid_config(format!(
                    "multiNode.vni {} on UDP port {} is taken on this node by {}: give the \
                     network another multiNode.vni",
                    self.vni,
                    self.port,
                    holder.map_or("another VXLAN device".to_string(), |l| l.name)
                )));
            }
        }
        self.place
            .existing(netlink, NodeDeviceKind::Vxlan, Some(&self.place.mark))
            .await?
            .ok_or_else(|| {
                Error::TryAgainLater(format!(
                    "VXLAN port {} vanished right after it was created",
                    self.place.name
                ))
            })
    }
}

/// krafty-veth's ADD: on a network stretched across nodes the bridge's MTU is the tunnel's
/// (the underlay's less the encapsulation), and a pod MTU above it would send frames the
/// tunnel port drops.
pub async fn refuse_pod_mtu_over_tunnel(
    netlink: &Netlink,
    bridge: &Link,
    mtu: u32,
    network: &str,
) -> Result<(), Error> {
    let tunnel = naming::shared_vxlan_name(network);
    let bridge_mtu = bridge.mtu.unwrap_or(1500);
    match netlink.link(&tunnel).await? {
        Some(port) if port.controller == Some(bridge.index) && mtu > bridge_mtu => {
            Err(Error::invalid_config(format!(
                "mtu {mtu} is more than the {bridge_mtu} of the stretched network's bridge {} \
                 (the underlay's MTU less the VXLAN encapsulation)",
                bridge.name
            )))
        }
        _ => Ok(()),
    }
}

/// krafty-bridge's GC: its bridges, and multi-node networks' VXLAN ports with them (whatever
/// the config says now). Keeps going past errors and reports them all.
pub async fn collect_bridges_and_tunnels<C>(
    netlink: &Netlink,
    request: &Request<C>,
) -> Result<(), Error> {
    let mut errors = Vec::new();
    for kind in [NodeDeviceKind::Bridge, NodeDeviceKind::Vxlan] {
        if let Err(error) = chain::collect_node_devices(netlink, request, kind).await {
            errors.push(error);
        }
    }
    Error::from_all(errors)
}
