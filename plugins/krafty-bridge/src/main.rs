//! krafty-bridge: the bridge on the node that the pod's veth plugs into.
//!
//! ADD creates (idempotently) the bridge `krb<id>`, enslaves it to the VRF an earlier
//! krafty-vrf reported in `prevResult` (without one the bridge stays in the main table), gives
//! it the gateway address(es) with the subnet's prefix and brings it up. DEL removes it; CHECK
//! verifies kind, VRF, addresses and state.

use krafty_cni::config::{BridgeConfig, ValidBridgeConfig};
use krafty_cni::netlink::{BridgeSpec, InfoKind, Link, Netlink};
use krafty_cni::result::Interface;
use krafty_cni::{chain, naming, CniResult, Error, Plugin, Request};

struct Bridge;

impl Plugin for Bridge {
    const NAME: &'static str = "krafty-bridge";
    type Config = BridgeConfig;

    async fn add(&self, request: &Request<BridgeConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        let name = naming::bridge_name(&request.env.container_id);
        let mark = request.attachment_mark();
        let alias = alias_for(&mark, &config);
        let netlink = Netlink::connect()?;
        let vrf = chain::find_node_device(
            &netlink,
            request.prev_result.as_ref(),
            naming::VRF_PREFIX,
            InfoKind::Vrf,
        )
        .await?;

        let bridge = match netlink.link(&name).await? {
            Some(existing) => existing,
            None => {
                let spec = BridgeSpec {
                    name: &name,
                    alias: &alias,
                    mtu: config.mtu,
                    promiscuous: config.promisc,
                    controller: vrf.as_ref().map(|v| v.index),
                };
                netlink.create_bridge(&spec).await?;
                netlink.link(&name).await?.ok_or_else(|| {
                    Error::TryAgainLater(format!(
                        "bridge {name} vanished right after it was created"
                    ))
                })?
            }
        };
        bridge.ensure_marked(&mark)?;
        if !bridge.is_kind(&InfoKind::Bridge) {
            return Err(Error::DeviceConflict {
                name,
                reason: "is not a bridge".into(),
            });
        }
        // A bridge left by an interrupted ADD of this attachment is brought to the wanted state.
        if let Some(vrf) = &vrf {
            if bridge.controller != Some(vrf.index) {
                netlink.set_controller(&bridge, vrf.index).await?;
            }
        }
        if !bridge.up {
            netlink.set_up(&bridge).await?;
        }
        // Addresses go on after enslavement so their routes land in the VRF's table.
        for network in &config.networks {
            netlink
                .add_address(bridge.index, network.gateway_address(), true)
                .await?;
        }

        let mut result = request.result_to_extend();
        result.push_interface(Interface {
            name,
            mac: bridge.mac,
            ..Interface::default()
        });
        Ok(result)
    }

    async fn del(&self, request: &Request<BridgeConfig>) -> Result<(), Error> {
        let name = naming::bridge_name(&request.env.container_id);
        let netlink = Netlink::connect()?;
        match netlink.link(&name).await? {
            Some(bridge) if bridge.is_marked(&request.attachment_mark()) => {
                netlink.delete(&bridge).await
            }
            Some(_) => {
                tracing::warn!("{name} exists but is not this attachment's bridge; leaving it");
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn check(&self, request: &Request<BridgeConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let name = naming::bridge_name(&request.env.container_id);
        let prev_result = request
            .prev_result
            .as_ref()
            .ok_or_else(|| Error::CheckFailed("CHECK needs a prevResult".into()))?;
        if prev_result.interface_index(&name, "").is_none() {
            return Err(Error::CheckFailed(format!(
                "prevResult does not list the bridge {name}"
            )));
        }
        let netlink = Netlink::connect()?;
        let bridge = netlink
            .link(&name)
            .await?
            .ok_or_else(|| Error::CheckFailed(format!("bridge {name} does not exist")))?;
        bridge.ensure_marked(&request.attachment_mark())?;
        verify(&netlink, &bridge, &config, request).await
    }
}

/// The bridge's alias: the attachment's mark, plus the flags krafty-veth reads off the bridge.
fn alias_for(mark: &str, config: &ValidBridgeConfig) -> String {
    if config.hairpin {
        format!("{mark} {}", naming::HAIRPIN_FLAG)
    } else {
        mark.to_string()
    }
}

async fn verify(
    netlink: &Netlink,
    bridge: &Link,
    config: &ValidBridgeConfig,
    request: &Request<BridgeConfig>,
) -> Result<(), Error> {
    let name = &bridge.name;
    if !bridge.is_kind(&InfoKind::Bridge) {
        return Err(Error::CheckFailed(format!("{name} is not a bridge")));
    }
    if !bridge.up {
        return Err(Error::CheckFailed(format!("bridge {name} is down")));
    }
    let vrf = chain::find_node_device(
        netlink,
        request.prev_result.as_ref(),
        naming::VRF_PREFIX,
        InfoKind::Vrf,
    )
    .await?;
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
    Ok(())
}

fn main() {
    krafty_cni::skel::main(Bridge)
}
