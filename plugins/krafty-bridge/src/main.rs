//! krafty-bridge: the bridge on the node that pods' veths plug into.
//!
//! ADD creates (idempotently) the bridge — `krb<id>` for one attachment (`scope: pod`) or one
//! per network shared by its pods (`scope: network`) — enslaves it to the VRF an earlier
//! krafty-vrf reported in `prevResult` (without one the bridge stays in the main table), gives
//! it the gateway address(es) with the subnet's prefix and brings it up. DEL removes a pod's
//! bridge; GC removes bridges nothing uses any more; CHECK verifies kind, VRF, addresses and
//! state. The work is `krafty_cni::bridge`'s, which the `krafty` plugin runs too.

use krafty_cni::chain::{self, NodeDeviceKind};
use krafty_cni::config::BridgeConfig;
use krafty_cni::netlink::Netlink;
use krafty_cni::{bridge, CniResult, Error, Plugin, Request};

struct Bridge;

impl Plugin for Bridge {
    const NAME: &'static str = "krafty-bridge";
    type Config = BridgeConfig;

    async fn add(&self, request: &Request<BridgeConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        let attachment = request.attachment()?;
        let netlink = Netlink::connect()?;
        chain::refuse_taken_interface(&netlink, attachment).await?;
        let vrf = bridge::reported_vrf(&netlink, request.prev_result.as_ref()).await?;
        let bridge = bridge::add(&netlink, request, &config, vrf.as_ref()).await?;
        let mut result = request.result_to_extend();
        result.push_interface(chain::node_interface(&bridge));
        Ok(result)
    }

    async fn del(&self, request: &Request<BridgeConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        chain::remove_node_device(NodeDeviceKind::Bridge, config.scope, request).await
    }

    async fn check(&self, request: &Request<BridgeConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let netlink = Netlink::connect()?;
        let vrf = bridge::reported_vrf(&netlink, request.prev_result.as_ref()).await?;
        bridge::check(&netlink, request, &config, vrf.as_ref())
            .await
            .map(drop)
    }

    async fn status(&self, _: &Request<BridgeConfig>) -> Result<(), Error> {
        bridge::status(&Netlink::connect()?).await
    }

    async fn gc(&self, request: &Request<BridgeConfig>) -> Result<(), Error> {
        bridge::gc(&Netlink::connect()?, request).await
    }
}

fn main() {
    krafty_cni::skel::main(Bridge)
}
