//! Networks stretched across nodes (`multiNode`): what krafty-bridge and the node agent share.
//!
//! Each node's shared bridge of the network gets a VXLAN port (`krx<id>`); the ports of all
//! nodes reach each other over the nodes' own addresses, the underlay. The node agent keeps
//! the **node list** on every node: each node of the cluster with its underlay address(es),
//! one `NAME ADDRESS` per line, in `<state root>/nodes` (from its peers file, of the same
//! form). krafty-bridge reads it, and never the Kubernetes API, for two things:
//! which of the listed addresses is this node's (the tunnel's source, and its device the
//! underlay whose MTU bounds the network's), and the flood list a new VXLAN port starts with
//! (every other node), so that a network's first pod on a node reaches the others at once;
//! from then on the agent keeps that list exactly right.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::UnderlayFamily;
use crate::error::Error;
use crate::netlink::{Link, Netlink};

/// The node list's file name, below the node's state root.
pub const NODES_FILE: &str = "nodes";

/// A node list is small; anything larger is not one.
const MAX_NODES_FILE_BYTES: u64 = 4 << 20;

/// Kubernetes node names are DNS subdomains, at most this long.
const MAX_NODE_NAME_LEN: usize = 253;

/// The node list below `state_root`.
pub fn nodes_file(state_root: &Path) -> PathBuf {
    state_root.join(NODES_FILE)
}

/// One node's address on the underlay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct NodeAddress {
    name: String,
    address: IpAddr,
}

/// The nodes of the cluster and their underlay addresses (a node may have one per family).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeList {
    entries: BTreeSet<NodeAddress>,
}

impl NodeList {
    /// `NAME ADDRESS` lines; blank lines and `#` comments are skipped. An error names the line.
    pub fn parse(text: &str) -> Result<NodeList, String> {
        let mut list = NodeList::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, address] = fields[..] else {
                return Err(format!(
                    "line {}: {line:?} is not `NAME ADDRESS`",
                    number + 1
                ));
            };
            let address = address
                .parse::<IpAddr>()
                .map_err(|_| format!("line {}: {address:?} is not an IP address", number + 1))?;
            list.insert(name, address)
                .map_err(|reason| format!("line {}: {reason}", number + 1))?;
        }
        Ok(list)
    }

    /// Adds a node's address, checked: a node name of DNS characters and a unicast address.
    pub fn insert(&mut self, name: &str, address: IpAddr) -> Result<(), String> {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NODE_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !name_ok {
            return Err(format!(
                "{name:?} is not a node name (letters, digits, '.', '-', '_')"
            ));
        }
        if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
            return Err(format!("{address} is not a node's unicast address"));
        }
        self.entries.insert(NodeAddress {
            name: name.to_string(),
            address,
        });
        Ok(())
    }

    /// The list as the file holds it, sorted by name, then address.
    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{} {}\n", e.name, e.address))
            .collect()
    }

    /// The list in `path`; `None` when there is no such file.
    pub fn read(path: &Path) -> Result<Option<NodeList>, Error> {
        let unreadable = |reason: String| {
            Error::TryAgainLater(format!(
                "the node list {} that the node agent keeps is unreadable: {reason}",
                path.display()
            ))
        };
        let text = match std::fs::metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e.to_string())),
            Ok(meta) if meta.len() > MAX_NODES_FILE_BYTES => {
                return Err(unreadable(format!(
                    "larger than {MAX_NODES_FILE_BYTES} bytes"
                )))
            }
            Ok(_) => std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?,
        };
        NodeList::parse(&text).map(Some).map_err(unreadable)
    }

    /// Every listed node and address, sorted by name, then address.
    pub fn entries(&self) -> impl Iterator<Item = (&str, IpAddr)> + '_ {
        self.entries.iter().map(|e| (e.name.as_str(), e.address))
    }

    /// The listed addresses of `family`.
    pub fn addresses(&self, family: UnderlayFamily) -> impl Iterator<Item = IpAddr> + '_ {
        self.entries
            .iter()
            .map(|e| e.address)
            .filter(move |a| family.contains(a))
    }
}

/// This node's end of a network's tunnel.
#[derive(Debug, Clone)]
pub struct Underlay {
    /// The node's listed address: the tunnel's source, where the other nodes send to.
    pub address: IpAddr,
    /// The device that holds it; its MTU bounds the network's.
    pub device: Link,
    pub family: UnderlayFamily,
}

impl Underlay {
    /// The largest MTU of the network's bridge, pods and tunnel: the underlay's less the
    /// encapsulation.
    pub fn inner_mtu(&self) -> u32 {
        self.device
            .mtu
            .unwrap_or(1500)
            .saturating_sub(self.family.overhead())
    }
}

/// Finds this node among `list`: its address of `family` that a device of this node holds.
pub async fn find_underlay(
    netlink: &Netlink,
    list: &NodeList,
    family: UnderlayFamily,
    path: &Path,
) -> Result<Underlay, Error> {
    let listed: BTreeSet<IpAddr> = list.addresses(family).collect();
    let local = netlink.all_addresses().await?;
    let found = local
        .iter()
        .filter(|(_, net)| listed.contains(&net.addr()))
        .min_by_key(|(_, net)| net.addr());
    let Some((index, net)) = found else {
        return Err(Error::TryAgainLater(format!(
            "this node holds none of the {} addresses of the node list {} ({} listed): the \
             node agent lists every node there once it knows them",
            family.as_str(),
            path.display(),
            listed.len()
        )));
    };
    let device = netlink.link_by_index(*index).await?.ok_or_else(|| {
        Error::TryAgainLater(format!("the device holding {} went away", net.addr()))
    })?;
    Ok(Underlay {
        address: net.addr(),
        device,
        family,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_render_and_refuse_garbage() {
        let list = NodeList::parse(
            "# the lab\nnode-b 10.0.0.2\n\nnode-a 10.0.0.1  # first\nnode-a fd00::1\n",
        )
        .unwrap();
        assert_eq!(
            list.render(),
            "node-a 10.0.0.1\nnode-a fd00::1\nnode-b 10.0.0.2\n"
        );
        assert_eq!(NodeList::parse(&list.render()).unwrap(), list);
        let v6: Vec<IpAddr> = list.addresses(UnderlayFamily::Ipv6).collect();
        assert_eq!(v6, ["fd00::1".parse::<IpAddr>().unwrap()]);
        for (bad, mentions) in [
            ("node-a", "line 1"),
            ("node-a 10.0.0.1 extra", "NAME ADDRESS"),
            ("ok 10.0.0.1\nnode-a ten", "line 2"),
            ("node/a 10.0.0.1", "node name"),
            ("node-a 0.0.0.0", "unicast"),
            ("node-a 224.0.0.1", "unicast"),
            ("node-a ::1", "unicast"),
        ] {
            let error = NodeList::parse(bad).unwrap_err();
            assert!(error.contains(mentions), "{bad:?}: {error}");
        }
        assert_eq!(NodeList::parse("").unwrap(), NodeList::default());
    }

    #[test]
    fn a_missing_node_list_is_none_and_a_bad_one_says_try_again() {
        let dir = std::env::temp_dir().join(format!("krafty-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = nodes_file(&dir);
        assert_eq!(NodeList::read(&path).unwrap(), None);
        std::fs::write(&path, "node-a nonsense\n").unwrap();
        let error = NodeList::read(&path).unwrap_err();
        assert_eq!(error.code(), 11, "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
