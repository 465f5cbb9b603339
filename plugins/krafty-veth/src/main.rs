//! krafty-veth: the pod's interface, a veth pair from the bridge into the pod's namespace.
//!
//! ADD takes the pod's addresses from the delegated IPAM plugin (or `podIP`, or the runtime),
//! creates the pair (host end `veth<id>` on the bridge from `prevResult`, peer born in
//! CNI_NETNS as CNI_IFNAME), addresses the pod end, brings it up and installs the routes; DEL
//! removes the pair and releases the address, whatever is already gone. The work is
//! `krafty_cni::veth`'s, which the `krafty` plugin runs too.

use krafty_cni::config::VethConfig;
use krafty_cni::netlink::Netlink;
use krafty_cni::netns::NetNs;
use krafty_cni::veth::{self, Upstream};
use krafty_cni::{bridge, chain, CniResult, Error, Plugin, Request};

struct Veth;

impl Plugin for Veth {
    const NAME: &'static str = "krafty-veth";
    type Config = VethConfig;

    async fn add(&self, request: &Request<VethConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        let netns = NetNs::open(veth::netns_path(&request.env)?)?;
        let netlink = Netlink::connect()?;
        let prev_result = request.prev_result.as_ref();
        let bridge = veth::reported_bridge(&netlink, prev_result).await?;
        let vrf = bridge::reported_vrf(&netlink, prev_result).await?;
        let upstream = Upstream {
            bridge: &bridge,
            vrf: vrf.as_ref(),
        };
        let result = request.result_to_extend();
        veth::add(&netlink, &netns, request, &config, upstream, result).await
    }

    async fn del(&self, request: &Request<VethConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        veth::del(&Netlink::connect()?, request, &config).await
    }

    async fn check(&self, request: &Request<VethConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let prev_result = chain::prev_result_to_check(request)?;
        let netlink = Netlink::connect()?;
        let bridge = veth::reported_bridge(&netlink, Some(prev_result)).await?;
        veth::check(&netlink, request, &config, &bridge).await
    }

    async fn status(&self, request: &Request<VethConfig>) -> Result<(), Error> {
        veth::status(request, &request.config.validate()?)
    }

    async fn gc(&self, request: &Request<VethConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        veth::gc(&Netlink::connect()?, request, &config).await
    }
}

fn main() {
    krafty_cni::skel::main(Veth)
}
