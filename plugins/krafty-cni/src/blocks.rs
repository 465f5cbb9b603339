//! Per-node address blocks of multi-node networks, and `krafty-blocks`, the IPAM that hands
//! out addresses from them in process.
//!
//! A multi-node network's subnet is carved into blocks. The node agent claims blocks for its
//! node through the Kubernetes API and writes them to `<stateDir>/blocks/<network>.json`
//! ([`NodeBlocks`], written atomically); ADD allocates only from the blocks that file lists and
//! makes no API call. Without the file, or with every block full, ADD fails with code 11 (try
//! again later): two nodes never hand out the same address, because a block is in one node's
//! file only while the API holds it for that node.
//!
//! The leases are host-local's files (see [`crate::host_local`]) in
//! `<stateDir>/blocks/<network>/`, under the same flock on its `lock` file. ADD reads the blocks
//! file under that lock, and the agent takes a block out of the file under it only after
//! finding no lease in the block: no address is handed out from a block the node gives back.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ValidAttachment;
use crate::env::Environment;
use crate::error::Error;
use crate::host_local::{
    from_number, lease_holder, to_number, AllocationFailure, Range, RangeSet, Store,
};
use crate::result::CniResult;

/// The IPAM type served by this module.
pub const PLUGIN: &str = "krafty-blocks";
/// The directory below a state directory that holds every network's blocks and leases.
pub const BLOCKS_DIR: &str = "blocks";

/// A blocks file is a few lines; anything much larger is not one.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// What `<stateDir>/blocks/<network>.json` says: the blocks the API holds for this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBlocks {
    pub network: String,
    pub node: String,
    /// One entry per address family of the network, in the order of its subnets: a pod gets
    /// one address from each.
    pub families: Vec<FamilyBlocks>,
}

/// The blocks of one subnet (one address family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FamilyBlocks {
    /// The network's whole subnet: pods get its prefix length.
    pub subnet: IpNet,
    /// The network's gateway in the subnet, the same on every node: never handed out.
    pub gateway: IpAddr,
    pub blocks: Vec<IpNet>,
}

impl FamilyBlocks {
    fn family(&self) -> &'static str {
        if self.subnet.addr().is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        }
    }

    fn range_set(&self) -> RangeSet {
        RangeSet(
            self.blocks
                .iter()
                .filter_map(|block| usable_range(self.subnet, self.gateway, *block))
                .collect(),
        )
    }
}

/// The addresses of `block` a pod can get, as host-local bounds a range: not the subnet's own
/// address, not its IPv4 broadcast address (the gateway is skipped when walking).
fn usable_range(subnet: IpNet, gateway: IpAddr, block: IpNet) -> Option<Range> {
    let first = to_number(subnet.network()) + 1;
    let broadcast = to_number(subnet.broadcast());
    let last = if subnet.addr().is_ipv4() {
        broadcast - 1
    } else {
        broadcast
    };
    let start = to_number(block.network()).max(first);
    let end = to_number(block.broadcast()).min(last);
    (start <= end).then(|| Range {
        subnet,
        start: from_number(start, subnet.addr()),
        end: from_number(end, subnet.addr()),
        gateway,
    })
}

/// How many addresses of `block` pods can get (see [`usable_range`]; the gateway excluded).
pub fn usable_count(subnet: IpNet, gateway: IpAddr, block: IpNet) -> u128 {
    usable_range(subnet, gateway, block).map_or(0, |range| {
        let all = to_number(range.end) - to_number(range.start) + 1;
        all - u128::from(range.contains(gateway))
    })
}

impl NodeBlocks {
    /// Whether the file describes `network` sensibly: blocks inside their family's subnet,
    /// one entry per family.
    pub fn validate(&self, network: &str) -> Result<(), String> {
        if self.network != network {
            return Err(format!("it is network {:?}'s", self.network));
        }
        if self.families.is_empty() || self.families.len() > 2 {
            return Err("it must have one or two address families".into());
        }
        if self.families.len() == 2
            && self.families[0].subnet.addr().is_ipv4() == self.families[1].subnet.addr().is_ipv4()
        {
            return Err("its two subnets are of one address family".into());
        }
        for family in &self.families {
            let subnet = family.subnet;
            if subnet.trunc() != subnet || !subnet.contains(&family.gateway) {
                return Err(format!(
                    "subnet {subnet} with gateway {} is not a subnet and an address in it",
                    family.gateway
                ));
            }
            for block in &family.blocks {
                if block.trunc() != *block || !subnet.contains(block) {
                    return Err(format!("block {block} is not a block of {subnet}"));
                }
            }
        }
        Ok(())
    }

    /// The node's blocks of every family, for messages.
    fn describe(&self) -> String {
        let blocks: Vec<String> = self
            .families
            .iter()
            .flat_map(|f| f.blocks.iter().map(ToString::to_string))
            .collect();
        if blocks.is_empty() {
            "none".into()
        } else {
            blocks.join(", ")
        }
    }
}

/// One network's blocks file and leases below a state directory.
#[derive(Debug, Clone)]
pub struct NetworkBlocks {
    network: String,
    file: PathBuf,
    leases: PathBuf,
}

/// The network's lease lock, held until dropped.
pub struct LeaseLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

impl NetworkBlocks {
    pub fn new(state_dir: &Path, network: &str) -> NetworkBlocks {
        let dir = state_dir.join(BLOCKS_DIR);
        NetworkBlocks {
            network: network.to_string(),
            file: dir.join(format!("{network}.json")),
            leases: dir.join(network),
        }
    }

    /// `<stateDir>/blocks/<network>.json`.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// `<stateDir>/blocks/<network>/`, host-local's layout.
    pub fn leases_dir(&self) -> &Path {
        &self.leases
    }

    /// The blocks file, `None` when there is none yet.
    pub fn read(&self) -> Result<Option<NodeBlocks>, Error> {
        let unreadable = |reason: String| {
            Error::State(format!(
                "{} is not a blocks file of the node agent: {reason}",
                self.file.display()
            ))
        };
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.file)
        {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Error::io(format!("reading {}", self.file.display()), error)),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&file, MAX_FILE_BYTES + 1),
            &mut bytes,
        )
        .map_err(|e| Error::io(format!("reading {}", self.file.display()), e))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(unreadable(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let blocks: NodeBlocks =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
        blocks.validate(&self.network).map_err(unreadable)?;
        Ok(Some(blocks))
    }

    /// Replaces the blocks file atomically: the new content goes to a temporary file, is
    /// synced and renamed over the old one, so a reader (or a writer killed at any point) sees
    /// the old file or the new one, never a torn one.
    pub fn write(&self, blocks: &NodeBlocks) -> Result<(), Error> {
        let failed = |e| Error::io(format!("writing {}", self.file.display()), e);
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(failed)?;
        let temporary = dir.join(format!(".{}.json.tmp", self.network));
        let bytes = serde_json::to_vec_pretty(blocks).map_err(|e| Error::State(e.to_string()))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temporary)
            .map_err(failed)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(failed)?;
        std::fs::rename(&temporary, &self.file).map_err(failed)?;
        // The rename itself survives a power loss once the directory is synced.
        File::open(dir).and_then(|d| d.sync_all()).map_err(failed)
    }

    fn store(&self) -> Result<Store, Error> {
        Store::open(&self.leases)
    }

    /// The lock ADD holds while it reads the blocks file and takes a lease.
    pub fn lock(&self) -> Result<LeaseLock, Error> {
        Ok(LeaseLock(self.store()?.lock()?))
    }

    /// Every address with a lease on this node.
    pub fn leased(&self) -> Result<Vec<IpAddr>, Error> {
        let leases = self
            .store()?
            .leases()
            .map_err(|e| Error::io(format!("listing {}", self.leases.display()), e))?;
        Ok(leases.into_iter().map(|(ip, _)| ip).collect())
    }

    /// ADD: one address of each family from the node's blocks, under the lease lock.
    pub(crate) fn add(&self, env: &Environment) -> Result<CniResult, Error> {
        let store = self.store()?;
        let _lock = store.lock()?;
        let Some(blocks) = self.read()? else {
            return Err(Error::TryAgainLater(format!(
                "network {} has no address block on this node yet ({} does not exist): the \
                 krafty node agent writes it once it has claimed a block for the node; is it \
                 running, with {} among its --address-pools?",
                self.network,
                self.file.display(),
                self.network
            )));
        };
        if let Some(empty) = blocks.families.iter().find(|f| f.blocks.is_empty()) {
            return Err(Error::TryAgainLater(format!(
                "network {} has no {} address block on node {} yet: the krafty node agent \
                 claims one from {}",
                self.network,
                empty.family(),
                blocks.node,
                empty.subnet
            )));
        }
        let sets: Vec<RangeSet> = blocks
            .families
            .iter()
            .map(FamilyBlocks::range_set)
            .collect();
        match store.allocate_sets(&sets, &env.container_id, &env.ifname) {
            Ok(ips) => Ok(CniResult {
                ips,
                ..CniResult::default()
            }),
            Err(AllocationFailure::Exhausted { set }) => Err(Error::TryAgainLater(format!(
                "the {} address blocks of network {} on node {} are full ({}): the krafty \
                 node agent claims another one",
                blocks.families[set].family(),
                self.network,
                blocks.node,
                blocks.describe()
            ))),
            Err(AllocationFailure::Io { error, .. }) => Err(Error::io(
                format!("taking a lease in {}", self.leases.display()),
                error,
            )),
        }
    }

    /// DEL: every lease of the attachment; `known`, the addresses its record names, spare a
    /// look at every lease when each is the attachment's. Needs no blocks file.
    pub(crate) fn del(&self, env: &Environment, known: &[IpAddr]) -> Result<(), Error> {
        let store = self.store()?;
        let _lock = store.lock()?;
        if !known.is_empty() && store.release_known(&env.container_id, &env.ifname, known) {
            return Ok(());
        }
        store
            .release(&env.container_id, &env.ifname)
            .map_err(|e| Error::io(format!("releasing in {}", self.leases.display()), e))
    }

    /// CHECK: the attachment holds a lease.
    pub(crate) fn check(&self, env: &Environment) -> Result<(), Error> {
        let holder = lease_holder(&env.container_id, &env.ifname);
        let leases = self
            .store()?
            .leases()
            .map_err(|e| Error::io(format!("listing {}", self.leases.display()), e))?;
        if leases.iter().any(|(_, held_by)| *held_by == holder) {
            Ok(())
        } else {
            Err(Error::CheckFailed(format!(
                "{PLUGIN} holds no address of network {} for {}/{}",
                self.network, env.container_id, env.ifname
            )))
        }
    }

    /// GC: releases every lease not held by one of `valid` (and empty ones, left by a writer
    /// killed mid-lease).
    pub(crate) fn gc(&self, valid: &[ValidAttachment]) -> Result<(), Error> {
        let store = self.store()?;
        let _lock = store.lock()?;
        let kept: Vec<String> = valid
            .iter()
            .map(|v| lease_holder(&v.container_id, &v.ifname))
            .collect();
        let leases = store
            .leases()
            .map_err(|e| Error::io(format!("listing {}", self.leases.display()), e))?;
        let mut errors = Vec::new();
        for (ip, holder) in leases.iter().filter(|(_, h)| !kept.contains(h)) {
            tracing::info!("GC releases {ip} (held by {holder:?})");
            if let Err(error) = store.remove_lease(*ip) {
                errors.push(Error::io(format!("releasing {ip}"), error));
            }
        }
        Error::from_all(errors)
    }

    /// STATUS: ADD can be served when every family has a block (full or not: a full block
    /// is a moment's state, which ADD answers with code 11).
    pub(crate) fn status(&self) -> Result<(), Error> {
        match self.read()? {
            Some(blocks) if blocks.families.iter().all(|f| !f.blocks.is_empty()) => Ok(()),
            _ => Err(Error::NotAvailable(format!(
                "network {} has no address block of every family on this node yet ({})",
                self.network,
                self.file.display()
            ))),
        }
    }
}

/// The network name of a plugin config (the whole stdin of an invocation).
pub(crate) fn network_of(stdin: &[u8]) -> Result<String, Error> {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|config| config.get("name")?.as_str().map(String::from))
        .ok_or_else(|| Error::invalid_config("the config names no network"))
}

/// GC's `cni.dev/valid-attachments` of a plugin config.
pub(crate) fn valid_attachments_of(stdin: &[u8]) -> Result<Vec<ValidAttachment>, Error> {
    let config: Value = serde_json::from_slice(stdin).map_err(|e| Error::Decode {
        what: "the config".into(),
        reason: e.to_string(),
    })?;
    match config.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(list) => serde_json::from_value(list.clone()).map_err(|e| Error::Decode {
            what: "cni.dev/valid-attachments".into(),
            reason: e.to_string(),
        }),
    }
}

/// `krafty-blocks` takes nothing but its type: subnets, gateways and blocks come from the node
/// agent, and a field here would only be ignored.
pub(crate) fn validate_config(ipam: &Value) -> Result<(), Error> {
    let fields = ipam.as_object().into_iter().flatten();
    match fields.map(|(key, _)| key).find(|key| *key != "type") {
        Some(field) => Err(Error::invalid_config(format!(
            "ipam.{field} is not a field of {PLUGIN}: its subnets, gateways and blocks come \
             from the node agent (--address-pools), its leases live below stateDir"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn usable_addresses_follow_host_local() {
        let subnet = net("172.16.10.0/24");
        let gateway = ip("172.16.10.1");
        // First block: not .0, not the gateway.
        assert_eq!(usable_count(subnet, gateway, net("172.16.10.0/26")), 62);
        assert_eq!(usable_count(subnet, gateway, net("172.16.10.64/26")), 64);
        // Last block: not the broadcast address.
        assert_eq!(usable_count(subnet, gateway, net("172.16.10.192/26")), 63);
        let range = usable_range(subnet, gateway, net("172.16.10.192/26")).unwrap();
        assert_eq!(range.end, ip("172.16.10.254"));
        // IPv6 keeps the last address, as host-local does.
        let v6 = net("fd00::/120");
        assert_eq!(usable_count(v6, ip("fd00::1"), net("fd00::c0/122")), 64);
        assert_eq!(usable_count(v6, ip("fd00::1"), net("fd00::/122")), 62);
    }

    #[test]
    fn files_are_validated() {
        let good = NodeBlocks {
            network: "lab".into(),
            node: "n1".into(),
            families: vec![FamilyBlocks {
                subnet: net("172.16.10.0/24"),
                gateway: ip("172.16.10.1"),
                blocks: vec![net("172.16.10.64/26")],
            }],
        };
        assert_eq!(good.validate("lab"), Ok(()));
        assert!(good.validate("other").is_err());
        let mut outside = good.clone();
        outside.families[0].blocks.push(net("172.16.11.0/26"));
        assert!(outside.validate("lab").is_err());
        let mut twice = good.clone();
        twice.families.push(good.families[0].clone());
        assert!(twice.validate("lab").is_err());
    }

    #[test]
    fn the_ipam_block_takes_only_its_type() {
        assert!(validate_config(&serde_json::json!({"type": PLUGIN})).is_ok());
        let error = validate_config(&serde_json::json!({"type": PLUGIN, "subnet": "10.0.0.0/8"}))
            .unwrap_err();
        assert_eq!(error.code(), 7);
        assert!(error.to_string().contains("ipam.subnet"), "{error}");
    }
}
