//! The bridge step: what krafty-bridge does, and the `krafty` plugin second. Each verb takes
//! its inputs explicitly (the checked config, the VRF the bridge belongs in), so that a chain
//! of plugins and one plugin doing the whole chain run the same code.
//!
//! ADD creates (idempotently) the bridge, `krb<id>` for one attachment (`scope: pod`) or one
//! per network shared by its pods (`scope: network`), enslaved to the VRF when there is one
//! (without one it stays in the main table), with the gateway address(es) and up; a network
//! stretched across nodes (`multiNode`) gets its VXLAN port too ([`crate::tunnel`]). DEL is
//! [`chain::remove_node_device`] with [`NodeDeviceKind::Bridge`].

use crate::chain::{self, NodeDeviceKind, Placement};
use crate::config::ValidBridgeConfig;
use crate::error::Error;
use crate::naming;
use crate::netlink::{self, BridgeSpec, InfoKind, Link, Netlink};
use crate::result::CniResult;
use crate::skel::Request;
use crate::tunnel::{self, Tunnel};

/// The VRF an earlier krafty-vrf of the chain reported in `prev_result`, if any.
pub async fn reported_vrf(
    netlink: &Netlink,
    prev_result: Option<&CniResult>,
) -> Result<Option<Link>, Error> {
    chain::find_node_device(netlink, prev_result, naming::VRF_PREFIX, InfoKind::Vrf).await
}

/// ADD: the attachment's bridge (or its network's), made or found, in `vrf`, with the
/// gateway addresses and up; the caller has refused an interface the container already has.
/// The bridge is returned with its MAC as set.
pub async fn add<C>(
    netlink: &Netlink,
    request: &Request<C>,
    config: &ValidBridgeConfig,
    vrf: Option<&Link>,
) -> Result<Link, Error> {
    let place = Placement::of(NodeDeviceKind::Bridge, config.scope, request.attachment()?);
    chain::refuse_mixed_scopes(vrf, config.scope)?;
    if vrf.is_none() && !place.shared {
        refuse_gateway_in_main_table(netlink, &place, config).await?;
    }
    // A stretched network's underlay, and the MTU it leaves, before anything is made.
    let tunnel = Tunnel::plan_for(netlink, request, config).await?;
    let mtu = tunnel.as_ref().map(|t| t.mtu).or(config.mtu);

    let _lock = place.lock(request)?;
    let alias = alias(&place, config);
    let found = place
        .existing(netlink, NodeDeviceKind::Bridge, Some(&alias))
        .await?;
    // Recorded as the VRF step does (see there).
    if found.is_none() || place.shared {
        request.begin()?;
    }
    let created = found.is_none();
    let mut bridge = match found {
        Some(existing) => existing,
        None => create(netlink, &place, &alias, config, mtu, vrf).await?,
    };
    if let Some(tunnel) = &tunnel {
        tunnel.join(netlink, &bridge, created, request).await?;
    }
    // A bridge left by an interrupted ADD, or a shared one, is brought to the wanted state.
    let mac = naming::bridge_mac(&place.mark);
    if bridge.mac != netlink::format_mac(&mac) {
        netlink.set_mac(&bridge, mac).await?;
        bridge.mac = netlink::format_mac(&mac);
    }
    if let Some(vrf) = vrf {
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
    Ok(bridge)
}

/// CHECK: the bridge that `prevResult` lists exists, is up, sits in `vrf` (or in no VRF) and
/// carries the gateway addresses.
pub async fn check<C>(
    netlink: &Netlink,
    request: &Request<C>,
    config: &ValidBridgeConfig,
    vrf: Option<&Link>,
) -> Result<Link, Error> {
    let place = Placement::of(NodeDeviceKind::Bridge, config.scope, request.attachment()?);
    let name = &place.name;
    let prev_result = chain::prev_result_to_check(request)?;
    if prev_result.interface_index(name, "").is_none() {
        return Err(Error::CheckFailed(format!(
            "prevResult does not list the bridge {name}"
        )));
    }
    let bridge = place
        .existing(netlink, NodeDeviceKind::Bridge, None)
        .await?
        .ok_or_else(|| Error::CheckFailed(format!("bridge {name} does not exist")))?;
    if !bridge.up {
        return Err(Error::CheckFailed(format!("bridge {name} is down")));
    }
    if bridge.controller != vrf.map(|v| v.index) {
        return Err(Error::CheckFailed(format!(
            "bridge {name} is enslaved to interface {:?}, expected {}",
            bridge.controller,
            vrf.map_or("none", |v| v.name.as_str())
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
        tunnel::verify(netlink, &bridge, multi_node, &request.network).await?;
    }
    Ok(bridge)
}

/// GC: bridges nothing uses any more, with a stretched network's VXLAN port.
pub async fn gc<C>(netlink: &Netlink, request: &Request<C>) -> Result<(), Error> {
    tunnel::collect_bridges_and_tunnels(netlink, request).await
}

/// STATUS: every kernel krafty runs on has bridges; being able to talk to it is what matters.
pub async fn status(netlink: &Netlink) -> Result<(), Error> {
    netlink.links_of_kind(InfoKind::Bridge).await.map(drop)
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

/// The bridge's mark, and its flags, where the veth step reads them for the ports it adds.
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
