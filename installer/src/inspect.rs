//! What the node holds, for people and scripts: `krafty-installer attachment` prints an
//! attachment's device names and marks (the rule lives in `krafty_cni::naming`; nothing else
//! derives them), and `krafty-installer attachments` lists every attachment on the node from
//! its record and the kernel, with whether each device is present and marked.
//! `krafty-installer peers` prints the node list and where each multi-node network's VXLAN port
//! floods to, against where it should.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use krafty_cni::multinode::{self, NodeList};
use krafty_cni::naming;
use krafty_cni::netlink::{format_mac, InfoKind, Link, Netlink};
use krafty_cni::state::{AttachmentRecord, Records};
use krafty_cni::Attachment;
use serde::Serialize;
use serde_json::json;

use crate::cli::Scope;
use crate::peers;

/// The names and marks of one attachment's devices, in `scope`.
pub fn names(attachment: &Attachment, scope: Scope) -> serde_json::Value {
    let network = attachment.network();
    let (vrf, bridge, node_mark, vxlan) = match scope {
        Scope::Pod => (
            attachment.vrf_name(),
            attachment.bridge_name(),
            attachment.mark(),
            None,
        ),
        Scope::Network => (
            naming::shared_vrf_name(network),
            naming::shared_bridge_name(network),
            naming::network_mark(network),
            // Only a multi-node network has one.
            Some(naming::shared_vxlan_name(network)),
        ),
    };
    json!({
        "network": network,
        "containerId": attachment.container_id(),
        "ifname": attachment.ifname(),
        "vrf": vrf,
        "bridge": bridge,
        "vxlan": vxlan,
        "hostVeth": attachment.host_veth_name(),
        "mark": attachment.mark(),
        "vrfMark": node_mark,
        "bridgeMark": node_mark,
        "bridgeMac": krafty_cni::netlink::format_mac(&naming::bridge_mac(&node_mark)),
        "group": attachment.group(),
        "record": attachment.record_file(),
    })
}

/// One device of a listed attachment, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    pub name: String,
    pub kind: String,
    pub shared: bool,
    pub present: bool,
    /// Carries the attachment's mark (the network's, for a shared device).
    pub marked: bool,
}

/// One attachment on the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// `namespace/name` of the pod, when the runtime is Kubernetes'.
    pub pod: String,
    pub netns: String,
    pub addresses: Vec<String>,
    pub devices: Vec<DeviceState>,
    /// The record's path; empty for devices of an attachment without a record (an ADD cut
    /// short, or a record removed by hand).
    pub record: String,
}

/// Every attachment on the node: those with a record, then devices carrying an attachment's
/// mark that no record names.
pub async fn list(netlink: &Netlink, state_dir: &Path) -> Result<Vec<Listed>, krafty_cni::Error> {
    let (records, errors) = Records::new(state_dir).list_all();
    for error in errors {
        tracing::warn!("skipping an attachment record: {error}");
    }
    let mut listed = Vec::new();
    for stored in &records {
        let mut devices = Vec::new();
        for device in &stored.record.devices {
            let mark = if device.shared {
                naming::network_mark(stored.attachment.network())
            } else {
                stored.attachment.mark()
            };
            let link = netlink.link(&device.name).await?;
            devices.push(DeviceState {
                name: device.name.clone(),
                kind: device.kind.clone(),
                shared: device.shared,
                present: link.is_some(),
                marked: link.is_some_and(|l| l.is_marked(&mark)),
            });
        }
        listed.push(from_record(&stored.record, devices, &stored.path));
    }
    for kind in [InfoKind::Veth, InfoKind::Bridge, InfoKind::Vrf] {
        for link in netlink.links_of_kind(kind.clone()).await? {
            let Some(attachment) = unrecorded(&link, &records) else {
                continue;
            };
            let device = DeviceState {
                name: link.name.clone(),
                kind: kind.to_string(),
                shared: false,
                present: true,
                marked: true,
            };
            match listed.iter_mut().find(|l| {
                l.record.is_empty()
                    && l.network == attachment.network()
                    && l.container_id == attachment.container_id()
                    && l.ifname == attachment.ifname()
            }) {
                Some(entry) => entry.devices.push(device),
                None => listed.push(Listed {
                    network: attachment.network().to_string(),
                    container_id: attachment.container_id().to_string(),
                    ifname: attachment.ifname().to_string(),
                    pod: String::new(),
                    netns: String::new(),
                    addresses: Vec::new(),
                    devices: vec![device],
                    record: String::new(),
                }),
            }
        }
    }
    Ok(listed)
}

/// The attachment `link` is marked for, when no record names that attachment.
fn unrecorded(link: &Link, records: &[krafty_cni::state::StoredRecord]) -> Option<Attachment> {
    let attachment = Attachment::from_any_mark(link.owner_mark()?)?;
    (!records.iter().any(|r| r.attachment == attachment)).then_some(attachment)
}

fn from_record(record: &AttachmentRecord, devices: Vec<DeviceState>, path: &Path) -> Listed {
    let pod = if record.pod_name.is_empty() {
        String::new()
    } else {
        format!("{}/{}", record.pod_namespace, record.pod_name)
    };
    Listed {
        network: record.network.clone(),
        container_id: record.container_id.clone(),
        ifname: record.ifname.clone(),
        pod,
        netns: record.netns.clone(),
        addresses: record.addresses.iter().map(ToString::to_string).collect(),
        devices,
        record: path.display().to_string(),
    }
}

/// The listing as a table: one line per attachment, each device as `name` with `!` when it
/// is missing and `?` when it does not carry the mark.
pub fn write_table(out: &mut dyn Write, listed: &[Listed]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16} {:<24} {:<12} {:<8} {:<20} {:<8} DEVICES",
        "NETWORK", "POD", "CONTAINER", "IFNAME", "ADDRESSES", "RECORD"
    )?;
    for entry in listed {
        let devices: Vec<String> = entry
            .devices
            .iter()
            .map(|d| {
                let state = match (d.present, d.marked) {
                    (false, _) => "!",
                    (true, false) => "?",
                    (true, true) => "",
                };
                format!("{}{state}", d.name)
            })
            .collect();
        writeln!(
            out,
            "{:<16} {:<24} {:<12} {:<8} {:<20} {:<8} {}",
            entry.network,
            if entry.pod.is_empty() {
                "-"
            } else {
                &entry.pod
            },
            &entry.container_id[..entry.container_id.len().min(12)],
            entry.ifname,
            if entry.addresses.is_empty() {
                "-".to_string()
            } else {
                entry.addresses.join(",")
            },
            if entry.record.is_empty() {
                "missing"
            } else {
                "yes"
            },
            devices.join(" ")
        )?;
    }
    Ok(())
}

/// One node of the node list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedNode {
    pub name: String,
    pub address: IpAddr,
}

/// A multi-node network's VXLAN port on this node and where it floods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelPort {
    pub network: String,
    pub port: String,
    pub vni: u32,
    pub udp_port: u16,
    /// This node's address on the underlay, the tunnel's source.
    pub local: Option<IpAddr>,
    /// The destinations of the port's all-zero entries: where broadcast and unknown traffic go.
    pub flood_to: Vec<IpAddr>,
    /// The listed nodes of the port's underlay family, this node's own addresses left out.
    pub expected: Vec<IpAddr>,
    /// Listed, yet not flooded to.
    pub missing: Vec<IpAddr>,
    /// Flooded to, yet not listed (or this node's own).
    pub extra: Vec<IpAddr>,
    /// The remote pods' MACs the port sends to one node alone, and to which.
    pub remote_macs: BTreeMap<String, Option<IpAddr>>,
}

/// The node list and the node's tunnel ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Peers {
    pub node_list: String,
    /// `None` when the agent has written no node list yet.
    pub nodes: Option<Vec<ListedNode>>,
    pub ports: Vec<TunnelPort>,
}

/// The node list below `state_dir` and every multi-node network's VXLAN port in this network
/// namespace, each with where it floods and where the listed nodes say it should.
pub async fn peers(netlink: &Netlink, state_dir: &Path) -> Result<Peers, krafty_cni::Error> {
    let node_list = multinode::nodes_file(state_dir);
    let list = NodeList::read(&node_list)?;
    let own = peers::own_addresses(netlink).await?;
    let mut ports = Vec::new();
    for link in peers::tunnel_ports(netlink).await? {
        let vxlan = link.vxlan.clone().unwrap_or_default();
        let peers::PortEntries { flood_to, sent, .. } = peers::port_entries(netlink, &link).await?;
        let remote_macs = sent
            .into_iter()
            .map(|(mac, destination)| (format_mac(&mac), destination))
            .collect();
        // Without a node list the port should flood nowhere known.
        let expected = list
            .as_ref()
            .map(|list| peers::flood_wanted(list, &link, &own))
            .unwrap_or_default();
        ports.push(TunnelPort {
            network: link
                .alias
                .as_deref()
                .and_then(naming::network_of)
                .unwrap_or_default()
                .to_string(),
            port: link.name.clone(),
            vni: vxlan.vni,
            udp_port: vxlan.port,
            local: vxlan.local,
            missing: expected.difference(&flood_to).copied().collect(),
            extra: flood_to.difference(&expected).copied().collect(),
            flood_to: flood_to.into_iter().collect(),
            expected: expected.into_iter().collect(),
            remote_macs,
        });
    }
    ports.sort_by(|a, b| a.network.cmp(&b.network));
    Ok(Peers {
        node_list: node_list.display().to_string(),
        nodes: list.map(|l| {
            l.entries()
                .map(|(name, address)| ListedNode {
                    name: name.to_string(),
                    address,
                })
                .collect()
        }),
        ports,
    })
}

/// The node list, then one line per tunnel port: where it floods, and `ok`, or what is
/// `missing` and `extra` against the node list.
pub fn write_peers(out: &mut dyn Write, peers: &Peers) -> std::io::Result<()> {
    match &peers.nodes {
        None => writeln!(out, "no node list at {}", peers.node_list)?,
        Some(nodes) => {
            writeln!(out, "{:<32} ADDRESS", "NODE")?;
            for node in nodes {
                writeln!(out, "{:<32} {}", node.name, node.address)?;
            }
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<16} {:<16} {:<9} {:<16} {:<32} STATE",
        "NETWORK", "PORT", "VNI", "LOCAL", "FLOODS TO"
    )?;
    let join = |addresses: &[IpAddr]| {
        addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    for port in &peers.ports {
        let state = if port.missing.is_empty() && port.extra.is_empty() {
            "ok".to_string()
        } else {
            let mut words = Vec::new();
            if !port.missing.is_empty() {
                words.push(format!("missing {}", join(&port.missing)));
            }
            if !port.extra.is_empty() {
                words.push(format!("extra {}", join(&port.extra)));
            }
            words.join(" ")
        };
        writeln!(
            out,
            "{:<16} {:<16} {:<9} {:<16} {:<32} {state}",
            port.network,
            port.port,
            port.vni,
            port.local.map_or("-".to_string(), |a| a.to_string()),
            if port.flood_to.is_empty() {
                "-".to_string()
            } else {
                join(&port.flood_to)
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_scope() {
        let attachment = Attachment::new("lab", "a3f2b1c4d5e6f7a8", "net2").unwrap();
        let own = names(&attachment, Scope::Pod);
        assert_eq!(own["vrf"], "krva3f2b.e05ba9");
        assert_eq!(own["bridgeMark"], own["mark"]);
        let shared = names(&attachment, Scope::Network);
        assert_eq!(shared["bridge"], naming::shared_bridge_name("lab"));
        assert_eq!(shared["bridgeMark"], "krafty:lab");
        assert_eq!(shared["vxlan"], naming::shared_vxlan_name("lab"));
        assert_eq!(own["vxlan"], serde_json::Value::Null);
        assert_eq!(shared["hostVeth"], own["hostVeth"]);
        assert_eq!(shared["record"], "lab/a3f2b1c4d5e6f7a8.net2.json");
    }

    #[test]
    fn the_table_flags_missing_and_foreign_devices() {
        let device = |name: &str, present, marked| DeviceState {
            name: name.into(),
            kind: "veth".into(),
            shared: false,
            present,
            marked,
        };
        let entry = Listed {
            network: "lab".into(),
            container_id: "a3f2b1c4d5e6f7a8".into(),
            ifname: "net1".into(),
            pod: String::new(),
            netns: String::new(),
            addresses: vec!["172.16.10.10/24".into()],
            devices: vec![
                device("a", true, true),
                device("b", false, false),
                device("c", true, false),
            ],
            record: "/var/lib/krafty/attachments/lab/x.json".into(),
        };
        let mut out = Vec::new();
        write_table(&mut out, &[entry]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("lab "), "{line}");
        assert!(line.contains(" a3f2b1c4d5e6 "), "{line}");
        assert!(line.ends_with("a b! c?"), "{line}");
    }
}
