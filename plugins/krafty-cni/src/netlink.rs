//! A small layer over rtnetlink: the queries and changes the plugins make, with errno-level
//! outcomes (EEXIST, ENODEV) decided here once instead of in every plugin.

use std::net::IpAddr;

use futures_util::future::LocalBoxFuture;
use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
pub use netlink_packet_route::link::InfoKind;
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InetDevConf, InfoData, InfoVeth,
    InfoVrf, InfoVxlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVrf,
    LinkVxlan, MulticastGroup, RouteMessageBuilder,
};
use std::os::fd::AsRawFd;

use crate::error::Error;
use crate::naming;

/// What krafty needs to know about a network device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub alias: Option<String>,
    /// The index of the device this one is enslaved to (a bridge, a VRF).
    pub controller: Option<u32>,
    pub up: bool,
    pub mac: String,
    pub mtu: Option<u32>,
    pub vrf_table: Option<u32>,
    /// The interface group (0, the default, unless krafty or an admin set one).
    pub group: u32,
    /// A VXLAN device's settings.
    pub vxlan: Option<VxlanInfo>,
}

/// What krafty reads back of a VXLAN device (VNI 0, which no config names, when it says
/// nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: u32,
    pub port: u16,
    /// The source address of the tunnel's packets (`local`), when set.
    pub local: Option<IpAddr>,
    /// Whether the device learns remote MACs from the packets it receives.
    pub learning: bool,
}

impl Link {
    fn from_message(message: LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            kind: None,
            alias: None,
            controller: None,
            up: message.header.flags.contains(LinkFlags::Up),
            mac: String::new(),
            mtu: None,
            vrf_table: None,
            group: 0,
            vxlan: None,
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
                LinkAttribute::Controller(index) => link.controller = Some(index),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
                LinkAttribute::Group(group) => link.group = group,
                LinkAttribute::Address(bytes) => link.mac = format_mac(&bytes),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind),
                            LinkInfo::Data(InfoData::Vrf(vrf)) => {
                                link.vrf_table = vrf.iter().find_map(|v| match v {
                                    InfoVrf::TableId(table) => Some(*table),
                                    _ => None,
                                });
                            }
                            LinkInfo::Data(InfoData::Vxlan(vxlan)) => {
                                link.vxlan = Some(VxlanInfo::from_attributes(&vxlan));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    pub fn is_kind(&self, kind: &InfoKind) -> bool {
        self.kind.as_ref() == Some(kind)
    }

    /// The owner part of the device's krafty mark (the alias up to its flags).
    pub fn owner_mark(&self) -> Option<&str> {
        self.alias.as_deref().and_then(|a| a.split(' ').next())
    }

    /// Whether krafty marked this device with `flag` (e.g. [`naming::HAIRPIN_FLAG`]).
    pub fn has_mark_flag(&self, flag: &str) -> bool {
        self.alias.as_deref().is_some_and(|a| {
            naming::is_krafty_mark(Some(a)) && a.split(' ').skip(1).any(|f| f == flag)
        })
    }

    /// Whether this device carries `mark`, i.e. krafty created it for this attachment.
    pub fn is_marked(&self, mark: &str) -> bool {
        self.owner_mark() == Some(mark)
    }

    /// Whether this device has no mark at all and is in interface `group`: krafty created it
    /// in that group and was killed before the request that marks it.
    pub fn is_unmarked_in_group(&self, group: u32) -> bool {
        self.alias.is_none() && self.group == group
    }

    /// Refuses to go on unless this device carries `mark`: krafty never modifies or deletes a
    /// device it did not create for this attachment.
    pub fn ensure_marked(&self, mark: &str) -> Result<(), Error> {
        match self.owner_mark() {
            Some(owner) if owner == mark => Ok(()),
            Some(alias) if naming::is_krafty_mark(Some(alias)) => Err(Error::DeviceConflict {
                name: self.name.clone(),
                reason: format!("belongs to another krafty attachment ({alias})"),
            }),
            _ => Err(Error::DeviceConflict {
                name: self.name.clone(),
                reason: "was not created by krafty (no krafty mark in its alias)".into(),
            }),
        }
    }
}

impl VxlanInfo {
    fn from_attributes(attributes: &[InfoVxlan]) -> VxlanInfo {
        let mut info = VxlanInfo {
            vni: 0,
            port: 0,
            local: None,
            learning: false,
        };
        for attribute in attributes {
            match attribute {
                InfoVxlan::Id(vni) => info.vni = *vni,
                InfoVxlan::Port(port) => info.port = *port,
                InfoVxlan::Local(local) => info.local = Some(IpAddr::V4(*local)),
                InfoVxlan::Local6(local) => info.local = Some(IpAddr::V6(*local)),
                InfoVxlan::Learning(learning) => info.learning = *learning,
                _ => {}
            }
        }
        info
    }
}

pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Work for a netlink connection of its own, boxed so that the threads and runtimes that run
/// such work are one piece of code for every caller rather than kilobytes of it for each.
pub(crate) type Work<'a> =
    Box<dyn FnOnce(Netlink) -> LocalBoxFuture<'a, Result<(), Error>> + Send + 'a>;

/// Runs `work` on a single-threaded runtime of the calling thread and a connection opened
/// there; `runtime` names the runtime in the error when it cannot start.
pub(crate) fn run_here(runtime: &str, work: Work<'_>) -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::io(format!("starting {runtime}"), e))?
        .block_on(async { work(Netlink::connect()?).await })
}

/// Runs `work` on a connection of its own in a thread of its own (see
/// [`Netlink::delete_in_background`]).
fn in_background(work: Work<'static>) -> std::thread::JoinHandle<Result<(), Error>> {
    std::thread::spawn(move || run_here("a runtime", work))
}

/// A random locally administered unicast MAC, as the kernel gives a veth end by itself.
pub fn random_mac() -> Result<[u8; 6], Error> {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `mac.len()` bytes into `mac`.
    let written = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if written != mac.len() as isize {
        return Err(Error::io(
            "drawing a random MAC",
            std::io::Error::last_os_error(),
        ));
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

/// The devices that appear or change in the calling thread's network namespace, as the
/// kernel announces them (needs a tokio runtime).
pub fn link_changes() -> Result<impl futures_util::Stream<Item = Link> + Unpin + Send, Error> {
    let (connection, _, messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
        .map_err(|e| Error::io("subscribing to netlink notifications", e))?;
    tokio::spawn(connection);
    Ok(futures_util::StreamExt::filter_map(
        messages,
        |(message, _)| {
            std::future::ready(match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    Some(Link::from_message(link))
                }
                _ => None,
            })
        },
    ))
}

/// The errno of a failed netlink request, positive (e.g. `libc::EEXIST`).
pub fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(-message.raw_code()),
        _ => None,
    }
}

fn failure(operation: impl Into<String>, error: rtnetlink::Error) -> Error {
    let errno = errno(&error);
    let reason = match errno {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => describe(&error),
    };
    Error::Netlink {
        operation: operation.into(),
        errno,
        reason,
    }
}

/// A bridge to create.
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    pub alias: &'a str,
    /// Its own MAC, which it keeps whatever ports come and go ([`naming::bridge_mac`]).
    pub mac: [u8; 6],
    pub mtu: Option<u32>,
    pub promiscuous: bool,
    pub controller: Option<u32>,
    /// Its attachment's interface group, or its network's for a shared bridge.
    pub group: u32,
    /// IGMP/MLD snooping. Off unless asked for: without a querier on the network it forwards
    /// nothing differently, and with it on the kernel walks every port on each port change.
    pub multicast_snooping: bool,
}

/// A veth pair to create between the node and a container.
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub peer_name: &'a str,
    pub peer_netns: &'a std::fs::File,
    pub alias: &'a str,
    pub bridge: u32,
    pub mtu: Option<u32>,
    /// The pod end's MAC, when the runtime asks for one.
    pub peer_mac: Option<[u8; 6]>,
    /// The attachment's interface group, for the host end.
    pub group: u32,
    /// The host end's MAC, chosen by the caller so that it need not look the device up after
    /// creating it (a lookup makes the kernel finish the bridge's port bookkeeping, which grows
    /// with its ports, inside the request).
    pub host_mac: [u8; 6],
}

/// A multi-node network's VXLAN port to create, born on its bridge and down.
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub alias: &'a str,
    pub vni: u32,
    pub port: u16,
    /// This node's address on the underlay, the tunnel's source.
    pub local: IpAddr,
    pub mtu: u32,
    pub bridge: u32,
    /// The network's interface group.
    pub group: u32,
}

/// Whose forwarding entry it is: the VXLAN device's own (where a MAC's frames are sent on the
/// underlay) or the bridge's (which port a MAC is behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbTable {
    Device,
    Bridge,
}

/// A forwarding-database entry of a bridge port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub table: FdbTable,
    /// Where a VXLAN device sends the MAC's frames.
    pub destination: Option<IpAddr>,
    /// The port's own address, which the bridge keeps for it (not one anybody added).
    pub own_address: bool,
}

/// The all-zero MAC: a VXLAN device's entries for it are where broadcast, multicast and unknown
/// unicast go, each to every destination listed.
pub const FLOOD_MAC: [u8; 6] = [0; 6];

/// A route krafty installs, in the form both families share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub output_index: u32,
    pub metric: Option<u32>,
    pub table: Option<u32>,
}

/// The builder's complaint about a route that does not fit its family.
fn invalid(error: impl std::fmt::Display) -> Error {
    Error::invalid_config(error.to_string())
}

/// rtnetlink's `Display` of an error prints an unexpected message with `Debug`, which links
/// the `Debug` of every netlink message type into the plugins; its type number says enough.
fn describe(error: &rtnetlink::Error) -> String {
    match error {
        rtnetlink::Error::UnexpectedMessage(message) => format!(
            "Received an unexpected message of type {}",
            message.header.message_type
        ),
        rtnetlink::Error::NetlinkError(message) => {
            format!("Received a netlink error message {message}")
        }
        rtnetlink::Error::RequestFailed => "A netlink request failed".into(),
        rtnetlink::Error::NamespaceError(reason) => format!("Namespace error {reason}"),
        rtnetlink::Error::InvalidHardwareAddress(address) => {
            format!(
                "Received a link message with an invalid hardware address attribute: {address:?}."
            )
        }
        rtnetlink::Error::InvalidIp(address) => {
            format!("Failed to parse an IP address: {address:?}")
        }
        rtnetlink::Error::InvalidAddress(ip, mask) => {
            format!("Failed to parse a network address (IP and mask): {ip:?}/{mask:?}")
        }
        rtnetlink::Error::InvalidNla(nla) => format!("Attempting to set and Invalid NLA: {nla}"),
    }
}

impl RouteSpec {
    fn to_message(&self) -> Result<RouteMessage, Error> {
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(self.destination.addr(), self.destination.prefix_len())
            .map_err(invalid)?
            .output_interface(self.output_index);
        match self.gateway {
            Some(gateway) => builder = builder.gateway(gateway).map_err(invalid)?,
            // A route without a gateway reaches its destination on the link itself.
            None => builder = builder.scope(RouteScope::Link),
        }
        if let Some(metric) = self.metric {
            builder = builder.priority(metric);
        }
        if let Some(table) = self.table {
            builder = builder.table_id(table);
        }
        Ok(builder.build())
    }
}

/// A route as read back from the kernel, for CHECK and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub output_index: Option<u32>,
    pub table: u32,
    pub metric: Option<u32>,
}

/// A forwarding entry of bridge port `index` for `mac`: the port device's own (NTF_SELF,
/// permanent; a VXLAN device sends the MAC's frames to `destination`), or the bridge's
/// (NTF_MASTER, static: the MAC is behind the port).
fn fdb_message(
    index: u32,
    mac: [u8; 6],
    table: FdbTable,
    destination: Option<IpAddr>,
) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = index;
    (message.header.flags, message.header.state) = match table {
        FdbTable::Device => (NeighbourFlags::Own, NeighbourState::Permanent),
        FdbTable::Bridge => (NeighbourFlags::Controller, NeighbourState::Noarp),
    };
    message
        .attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if let Some(destination) = destination {
        message
            .attributes
            .push(NeighbourAttribute::Destination(destination.into()));
    }
    message
}

/// A neighbour message's address as an IP. Forwarding entries (family AF_BRIDGE) carry their
/// VXLAN destination as raw bytes, 4 or 16 of them.
fn neighbour_ip(address: &NeighbourAddress) -> Option<IpAddr> {
    match address {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// One rtnetlink connection, bound to the network namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace; needs a tokio runtime.
    pub fn connect() -> Result<Netlink, Error> {
        let (mut connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("opening a netlink socket", e))?;
        // Strict checking makes the kernel apply the filters in a dump request's header (an
        // address dump's interface, say) instead of sending every object of the namespace, which
        // grows with the number of attachments.
        connection
            .socket_mut()
            .socket_ref()
            .set_netlink_get_strict_chk(true)
            .map_err(|e| Error::io("asking for strict netlink dumps", e))?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>, Error> {
        let request = self.handle.link().get().match_name(name.to_string());
        self.first_link(request, || format!("looking up {name}"))
            .await
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, Error> {
        let request = self.handle.link().get().match_index(index);
        self.first_link(request, || format!("looking up interface {index}"))
            .await
    }

    async fn first_link(
        &self,
        request: rtnetlink::LinkGetRequest,
        operation: impl Fn() -> String,
    ) -> Result<Option<Link>, Error> {
        match request.execute().try_next().await {
            Ok(message) => Ok(message.map(Link::from_message)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(failure(operation(), e)),
        }
    }

    /// Every device in interface group `group`. The kernel cannot filter a dump by group, so
    /// this lists every device, without their statistics.
    pub async fn links_in_group(&self, group: u32) -> Result<Vec<Link>, Error> {
        let request = self
            .handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats]);
        self.dump_links(
            request,
            format!("listing interface group {group}"),
            |link| link.group == group,
        )
        .await
    }

    /// Every device of one kind (the kernel filters the dump by kind).
    pub async fn links_of_kind(&self, kind: InfoKind) -> Result<Vec<Link>, Error> {
        let mut request = self.handle.link().get();
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind.clone())]));
        self.dump_links(request, format!("listing {kind} devices"), |link| {
            link.is_kind(&kind)
        })
        .await
    }

    /// The devices of a link dump that `keep` accepts.
    async fn dump_links(
        &self,
        request: rtnetlink::LinkGetRequest,
        operation: String,
        keep: impl Fn(&Link) -> bool,
    ) -> Result<Vec<Link>, Error> {
        let messages: Vec<LinkMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| failure(operation, e))?;
        Ok(messages
            .into_iter()
            .map(Link::from_message)
            .filter(|link| keep(link))
            .collect())
    }

    /// Creates a device and marks it with `alias`. `Ok(false)` when a device of that name
    /// already exists. The kernel ignores IFLA_IFALIAS when it creates a device, so the mark
    /// is a second request; until it lands the device is unmarked, which makes a concurrent
    /// invocation refuse it rather than adopt it.
    async fn create(&self, name: &str, alias: &str, message: LinkMessage) -> Result<bool, Error> {
        match self.handle.link().add(message).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => return Ok(false),
            Err(e) => return Err(failure(format!("creating {name}"), e)),
        }
        let mark = LinkUnspec::new_with_name(name).alias(alias).build();
        self.set(&format!("marking {name}"), mark).await?;
        Ok(true)
    }

    async fn set(&self, operation: &str, message: LinkMessage) -> Result<(), Error> {
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| failure(operation, e))
    }

    /// Deletes a device; one that is already gone counts as deleted.
    pub async fn delete(&self, link: &Link) -> Result<(), Error> {
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(failure(format!("deleting {}", link.name), e)),
        }
    }

    /// Deletes every device of interface group `group` (never 0) in one RTM_DELLINK (ifindex 0,
    /// IFLA_GROUP): the kernel unregisters them in one batch (`rtnl_group_dellink`). An empty
    /// group counts as deleted.
    pub async fn delete_group(&self, group: u32) -> Result<(), Error> {
        let mut request = self.handle.link().del(0);
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::Group(group));
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(failure(format!("deleting interface group {group}"), e)),
        }
    }

    /// Deletes `link` from a thread of its own, on a netlink socket of its own, and returns at
    /// once. The kernel answers RTM_DELLINK only after an RCU grace period (the `rcu_barrier`
    /// in `netdev_run_todo`, 20-35 ms), with the sending thread blocked in `sendmsg` all along:
    /// devices deleted from separate threads wait out the same grace period instead of one
    /// each, and the caller can do other work meanwhile.
    pub fn delete_in_background(link: Link) -> std::thread::JoinHandle<Result<(), Error>> {
        in_background(Box::new(move |netlink| {
            Box::pin(async move { netlink.delete(&link).await })
        }))
    }

    /// [`Netlink::delete_group`] from a thread of its own, as [`Netlink::delete_in_background`].
    pub fn delete_group_in_background(group: u32) -> std::thread::JoinHandle<Result<(), Error>> {
        in_background(Box::new(move |netlink| {
            Box::pin(async move { netlink.delete_group(group).await })
        }))
    }

    /// Adds an address; one that is already there counts as added. `no_dad` skips IPv6
    /// duplicate address detection so the address is usable at once.
    pub async fn add_address(&self, index: u32, address: IpNet, no_dad: bool) -> Result<(), Error> {
        let mut request = self
            .handle
            .address()
            .add(index, address.addr(), address.prefix_len());
        if no_dad && address.addr().is_ipv6() {
            request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(failure(format!("adding address {address}"), e)),
        }
    }

    /// The addresses of interface `index` (the kernel filters the dump by interface).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>, Error> {
        Ok(self
            .address_dump(Some(index))
            .await?
            .into_iter()
            .map(|(_, net)| net)
            .collect())
    }

    /// Every address on the node, with the index of its device.
    pub async fn all_addresses(&self) -> Result<Vec<(u32, IpNet)>, Error> {
        self.address_dump(None).await
    }

    /// The addresses of interface `only` (all of them without), each with its interface.
    async fn address_dump(&self, only: Option<u32>) -> Result<Vec<(u32, IpNet)>, Error> {
        let mut request = self.handle.address().get();
        if let Some(index) = only {
            request.message_mut().header.index = index;
        }
        let what = only.map_or("listing addresses".to_string(), |index| {
            format!("listing addresses of interface {index}")
        });
        let messages: Vec<AddressMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| failure(what, e))?;
        Ok(messages
            .into_iter()
            .filter(|m| only.is_none_or(|index| m.header.index == index))
            .filter_map(|m| {
                let (index, prefix) = (m.header.index, m.header.prefix_len);
                m.attributes.into_iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => {
                        IpNet::new(ip, prefix).ok().map(|n| (index, n))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// Creates a VRF device, up, in `group`, marked. `Ok(false)` when the name is taken.
    pub async fn create_vrf(
        &self,
        name: &str,
        table: u32,
        alias: &str,
        group: u32,
    ) -> Result<bool, Error> {
        let builder = LinkVrf::new(name, table).up().link_group(group);
        self.create(name, alias, builder.build()).await
    }

    /// Whether the kernel can make VRF devices, asked without making one: a request for a VRF
    /// without a table is refused with EINVAL by a kernel that knows VRFs, and with
    /// EOPNOTSUPP by one that does not (after trying to load the module).
    pub async fn supports_vrf(&self) -> Result<bool, Error> {
        let probe = "krafty-probe";
        let message = LinkMessageBuilder::<LinkVrf>::new(probe).build();
        match self.handle.link().add(message).execute().await {
            Err(e) if errno(&e) == Some(libc::EINVAL) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => Ok(false),
            Err(e) => Err(failure("probing for VRF support", e)),
            Ok(()) => {
                // Never expected; a probe must leave nothing behind.
                if let Some(link) = self.link(probe).await? {
                    self.delete(&link).await?;
                }
                Ok(true)
            }
        }
    }

    /// Creates a bridge, up, marked, enslaved to `controller` when given.
    pub async fn create_bridge(&self, spec: &BridgeSpec<'_>) -> Result<bool, Error> {
        let mut builder = LinkBridge::new(spec.name)
            .address(spec.mac.to_vec())
            .promiscuous(spec.promiscuous)
            .mcast_snooping(spec.multicast_snooping);
        if let Some(mtu) = spec.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(controller) = spec.controller {
            builder = builder.controller(controller);
        }
        builder = builder.link_group(spec.group);
        self.create(spec.name, spec.alias, builder.build()).await
    }

    /// Creates a veth pair in one request: the host end up, marked and on `bridge`, the peer
    /// born inside the container's namespace under its final name (no move, no rename).
    pub async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<bool, Error> {
        let mut peer =
            LinkUnspec::new_with_name(spec.peer_name).setns_by_fd(spec.peer_netns.as_raw_fd());
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        // Down until it is marked and has no IPv6 link-local address to make (see below).
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.host_name.to_string())
            .address(spec.host_mac.to_vec())
            .controller(spec.bridge);
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
            host = host.mtu(mtu);
        }
        // The host end only: the peer is in the pod's namespace and goes with the host end.
        host = host.link_group(spec.group);
        let message = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        if !self.create(spec.host_name, spec.alias, message).await? {
            return Ok(false);
        }
        // A bridge port needs no IPv6 address of its own. Without one, the node's IPv6 tables
        // do not grow by a link-local address and route per attachment, and the kernel's walks
        // of them on every link event stay short. The kernel takes this only after creation.
        // A node without IPv6 has nothing to turn off.
        let no_link_local = LinkUnspec::new_with_name(spec.host_name)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        match self.handle.link().set(no_link_local).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(failure(format!("configuring {}", spec.host_name), e)),
        }
        let up = LinkUnspec::new_with_name(spec.host_name).up().build();
        self.set(&format!("bringing {} up", spec.host_name), up)
            .await?;
        Ok(true)
    }

    /// Marks `link` with `alias`: finishes the creation of a device whose creator was killed
    /// between the request that made it and the one that marks it.
    pub async fn mark(&self, link: &Link, alias: &str) -> Result<(), Error> {
        let message = LinkUnspec::new_with_index(link.index).alias(alias).build();
        self.set(&format!("marking {}", link.name), message).await
    }

    /// Gives `link` the MAC `mac`.
    pub async fn set_mac(&self, link: &Link, mac: [u8; 6]) -> Result<(), Error> {
        let message = LinkUnspec::new_with_index(link.index)
            .address(mac.to_vec())
            .build();
        self.set(&format!("setting the MAC of {}", link.name), message)
            .await
    }

    /// Enslaves `link` to `controller` (a VRF, a bridge).
    pub async fn set_controller(&self, link: &Link, controller: u32) -> Result<(), Error> {
        let message = LinkUnspec::new_with_index(link.index)
            .controller(controller)
            .build();
        self.set(&format!("enslaving {}", link.name), message).await
    }

    pub async fn set_up(&self, link: &Link) -> Result<(), Error> {
        let message = LinkUnspec::new_with_index(link.index).up().build();
        self.set(&format!("bringing {} up", link.name), message)
            .await
    }

    /// Brings a pod's interface up answering ARP only for its own addresses, with them as the
    /// source of its own requests (arp_ignore 1, arp_announce 2): a pod with two interfaces in
    /// one subnet (one network attached twice) would otherwise answer for both addresses on
    /// both interfaces, and traffic for one would arrive on the other.
    pub async fn set_pod_interface_up(&self, link: &Link) -> Result<(), Error> {
        let mut arp = InetDevConf::default();
        arp.arp_ignore = 1;
        arp.arp_announce = 2;
        let message = LinkUnspec::new_with_index(link.index)
            .up()
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(arp),
            ])]))
            .build();
        self.set(&format!("bringing {} up", link.name), message)
            .await
    }

    /// Lets frames leave a bridge port by the port they came in on.
    pub async fn set_hairpin(&self, port: &Link) -> Result<(), Error> {
        let message = LinkBridgePort::new(port.index).hairpin(true).build();
        self.handle
            .link()
            .set_port(message)
            .execute()
            .await
            .map_err(|e| failure(format!("setting hairpin mode on {}", port.name), e))
    }

    /// Creates a VXLAN device on `spec.bridge`, down, marked, learning nothing from what it
    /// receives. `Ok(false)` when a device of that name exists; the kernel also refuses (as
    /// "exists") a second device with the VNI and UDP port of another.
    pub async fn create_vxlan(&self, spec: &VxlanSpec<'_>) -> Result<bool, Error> {
        let mut builder = LinkVxlan::new(spec.name, spec.vni)
            .port(spec.port)
            .learning(false)
            .mtu(spec.mtu)
            .controller(spec.bridge)
            .link_group(spec.group);
        builder = match spec.local {
            IpAddr::V4(local) => builder.local(local),
            IpAddr::V6(local) => builder.local6(local),
        };
        self.create(spec.name, spec.alias, builder.build()).await
    }

    /// Makes `port` a tunnel port of its bridge: the bridge learns no MAC behind it (every
    /// entry there is krafty's) and answers ARP and neighbour solicitations for its own
    /// addresses without sending them through (neigh_suppress), so a gateway present on every
    /// node's bridge is answered where it is asked.
    pub async fn set_tunnel_port(&self, port: &Link) -> Result<(), Error> {
        let message = LinkBridgePort::new(port.index)
            .learning(false)
            .neigh_suppress(true)
            .build();
        self.handle
            .link()
            .set_port(message)
            .execute()
            .await
            .map_err(|e| failure(format!("configuring {} as a tunnel port", port.name), e))
    }

    /// Gives `link` the MTU `mtu`.
    pub async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), Error> {
        let message = LinkUnspec::new_with_index(link.index).mtu(mtu).build();
        self.set(&format!("setting the MTU of {}", link.name), message)
            .await
    }

    /// The forwarding entries of bridge port `index` (a VXLAN device's own and the bridge's).
    pub async fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>, Error> {
        let mut request = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge);
        request.message_mut().header.ifindex = index;
        let messages: Vec<NeighbourMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| failure(format!("listing the forwarding entries of {index}"), e))?;
        Ok(messages
            .into_iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(|m| {
                let mut mac = None;
                let mut destination = None;
                for attribute in &m.attributes {
                    match attribute {
                        NeighbourAttribute::LinkLayerAddress(bytes) => {
                            mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
                        }
                        NeighbourAttribute::Destination(address) => {
                            destination = neighbour_ip(address);
                        }
                        _ => {}
                    }
                }
                // The device's own entries carry NTF_SELF; the bridge's name it (NDA_MASTER).
                let table = if m.header.flags.contains(NeighbourFlags::Own) {
                    FdbTable::Device
                } else {
                    FdbTable::Bridge
                };
                let own_address =
                    table == FdbTable::Bridge && m.header.state == NeighbourState::Permanent;
                Some(FdbEntry {
                    mac: mac?,
                    table,
                    destination,
                    own_address,
                })
            })
            .collect())
    }

    /// Adds `destination` to where VXLAN device `index` sends broadcast, multicast and unknown
    /// unicast (an all-zero entry; one already there counts as added).
    pub async fn add_flood_destination(
        &self,
        index: u32,
        destination: IpAddr,
    ) -> Result<(), Error> {
        let entry = fdb_message(index, FLOOD_MAC, FdbTable::Device, Some(destination));
        let operation = format!("adding flood destination {destination} to interface {index}");
        self.add_fdb_entry(entry, NLM_F_APPEND, operation).await
    }

    /// Removes `destination` from VXLAN device `index`'s flood list; one that is not there
    /// counts as removed.
    pub async fn remove_flood_destination(
        &self,
        index: u32,
        destination: IpAddr,
    ) -> Result<(), Error> {
        let entry = fdb_message(index, FLOOD_MAC, FdbTable::Device, Some(destination));
        let operation = format!("removing flood destination {destination} of interface {index}");
        self.remove_fdb_entry(entry, operation).await
    }

    /// Sends `mac`'s frames through VXLAN port `index` to `destination` alone: the bridge
    /// forwards them to the port and the port to that node, instead of both flooding them.
    /// Replaces what either entry said before.
    pub async fn set_remote_mac(
        &self,
        index: u32,
        mac: [u8; 6],
        destination: IpAddr,
    ) -> Result<(), Error> {
        let mac_text = format_mac(&mac);
        let device = fdb_message(index, mac, FdbTable::Device, Some(destination));
        let operation = format!("sending {mac_text} through interface {index} to {destination}");
        self.add_fdb_entry(device, NLM_F_REPLACE, operation).await?;
        let bridge = fdb_message(index, mac, FdbTable::Bridge, None);
        let operation = format!("placing {mac_text} behind bridge port {index}");
        self.add_fdb_entry(bridge, NLM_F_REPLACE, operation).await
    }

    /// Removes both entries [`Netlink::set_remote_mac`] adds; one not there counts as removed.
    /// Tries both before it reports the first error.
    pub async fn remove_remote_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), Error> {
        let mac_text = format_mac(&mac);
        let device = fdb_message(index, mac, FdbTable::Device, None);
        let device_removed = self
            .remove_fdb_entry(device, format!("removing {mac_text} of interface {index}"))
            .await;
        let bridge = fdb_message(index, mac, FdbTable::Bridge, None);
        let bridge_removed = self
            .remove_fdb_entry(
                bridge,
                format!("removing {mac_text} of bridge port {index}"),
            )
            .await;
        device_removed.and(bridge_removed)
    }

    async fn add_fdb_entry(
        &self,
        entry: NeighbourMessage,
        flags: u16,
        operation: String,
    ) -> Result<(), Error> {
        let message = RouteNetlinkMessage::NewNeighbour(entry);
        self.send_fdb_request(message, NLM_F_CREATE | flags, operation, false)
            .await
    }

    async fn remove_fdb_entry(
        &self,
        entry: NeighbourMessage,
        operation: String,
    ) -> Result<(), Error> {
        let message = RouteNetlinkMessage::DelNeighbour(entry);
        self.send_fdb_request(message, 0, operation, true).await
    }

    /// rtnetlink has no request for forwarding entries: the message is sent as it is.
    async fn send_fdb_request(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
        operation: String,
        absent_is_done: bool,
    ) -> Result<(), Error> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut responses = handle
            .request(request)
            .map_err(|e| failure(operation.clone(), e))?;
        while let Some(response) = futures_util::StreamExt::next(&mut responses).await {
            if let NetlinkPayload::Error(error) = response.payload {
                let error = rtnetlink::Error::NetlinkError(error);
                if absent_is_done && errno(&error) == Some(libc::ENOENT) {
                    return Ok(());
                }
                return Err(failure(operation, error));
            }
        }
        Ok(())
    }

    /// Adds a route; an identical one already there counts as added.
    pub async fn add_route(&self, route: &RouteSpec) -> Result<(), Error> {
        match self.handle.route().add(route.to_message()?).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(failure(format!("adding route to {}", route.destination), e)),
        }
    }

    /// The routes of one family in every table.
    pub async fn routes(&self, family: AddressFamily) -> Result<Vec<InstalledRoute>, Error> {
        // A strict dump filters by the header's table, protocol and type: all left unspecified.
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| failure("listing routes", e))?;
        Ok(messages
            .into_iter()
            .map(|m| {
                let prefix = m.header.destination_prefix_length;
                let mut route = InstalledRoute {
                    destination: IpNet::new(
                        if family == AddressFamily::Inet6 {
                            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                        } else {
                            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                        },
                        0,
                    )
                    .unwrap_or_default(),
                    gateway: None,
                    output_index: None,
                    table: u32::from(m.header.table),
                    metric: None,
                };
                for attribute in &m.attributes {
                    match attribute {
                        RouteAttribute::Destination(address) => {
                            if let Some(ip) = route_address(address) {
                                route.destination =
                                    IpNet::new(ip, prefix).unwrap_or(route.destination);
                            }
                        }
                        RouteAttribute::Gateway(address) => route.gateway = route_address(address),
                        RouteAttribute::Oif(index) => route.output_index = Some(*index),
                        RouteAttribute::Table(table) => route.table = *table,
                        RouteAttribute::Priority(metric) => route.metric = Some(*metric),
                        _ => {}
                    }
                }
                route
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_with_alias(alias: Option<&str>) -> Link {
        Link {
            index: 7,
            name: "krbabc".into(),
            kind: Some(InfoKind::Bridge),
            alias: alias.map(String::from),
            up: true,
            ..Link::default()
        }
    }

    #[test]
    fn forwarding_destinations_parse_from_raw_bytes() {
        let v4 = NeighbourAddress::Other(vec![192, 168, 77, 2]);
        assert_eq!(neighbour_ip(&v4), Some("192.168.77.2".parse().unwrap()));
        let v6: IpAddr = "fd77::2".parse().unwrap();
        let IpAddr::V6(octets) = v6 else {
            unreachable!()
        };
        let raw = NeighbourAddress::Other(octets.octets().to_vec());
        assert_eq!(neighbour_ip(&raw), Some(v6));
        assert_eq!(neighbour_ip(&NeighbourAddress::Other(vec![1, 2, 3])), None);
    }

    #[test]
    fn marks_decide_ownership() {
        let mark = naming::attachment_mark("net", "abc", "net1");
        link_with_alias(Some(&mark)).ensure_marked(&mark).unwrap();
        for alias in [None, Some("uplink"), Some("krafty:net/other/net1")] {
            let err = link_with_alias(alias).ensure_marked(&mark).unwrap_err();
            assert_eq!(err.code(), crate::error::code::DEVICE_CONFLICT, "{alias:?}");
        }
    }

    #[test]
    fn macs_print_like_ip_link() {
        assert_eq!(
            format_mac(&[0x02, 0, 0xab, 1, 2, 0xff]),
            "02:00:ab:01:02:ff"
        );
    }
}
