//! An attachment: one network on one interface of one container, identified as the CNI
//! specification does, by (network name, container ID, interface name). A pod with `net1` and
//! `net2` has two attachments, whether on two networks or on the same one twice.
//!
//! [`Attachment`] owns everything derived from that identity: the names of the devices it makes
//! ([`crate::naming`] has the rule), the mark they carry, their interface group, the path of its
//! record, and the teardown that DEL, GC and the node agent share. Devices shared by a whole
//! network (`scope: network`) belong to the network, not to an attachment.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::ValidAttachment;
use crate::env::{CniArgs, Command, Environment};
use crate::error::Error;
use crate::ipam::Ipam;
use crate::naming;
use crate::netlink::{Link, Netlink};
use crate::state::{AttachmentRecord, Records};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    network: String,
    container_id: String,
    ifname: String,
}

/// A device deletion under way in a thread of its own.
pub type Deletion = std::thread::JoinHandle<Result<(), Error>>;

impl Attachment {
    /// The attachment of these names, each checked against the rules the plugins apply to
    /// their input: names become device names, marks, lock and record paths.
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Result<Attachment, Error> {
        naming::validate_network_name(network).map_err(Error::invalid_config)?;
        naming::validate_container_id(container_id).map_err(Error::invalid_env)?;
        naming::validate_ifname(ifname)
            .map_err(|reason| Error::invalid_env(format!("CNI_IFNAME: {reason}")))?;
        Ok(Attachment {
            network: network.to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        })
    }

    /// The attachment of `network` whose mark `alias` is, if it is one.
    pub fn from_mark(alias: &str, network: &str) -> Option<Attachment> {
        let (container_id, ifname) = naming::attachment_of(alias, network)?;
        Attachment::new(network, container_id, ifname).ok()
    }

    /// The attachment whose mark `alias` is, of whichever network, if it is one.
    pub fn from_any_mark(alias: &str) -> Option<Attachment> {
        let (network, container_id, ifname) = naming::parse_attachment_mark(alias)?;
        Attachment::new(network, container_id, ifname).ok()
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The VRF of this attachment alone (`scope: pod`).
    pub fn vrf_name(&self) -> String {
        naming::vrf_name(&self.container_id, &self.ifname)
    }

    /// The bridge of this attachment alone (`scope: pod`).
    pub fn bridge_name(&self) -> String {
        naming::bridge_name(&self.container_id, &self.ifname)
    }

    /// The node end of the attachment's veth pair.
    pub fn host_veth_name(&self) -> String {
        naming::host_veth_name(&self.container_id, &self.ifname)
    }

    /// The alias every device of this attachment carries.
    pub fn mark(&self) -> String {
        naming::attachment_mark(&self.network, &self.container_id, &self.ifname)
    }

    /// The interface group of the attachment's own devices in pod scope.
    pub fn group(&self) -> u32 {
        naming::attachment_group(&self.mark())
    }

    /// Whether `link` is one of this attachment's devices: it carries the mark, or it carries
    /// no mark and is in the attachment's group, created by an invocation killed before it
    /// could mark it (see [`naming::attachment_group`]).
    pub fn owns(&self, link: &Link) -> bool {
        link.is_marked(&self.mark()) || link.is_unmarked_in_group(self.group())
    }

    /// Whether GC's list of attachments still in use names this one (the list is of one
    /// network: the one GC runs for).
    pub fn is_listed_in(&self, valid: &[ValidAttachment]) -> bool {
        valid
            .iter()
            .any(|a| a.container_id == self.container_id && a.ifname == self.ifname)
    }

    /// The attachment's record, relative to the records' directory: `<network>/<container
    /// id>.<ifname>.json` (see [`crate::state`]).
    pub fn record_file(&self) -> PathBuf {
        Path::new(&self.network).join(format!("{}.{}.json", self.container_id, self.ifname))
    }

    /// The devices of this attachment on the node, host veth first, then its own bridge and VRF
    /// (pod scope), each only if it carries the attachment's mark; and the lookups that failed,
    /// which do not stop the others.
    pub async fn own_devices(&self, netlink: &Netlink) -> (Vec<Link>, Vec<Error>) {
        let mut devices = Vec::new();
        let mut errors = Vec::new();
        for name in [self.host_veth_name(), self.bridge_name(), self.vrf_name()] {
            match netlink.link(&name).await {
                Ok(Some(link)) if self.owns(&link) => devices.push(link),
                Ok(Some(_)) => {
                    tracing::warn!("{name} exists but is not {self}'s; leaving it");
                }
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
        (devices, errors)
    }

    /// Undoes the attachment, keeping going past errors and reporting all of them: deletes its
    /// own devices, has `release` give back its addresses (told those the record names, when it
    /// is readable) once the veth pair is gone from the kernel's device list, and removes the
    /// record when everything else succeeded, so that a failed teardown can be tried again.
    /// What is already gone counts as removed: DEL, GC and the node agent all end here.
    pub async fn tear_down<R>(
        &self,
        netlink: &Netlink,
        records: &Records,
        release: Option<R>,
    ) -> Result<(), Error>
    where
        R: FnOnce(&[IpAddr]) -> Result<(), Error>,
    {
        let (devices, mut errors) = self.own_devices(netlink).await;
        let pair = devices
            .first()
            .filter(|host| host.name == self.host_veth_name())
            .map(|host| host.index);
        let deletions = self.start_deleting(netlink, devices).await;
        if let Some(release) = release {
            // The addresses are released once the pair has left the kernel's device list, so
            // they are never handed out while still in use, but without waiting for the grace
            // period its deletion ends with.
            if let Some(index) = pair {
                if let Err(error) = wait_until_unlisted(netlink, index, &deletions[0]).await {
                    errors.push(error);
                }
            }
            // What the record says the attachment holds spares IPAM a search through every
            // lease; a missing or unreadable record only means the search is made.
            let recorded = records
                .read(self)
                .ok()
                .flatten()
                .map(|record| record.ip_addresses())
                .unwrap_or_default();
            if let Err(error) = release(&recorded) {
                errors.push(error);
            }
        }
        errors.extend(finish(deletions));
        if errors.is_empty() {
            records.remove(self)?;
        }
        Error::from_all(errors)
    }

    /// [`Attachment::tear_down`] without the runtime, from the attachment's record, as GC and
    /// the node agent do for attachments whose DEL never came: the IPAM plugin's DEL is replayed
    /// with the config recorded at ADD, the plugin looked up on `ipam_path` (the CNI_PATH
    /// recorded at ADD when empty).
    pub async fn tear_down_recorded(
        &self,
        netlink: &Netlink,
        records: &Records,
        record: &AttachmentRecord,
        ipam_path: &[PathBuf],
    ) -> Result<(), Error> {
        let release = record.ipam.as_ref().map(|recorded| {
            move |addresses: &[IpAddr]| {
                let env = Environment {
                    command: Command::Del,
                    container_id: self.container_id.clone(),
                    netns: None,
                    ifname: self.ifname.clone(),
                    cni_path: if ipam_path.is_empty() {
                        recorded.cni_path.clone()
                    } else {
                        ipam_path.to_vec()
                    },
                    args: CniArgs::default(),
                };
                let ipam = Ipam {
                    plugin: recorded.plugin.clone(),
                };
                let config = recorded.config.to_string();
                ipam.del(&env, config.as_bytes(), records.state_dir(), addresses)
            }
        });
        self.tear_down(netlink, records, release).await
    }

    /// Starts deleting `devices`, all of them this attachment's own, and returns at once; the
    /// first deletion returned removes `devices[0]`.
    ///
    /// Devices in the attachment's interface group go in one group RTM_DELLINK, which the
    /// kernel unregisters in one batch with one RCU grace period, instead of one grace period
    /// per device. That request takes the whole group, so it is made only when every member is
    /// one of `devices` and carries the mark; a foreign member (an attachment whose mark hashes
    /// to the same group, or an admin's device) sends every device back to a deletion of its
    /// own. Devices outside the group (a veth on a shared bridge) are deleted one by one, each
    /// from its own thread so that the grace periods overlap. Between the listing and the
    /// deletion a colliding attachment could add a member; that needs a 1 in 2^30 collision and
    /// an ADD within that window of microseconds.
    pub async fn start_deleting(&self, netlink: &Netlink, devices: Vec<Link>) -> Vec<Deletion> {
        let group = self.group();
        // A lone device is deleted by itself: checking the group's members lists every device
        // of the node, which a single deletion does not pay back.
        let batched = devices.iter().filter(|d| d.group == group).count() > 1
            && self.group_holds_only(netlink, &devices).await;
        let mut deletions = Vec::new();
        let mut group_deleted = false;
        for device in devices {
            if !batched || device.group != group {
                deletions.push(Netlink::delete_in_background(device));
            } else if !group_deleted {
                deletions.push(Netlink::delete_group_in_background(group));
                group_deleted = true;
            }
        }
        deletions
    }

    /// Whether every member of the attachment's interface group is one of `devices` and ours.
    async fn group_holds_only(&self, netlink: &Netlink, devices: &[Link]) -> bool {
        let group = self.group();
        let members = match netlink.links_in_group(group).await {
            Ok(members) => members,
            // The group is only a shortcut: without its members, take the long way.
            Err(error) => {
                tracing::warn!("{error}; deleting device by device");
                return false;
            }
        };
        let foreign = members
            .iter()
            .find(|m| !self.owns(m) || !devices.iter().any(|d| d.index == m.index));
        if let Some(foreign) = foreign {
            tracing::warn!(
                "interface group {group} also holds {}, not {self}'s; deleting device by device",
                foreign.name
            );
        }
        foreign.is_none()
    }
}

/// `network/container id/ifname`, how logs, errors and Events name an attachment.
impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// Waits until device `index` is no longer listed, or its deletion has ended.
async fn wait_until_unlisted(
    netlink: &Netlink,
    index: u32,
    deletion: &Deletion,
) -> Result<(), Error> {
    while !deletion.is_finished() && netlink.link_by_index(index).await?.is_some() {
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Waits for `deletions` and returns their errors.
pub fn finish(deletions: Vec<Deletion>) -> Vec<Error> {
    deletions
        .into_iter()
        .filter_map(|deletion| {
            deletion
                .join()
                .unwrap_or_else(|_| Err(Error::TryAgainLater("a deletion thread panicked".into())))
                .err()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "a3f2b1c4d5e6f7a8";

    #[test]
    fn names_marks_and_groups_follow_the_identity() {
        let net1 = Attachment::new("lab", ID, "net1").unwrap();
        assert_eq!(net1.vrf_name(), "krva3f2b1c4d5e6");
        assert_eq!(net1.host_veth_name(), "vetha3f2b1c4d5e");
        assert_eq!(net1.mark(), format!("krafty:lab/{ID}/net1"));
        assert_eq!(net1.to_string(), format!("lab/{ID}/net1"));
        let net2 = Attachment::new("lab", ID, "net2").unwrap();
        assert_eq!(net2.vrf_name(), "krva3f2b.e05ba9");
        assert_ne!(net1.group(), net2.group());
        let elsewhere = Attachment::new("other", ID, "net2").unwrap();
        assert_eq!(
            elsewhere.host_veth_name(),
            net2.host_veth_name(),
            "one interface of one container: the same names, told apart by the mark"
        );
        assert_ne!(elsewhere.mark(), net2.mark());
        assert_eq!(
            Attachment::from_mark(&net2.mark(), "lab"),
            Some(net2.clone())
        );
        assert_eq!(Attachment::from_mark(&net2.mark(), "other"), None);
    }

    #[test]
    fn bad_names_are_refused_with_the_code_of_their_source() {
        assert_eq!(Attachment::new("a/b", ID, "net1").unwrap_err().code(), 7);
        assert_eq!(Attachment::new("n", "../x", "net1").unwrap_err().code(), 4);
        assert_eq!(Attachment::new("n", ID, "a:b").unwrap_err().code(), 4);
        assert_eq!(Attachment::from_mark("krafty:n/../x/net1", "n"), None);
    }

    #[test]
    fn gc_keeps_an_attachment_only_by_container_and_interface() {
        let net2 = Attachment::new("lab", ID, "net2").unwrap();
        let listed = |id: &str, ifname: &str| ValidAttachment {
            container_id: id.into(),
            ifname: ifname.into(),
        };
        assert!(net2.is_listed_in(&[listed("x", "net2"), listed(ID, "net2")]));
        assert!(!net2.is_listed_in(&[listed(ID, "net1")]));
        assert!(!net2.is_listed_in(&[listed("x", "net2")]));
        assert!(!net2.is_listed_in(&[]));
    }
}
