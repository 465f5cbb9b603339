//! krafty-veth: the pod's interface, a veth pair from the bridge into the pod's namespace.
//!
//! ADD takes the pod's addresses from the delegated IPAM plugin (or `podIP`), creates the pair
//! in one request (host end `veth<id>` on the bridge from `prevResult`, peer born in CNI_NETNS
//! as CNI_IFNAME), addresses the pod end, brings it up and installs the routes with a metric
//! that leaves the pod's primary interface alone. If anything fails after IPAM handed out an
//! address, the address is released and the pair removed before the error is returned.
//! DEL removes the pair and releases the address, whatever is already gone.
//!
//! Addresses come from, in order: the `ipam` block; the runtime (`runtimeConfig.ips` through
//! the `ips` capability, or `args.cni.ips`); `podIP`. A MAC from the runtime (`mac`) is given
//! to the pod end. Each attachment leaves a record under `stateDir` (see
//! `krafty_cni::state`) so that GC and the node agent can undo it without the runtime.

use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use krafty_cni::cleanup::{self, undo_attachment};
use krafty_cni::config::{AddressSource, RuntimeRequest, ValidVethConfig, VethConfig};
use krafty_cni::env::Command;
use krafty_cni::invocation_log::rfc3339;
use krafty_cni::lock::NodeLock;
use krafty_cni::netlink::{self, InfoKind, Link, Netlink, RouteSpec, VethSpec};
use krafty_cni::netns::NetNs;
use krafty_cni::result::{Dns, Interface, IpConfig, Route};
use krafty_cni::state::{AttachmentRecord, RecordedDevice, RecordedIpam};
use krafty_cni::{chain, naming, CniResult, Error, Plugin, Request};

struct Veth;

/// The pod's addressing, from IPAM or from the config.
struct Addressing {
    /// Each address with the gateway of its subnet.
    addresses: Vec<(IpNet, Option<IpAddr>)>,
    routes: Vec<(IpNet, Option<IpAddr>)>,
    dns: Dns,
}

impl Plugin for Veth {
    const NAME: &'static str = "krafty-veth";
    type Config = VethConfig;

    async fn add(&self, request: &Request<VethConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        let netns = NetNs::open(netns_path(request)?)?;
        let netlink = Netlink::connect()?;
        let bridge = find_bridge(&netlink, request).await?;
        let host_name = naming::host_veth_name(&request.env.container_id);
        let mark = request.attachment_mark();
        // Checked before IPAM so that a refused ADD has nothing to undo. An existing pair of
        // this very attachment is refused too: a second ADD must not tear down a live pod's
        // interface, and a runtime sends DEL after any failed ADD.
        if let Some(existing) = netlink.link(&host_name).await? {
            existing.ensure_marked(&mark)?;
            return Err(Error::DeviceConflict {
                name: host_name,
                reason: "already exists for this attachment (DEL it before adding it again)".into(),
            });
        }

        let runtime = RuntimeRequest::from_config(&request.runtime_config, request.args.as_ref())?;
        // IPAM, a process of its own and most of ADD's time, runs while the pair is created;
        // only the addresses and routes wait for its result.
        let ipam_run = match &config.addresses {
            AddressSource::Ipam(ipam) => {
                let (ipam, env, stdin) = (ipam.clone(), request.env.clone(), request.stdin.clone());
                Some(std::thread::spawn(move || ipam.add(&env, &stdin)))
            }
            AddressSource::Static(_) | AddressSource::Runtime => None,
        };
        let attached = attach(
            &netlink, &netns, &bridge, &config, ipam_run, &runtime, request,
        )
        .await;
        if let Err(error) = &attached {
            tracing::warn!("ADD failed, undoing it: {error}");
            undo(&netlink, &host_name, &mark, &config, request).await;
        }
        attached
    }

    async fn del(&self, request: &Request<VethConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let netlink = Netlink::connect()?;
        let mut errors = Vec::new();
        // The attachment's own devices are deleted at once, in pod scope in one kernel batch
        // (see `cleanup::start_deleting`): the pair and, in pod scope, the attachment's bridge
        // and VRF, which krafty-bridge and krafty-vrf then find gone. Devices without this
        // attachment's mark (shared or foreign) are left.
        let doomed = own_devices(&netlink, request).await?;
        let host_name = naming::host_veth_name(&request.env.container_id);
        let pair_index = doomed
            .first()
            .filter(|host| host.name == host_name)
            .map(|host| host.index);
        let deletions = cleanup::start_deleting(&netlink, doomed, &request.attachment_mark()).await;
        // The address is released once the pair has left the kernel's device list, so it is
        // never handed out while still in use, but without waiting for the grace period.
        if let Some(index) = pair_index {
            while !deletions[0].is_finished() && netlink.link_by_index(index).await?.is_some() {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        if let AddressSource::Ipam(ipam) = &config.addresses {
            // What the record says the attachment holds spares IPAM a search through every
            // lease; a missing or unreadable record only means the search is made.
            let recorded_addresses = request
                .records()
                .read(
                    &request.network,
                    &request.env.container_id,
                    &request.env.ifname,
                )
                .ok()
                .flatten()
                .map(|record| record.ip_addresses())
                .unwrap_or_default();
            if let Err(error) = ipam.del(&request.env, &request.stdin, &recorded_addresses) {
                errors.push(error);
            }
        }
        errors.extend(cleanup::finish(deletions));
        // The record goes last: while anything above failed, it still says what to undo.
        if errors.is_empty() {
            request.records().remove(
                &request.network,
                &request.env.container_id,
                &request.env.ifname,
            )?;
        }
        Error::from_all(errors)
    }

    async fn check(&self, request: &Request<VethConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let prev_result = request
            .prev_result
            .as_ref()
            .ok_or_else(|| Error::CheckFailed("CHECK needs a prevResult".into()))?;
        if let AddressSource::Ipam(ipam) = &config.addresses {
            ipam.check(&request.env, &request.stdin)?;
        }
        let netns = NetNs::open(netns_path(request)?)?;
        let netlink = Netlink::connect()?;
        let bridge = find_bridge(&netlink, request).await?;
        let host_name = naming::host_veth_name(&request.env.container_id);
        let host = netlink
            .link(&host_name)
            .await?
            .ok_or_else(|| Error::CheckFailed(format!("host veth {host_name} does not exist")))?;
        host.ensure_marked(&request.attachment_mark())?;
        if !host.is_kind(&InfoKind::Veth) || host.controller != Some(bridge.index) || !host.up {
            return Err(Error::CheckFailed(format!(
                "host veth {host_name} must be an up veth on bridge {}",
                bridge.name
            )));
        }

        let ifname = &request.env.ifname;
        let sandbox = netns.path().display().to_string();
        let pod_index = prev_result
            .interface_index(ifname, &sandbox)
            .ok_or_else(|| {
                Error::CheckFailed(format!("prevResult does not list {ifname} in {sandbox}"))
            })?;
        let expected: Vec<IpNet> = prev_result
            .ips
            .iter()
            .filter(|ip| ip.interface == Some(pod_index))
            .map(|ip| ip.address)
            .collect();
        netns.run(|pod| async move {
            let link = pod.link(ifname).await?.ok_or_else(|| {
                Error::CheckFailed(format!("{ifname} does not exist in {sandbox}"))
            })?;
            if !link.is_kind(&InfoKind::Veth) || !link.up {
                return Err(Error::CheckFailed(format!("{ifname} must be an up veth")));
            }
            let present = pod.addresses(link.index).await?;
            match expected.iter().find(|address| !present.contains(address)) {
                Some(missing) => Err(Error::CheckFailed(format!(
                    "{ifname} lacks address {missing}"
                ))),
                None => Ok(()),
            }
        })
    }

    async fn status(&self, request: &Request<VethConfig>) -> Result<(), Error> {
        match &request.config.validate()?.addresses {
            AddressSource::Ipam(ipam) => {
                ipam.forward_if_supported(Command::Status, &request.env, &request.stdin)
            }
            AddressSource::Static(_) | AddressSource::Runtime => Ok(()),
        }
    }

    async fn gc(&self, request: &Request<VethConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let netlink = Netlink::connect()?;
        let records = request.records();
        let mut errors = Vec::new();
        {
            let _lock = NodeLock::network(&request.run_dir, &request.network)?;
            let (found, unreadable) = records.list(&request.network);
            errors.extend(unreadable);
            let orphans = found
                .iter()
                .filter(|r| !request.is_valid_attachment(&r.container_id));
            for record in orphans {
                tracing::info!("GC undoes {}/{}", record.container_id, record.ifname);
                if let Err(error) = undo_attachment(&netlink, &records, record).await {
                    errors.push(error);
                }
            }
            // Pairs of an ADD cut short before it wrote its record.
            for link in netlink.links_of_kind(InfoKind::Veth).await? {
                let orphaned = link
                    .alias
                    .as_deref()
                    .and_then(|alias| naming::attachment_of(alias, &request.network))
                    .is_some_and(|id| !request.is_valid_attachment(id));
                if orphaned {
                    if let Err(error) = netlink.delete(&link).await {
                        errors.push(error);
                    }
                }
            }
        }
        if let AddressSource::Ipam(ipam) = &config.addresses {
            let forwarded = ipam.forward_if_supported(Command::Gc, &request.env, &request.stdin);
            if let Err(error) = forwarded {
                errors.push(error);
            }
        }
        Error::from_all(errors)
    }
}

fn netns_path(request: &Request<VethConfig>) -> Result<&std::path::Path, Error> {
    request
        .env
        .netns
        .as_deref()
        .ok_or_else(|| Error::invalid_env("CNI_NETNS is required"))
}

async fn find_bridge(netlink: &Netlink, request: &Request<VethConfig>) -> Result<Link, Error> {
    chain::find_node_device(
        netlink,
        request.prev_result.as_ref(),
        naming::BRIDGE_PREFIX,
        InfoKind::Bridge,
    )
    .await?
    .ok_or_else(|| {
        Error::invalid_config(
            "krafty-veth needs a krafty-bridge earlier in the chain, and prevResult lists no bridge",
        )
    })
}

/// Decides the pod's addresses, gateways and routes, each checked against the bridge's subnets.
fn plan(
    config: &ValidVethConfig,
    ipam_result: Option<CniResult>,
    runtime: &RuntimeRequest,
    bridge_networks: &[IpNet],
) -> Result<Addressing, Error> {
    let subnet_gateway = |address: &IpNet| -> Result<IpAddr, Error> {
        bridge_networks
            .iter()
            .find(|net| {
                net.prefix_len() == address.prefix_len() && net.trunc().contains(&address.addr())
            })
            .map(IpNet::addr)
            .ok_or_else(|| {
                Error::invalid_config(format!(
                    "pod address {address} is outside the bridge's subnets ({})",
                    bridge_networks
                        .iter()
                        .map(|n| n.trunc().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    };
    let mut plan = Addressing {
        addresses: Vec::new(),
        routes: Vec::new(),
        dns: Dns::default(),
    };
    match ipam_result {
        Some(result) => {
            for ip in &result.ips {
                let bridge_gateway = subnet_gateway(&ip.address)?;
                plan.addresses
                    .push((ip.address, Some(ip.gateway.unwrap_or(bridge_gateway))));
            }
            plan.routes
                .extend(result.routes.iter().map(|r| (r.dst, r.gw)));
            plan.dns = result.dns;
        }
        None => {
            let addresses = match (&runtime.ips, &config.addresses) {
                (Some(ips), _) => ips.as_slice(),
                (None, AddressSource::Static(addresses)) => addresses.as_slice(),
                (None, _) => &[],
            };
            for address in addresses {
                plan.addresses
                    .push((*address, Some(subnet_gateway(address)?)));
            }
        }
    }
    if plan.addresses.is_empty() {
        return Err(Error::invalid_config(
            "the pod has no address: give an ipam block or podIP, or pass ips through \
             runtimeConfig (capability \"ips\") or args.cni.ips",
        ));
    }
    plan.routes
        .extend(config.routes.iter().map(|r| (r.destination, r.gateway)));
    // A route without a gateway goes through the gateway of its family, as in the reference
    // plugins; a family without a gateway reaches the destination on the link.
    for (destination, gateway) in &mut plan.routes {
        if gateway.is_none() {
            *gateway = plan
                .addresses
                .iter()
                .filter_map(|(_, gw)| *gw)
                .find(|gw| gw.is_ipv4() == destination.addr().is_ipv4());
        }
    }
    Ok(plan)
}

async fn attach(
    netlink: &Netlink,
    netns: &NetNs,
    bridge: &Link,
    config: &ValidVethConfig,
    ipam_run: Option<std::thread::JoinHandle<Result<CniResult, Error>>>,
    runtime: &RuntimeRequest,
    request: &Request<VethConfig>,
) -> Result<CniResult, Error> {
    let created = create_pair(netlink, netns, bridge, config, runtime, request).await;
    // Joined before anything can fail, so that an undo releases what IPAM handed out.
    let ipam_result = ipam_run
        .map(|run| {
            run.join()
                .unwrap_or_else(|_| Err(Error::TryAgainLater("the IPAM thread panicked".into())))
        })
        .transpose();
    let (host_mac, bridge_networks) = created?;
    let plan = plan(config, ipam_result?, runtime, &bridge_networks)?;
    let ifname = request.env.ifname.as_str();
    let host_name = naming::host_veth_name(&request.env.container_id);

    let (metric, no_dad) = (config.route_metric, !config.dad);
    let (addresses, routes) = (&plan.addresses, &plan.routes);
    let pod_mac = netns.run(|pod| async move {
        let link = pod.link(ifname).await?.ok_or_else(|| {
            Error::TryAgainLater(format!(
                "{ifname} is missing in the namespace right after creation"
            ))
        })?;
        for (address, _) in addresses {
            pod.add_address(link.index, *address, no_dad).await?;
        }
        pod.set_up(&link).await?;
        for (destination, gateway) in routes {
            let route = RouteSpec {
                destination: *destination,
                gateway: *gateway,
                output_index: link.index,
                metric: Some(metric),
                table: None,
            };
            pod.add_route(&route).await?;
        }
        Ok(link.mac)
    })?;

    let mut result = request.result_to_extend();
    result.push_interface(Interface {
        name: host_name.clone(),
        mac: host_mac,
        ..Interface::default()
    });
    let pod_index = result.push_interface(Interface {
        name: ifname.to_string(),
        mac: pod_mac,
        sandbox: netns.path().display().to_string(),
        ..Interface::default()
    });
    result
        .ips
        .extend(plan.addresses.iter().map(|(address, gateway)| IpConfig {
            address: *address,
            gateway: *gateway,
            interface: Some(pod_index),
            extra: Default::default(),
        }));
    result
        .routes
        .extend(plan.routes.iter().map(|(dst, gw)| Route {
            dst: *dst,
            gw: *gw,
            extra: Default::default(),
        }));
    if !plan.dns.is_empty() {
        result.dns = plan.dns.clone();
    }
    request
        .records()
        .write(&record(netlink, request, config, bridge, &host_name, &plan).await?)?;
    Ok(result)
}

/// The veth pair, its host end on the bridge (with hairpin when the bridge asks for it), and
/// the bridge's subnets: everything of ADD that does not need the pod's addresses.
async fn create_pair(
    netlink: &Netlink,
    netns: &NetNs,
    bridge: &Link,
    config: &ValidVethConfig,
    runtime: &RuntimeRequest,
    request: &Request<VethConfig>,
) -> Result<(String, Vec<IpNet>), Error> {
    let ifname = request.env.ifname.as_str();
    let host_name = naming::host_veth_name(&request.env.container_id);
    let mark = request.attachment_mark();
    let host_mac = netlink::random_mac()?;
    let spec = VethSpec {
        host_name: &host_name,
        peer_name: ifname,
        peer_netns: netns.file(),
        alias: &mark,
        bridge: bridge.index,
        mtu: config.mtu,
        peer_mac: runtime.mac,
        // In the attachment's group only when the bridge is the attachment's own (pod scope).
        group: bridge
            .is_marked(&mark)
            .then(|| naming::attachment_group(&mark)),
        host_mac,
    };
    if !netlink.create_veth(&spec).await? {
        return Err(Error::DeviceConflict {
            name: ifname.to_string(),
            reason: "already exists in the container's network namespace".into(),
        });
    }
    if bridge.has_mark_flag(naming::HAIRPIN_FLAG) {
        let host = netlink.link(&host_name).await?.ok_or_else(|| {
            Error::TryAgainLater(format!("{host_name} vanished right after it was created"))
        })?;
        netlink.set_hairpin(&host).await?;
    }
    Ok((
        netlink::format_mac(&host_mac),
        netlink.addresses(bridge.index).await?,
    ))
}

/// What GC and the node agent need to undo this attachment without the runtime.
async fn record(
    netlink: &Netlink,
    request: &Request<VethConfig>,
    config: &ValidVethConfig,
    bridge: &Link,
    host_name: &str,
    plan: &Addressing,
) -> Result<AttachmentRecord, Error> {
    let shared_mark = naming::network_mark(&request.network);
    let device = |link: &Link, kind: &str| RecordedDevice {
        name: link.name.clone(),
        kind: kind.to_string(),
        shared: link.owner_mark() == Some(shared_mark.as_str()),
    };
    let vrf = chain::find_node_device(
        netlink,
        request.prev_result.as_ref(),
        naming::VRF_PREFIX,
        InfoKind::Vrf,
    )
    .await?;
    let mut devices: Vec<RecordedDevice> = vrf.iter().map(|v| device(v, "vrf")).collect();
    devices.push(device(bridge, "bridge"));
    devices.push(RecordedDevice {
        name: host_name.to_string(),
        kind: "veth".into(),
        shared: false,
    });
    let ipam = match &config.addresses {
        AddressSource::Ipam(ipam) => Some(RecordedIpam {
            plugin: ipam.plugin.clone(),
            config: serde_json::from_slice(&request.stdin)
                .map_err(|e| Error::State(format!("the config to replay is not JSON: {e}")))?,
            cni_path: request.env.cni_path.clone(),
        }),
        AddressSource::Static(_) | AddressSource::Runtime => None,
    };
    let pod = &request.env.args.pod;
    Ok(AttachmentRecord {
        network: request.network.clone(),
        container_id: request.env.container_id.clone(),
        ifname: request.env.ifname.clone(),
        netns: request
            .env
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        pod_namespace: pod.namespace.clone(),
        pod_name: pod.name.clone(),
        pod_uid: pod.uid.clone(),
        devices,
        addresses: plan.addresses.iter().map(|(address, _)| *address).collect(),
        gateways: plan
            .addresses
            .iter()
            .filter_map(|(_, gateway)| *gateway)
            .collect(),
        ipam,
        created: rfc3339(SystemTime::now()),
    })
}

/// The devices DEL removes: the host veth first (when it is there), then this attachment's own
/// bridge and VRF (pod scope); only those carrying this attachment's mark.
async fn own_devices(netlink: &Netlink, request: &Request<VethConfig>) -> Result<Vec<Link>, Error> {
    let id = &request.env.container_id;
    let mark = request.attachment_mark();
    let mut devices = Vec::new();
    let names = [
        naming::host_veth_name(id),
        naming::bridge_name(id),
        naming::vrf_name(id),
    ];
    for name in names {
        match netlink.link(&name).await? {
            Some(link) if link.is_marked(&mark) => devices.push(link),
            Some(_) => tracing::warn!("{name} exists but is not this attachment's; leaving it"),
            None => {}
        }
    }
    Ok(devices)
}

async fn remove_pair(netlink: &Netlink, host_name: &str, mark: &str) -> Result<(), Error> {
    match netlink.link(host_name).await? {
        Some(host) if host.is_marked(mark) => netlink.delete(&host).await,
        Some(_) => {
            tracing::warn!("{host_name} exists but is not this attachment's veth; leaving it");
            Ok(())
        }
        None => Ok(()),
    }
}

/// Rolls back a failed ADD: the pair (the peer goes with it), the IPAM lease and the record.
async fn undo(
    netlink: &Netlink,
    host_name: &str,
    mark: &str,
    config: &ValidVethConfig,
    request: &Request<VethConfig>,
) {
    if let Err(error) = remove_pair(netlink, host_name, mark).await {
        tracing::error!("undo: {error}");
    }
    if let AddressSource::Ipam(ipam) = &config.addresses {
        if let Err(error) = ipam.del(&request.env, &request.stdin, &[]) {
            tracing::error!("undo: releasing the address: {error}");
        }
    }
    let env = &request.env;
    if let Err(error) = request
        .records()
        .remove(&request.network, &env.container_id, &env.ifname)
    {
        tracing::error!("undo: {error}");
    }
}

fn main() {
    krafty_cni::skel::main(Veth)
}
