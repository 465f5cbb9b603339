//! Network configuration: the fields every plugin shares, and each plugin's own, validated
//! before anything touches the kernel.
//!
//! Parsing happens in two steps. serde reads the JSON shape (a failure there is "cannot decode",
//! code 6); `validate` then checks every value and turns it into typed form (a failure there is
//! "invalid network config", code 7, with a message naming the field).

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::invocation_log;
use crate::naming::{DEFAULT_VXLAN_PORT, RESERVED_TABLES, VNI_RANGE};

/// Where plugin logs may be written, unless the node's environment says otherwise.
pub const DEFAULT_LOG_ROOT: &str = "/var/log/krafty";
/// The roots below are set by whoever runs the plugins (the node, a test), never by a config.
pub const LOG_ROOT_ENV: &str = "KRAFTY_LOG_ROOT";
pub const DEFAULT_LOG_FILE_NAME: &str = "krafty.log";
/// Where attachment records may be kept.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/krafty";
pub const STATE_ROOT_ENV: &str = "KRAFTY_STATE_ROOT";
/// Where per-network locks live (a tmpfs: locks must not survive a reboot).
pub const DEFAULT_RUN_DIR: &str = "/run/krafty";
pub const RUN_DIR_ENV: &str = "KRAFTY_RUN_DIR";

/// The fields of every plugin config, around the plugin's own (`plugin`).
#[derive(Debug, Deserialize)]
pub struct NetConf<T> {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(rename = "logFile", default)]
    pub log_file: Option<String>,
    #[serde(rename = "stateDir", default)]
    pub state_dir: Option<String>,
    #[serde(rename = "disableGC", default)]
    pub disable_gc: bool,
    /// GC's list of the attachments that are still in use.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    #[serde(flatten)]
    pub plugin: T,
    /// The invocation log's rotation (see [`log_rotation`]).
    #[serde(rename = "logMaxBytes", default)]
    pub log_max_bytes: Option<i64>,
    #[serde(rename = "logMaxFiles", default)]
    pub log_max_files: Option<i64>,
}

/// An attachment the runtime still uses, as GC lists them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// One value or a list of them: `"10.0.0.0/24"` or `["10.0.0.0/24", "fd00::/64"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// The log file an invocation appends to: `None` when logging is off (`"logFile": ""`).
///
/// A network config is written by whoever may create NetworkAttachmentDefinitions, so it may
/// only choose a file below the log root; it cannot make a root process append elsewhere.
pub fn log_file(
    requested: Option<&str>,
    log_root: Option<&Path>,
) -> Result<Option<PathBuf>, Error> {
    let root = log_root.unwrap_or(Path::new(DEFAULT_LOG_ROOT));
    match requested {
        None => Ok(Some(root.join(DEFAULT_LOG_FILE_NAME))),
        Some("") => Ok(None),
        Some(path) => confined("logFile", path, root, false).map(Some),
    }
}

/// Bounds of `logMaxBytes` and `logMaxFiles`: whoever writes a network config can neither
/// fill the node's disk with the log (256 MiB x 10 at most) nor rotate it away every few lines.
pub const LOG_MAX_BYTES_RANGE: std::ops::RangeInclusive<i64> = (64 << 10)..=(256 << 20);
pub const LOG_MAX_FILES_RANGE: std::ops::RangeInclusive<i64> = 2..=10;

/// The invocation log's rotation: `logMaxBytes` per file, `logMaxFiles` files in all.
pub fn log_rotation(
    max_bytes: Option<i64>,
    max_files: Option<i64>,
) -> Result<invocation_log::Rotation, Error> {
    let default = invocation_log::Rotation::default();
    let within = |field: &str, value: i64, range: std::ops::RangeInclusive<i64>| {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(Error::invalid_config(format!(
                "{field} {value} is outside {}..={}",
                range.start(),
                range.end()
            )))
        }
    };
    Ok(invocation_log::Rotation {
        max_bytes: match max_bytes {
            Some(bytes) => within("logMaxBytes", bytes, LOG_MAX_BYTES_RANGE)? as u64,
            None => default.max_bytes,
        },
        max_files: match max_files {
            Some(files) => within("logMaxFiles", files, LOG_MAX_FILES_RANGE)? as u32,
            None => default.max_files,
        },
    })
}

/// The directory attachment records are kept in: `stateDir`, at or below the state root.
pub fn state_dir(requested: Option<&str>, state_root: Option<&Path>) -> Result<PathBuf, Error> {
    let root = state_root.unwrap_or(Path::new(DEFAULT_STATE_ROOT));
    match requested {
        None => Ok(root.to_path_buf()),
        Some(path) => confined("stateDir", path, root, true),
    }
}

/// `path` if it is absolute, free of `.` and `..`, and below `root` (or `root` itself when
/// `root_allowed`); the config's error otherwise.
fn confined(field: &str, path: &str, root: &Path, root_allowed: bool) -> Result<PathBuf, Error> {
    let candidate = Path::new(path);
    let normal = candidate.is_absolute()
        && !path.contains('\0')
        && candidate
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let inside = candidate.starts_with(root) && (root_allowed || candidate != root);
    if !normal || !inside {
        return Err(Error::invalid_config(format!(
            "{field} {path:?} must be an absolute path below {} without '.' or '..'",
            root.display()
        )));
    }
    Ok(candidate.to_path_buf())
}

fn parse_cidr(field: &str, text: &str) -> Result<IpNet, Error> {
    text.parse::<IpNet>().map_err(|_| {
        Error::invalid_config(format!(
            "{field} {text:?} is not an address with a prefix length (CIDR)"
        ))
    })
}

fn parse_ip(field: &str, text: &str) -> Result<IpAddr, Error> {
    text.parse::<IpAddr>()
        .map_err(|_| Error::invalid_config(format!("{field} {text:?} is not an IP address")))
}

fn validate_mtu(field: &str, mtu: Option<i64>) -> Result<Option<u32>, Error> {
    match mtu {
        None => Ok(None),
        Some(mtu @ 68..=65535) => Ok(Some(mtu as u32)),
        Some(mtu) => Err(Error::invalid_config(format!(
            "{field} {mtu} is outside 68..65535"
        ))),
    }
}

/// Whether devices belong to one pod or are shared by every pod of the network on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Devices of one attachment, removed by its DEL (the default).
    Pod,
    /// One VRF and bridge per network name on the node, shared by all its pods.
    Network,
}

impl Scope {
    /// How configs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Pod => "pod",
            Scope::Network => "network",
        }
    }
}

fn validate_scope(scope: Option<&str>) -> Result<Scope, Error> {
    match scope {
        None | Some("pod") => Ok(Scope::Pod),
        Some("network") => Ok(Scope::Network),
        Some(other) => Err(Error::invalid_config(format!(
            "scope {other:?} is not one of \"pod\", \"network\""
        ))),
    }
}

/// `krafty-vrf`'s own fields.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct VrfConfig {
    #[serde(rename = "vrfTable", default)]
    pub vrf_table: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidVrfConfig {
    pub table: Option<u32>,
    pub scope: Scope,
}

impl VrfConfig {
    pub fn validate(&self) -> Result<ValidVrfConfig, Error> {
        let table = match self.vrf_table {
            None => None,
            Some(table) if table < 0 || table > i64::from(u32::MAX) => {
                return Err(Error::invalid_config(format!(
                    "vrfTable {table} is not a routing table id (1..4294967295)"
                )))
            }
            Some(table) if RESERVED_TABLES.contains(&(table as u32)) => {
                return Err(Error::invalid_config(format!(
                    "vrfTable {table} is reserved by the kernel (0, 253 default, 254 main, 255 local)"
                )))
            }
            Some(table) => Some(table as u32),
        };
        let scope = validate_scope(self.scope.as_deref())?;
        // Every pod's VRF in one table would put every pod's bridge, with the same gateway, in
        // that table: only one pod would be reachable.
        if let (Some(table), Scope::Pod) = (table, scope) {
            return Err(Error::invalid_config(format!(
                "vrfTable {table} names the network's routing table, but scope \"pod\" gives \
                 every pod a VRF of its own: use scope \"network\" (one VRF per network, with \
                 this table) or leave vrfTable out"
            )));
        }
        Ok(ValidVrfConfig { table, scope })
    }
}

/// `krafty-bridge`'s own fields.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct BridgeConfig {
    #[serde(default)]
    pub subnet: Option<OneOrMany>,
    #[serde(default)]
    pub gateway: Option<OneOrMany>,
    #[serde(default)]
    pub mtu: Option<i64>,
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    pub promisc_mode: bool,
    #[serde(rename = "multicastSnooping", default)]
    pub multicast_snooping: bool,
    #[serde(default)]
    pub scope: Option<String>,
    /// Stretches the network across nodes (see [`MultiNodeConfig`]).
    #[serde(rename = "multiNode", default)]
    pub multi_node: Option<MultiNodeConfig>,
}

/// `multiNode` of krafty-bridge: one L2 segment across every node, each node's shared bridge
/// joined to the others' by a VXLAN port.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct MultiNodeConfig {
    #[serde(default)]
    pub vni: Option<i64>,
    #[serde(default)]
    pub port: Option<i64>,
    /// The address family of the node addresses the tunnel runs between.
    #[serde(default)]
    pub underlay: Option<String>,
}

/// The address family of a tunnel's underlay: what the encapsulation costs depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderlayFamily {
    Ipv4,
    Ipv6,
}

impl UnderlayFamily {
    /// How configs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            UnderlayFamily::Ipv4 => "ipv4",
            UnderlayFamily::Ipv6 => "ipv6",
        }
    }

    /// Bytes VXLAN adds to an inner frame's IP packet: outer IP header (20 or 40), UDP (8),
    /// VXLAN (8) and the inner Ethernet header (14).
    pub fn overhead(self) -> u32 {
        match self {
            UnderlayFamily::Ipv4 => 50,
            UnderlayFamily::Ipv6 => 70,
        }
    }

    pub fn contains(self, address: &IpAddr) -> bool {
        address.is_ipv4() == (self == UnderlayFamily::Ipv4)
    }
}

/// A valid `multiNode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidMultiNode {
    /// The configured VNI; without one it is derived from the network's name.
    pub vni: Option<u32>,
    pub port: u16,
    pub underlay: UnderlayFamily,
}

impl ValidMultiNode {
    /// The VNI of `network`'s tunnel.
    pub fn vni(&self, network: &str) -> u32 {
        self.vni
            .unwrap_or_else(|| crate::naming::derived_vni(network))
    }
}

impl MultiNodeConfig {
    fn validate(&self, scope: Scope) -> Result<ValidMultiNode, Error> {
        if scope != Scope::Network {
            return Err(Error::invalid_config(
                "multiNode needs scope \"network\": a network stretched across nodes has one \
                 bridge per node, shared by its pods there",
            ));
        }
        let vni = match self.vni {
            None => None,
            Some(vni) if u32::try_from(vni).is_ok_and(|v| VNI_RANGE.contains(&v)) => {
                Some(vni as u32)
            }
            Some(vni) => {
                return Err(Error::invalid_config(format!(
                    "multiNode.vni {vni} is outside {}..{}",
                    VNI_RANGE.start(),
                    VNI_RANGE.end()
                )))
            }
        };
        let port = match self.port {
            None => DEFAULT_VXLAN_PORT,
            Some(port @ 1..=65535) => port as u16,
            Some(port) => {
                return Err(Error::invalid_config(format!(
                    "multiNode.port {port} is outside 1..65535"
                )))
            }
        };
        let underlay = match self.underlay.as_deref() {
            None | Some("ipv4") => UnderlayFamily::Ipv4,
            Some("ipv6") => UnderlayFamily::Ipv6,
            Some(other) => {
                return Err(Error::invalid_config(format!(
                    "multiNode.underlay {other:?} is not one of \"ipv4\", \"ipv6\""
                )))
            }
        };
        Ok(ValidMultiNode {
            vni,
            port,
            underlay,
        })
    }
}

/// One address family of a bridge: its subnet and the gateway address the bridge carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayNet {
    pub subnet: IpNet,
    pub gateway: IpAddr,
}

impl GatewayNet {
    /// The gateway with the subnet's prefix, as it is assigned to the bridge.
    pub fn gateway_address(&self) -> IpNet {
        // The prefix length comes from a valid IpNet of the same family.
        IpNet::new(self.gateway, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidBridgeConfig {
    pub networks: Vec<GatewayNet>,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    pub multicast_snooping: bool,
    pub scope: Scope,
    pub multi_node: Option<ValidMultiNode>,
}

impl BridgeConfig {
    pub fn validate(&self) -> Result<ValidBridgeConfig, Error> {
        let subnets = self
            .subnet
            .clone()
            .ok_or_else(|| {
                Error::invalid_config(
                    "subnet is required (CIDR, or a list of one per address family)",
                )
            })?
            .into_vec();
        let gateways = self
            .gateway
            .clone()
            .ok_or_else(|| Error::invalid_config("gateway is required (an address inside subnet)"))?
            .into_vec();
        if subnets.is_empty() || subnets.len() != gateways.len() {
            return Err(Error::invalid_config(format!(
                "subnet and gateway must list the same number of entries (got {} and {})",
                subnets.len(),
                gateways.len()
            )));
        }
        let mut networks = Vec::with_capacity(subnets.len());
        for (subnet, gateway) in subnets.iter().zip(&gateways) {
            let subnet = parse_cidr("subnet", subnet)?.trunc();
            let gateway = parse_ip("gateway", gateway)?;
            if !subnet.contains(&gateway) {
                return Err(Error::invalid_config(format!(
                    "gateway {gateway} is outside subnet {subnet}"
                )));
            }
            if gateway == subnet.network() && subnet.prefix_len() < subnet.max_prefix_len() {
                return Err(Error::invalid_config(format!(
                    "gateway {gateway} is the network address of subnet {subnet}"
                )));
            }
            if networks
                .iter()
                .any(|n: &GatewayNet| n.subnet.addr().is_ipv4() == subnet.addr().is_ipv4())
            {
                return Err(Error::invalid_config(format!(
                    "subnet lists two networks of one address family ({subnet}); give one IPv4 and one IPv6"
                )));
            }
            networks.push(GatewayNet { subnet, gateway });
        }
        let scope = validate_scope(self.scope.as_deref())?;
        Ok(ValidBridgeConfig {
            networks,
            mtu: validate_mtu("mtu", self.mtu)?,
            hairpin: self.hairpin_mode,
            promisc: self.promisc_mode,
            multicast_snooping: self.multicast_snooping,
            scope,
            multi_node: self
                .multi_node
                .as_ref()
                .map(|m| m.validate(scope))
                .transpose()?,
        })
    }
}

/// A route in a plugin config.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    pub dst: String,
    #[serde(default)]
    pub gw: Option<String>,
}

/// A route after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRoute {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
}

/// `krafty-veth`'s own fields.
#[derive(Debug, Default, Deserialize)]
pub struct VethConfig {
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(rename = "podIP", default)]
    pub pod_ip: Option<OneOrMany>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(rename = "routeMetric", default)]
    pub route_metric: Option<i64>,
    #[serde(default)]
    pub mtu: Option<i64>,
    #[serde(rename = "enableDad", default)]
    pub enable_dad: bool,
}

/// Where the pod's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    Ipam(crate::ipam::Ipam),
    Static(Vec<IpNet>),
    /// From the runtime: `runtimeConfig.ips` (the `ips` capability) or `args.cni.ips`.
    Runtime,
}

/// Routes of the secondary interface get this metric unless the config says otherwise: higher
/// than the kernel's defaults (0 for IPv4, 1024 for IPv6), so a default route of the secondary
/// network never takes over from the pod's primary interface.
pub const DEFAULT_ROUTE_METRIC: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidVethConfig {
    pub addresses: AddressSource,
    pub routes: Vec<ValidRoute>,
    pub route_metric: u32,
    pub mtu: Option<u32>,
    /// IPv6 duplicate address detection on the pod interface (off: addresses usable at once).
    pub dad: bool,
}

impl VethConfig {
    pub fn validate(&self) -> Result<ValidVethConfig, Error> {
        let addresses = match (&self.ipam, &self.pod_ip) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid_config("give either ipam or podIP, not both"))
            }
            (None, None) => AddressSource::Runtime,
            (Some(ipam), None) => AddressSource::Ipam(crate::ipam::Ipam::from_config(ipam)?),
            (None, Some(pod_ip)) => {
                AddressSource::Static(host_addresses("podIP", &pod_ip.clone().into_vec())?)
            }
        };
        let routes = self
            .routes
            .iter()
            .map(|route| {
                let destination = parse_cidr("routes[].dst", &route.dst)?.trunc();
                let gateway = route
                    .gw
                    .as_deref()
                    .map(|gw| parse_ip("routes[].gw", gw))
                    .transpose()?;
                if gateway.is_some_and(|gw| gw.is_ipv4() != destination.addr().is_ipv4()) {
                    return Err(Error::invalid_config(format!(
                        "route to {destination}: gateway is of the other address family"
                    )));
                }
                Ok(ValidRoute {
                    destination,
                    gateway,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let route_metric = match self.route_metric {
            None => DEFAULT_ROUTE_METRIC,
            Some(metric @ 0..=0xffff_ffff) => metric as u32,
            Some(metric) => {
                return Err(Error::invalid_config(format!(
                    "routeMetric {metric} is outside 0..4294967295"
                )))
            }
        };
        Ok(ValidVethConfig {
            addresses,
            routes,
            route_metric,
            mtu: validate_mtu("mtu", self.mtu)?,
            dad: self.enable_dad,
        })
    }
}

/// The `krafty` plugin's fields: the original krafty's single-plugin config (`subnet`,
/// `gateway`, `ipam` or `podIP`, `vrfTable`), and the chain's optional fields that mean one
/// thing in one plugin (`mtu` is the bridge's and both veth ends', as the chart gives it).
/// `krafty` does what krafty-vrf, krafty-bridge and krafty-veth do, so each step reads its
/// fields from the one config as the chain's plugin reads them from its own.
#[derive(Debug, Default)]
pub struct OriginalConfig {
    pub vrf: VrfConfig,
    pub bridge: BridgeConfig,
    pub veth: VethConfig,
}

impl<'de> Deserialize<'de> for OriginalConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = Value::Object(Map::deserialize(deserializer)?);
        let step = serde::de::Error::custom;
        Ok(OriginalConfig {
            vrf: VrfConfig::deserialize(&fields).map_err(step)?,
            bridge: BridgeConfig::deserialize(&fields).map_err(step)?,
            veth: VethConfig::deserialize(&fields).map_err(step)?,
        })
    }
}

/// The `krafty` plugin's config, checked: the configs of the chain's three steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOriginalConfig {
    pub vrf: ValidVrfConfig,
    pub bridge: ValidBridgeConfig,
    pub veth: ValidVethConfig,
}

impl OriginalConfig {
    /// The three steps' configs, validated as the chain's plugins validate theirs. The scope is
    /// `network` when the config names a `vrfTable` (the original's table is the network's: one
    /// VRF, with that table, for every pod of the network on the node), else `pod`, unless
    /// `scope` says otherwise.
    pub fn validate(&self) -> Result<ValidOriginalConfig, Error> {
        let scope = self.bridge.scope.clone().or_else(|| {
            self.vrf
                .vrf_table
                .map(|_| Scope::Network.as_str().to_string())
        });
        let bridge = BridgeConfig {
            scope: scope.clone(),
            ..self.bridge.clone()
        }
        .validate()?;
        let vrf = VrfConfig {
            scope,
            ..self.vrf.clone()
        }
        .validate()?;
        let veth = self.veth.validate()?;
        Ok(ValidOriginalConfig { vrf, bridge, veth })
    }
}

/// Host addresses in CIDR form, at most one per address family.
pub fn host_addresses(field: &str, list: &[String]) -> Result<Vec<IpNet>, Error> {
    if list.is_empty() {
        return Err(Error::invalid_config(format!("{field} is an empty list")));
    }
    let mut addresses: Vec<IpNet> = Vec::with_capacity(list.len());
    for text in list {
        let address = parse_cidr(field, text)?;
        if address.addr() == address.network() && address.prefix_len() < address.max_prefix_len() {
            return Err(Error::invalid_config(format!(
                "{field} {address} is a network address, not a host address"
            )));
        }
        if addresses
            .iter()
            .any(|a| a.addr().is_ipv4() == address.addr().is_ipv4())
        {
            return Err(Error::invalid_config(format!(
                "{field} lists two addresses of one family ({address})"
            )));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

/// The addresses and MAC the runtime asks for: `runtimeConfig` (capabilities `ips`, `mac`,
/// filled by Multus from the pod's network annotation) first, then `args.cni`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeRequest {
    pub ips: Option<Vec<IpNet>>,
    pub mac: Option<[u8; 6]>,
}

impl RuntimeRequest {
    pub fn from_config(
        runtime_config: &Map<String, Value>,
        args: Option<&Value>,
    ) -> Result<RuntimeRequest, Error> {
        let args_cni = args.and_then(|a| a.get("cni"));
        let field = |key: &str| -> Option<(&'static str, &Value)> {
            if let Some(value) = runtime_config.get(key) {
                Some(("runtimeConfig", value))
            } else {
                args_cni
                    .and_then(|cni| cni.get(key))
                    .map(|value| ("args.cni", value))
            }
        };
        let ips = match field("ips") {
            None => None,
            Some((source, value)) => {
                let list: Vec<String> = serde_json::from_value(value.clone()).map_err(|_| {
                    Error::invalid_config(format!("{source}.ips must be a list of CIDR strings"))
                })?;
                Some(host_addresses(&format!("{source}.ips"), &list)?)
            }
        };
        let mac = match field("mac") {
            None => None,
            Some((source, value)) => Some(parse_mac(&format!("{source}.mac"), value)?),
        };
        Ok(RuntimeRequest { ips, mac })
    }
}

/// A unicast MAC address `aa:bb:cc:dd:ee:ff`.
fn parse_mac(field: &str, value: &Value) -> Result<[u8; 6], Error> {
    let invalid = || Error::invalid_config(format!("{field} {value} is not a unicast MAC address"));
    let text = value.as_str().ok_or_else(invalid)?;
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(invalid());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(invalid());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    // The multicast bit would make the interface unusable; all zeros is no address.
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(invalid());
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge(value: Value) -> Result<ValidBridgeConfig, Error> {
        serde_json::from_value::<BridgeConfig>(value)
            .unwrap()
            .validate()
    }

    fn veth(value: Value) -> Result<ValidVethConfig, Error> {
        serde_json::from_value::<VethConfig>(value)
            .unwrap()
            .validate()
    }

    fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Error>, mentions: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.code(), 7, "{err}");
        assert!(
            err.to_string().contains(mentions),
            "{err:?} should mention {mentions:?}"
        );
    }

    #[test]
    fn bridge_single_and_dual_stack() {
        let one = bridge(json!({"subnet": "172.16.10.0/24", "gateway": "172.16.10.1"})).unwrap();
        assert_eq!(
            one.networks[0].gateway_address().to_string(),
            "172.16.10.1/24"
        );
        assert_eq!(one.scope, Scope::Pod);
        let dual = bridge(json!({
            "subnet": ["172.16.10.0/24", "fd10:16:10::/64"],
            "gateway": ["172.16.10.1", "fd10:16:10::1"], "mtu": 9000, "hairpinMode": true,
            "multicastSnooping": true
        }))
        .unwrap();
        assert_eq!(dual.networks.len(), 2);
        assert_eq!(
            dual.networks[1].gateway_address().to_string(),
            "fd10:16:10::1/64"
        );
        assert_eq!(dual.mtu, Some(9000));
        assert!(dual.hairpin);
        assert!(dual.multicast_snooping);
    }

    #[test]
    fn bridge_bad_inputs() {
        assert_invalid(
            bridge(json!({"gateway": "172.16.10.1"})),
            "subnet is required",
        );
        assert_invalid(
            bridge(json!({"subnet": "172.16.10.0/24"})),
            "gateway is required",
        );
        assert_invalid(
            bridge(json!({"subnet": "172.16.10.0", "gateway": "172.16.10.1"})),
            "CIDR",
        );
        assert_invalid(
            bridge(json!({"subnet": "banana/24", "gateway": "172.16.10.1"})),
            "subnet",
        );
        assert_invalid(
            bridge(json!({"subnet": "172.16.10.0/24", "gateway": "172.16.11.1"})),
            "outside subnet",
        );
        assert_invalid(
            bridge(json!({"subnet": "172.16.10.0/24", "gateway": "nope"})),
            "gateway",
        );
        assert_invalid(
            bridge(json!({"subnet": "172.16.10.0/24", "gateway": "172.16.10.0"})),
            "network address",
        );
        assert_invalid(
            bridge(json!({"subnet": ["172.16.10.0/24"], "gateway": []})),
            "same number",
        );
        assert_invalid(
            bridge(
                json!({"subnet": ["10.0.0.0/24", "10.1.0.0/24"], "gateway": ["10.0.0.1", "10.1.0.1"]}),
            ),
            "one address family",
        );
        assert_invalid(
            bridge(json!({"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "mtu": 10})),
            "mtu",
        );
        assert_invalid(
            bridge(json!({"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "scope": "cluster"})),
            "scope",
        );
    }

    #[test]
    fn multi_node_fields() {
        let base = |multi: Value| {
            json!({"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "scope": "network",
                   "multiNode": multi})
        };
        let plain = bridge(base(json!({}))).unwrap().multi_node.unwrap();
        assert_eq!(plain.vni, None);
        assert_eq!(plain.vni("lab"), crate::naming::derived_vni("lab"));
        assert_eq!(plain.port, DEFAULT_VXLAN_PORT);
        assert_eq!(plain.underlay, UnderlayFamily::Ipv4);
        let chosen = bridge(base(json!({"vni": 42, "port": 9999, "underlay": "ipv6"})))
            .unwrap()
            .multi_node
            .unwrap();
        assert_eq!(
            (chosen.vni("lab"), chosen.port, chosen.underlay),
            (42, 9999, UnderlayFamily::Ipv6)
        );
        assert_eq!(UnderlayFamily::Ipv6.overhead(), 70);
        assert_eq!(
            bridge(json!({"subnet": "10.0.0.0/24", "gateway": "10.0.0.1"}))
                .unwrap()
                .multi_node,
            None
        );
        for (bad, mentions) in [
            (json!({"vni": 0}), "multiNode.vni 0"),
            (json!({"vni": 16777216}), "multiNode.vni"),
            (json!({"vni": -3}), "multiNode.vni"),
            (json!({"port": 0}), "multiNode.port"),
            (json!({"port": 70000}), "multiNode.port"),
            (json!({"underlay": "ipx"}), "multiNode.underlay"),
        ] {
            assert_invalid(bridge(base(bad)), mentions);
        }
        assert_invalid(
            bridge(json!({"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "multiNode": {}})),
            "multiNode needs scope",
        );
        assert!(
            serde_json::from_value::<BridgeConfig>(json!({"multiNode": {"vni": "x"}})).is_err()
        );
    }

    #[test]
    fn vrf_tables() {
        let vrf = |v: Value| serde_json::from_value::<VrfConfig>(v).unwrap().validate();
        assert_eq!(vrf(json!({})).unwrap().table, None);
        let shared = |table: i64| json!({"vrfTable": table, "scope": "network"});
        assert_eq!(vrf(shared(1234)).unwrap().table, Some(1234));
        assert_invalid(vrf(json!({"vrfTable": 1234})), "scope \"pod\"");
        assert_invalid(
            vrf(json!({"vrfTable": 1234, "scope": "pod"})),
            "vrfTable 1234",
        );
        for reserved in [0, 253, 254, 255] {
            assert_invalid(vrf(shared(reserved)), "reserved");
        }
        assert_invalid(vrf(json!({"vrfTable": -1})), "vrfTable");
        assert_invalid(vrf(json!({"vrfTable": 4294967296_i64})), "vrfTable");
    }

    #[test]
    fn veth_address_sources() {
        let ipam = veth(json!({"ipam": {"type": "host-local"}})).unwrap();
        assert!(matches!(ipam.addresses, AddressSource::Ipam(_)));
        assert_eq!(ipam.route_metric, DEFAULT_ROUTE_METRIC);
        let fixed = veth(
            json!({"podIP": "172.16.10.5/24", "routes": [{"dst": "0.0.0.0/0"}], "routeMetric": 10}),
        )
        .unwrap();
        assert_eq!(
            fixed.addresses,
            AddressSource::Static(vec!["172.16.10.5/24".parse().unwrap()])
        );
        assert_eq!(fixed.routes[0].destination.to_string(), "0.0.0.0/0");
        assert_eq!(fixed.route_metric, 10);
    }

    #[test]
    fn veth_bad_inputs() {
        assert_eq!(veth(json!({})).unwrap().addresses, AddressSource::Runtime);
        assert_invalid(
            veth(json!({"podIP": "10.0.0.5/24", "ipam": {"type": "host-local"}})),
            "not both",
        );
        assert_invalid(veth(json!({"podIP": "10.0.0.5"})), "CIDR");
        assert_invalid(veth(json!({"podIP": "10.0.0.0/24"})), "network address");
        assert_invalid(veth(json!({"podIP": []})), "empty");
        assert_invalid(
            veth(json!({"podIP": ["10.0.0.5/24", "10.0.1.5/24"]})),
            "one family",
        );
        assert_invalid(veth(json!({"ipam": {"type": "../evil"}})), "ipam.type");
        assert_invalid(
            veth(json!({"podIP": "10.0.0.5/24", "routes": [{"dst": "x"}]})),
            "routes[].dst",
        );
        assert_invalid(
            veth(
                json!({"podIP": "10.0.0.5/24", "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}),
            ),
            "other address family",
        );
        assert_invalid(
            veth(json!({"podIP": "10.0.0.5/24", "routeMetric": -5})),
            "routeMetric",
        );
    }

    fn original(value: Value) -> Result<ValidOriginalConfig, Error> {
        serde_json::from_value::<OriginalConfig>(value)
            .unwrap()
            .validate()
    }

    #[test]
    fn the_originals_config_is_the_chains() {
        let seed = original(json!({
            "subnet": "172.16.10.0/24", "gateway": "172.16.10.1",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "172.16.10.0/24"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}
        }))
        .unwrap();
        assert_eq!(
            seed.vrf,
            ValidVrfConfig {
                table: None,
                scope: Scope::Pod
            }
        );
        assert_eq!(seed.bridge.scope, Scope::Pod);
        assert_eq!(
            seed.bridge.networks[0].gateway_address().to_string(),
            "172.16.10.1/24"
        );
        assert!(matches!(seed.veth.addresses, AddressSource::Ipam(_)));

        let static_one = original(json!({
            "subnet": "172.16.10.0/24", "gateway": "172.16.10.1", "podIP": "172.16.10.5/24",
            "routes": [{"dst": "0.0.0.0/0"}], "mtu": 1400
        }))
        .unwrap();
        assert_eq!(
            static_one.veth.addresses,
            AddressSource::Static(vec!["172.16.10.5/24".parse().unwrap()])
        );
        assert_eq!(
            (static_one.bridge.mtu, static_one.veth.mtu),
            (Some(1400), Some(1400))
        );
        assert_eq!(static_one.veth.routes.len(), 1);
    }

    #[test]
    fn the_originals_vrf_table_is_the_networks() {
        let tabled = json!({"subnet": "172.16.10.0/24", "gateway": "172.16.10.1",
                            "podIP": "172.16.10.5/24", "vrfTable": 4242});
        let valid = original(tabled.clone()).unwrap();
        assert_eq!(
            valid.vrf,
            ValidVrfConfig {
                table: Some(4242),
                scope: Scope::Network
            }
        );
        assert_eq!(valid.bridge.scope, Scope::Network);
        let mut pod_scope = tabled.clone();
        pod_scope["scope"] = json!("pod");
        assert_invalid(original(pod_scope), "scope \"pod\"");
        let mut shared = tabled;
        shared.as_object_mut().unwrap().remove("vrfTable");
        shared["scope"] = json!("network");
        assert_eq!(original(shared).unwrap().vrf.scope, Scope::Network);
    }

    #[test]
    fn the_originals_bad_inputs() {
        let base = json!({"subnet": "172.16.10.0/24", "gateway": "172.16.10.1"});
        let with = |field: &str, value: Value| {
            let mut config = base.clone();
            config[field] = value;
            original(config)
        };
        assert_invalid(
            original(json!({"gateway": "172.16.10.1"})),
            "subnet is required",
        );
        assert_invalid(
            original(json!({"subnet": "172.16.10.0/24"})),
            "gateway is required",
        );
        assert_invalid(with("gateway", json!("172.16.11.1")), "outside subnet");
        for reserved in [0, 253, 254, 255] {
            assert_invalid(with("vrfTable", json!(reserved)), "reserved");
        }
        assert_invalid(with("vrfTable", json!(-1)), "vrfTable");
        assert_invalid(with("scope", json!("cluster")), "scope");
        assert_invalid(with("podIP", json!("172.16.10.5")), "CIDR");
        let mut both = base.clone();
        both["podIP"] = json!("172.16.10.5/24");
        both["ipam"] = json!({"type": "host-local"});
        assert_invalid(original(both), "not both");
        assert_invalid(with("mtu", json!(10)), "mtu");
        assert!(serde_json::from_value::<OriginalConfig>(json!({"vrfTable": "ten"})).is_err());
    }

    #[test]
    fn runtime_addresses_and_mac() {
        let runtime = json!({"ips": ["172.16.10.5/24", "fd10::5/64"], "mac": "02:00:00:00:00:05"});
        let request = RuntimeRequest::from_config(runtime.as_object().unwrap(), None).unwrap();
        assert_eq!(request.ips.unwrap().len(), 2);
        assert_eq!(request.mac, Some([2, 0, 0, 0, 0, 5]));
        let args = json!({"cni": {"ips": ["172.16.10.6/24"]}});
        let from_args = RuntimeRequest::from_config(&Map::new(), Some(&args)).unwrap();
        assert_eq!(from_args.ips.unwrap()[0].to_string(), "172.16.10.6/24");
        assert_eq!(
            RuntimeRequest::from_config(&Map::new(), None).unwrap(),
            RuntimeRequest::default()
        );
        for (bad, mentions) in [
            (json!({"ips": "172.16.10.5/24"}), "list of CIDR"),
            (json!({"ips": ["172.16.10.5"]}), "CIDR"),
            (json!({"mac": "01:00:00:00:00:01"}), "unicast"),
            (json!({"mac": "02:00:00:00:00"}), "MAC"),
            (json!({"mac": "zz:00:00:00:00:01"}), "MAC"),
            (json!({"mac": 5}), "MAC"),
        ] {
            assert_invalid(
                RuntimeRequest::from_config(bad.as_object().unwrap(), None),
                mentions,
            );
        }
    }

    #[test]
    fn state_dirs_stay_below_the_state_root() {
        assert_eq!(
            state_dir(None, None).unwrap(),
            PathBuf::from("/var/lib/krafty")
        );
        assert_eq!(
            state_dir(Some("/var/lib/krafty"), None).unwrap(),
            PathBuf::from("/var/lib/krafty")
        );
        assert_eq!(
            state_dir(Some("/var/lib/krafty/lab"), None).unwrap(),
            PathBuf::from("/var/lib/krafty/lab")
        );
        for hostile in [
            "/etc",
            "/var/lib/krafty/../../../root",
            "var/lib/krafty",
            "/var/lib/kraftyx",
        ] {
            assert_invalid(state_dir(Some(hostile), None), "stateDir");
        }
    }

    #[test]
    fn wrong_json_types_do_not_decode() {
        assert!(serde_json::from_value::<BridgeConfig>(json!({"subnet": 5})).is_err());
        assert!(serde_json::from_value::<VrfConfig>(json!({"vrfTable": "ten"})).is_err());
    }

    #[test]
    fn log_rotation_defaults_and_bounds() {
        assert_eq!(
            log_rotation(None, None).unwrap(),
            invocation_log::Rotation::default()
        );
        let chosen = log_rotation(Some(65536), Some(10)).unwrap();
        assert_eq!((chosen.max_bytes, chosen.max_files), (65536, 10));
        for (bytes, files, field) in [
            (Some(65535), None, "logMaxBytes"),
            (Some((256 << 20) + 1), None, "logMaxBytes"),
            (Some(-1), None, "logMaxBytes"),
            (None, Some(1), "logMaxFiles"),
            (None, Some(11), "logMaxFiles"),
        ] {
            assert_invalid(log_rotation(bytes, files), field);
        }
    }

    #[test]
    fn log_files_stay_below_the_log_root() {
        let root = Path::new("/var/log/krafty");
        assert_eq!(log_file(None, None).unwrap(), Some(root.join("krafty.log")));
        assert_eq!(log_file(Some(""), None).unwrap(), None);
        assert_eq!(
            log_file(Some("/var/log/krafty/net-a.log"), None).unwrap(),
            Some(PathBuf::from("/var/log/krafty/net-a.log"))
        );
        let test_root = Path::new("/tmp/t1");
        assert_eq!(
            log_file(None, Some(test_root)).unwrap(),
            Some(test_root.join("krafty.log"))
        );
        for hostile in [
            "/etc/passwd",
            "/var/log/krafty/../../../etc/shadow",
            "relative.log",
            "/var/log/krafty",
            "/var/log/kraftyevil/x.log",
        ] {
            assert_invalid(log_file(Some(hostile), None), "logFile");
        }
    }
}
