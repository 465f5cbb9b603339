//! krafty: the original krafty's single plugin, for NetworkAttachmentDefinitions written for
//! it (`"type": "krafty"` with `subnet`, `gateway`, `ipam` or `podIP`, `vrfTable`).
//!
//! It does what the chain krafty-vrf → krafty-bridge → krafty-veth does, in one process and
//! through the same steps (`krafty_cni::{vrf, bridge, veth}`): the same devices, names,
//! marks, groups and records, so DEL, CHECK, GC and the node agent treat an attachment made by
//! either alike. Each verb runs the steps as libcni runs the chain's plugins: ADD, CHECK and
//! STATUS in chain order, DEL in reverse, each stopping at the first error; GC every step past
//! the others' errors. The scope is the pod's, or the network's when `vrfTable` names the
//! network's table (see `krafty_cni::config::OriginalConfig`).

use krafty_cni::chain::{self, NodeDeviceKind};
use krafty_cni::config::OriginalConfig;
use krafty_cni::netlink::Netlink;
use krafty_cni::netns::NetNs;
use krafty_cni::veth::{self, Upstream};
use krafty_cni::{bridge, vrf, CniResult, Error, Plugin, Request};

struct Krafty;

impl Plugin for Krafty {
    const NAME: &'static str = "krafty";
    type Config = OriginalConfig;

    async fn add(&self, request: &Request<OriginalConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        let netns = NetNs::open(veth::netns_path(&request.env)?)?;
        let netlink = Netlink::connect()?;
        chain::refuse_taken_interface(&netlink, request.attachment()?).await?;
        let vrf = vrf::add(&netlink, request, &config.vrf).await?;
        let bridge = bridge::add(&netlink, request, &config.bridge, Some(&vrf)).await?;
        let mut result = request.result_to_extend();
        result.push_interface(chain::node_interface(&vrf));
        result.push_interface(chain::node_interface(&bridge));
        let upstream = Upstream {
            bridge: &bridge,
            vrf: Some(&vrf),
        };
        veth::add(&netlink, &netns, request, &config.veth, upstream, result).await
    }

    async fn del(&self, request: &Request<OriginalConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        veth::del(&Netlink::connect()?, request, &config.veth).await?;
        chain::remove_node_device(NodeDeviceKind::Bridge, config.bridge.scope, request).await?;
        chain::remove_node_device(NodeDeviceKind::Vrf, config.vrf.scope, request).await
    }

    async fn check(&self, request: &Request<OriginalConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let netlink = Netlink::connect()?;
        let vrf = vrf::check(&netlink, request, &config.vrf).await?;
        let bridge = bridge::check(&netlink, request, &config.bridge, Some(&vrf)).await?;
        veth::check(&netlink, request, &config.veth, &bridge).await
    }

    async fn status(&self, request: &Request<OriginalConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let netlink = Netlink::connect()?;
        vrf::status(&netlink).await?;
        bridge::status(&netlink).await?;
        veth::status(request, &config.veth)
    }

    async fn gc(&self, request: &Request<OriginalConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let netlink = Netlink::connect()?;
        let outcomes = [
            chain::collect_node_devices(&netlink, request, NodeDeviceKind::Vrf).await,
            bridge::gc(&netlink, request).await,
            veth::gc(&netlink, request, &config.veth).await,
        ];
        Error::from_all(outcomes.into_iter().filter_map(Result::err).collect())
    }
}

fn main() {
    krafty_cni::skel::main(Krafty)
}
