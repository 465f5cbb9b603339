//! krafty-bridge: the bridge on the node that pods' veths plug into.
//!
//! ADD creates (idempotently) the bridge — `krb<id>` for one attachment (`scope: pod`) or one
//! per network shared by its pods (`scope: network`) — enslaves it to the VRF an earlier
//! krafty-vrf reported in `prevResult` (without one the bridge stays in the main table), gives
//! it the gateway address(es) with the subnet's prefix and brings it up. DEL removes a pod's
//! bridge; GC removes bridges nothing uses any more; CHECK verifies kind, VRF, addresses and
//! state.
//!
//! A network with `multiNode` is stretched across nodes: its shared bridge gets a VXLAN port
//! (`krx<id>`) to the same network's bridges on the other nodes, whose addresses come from the
//! node list the node agent keeps (see `krafty_cni::multinode`); the bridge and pods get the
//! underlay's MTU less the encapsulation.

use krafty_cni::chain::{self, NodeDeviceKind, Placement};
use krafty_cni::config::{BridgeConfig, ValidBridgeConfig};
use krafty_cni::netlink::{self, BridgeSpec, InfoKind, Link, Netlink};
use krafty_cni::result::Interface;
use krafty_cni::tunnel::{self, Tunnel};
use krafty_cni::{naming, CniResult, Error, Plugin, Request};

struct Bridge;

impl Plugin for Bridge {
    const NAME: &'static str = "krafty-bridge";
    type Config = BridgeConfig;

    async fn add(&self, request: &Request<BridgeConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        let attachment = request.attachment()?;
        let place = Placement::of(NodeDeviceKind::Bridge, config.scope, attachment);
        let netlink = Netlink::connect()?;
        chain::refuse_taken_interface(&netlink, attachment).await?;
        let vrf = find_vrf(&netlink, request).await?;
        chain::refuse_mixed_scopes(vrf.as_ref(), config.scope)?;
        if vrf.is_none() && !place.shared {
            refuse_gateway_in_main_table(&netlink, &place, &config).await?;
        }
        // A stretched network's underlay, and the MTU it leaves, before anything is made.
        let tunnel = Tunnel::plan_for(&netlink, request, &config).await?;
        let mtu = tunnel.as_ref().map(|t| t.mtu).or(config.mtu);

        let _lock = place.lock(request)?;
        let alias = alias(&place, &config);
        let found = place
            .existing(&netlink, NodeDeviceKind::Bridge, Some(&alias))
            .await?;
        // Recorded as krafty-vrf does (see there).
        if found.is_none() || place.shared {
            request.begin()?;
        }
        let created = found.is_none();
        let bridge = match found {
            Some(existing) => existing,
            None => create(&netlink, &place, &alias, &config, mtu, vrf.as_ref()).await?,
        };
        if let Some(tunnel) = &tunnel {
            tunnel.join(&netlink, &bridge, created, request).await?;
        }
        // A bridge left by an interrupted ADD, or a shared one, is brought to the wanted state.
        let mac = naming::bridge_mac(&place.mark);
        if bridge.mac != netlink::format_mac(&mac) {
            netlink.set_mac(&bridge, mac).await?;
        }
        if let Some(vrf) = &vrf {
            if bridge.controller != Some(vrf.index) {
                netlink.set_controller(&bridge, vrf.index).await?;
            }
        }
        if !bridge.up {
            netlink.set_up(&bridge).await?;
        }
        // Addresses go on after enslavement, so that their routes land in the VRF's table.
        for network in &config.networks {
            netlink
                .add_address(bridge.index, network.gateway_address(), true)
                .await?;
        }

        let mut result = request.result_to_extend();
        result.push_interface(Interface {
            name: place.name,
            mac: netlink::format_mac(&mac),
            ..Interface::default()
        });
        Ok(result)
    }

    async fn del(&self, request: &Request<BridgeConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        chain::remove_node_device(NodeDeviceKind::Bridge, config.scope, request).await
    }

    async fn check(&self, request: &Request<BridgeConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let place = Placement::of(NodeDeviceKind::Bridge, config.scope, request.attachment()?);
        let name = &place.name;
        let prev_result = request
            .prev_result
            .as_ref()
            .ok_or_else(|| Error::CheckFailed("CHECK needs a prevResult".into()))?;
        if prev_result.interface_index(name, "").is_none() {
            return Err(Error::CheckFailed(format!(
                "prevResult does not list the bridge {name}"
            )));
        }
        let netlink = Netlink::connect()?;
        let bridge = place
            .existing(&netlink, NodeDeviceKind::Bridge, None)
            .await?
            .ok_or_else(|| Error::CheckFailed(format!("bridge {name} does not exist")))?;
        verify(&netlink, &bridge, &config, request).await
    }

    async fn status(&self, _: &Request<BridgeConfig>) -> Result<(), Error> {
        // Every kernel krafty runs on has bridges; being able to talk to it is what matters.
        Netlink::connect()?
            .links_of_kind(InfoKind::Bridge)
            .await
            .map(drop)
    }

    async fn gc(&self, request: &Request<BridgeConfig>) -> Result<(), Error> {
        tunnel::collect_bridges_and_tunnels(&Netlink::connect()?, request).await
    }
}

async fn find_vrf(
    netlink: &Netlink,
    request: &Request<BridgeConfig>,
) -> Result<Option<Link>, Error> {
    chain::find_node_device(
        netlink,
        request.prev_result.as_ref(),
        naming::VRF_PREFIX,
        InfoKind::Vrf,
    )
    .await
}

/// Without a VRF, pod-scope bridges sit in the node's main table: a second pod's bridge with
/// the same gateway address would take the node's route to the network from the first (or
/// leave itself unreachable), so a network in scope pod without krafty-vrf can hold one pod per
/// node. The second is refused before anything is made.
async fn refuse_gateway_in_main_table(
    netlink: &Netlink,
    place: &Placement,
    config: &ValidBridgeConfig,
) -> Result<(), Error> {
    let gateways: Vec<_> = config
        .networks
        .iter()
        .map(|n| n.gateway_address())
        .collect();
    for bridge in netlink.links_of_kind(InfoKind::Bridge).await? {
        if bridge.name == place.name || bridge.controller.is_some() {
            continue;
        }
        let addresses = netlink.addresses(bridge.index).await?;
        if let Some(taken) = gateways.iter().find(|g| addresses.contains(g)) {
            return Err(Error::invalid_config(format!(
                "gateway {taken} is already on bridge {} in the node's main table: without \
                 krafty-vrf, a network in scope \"pod\" can hold one pod per node; add \
                 krafty-vrf to the chain or use scope \"network\"",
                bridge.name
            )));
        }
    }
    Ok(())
}

/// The bridge's mark, and its flags, where krafty-veth reads them for the ports it adds.
fn alias(place: &Placement, config: &ValidBridgeConfig) -> String {
    if config.hairpin {
        format!("{} {}", place.mark, naming::HAIRPIN_FLAG)
    } else {
        place.mark.clone()
    }
}

async fn create(
    netlink: &Netlink,
    place: &Placement,
    alias: &str,
    config: &ValidBridgeConfig,
    mtu: Option<u32>,
    vrf: Option<&Link>,
) -> Result<Link, Error> {
    let spec = BridgeSpec {
        name: &place.name,
        alias,
        mac: naming::bridge_mac(&place.mark),
        mtu,
        promiscuous: config.promisc,
        controller: vrf.map(|v| v.index),
        group: place.group(),
        multicast_snooping: config.multicast_snooping,
    };
    netlink.create_bridge(&spec).await?;
    // Created now or by a concurrent invocation since the lookup: either way it must be ours.
    place
        .existing(netlink, NodeDeviceKind::Bridge, Some(alias))
        .await?
        .ok_or_else(|| {
            Error::TryAgainLater(format!(
                "bridge {} vanished right after it was created",
                place.name
            ))
        })
}

async fn verify(
    netlink: &Netlink,
    bridge: &Link,
    config: &ValidBridgeConfig,
    request: &Request<BridgeConfig>,
) -> Result<(), Error> {
    let name = &bridge.name;
    if !bridge.up {
        return Err(Error::CheckFailed(format!("bridge {name} is down")));
    }
    let vrf = find_vrf(netlink, request).await?;
    if bridge.controller != vrf.as_ref().map(|v| v.index) {
        return Err(Error::CheckFailed(format!(
            "bridge {name} is enslaved to interface {:?}, expected {}",
            bridge.controller,
            vrf.map_or("none".to_string(), |v| v.name)
        )));
    }
    let addresses = netlink.addresses(bridge.index).await?;
    for network in &config.networks {
        let wanted = network.gateway_address();
        if !addresses.contains(&wanted) {
            return Err(Error::CheckFailed(format!(
                "bridge {name} lacks the gateway address {wanted}"
            )));
        }
    }
    if let Some(multi_node) = &config.multi_node {
        tunnel::verify(netlink, bridge, multi_node, &request.network).await?;
    }
    Ok(())
}

fn main() {
    krafty_cni::skel::main(Bridge)
}
