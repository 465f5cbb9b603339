//! host-local, in process: the same leases in the same files under the same lock as Debian's
//! and upstream's `host-local` IPAM plugin, without starting a Go process per ADD and DEL
//! (about half of a chain's ADD time on a busy node, see docs/benchmarks.md).
//!
//! Only configs whose meaning is plain are served here: ranges (or the legacy single range),
//! routes, dataDir. Anything else (requested IPs through CNI_ARGS, `args` or `runtimeConfig`,
//! `runtimeConfig.ipRanges`, `resolvConf`, a CNI version before 0.3.0, an unknown field spelled
//! like a known one, an address host-local would read differently, an invalid range) is left to
//! the real plugin, which also produces the exact error for a config it refuses.
//!
//! The on-disk store is host-local's: `<dataDir>/<network>/<address>` holds `<id>\r\n<ifname>`,
//! `last_reserved_ip.<range set>` the last address handed out, and `lock` is flocked around
//! every change, so both implementations can serve one network side by side.
//!
//! One deliberate difference: ADD does not read every lease to refuse a second address for the
//! same attachment. krafty-veth refuses a repeated ADD before IPAM (its veth exists), and the
//! DEL a runtime sends after a failed ADD releases every lease of the attachment, as here.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::env::Environment;
use crate::error::Error;
use crate::result::{CniResult, IpConfig, Route};

/// The plugin name whose configs this module can serve.
pub const PLUGIN: &str = "host-local";
const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";

/// host-local's config, understood exactly as host-local understands it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostLocal {
    /// `<dataDir>/<network>`.
    dir: PathBuf,
    range_sets: Vec<RangeSet>,
    routes: Vec<Route>,
}

/// One `ranges` entry: ranges of one family, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeSet(pub(crate) Vec<Range>);

/// Addresses `start..=end` of `subnet`, handed out with the subnet's prefix length and gateway
/// (which is never handed out itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) subnet: IpNet,
    pub(crate) start: IpAddr,
    pub(crate) end: IpAddr,
    pub(crate) gateway: IpAddr,
}

/// Why [`Store::allocate_sets`] gave nothing: range set `set` had no free address, or its
/// lease could not be written.
#[derive(Debug)]
pub(crate) enum AllocationFailure {
    Exhausted { set: usize },
    Io { set: usize, error: std::io::Error },
}

/// Why this config goes to the real host-local instead.
type Unsupported = ();

impl HostLocal {
    /// The config of `stdin` when it can be served in process; `None` when the real plugin must
    /// see it (see the module documentation).
    pub fn from_invocation(stdin: &[u8], env: &Environment) -> Option<HostLocal> {
        if requests_addresses_through_cni_args(env) {
            return None;
        }
        let config: Value = serde_json::from_slice(stdin).ok()?;
        parse(&config).ok()
    }

    /// ADD: one address from each range set, with the configured routes.
    pub fn add(&self, env: &Environment) -> Result<CniResult, Error> {
        let store = Store::open(&self.dir)?;
        let _lock = store.lock()?;
        let ips = store
            .allocate_sets(&self.range_sets, &env.container_id, &env.ifname)
            .map_err(|failure| {
                let (index, reason) = match failure {
                    AllocationFailure::Io { set, error } => (set, error.to_string()),
                    AllocationFailure::Exhausted { set } => (
                        set,
                        format!(
                            "no IP addresses available in range set: {}",
                            self.range_sets[set]
                        ),
                    ),
                };
                reported(format!("failed to allocate for range {index}: {reason}"))
            })?;
        Ok(CniResult {
            ips,
            routes: self.routes.clone(),
            ..CniResult::default()
        })
    }

    /// DEL: every lease of this attachment, whatever range set it came from. `known` are the
    /// addresses the attachment is known to hold (its record): when each of them is leased to
    /// it, they are released without reading the network's other leases, which is what makes
    /// DEL beside many attachments cost what it costs beside one. Otherwise every lease is read,
    /// as host-local does.
    pub fn del(&self, env: &Environment, known: &[IpAddr]) -> Result<(), Error> {
        let store = Store::open(&self.dir)?;
        let _lock = store.lock()?;
        if !known.is_empty() && store.release_known(&env.container_id, &env.ifname, known) {
            return Ok(());
        }
        store
            .release(&env.container_id, &env.ifname)
            .map_err(|e| reported(e.to_string()))
    }
}

/// An error worded and coded as host-local's own (its skel reports plain errors as 999).
fn reported(msg: String) -> Error {
    Error::IpamReported {
        plugin: PLUGIN.into(),
        code: 999,
        msg,
        details: String::new(),
    }
}

/// host-local reads `IP=` from CNI_ARGS, and fails on keys it does not know unless told to
/// ignore them; both cases are its to answer.
fn requests_addresses_through_cni_args(env: &Environment) -> bool {
    let args = &env.args;
    let ignore_unknown = args
        .get("IgnoreUnknown")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    args.pairs
        .iter()
        .any(|(key, _)| key == "IP" || (key != "IgnoreUnknown" && !ignore_unknown))
}

fn parse(config: &Value) -> Result<HostLocal, Unsupported> {
    let version = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    // CNI before 0.3.0 limits addresses per family; not worth reproducing.
    if !version_at_least_0_3(version) {
        return Err(());
    }
    let network = config.get("name").and_then(Value::as_str).ok_or(())?;
    for place in ["runtimeConfig", "args"] {
        if let Some(value) = config.get(place) {
            if requests_addresses(place, value)? {
                return Err(());
            }
        }
    }
    let ipam = config.get("ipam").and_then(Value::as_object).ok_or(())?;
    const IPAM_FIELDS: [&str; 9] = [
        "type",
        "subnet",
        "rangeStart",
        "rangeEnd",
        "gateway",
        "routes",
        "dataDir",
        "resolvConf",
        "ranges",
    ];
    check_spelling(ipam, &IPAM_FIELDS, false)?;
    if ipam.get("type").and_then(Value::as_str) != Some(PLUGIN) {
        return Err(());
    }
    if !optional_str(ipam, "resolvConf")?.is_empty() {
        return Err(());
    }
    let data_dir = match optional_str(ipam, "dataDir")? {
        "" => DEFAULT_DATA_DIR,
        dir => dir,
    };

    let mut range_sets = Vec::new();
    // The legacy single range comes first, as in host-local.
    if ipam.get("subnet").is_some_and(|s| !s.is_null()) {
        range_sets.push(RangeSet(vec![parse_range(ipam, true)?]));
    } else if ["rangeStart", "rangeEnd", "gateway"]
        .iter()
        .any(|f| ipam.get(*f).is_some_and(|v| !v.is_null()))
    {
        return Err(());
    }
    if let Some(ranges) = ipam.get("ranges").filter(|r| !r.is_null()) {
        for set in ranges.as_array().ok_or(())? {
            let ranges = set
                .as_array()
                .ok_or(())?
                .iter()
                .map(|r| r.as_object().ok_or(()).and_then(|r| parse_range(r, false)))
                .collect::<Result<Vec<_>, _>>()?;
            range_sets.push(RangeSet(ranges));
        }
    }
    if range_sets.is_empty() {
        return Err(());
    }
    for set in &range_sets {
        set.validate()?;
    }
    for (i, a) in range_sets.iter().enumerate() {
        for b in &range_sets[i + 1..] {
            if a.overlaps(b) {
                return Err(());
            }
        }
    }

    let routes = match ipam.get("routes").filter(|r| !r.is_null()) {
        None => Vec::new(),
        Some(routes) => routes
            .as_array()
            .ok_or(())?
            .iter()
            .map(parse_route)
            .collect::<Result<_, _>>()?,
    };
    Ok(HostLocal {
        dir: Path::new(data_dir).join(network),
        range_sets,
        routes,
    })
}

fn version_at_least_0_3(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => major > 0 || minor >= 3,
        _ => false,
    }
}

/// Whether `runtimeConfig` or `args` ask host-local for particular addresses or ranges.
fn requests_addresses(place: &str, value: &Value) -> Result<bool, Unsupported> {
    let Some(object) = value.as_object() else {
        return if value.is_null() { Ok(false) } else { Err(()) };
    };
    // Go decodes field names case-insensitively, so any spelling of these counts.
    let wanted: &[&str] = match place {
        "runtimeConfig" => &["ips", "ipranges"],
        _ => &["cni"],
    };
    Ok(object.iter().any(|(key, value)| {
        wanted.contains(&key.to_ascii_lowercase().as_str()) && !is_empty_request(value)
    }))
}

fn is_empty_request(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        // args.cni: only its `ips` matter to host-local.
        Value::Object(fields) => fields
            .iter()
            .all(|(k, v)| !k.eq_ignore_ascii_case("ips") || is_empty_request(v)),
        _ => false,
    }
}

/// Go's JSON decoding matches field names without regard to case: a field spelled differently
/// from `known` but equal ignoring case would mean something to host-local that it would not
/// mean here. With `strict`, no other field is allowed at all.
fn check_spelling(
    object: &Map<String, Value>,
    known: &[&str],
    strict: bool,
) -> Result<(), Unsupported> {
    for key in object.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        if strict || known.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(());
        }
    }
    Ok(())
}

fn optional_str<'a>(object: &'a Map<String, Value>, key: &str) -> Result<&'a str, Unsupported> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(()),
    }
}

/// An address as Go's `net.ParseIP` would read it to the same thing; IPv4-mapped IPv6 and other
/// spellings Go reads differently are left to host-local.
fn parse_ip(text: &str) -> Result<IpAddr, Unsupported> {
    if text.contains(':') && text.contains('.') {
        return Err(());
    }
    text.parse().map_err(drop)
}

fn optional_ip(object: &Map<String, Value>, key: &str) -> Result<Option<IpAddr>, Unsupported> {
    match optional_str(object, key)? {
        "" => Ok(None),
        text => parse_ip(text).map(Some),
    }
}

/// A range as host-local canonicalizes it: gateway and start default to the subnet's first
/// address, the end to its last (less the IPv4 broadcast); all must lie in the subnet.
fn parse_range(object: &Map<String, Value>, legacy: bool) -> Result<Range, Unsupported> {
    if !legacy {
        check_spelling(
            object,
            &["subnet", "rangeStart", "rangeEnd", "gateway"],
            true,
        )?;
    }
    let subnet_text = optional_str(object, "subnet")?;
    let (address, _) = subnet_text.split_once('/').ok_or(())?;
    parse_ip(address)?;
    let subnet = subnet_text.parse::<IpNet>().map_err(drop)?.trunc();
    let bits = if subnet.addr().is_ipv4() { 32 } else { 128 };
    if subnet.prefix_len() > bits - 2 {
        return Err(());
    }
    let network = to_number(subnet.addr());
    let first = from_number(network + 1, subnet.addr());
    let last = {
        let broadcast = to_number(subnet.broadcast());
        from_number(if bits == 32 { broadcast - 1 } else { broadcast }, first)
    };
    let inside = |ip: IpAddr| ip.is_ipv4() == first.is_ipv4() && subnet.contains(&ip);
    let gateway = optional_ip(object, "gateway")?.unwrap_or(first);
    let start = optional_ip(object, "rangeStart")?.unwrap_or(first);
    let end = optional_ip(object, "rangeEnd")?.unwrap_or(last);
    if !inside(gateway) || !inside(start) || !inside(end) || to_number(end) < to_number(start) {
        return Err(());
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

fn parse_route(value: &Value) -> Result<Route, Unsupported> {
    let object = value.as_object().ok_or(())?;
    check_spelling(object, &["dst", "gw"], true)?;
    let dst_text = optional_str(object, "dst")?;
    let (address, _) = dst_text.split_once('/').ok_or(())?;
    parse_ip(address)?;
    Ok(Route {
        dst: dst_text.parse::<IpNet>().map_err(drop)?.trunc(),
        gw: optional_ip(object, "gw")?,
        extra: Map::new(),
    })
}

pub(crate) fn to_number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

/// The address `number` in the family of `like`.
pub(crate) fn from_number(number: u128, like: IpAddr) -> IpAddr {
    match like {
        // Only ever called with numbers taken from this family's addresses.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(number as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(number)),
    }
}

impl Range {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && self.subnet.contains(&ip)
            && (to_number(self.start)..=to_number(self.end)).contains(&to_number(ip))
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }
}

impl RangeSet {
    fn validate(&self) -> Result<(), Unsupported> {
        let ranges = &self.0;
        let family = ranges.first().ok_or(())?.start.is_ipv4();
        if ranges.iter().any(|r| r.start.is_ipv4() != family) {
            return Err(());
        }
        for (i, a) in ranges.iter().enumerate() {
            if ranges[i + 1..].iter().any(|b| a.overlaps(b)) {
                return Err(());
            }
        }
        Ok(())
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|r| r.contains(ip))
    }

    fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }
}

impl std::fmt::Display for RangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, range) in self.0.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            write!(f, "{separator}{}-{}", range.start, range.end)?;
        }
        Ok(())
    }
}

/// host-local's round-robin walk: from the address after the last one handed out (or from the
/// first range's start), through the ranges in order, once around, skipping gateways.
struct Walk<'a> {
    set: &'a RangeSet,
    range: usize,
    current: Option<IpAddr>,
    /// The address that ends the walk when reached again.
    first: Option<IpAddr>,
}

impl<'a> Walk<'a> {
    fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Walk<'a> {
        let resume =
            last_reserved.and_then(|ip| set.0.iter().position(|r| r.contains(ip)).map(|i| (i, ip)));
        match resume {
            Some((range, ip)) => Walk {
                set,
                range,
                current: Some(ip),
                first: None,
            },
            None => Walk {
                set,
                range: 0,
                current: None,
                first: Some(set.0[0].start),
            },
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = IpAddr;

    fn next(&mut self) -> Option<IpAddr> {
        loop {
            let candidate = match self.current {
                None => {
                    let start = self.set.0[self.range].start;
                    self.first = Some(start);
                    start
                }
                Some(current) => {
                    let next = if current == self.set.0[self.range].end {
                        self.range = (self.range + 1) % self.set.0.len();
                        self.set.0[self.range].start
                    } else {
                        from_number(to_number(current) + 1, current)
                    };
                    match self.first {
                        None => self.first = Some(next),
                        Some(first) if first == next => return None,
                        Some(_) => {}
                    }
                    next
                }
            };
            self.current = Some(candidate);
            if candidate != self.set.0[self.range].gateway {
                return Some(candidate);
            }
        }
    }
}

/// The lease files of one network.
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    pub(crate) fn open(dir: &Path) -> Result<Store, Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// host-local's lock: an exclusive flock on `<dir>/lock`, released when the file closes.
    pub(crate) fn lock(&self) -> Result<nix::fcntl::Flock<File>, Error> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o750)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io(format!("locking {}", path.display()), errno.into()))
    }

    /// One address from each range set for attachment `id`/`ifname`; when a set has none, the
    /// addresses the earlier sets gave are released again (as host-local does).
    pub(crate) fn allocate_sets(
        &self,
        sets: &[RangeSet],
        id: &str,
        ifname: &str,
    ) -> Result<Vec<IpConfig>, AllocationFailure> {
        let mut ips = Vec::new();
        for (index, set) in sets.iter().enumerate() {
            let failure = match self.allocate(set, index, id, ifname) {
                Ok(Some(ip)) => {
                    ips.push(ip);
                    continue;
                }
                Ok(None) => AllocationFailure::Exhausted { set: index },
                Err(error) => AllocationFailure::Io { set: index, error },
            };
            if index > 0 {
                let _ = self.release(id, ifname);
            }
            return Err(failure);
        }
        Ok(ips)
    }

    fn allocate(
        &self,
        set: &RangeSet,
        index: usize,
        id: &str,
        ifname: &str,
    ) -> std::io::Result<Option<IpConfig>> {
        let last_file = self.dir.join(format!("{LAST_RESERVED_PREFIX}{index}"));
        let last_reserved = std::fs::read_to_string(&last_file)
            .ok()
            .and_then(|text| parse_ip(text.trim()).ok())
            .filter(|ip| set.contains(*ip));
        for ip in Walk::new(set, last_reserved) {
            if !self.reserve(ip, id, ifname)? {
                continue;
            }
            std::fs::write(&last_file, ip.to_string())?;
            let range = set.0.iter().find(|r| r.contains(ip)).unwrap_or(&set.0[0]);
            let address = IpNet::new(ip, range.subnet.prefix_len())
                .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
            return Ok(Some(IpConfig {
                address,
                gateway: Some(range.gateway),
                interface: None,
                extra: Map::new(),
            }));
        }
        Ok(None)
    }

    /// Claims `ip` by creating its file; `false` when another attachment holds it.
    fn reserve(&self, ip: IpAddr, id: &str, ifname: &str) -> std::io::Result<bool> {
        let path = self.dir.join(ip.to_string());
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(error) => return Err(error),
        };
        if let Err(error) = file.write_all(lease_holder(id, ifname).as_bytes()) {
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        Ok(true)
    }

    /// Removes the leases of `addresses` if every one of them holds `<id>\r\n<ifname>`.
    /// `false` when one does not, or could not be removed: the caller then reads every lease.
    pub(crate) fn release_known(&self, id: &str, ifname: &str, addresses: &[IpAddr]) -> bool {
        let owned = lease_holder(id, ifname);
        let paths: Vec<PathBuf> = addresses
            .iter()
            .map(|ip| self.dir.join(ip.to_string()))
            .collect();
        let all_owned = paths
            .iter()
            .all(|path| std::fs::read_to_string(path).is_ok_and(|holder| holder.trim() == owned));
        all_owned && paths.iter().all(|path| std::fs::remove_file(path).is_ok())
    }

    /// Removes every lease holding `<id>\r\n<ifname>`, or failing that (leases of host-local
    /// before 0.7) just `<id>`; unreadable files are passed over, as host-local does. An empty
    /// lease is removed too: a lease is created and written under the lock, so an empty one
    /// is what a writer killed in between left, and it would hold its address forever.
    pub(crate) fn release(&self, id: &str, ifname: &str) -> std::io::Result<()> {
        let id = id.trim();
        let owned = lease_holder(id, ifname);
        let leases = self.holders()?;
        let mut released = false;
        for (path, holder) in &leases {
            if *holder == owned && std::fs::remove_file(path).is_ok() {
                released = true;
            }
            let names_an_address = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| parse_ip(name).is_ok());
            if holder.is_empty() && names_an_address {
                let _ = std::fs::remove_file(path);
            }
        }
        if !released {
            for (path, holder) in &leases {
                if holder == id {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        Ok(())
    }

    /// Every readable file of the store with its trimmed content (a lease's holder; the lock
    /// and `last_reserved_ip` files too, which callers tell apart by name).
    fn holders(&self) -> std::io::Result<Vec<(PathBuf, String)>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let Ok(entry) = entry else { continue };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Ok(content) = std::fs::read_to_string(entry.path()) {
                files.push((entry.path(), content.trim().to_string()));
            }
        }
        Ok(files)
    }

    /// The leases: each address with its holder (`<id>\r\n<ifname>`, empty for a lease whose
    /// writer was killed before it wrote).
    pub(crate) fn leases(&self) -> std::io::Result<Vec<(IpAddr, String)>> {
        Ok(self
            .holders()?
            .into_iter()
            .filter_map(|(path, holder)| {
                let name = path.file_name()?.to_str()?;
                parse_ip(name).ok().map(|ip| (ip, holder))
            })
            .collect())
    }

    /// Removes the lease of `ip`.
    pub(crate) fn remove_lease(&self, ip: IpAddr) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(ip.to_string())) {
            Err(error) if error.kind() != ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

/// How a lease names its holder: `<id>\r\n<ifname>`.
pub(crate) fn lease_holder(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}
