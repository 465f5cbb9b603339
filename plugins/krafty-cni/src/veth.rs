//! The veth step: what krafty-veth does, and the `krafty` plugin last. Each verb takes its
//! inputs explicitly (the checked config, the bridge and VRF the earlier steps made, the
//! result to extend), so that a chain of plugins and one plugin doing the whole chain run the
//! same code.
//!
//! ADD takes the pod's addresses from the delegated IPAM plugin (or `podIP`), creates the pair
//! in one request (host end `veth<id>` on the bridge, peer born in CNI_NETNS as CNI_IFNAME),
//! addresses the pod end, brings it up and installs the routes with a metric that leaves the
//! pod's primary interface alone. If anything fails after IPAM handed out an address, the
//! address is released and the pair removed before the error is returned. DEL removes the
//! pair and releases the address, whatever is already gone.
//!
//! Addresses come from, in order: the `ipam` block; the runtime (`runtimeConfig.ips` through
//! the `ips` capability, or `args.cni.ips`); `podIP`. A MAC from the runtime (`mac`) is given
//! to the pod end. Each attachment leaves a record under `stateDir` (see [`crate::state`]) so
//! that GC and the node agent can undo it without the runtime.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use crate::attachment::Attachment;
use crate::chain;
use crate::config::{AddressSource, RuntimeRequest, ValidVethConfig};
use crate::env::{Command, Environment};
use crate::error::Error;
use crate::lock::NodeLock;
use crate::naming;
use crate::netlink::{self, InfoKind, Link, Netlink, RouteSpec, VethSpec};
use crate::netns::NetNs;
use crate::result::{CniResult, Dns, Interface, IpConfig, Route};
use crate::skel::Request;
use crate::state::{AttachmentRecord, RecordedDevice, RecordedIpam};
use crate::tunnel;

/// IPAM's ADD, running in a thread of its own while the pair is created.
type IpamRun = std::thread::JoinHandle<Result<CniResult, Error>>;

/// The pod's addressing, from IPAM or from the config.
struct Addressing {
    /// Each address with the gateway of its subnet.
    addresses: Vec<(IpNet, Option<IpAddr>)>,
    routes: Vec<(IpNet, Option<IpAddr>)>,
    dns: Dns,
}

/// The node devices the pod's veth attaches to: the bridge, and the VRF it is in (if any).
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    pub bridge: &'a Link,
    pub vrf: Option<&'a Link>,
}

/// ADD: the veth pair into `netns`, on the bridge, with the pod's addresses and routes;
/// `result` (what the earlier steps reported) extended with both ends, the addresses and the
/// routes. The attachment's record is complete at the end.
pub async fn add<C>(
    netlink: &Netlink,
    netns: &NetNs,
    request: &Request<C>,
    config: &ValidVethConfig,
    upstream: Upstream<'_>,
    result: CniResult,
) -> Result<CniResult, Error> {
    let attachment = request.attachment()?;
    let host_name = attachment.host_veth_name();
    // Checked before IPAM so that a refused ADD has nothing to undo. An existing pair of
    // this very attachment is refused too: a second ADD must not tear down a live pod's
    // interface, and a runtime sends DEL after any failed ADD.
    if let Some(existing) = netlink.link(&host_name).await? {
        if !attachment.owns(&existing) {
            existing.ensure_marked(&attachment.mark())?;
        }
        return Err(Error::DeviceConflict {
            name: host_name,
            reason: "already exists for this attachment (DEL it before adding it again)".into(),
        });
    }
    if let Some(mtu) = config.mtu {
        tunnel::refuse_pod_mtu_over_tunnel(netlink, upstream.bridge, mtu, &request.network).await?;
    }

    let runtime = RuntimeRequest::from_config(&request.runtime_config, request.args.as_ref())?;
    // Before IPAM hands anything out, the record says how to give it back.
    let mut begun = AttachmentRecord::begun(attachment, &request.env);
    begun.ipam = recorded_ipam(config, request)?;
    request.records().write(&begun)?;
    // IPAM, a process of its own and most of ADD's time, runs while the pair is created;
    // only the addresses and routes wait for its result.
    let ipam_run = match &config.addresses {
        AddressSource::Ipam(ipam) => {
            let (ipam, env, stdin) = (ipam.clone(), request.env.clone(), request.stdin.clone());
            let state_dir = request.state_dir.clone();
            Some(std::thread::spawn(move || {
                ipam.add(&env, &stdin, &state_dir)
            }))
        }
        AddressSource::Static(_) | AddressSource::Runtime => None,
    };
    let mut handed_out = false;
    let attached = attach(
        netlink,
        netns,
        upstream,
        config,
        (ipam_run, &mut handed_out),
        &runtime,
        request,
        result,
    )
    .await;
    if let Err(error) = &attached {
        tracing::warn!("ADD failed, undoing it: {error}");
        undo(netlink, attachment, config, handed_out, request).await;
    }
    attached
}

/// DEL: the attachment's own devices go at once, in pod scope in one kernel batch: the pair
/// and, in pod scope, the attachment's bridge and VRF, which the bridge and VRF steps then find
/// gone. Devices without this attachment's mark (shared or foreign) are left.
pub async fn del<C>(
    netlink: &Netlink,
    request: &Request<C>,
    config: &ValidVethConfig,
) -> Result<(), Error> {
    let release = match &config.addresses {
        AddressSource::Ipam(ipam) => Some(|recorded: &[IpAddr]| {
            ipam.del(&request.env, &request.stdin, &request.state_dir, recorded)
        }),
        AddressSource::Static(_) | AddressSource::Runtime => None,
    };
    request
        .attachment()?
        .tear_down(netlink, &request.records(), release)
        .await
}

/// CHECK: IPAM's CHECK, the host end (an up veth on `bridge`, marked) and the pod end (an up
/// veth with the addresses `prevResult` gives it).
pub async fn check<C>(
    netlink: &Netlink,
    request: &Request<C>,
    config: &ValidVethConfig,
    bridge: &Link,
) -> Result<(), Error> {
    let prev_result = chain::prev_result_to_check(request)?;
    if let AddressSource::Ipam(ipam) = &config.addresses {
        ipam.check(&request.env, &request.stdin, &request.state_dir)?;
    }
    let netns = NetNs::open(netns_path(&request.env)?)?;
    let attachment = request.attachment()?;
    let host_name = attachment.host_veth_name();
    let host = netlink
        .link(&host_name)
        .await?
        .ok_or_else(|| Error::CheckFailed(format!("host veth {host_name} does not exist")))?;
    host.ensure_marked(&attachment.mark())?;
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
        let link = pod
            .link(ifname)
            .await?
            .ok_or_else(|| Error::CheckFailed(format!("{ifname} does not exist in {sandbox}")))?;
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

/// STATUS: forwarded to an IPAM plugin that speaks CNI 1.1.0.
pub fn status<C>(request: &Request<C>, config: &ValidVethConfig) -> Result<(), Error> {
    match &config.addresses {
        AddressSource::Ipam(ipam) => ipam.forward_if_supported(
            Command::Status,
            &request.env,
            &request.stdin,
            &request.state_dir,
        ),
        AddressSource::Static(_) | AddressSource::Runtime => Ok(()),
    }
}

/// GC: undoes every attachment of this network that is not valid from its record, removes
/// pairs of ADDs cut short before their record, and forwards GC to an IPAM plugin that speaks
/// CNI 1.1.0; keeps going past errors and reports them all.
pub async fn gc<C>(
    netlink: &Netlink,
    request: &Request<C>,
    config: &ValidVethConfig,
) -> Result<(), Error> {
    let records = request.records();
    let mut errors = Vec::new();
    {
        let _lock = NodeLock::network(&request.run_dir, &request.network)?;
        records.remove_temporaries(Some(&request.network));
        let (found, unreadable) = records.list(&request.network);
        errors.extend(unreadable);
        for stored in found.iter().filter(|s| !request.is_valid(&s.attachment)) {
            tracing::info!("GC undoes {}", stored.attachment);
            let undone = stored
                .attachment
                .tear_down_recorded(netlink, &records, &stored.record, &[])
                .await;
            if let Err(error) = undone {
                errors.push(error);
            }
        }
        // Pairs of an ADD cut short before it wrote its record.
        for link in netlink.links_of_kind(InfoKind::Veth).await? {
            let orphaned = link
                .alias
                .as_deref()
                .and_then(|alias| Attachment::from_mark(alias, &request.network))
                .is_some_and(|attachment| !request.is_valid(&attachment));
            if orphaned {
                if let Err(error) = netlink.delete(&link).await {
                    errors.push(error);
                }
            }
        }
    }
    if let AddressSource::Ipam(ipam) = &config.addresses {
        let forwarded = ipam.forward_if_supported(
            Command::Gc,
            &request.env,
            &request.stdin,
            &request.state_dir,
        );
        if let Err(error) = forwarded {
            errors.push(error);
        }
    }
    Error::from_all(errors)
}

/// The container's network namespace, which ADD and CHECK need.
pub fn netns_path(env: &Environment) -> Result<&Path, Error> {
    env.netns
        .as_deref()
        .ok_or_else(|| Error::invalid_env("CNI_NETNS is required"))
}

/// The bridge an earlier krafty-bridge of the chain reported in `prev_result`.
pub async fn reported_bridge(
    netlink: &Netlink,
    prev_result: Option<&CniResult>,
) -> Result<Link, Error> {
    chain::find_node_device(
        netlink,
        prev_result,
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

#[allow(clippy::too_many_arguments)] // ADD's inputs, each of its own kind
async fn attach<C>(
    netlink: &Netlink,
    netns: &NetNs,
    upstream: Upstream<'_>,
    config: &ValidVethConfig,
    (ipam_run, handed_out): (Option<IpamRun>, &mut bool),
    runtime: &RuntimeRequest,
    request: &Request<C>,
    mut result: CniResult,
) -> Result<CniResult, Error> {
    let created = create_pair(netlink, netns, upstream.bridge, config, runtime, request).await;
    // Joined before anything can fail, so that an undo releases what IPAM handed out. An IPAM
    // plugin whose ADD failed has given nothing out (it cleans up after itself).
    let ipam_result = ipam_run
        .map(|run| {
            run.join()
                .unwrap_or_else(|_| Err(Error::TryAgainLater("the IPAM thread panicked".into())))
        })
        .transpose();
    *handed_out = matches!(ipam_result, Ok(Some(_)));
    let (host_mac, bridge_networks) = created?;
    let plan = plan(config, ipam_result?, runtime, &bridge_networks)?;
    let ifname = request.env.ifname.as_str();
    let host_name = request.attachment()?.host_veth_name();

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
        pod.set_pod_interface_up(&link).await?;
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
        .write(&record(request, config, upstream, &host_name, &plan)?)?;
    Ok(result)
}

/// The veth pair, its host end on the bridge (with hairpin when the bridge asks for it), and
/// the bridge's subnets: everything of ADD that does not need the pod's addresses.
async fn create_pair<C>(
    netlink: &Netlink,
    netns: &NetNs,
    bridge: &Link,
    config: &ValidVethConfig,
    runtime: &RuntimeRequest,
    request: &Request<C>,
) -> Result<(String, Vec<IpNet>), Error> {
    let ifname = request.env.ifname.as_str();
    let attachment = request.attachment()?;
    let host_name = attachment.host_veth_name();
    let mark = attachment.mark();
    let host_mac = netlink::random_mac()?;
    let spec = VethSpec {
        host_name: &host_name,
        peer_name: ifname,
        peer_netns: netns.file(),
        alias: &mark,
        bridge: bridge.index,
        // The bridge's unless configured: on a stretched network that is what the tunnel
        // carries.
        mtu: config.mtu.or(bridge.mtu),
        peer_mac: runtime.mac,
        group: attachment.group(),
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
fn record<C>(
    request: &Request<C>,
    config: &ValidVethConfig,
    upstream: Upstream<'_>,
    host_name: &str,
    plan: &Addressing,
) -> Result<AttachmentRecord, Error> {
    let shared_mark = naming::network_mark(&request.network);
    let device = |link: &Link, kind: &str| RecordedDevice {
        name: link.name.clone(),
        kind: kind.to_string(),
        shared: link.owner_mark() == Some(shared_mark.as_str()),
    };
    let mut devices: Vec<RecordedDevice> = upstream.vrf.iter().map(|v| device(v, "vrf")).collect();
    devices.push(device(upstream.bridge, "bridge"));
    devices.push(RecordedDevice {
        name: host_name.to_string(),
        kind: "veth".into(),
        shared: false,
    });
    let mut record = AttachmentRecord::begun(request.attachment()?, &request.env);
    record.devices = devices;
    record.addresses = plan.addresses.iter().map(|(address, _)| *address).collect();
    record.gateways = plan
        .addresses
        .iter()
        .filter_map(|(_, gateway)| *gateway)
        .collect();
    record.ipam = recorded_ipam(config, request)?;
    Ok(record)
}

/// How the record tells GC and the node agent to give the addresses back: the IPAM plugin and
/// the config to replay its DEL with.
fn recorded_ipam<C>(
    config: &ValidVethConfig,
    request: &Request<C>,
) -> Result<Option<RecordedIpam>, Error> {
    match &config.addresses {
        AddressSource::Ipam(ipam) => Ok(Some(RecordedIpam {
            plugin: ipam.plugin.clone(),
            config: serde_json::from_slice(&request.stdin)
                .map_err(|e| Error::State(format!("the config to replay is not JSON: {e}")))?,
            cni_path: request.env.cni_path.clone(),
        })),
        AddressSource::Static(_) | AddressSource::Runtime => Ok(None),
    }
}

/// Rolls back a failed ADD as DEL would: the attachment's own devices (the pair, and in pod
/// scope its bridge and VRF), every lease IPAM gave it (when it gave any), and its record.
async fn undo<C>(
    netlink: &Netlink,
    attachment: &Attachment,
    config: &ValidVethConfig,
    handed_out: bool,
    request: &Request<C>,
) {
    let release = match &config.addresses {
        AddressSource::Ipam(ipam) if handed_out => {
            Some(|_: &[IpAddr]| ipam.del(&request.env, &request.stdin, &request.state_dir, &[]))
        }
        _ => None,
    };
    if let Err(error) = attachment
        .tear_down(netlink, &request.records(), release)
        .await
    {
        tracing::error!("undo: {error}");
    }
}
