//! krafty-vrf: a Linux VRF on the node, first link of the krafty chain.
//!
//! ADD creates (idempotently) the VRF with a routing table of its own and reports it as a node
//! interface: `krv<id>` for one attachment (`scope: pod`), or one per network shared by its
//! pods (`scope: network`). DEL removes a pod's VRF; GC removes VRFs nothing uses any more;
//! CHECK verifies it; STATUS tells whether this kernel can make VRFs at all. The work is
//! `krafty_cni::vrf`'s, which the `krafty` plugin runs too.

use krafty_cni::chain::{self, NodeDeviceKind};
use krafty_cni::config::VrfConfig;
use krafty_cni::netlink::Netlink;
use krafty_cni::{vrf, CniResult, Error, Plugin, Request};

struct Vrf;

impl Plugin for Vrf {
    const NAME: &'static str = "krafty-vrf";
    type Config = VrfConfig;

    async fn add(&self, request: &Request<VrfConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        chain::refuse_vrf_after_bridge(request.prev_result.as_ref())?;
        let attachment = request.attachment()?;
        let netlink = Netlink::connect()?;
        chain::refuse_taken_interface(&netlink, attachment).await?;
        let vrf = vrf::add(&netlink, request, &config).await?;
        let mut result = request.result_to_extend();
        result.push_interface(chain::node_interface(&vrf));
        Ok(result)
    }

    async fn del(&self, request: &Request<VrfConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        chain::remove_node_device(NodeDeviceKind::Vrf, config.scope, request).await
    }

    async fn check(&self, request: &Request<VrfConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        vrf::check(&Netlink::connect()?, request, &config)
            .await
            .map(drop)
    }

    async fn status(&self, _: &Request<VrfConfig>) -> Result<(), Error> {
        vrf::status(&Netlink::connect()?).await
    }

    async fn gc(&self, request: &Request<VrfConfig>) -> Result<(), Error> {
        chain::collect_node_devices(&Netlink::connect()?, request, NodeDeviceKind::Vrf).await
    }
}

fn main() {
    krafty_cni::skel::main(Vrf)
}
