//! Undoing an attachment from its record alone, as GC and the node agent do for attachments
//! whose DEL never came: its own devices, its addresses (the IPAM plugin's DEL, replayed the
//! way a runtime would), then the record. The deletion of the devices is DEL's too.

use crate::env::{CniArgs, Command, Environment};
use crate::error::Error;
use crate::ipam::Ipam;
use crate::naming;
use crate::netlink::{Link, Netlink};
use crate::state::{AttachmentRecord, Records};

/// A device deletion under way in a thread of its own.
pub type Deletion = std::thread::JoinHandle<Result<(), Error>>;

/// Starts deleting `devices`, all of them one attachment's own (the caller checked they carry
/// `mark`), and returns at once; the first deletion returned removes `devices[0]`.
///
/// Devices in the attachment's interface group ([`naming::attachment_group`]) go in one group
/// RTM_DELLINK, which the kernel unregisters in one batch with one RCU grace period, instead of
/// one grace period per device. That request takes the whole group, so it is made only when
/// every member is one of `devices` and carries `mark`; a foreign member (an attachment whose
/// mark hashes to the same group, or an admin's device) sends every device back to a deletion of
/// its own. Devices outside the group (from a krafty without groups, or a veth on a shared
/// bridge) are deleted one by one too, each from its own thread so that the grace periods
/// overlap. Between the listing and the deletion a colliding attachment could add a member;
/// that needs a 1 in 2^30 collision and an ADD within that window of microseconds.
pub async fn start_deleting(netlink: &Netlink, devices: Vec<Link>, mark: &str) -> Vec<Deletion> {
    let group = naming::attachment_group(mark);
    let batched = devices.iter().any(|d| d.group == group)
        && group_holds_only(netlink, group, &devices, mark).await;
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

/// Whether every member of interface `group` is one of `devices` and carries `mark`.
async fn group_holds_only(netlink: &Netlink, group: u32, devices: &[Link], mark: &str) -> bool {
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
        .find(|m| !m.is_marked(mark) || !devices.iter().any(|d| d.index == m.index));
    if let Some(foreign) = foreign {
        tracing::warn!(
            "interface group {group} also holds {}, not this attachment's; deleting device by device",
            foreign.name
        );
    }
    foreign.is_none()
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

/// Undoes `record`, keeping going past errors; the record is removed only when everything
/// else succeeded, so a failed cleanup can be tried again.
pub async fn undo_attachment(
    netlink: &Netlink,
    records: &Records,
    record: &AttachmentRecord,
) -> Result<(), Error> {
    let mark = naming::attachment_mark(&record.network, &record.container_id);
    let mut errors = Vec::new();
    let mut own = Vec::new();
    // The veth first (its peer goes with it), then what it was plugged into.
    for device in record.devices.iter().filter(|d| !d.shared).rev() {
        match netlink.link(&device.name).await {
            Ok(Some(link)) if link.is_marked(&mark) => own.push(link),
            Ok(_) => {}
            Err(error) => errors.push(error),
        }
    }
    errors.extend(finish(start_deleting(netlink, own, &mark).await));
    if let Some(ipam) = &record.ipam {
        let env = Environment {
            command: Command::Del,
            container_id: record.container_id.clone(),
            netns: None,
            ifname: record.ifname.clone(),
            cni_path: ipam.cni_path.clone(),
            args: CniArgs::default(),
        };
        let release = Ipam {
            plugin: ipam.plugin.clone(),
        }
        .del(
            &env,
            ipam.config.to_string().as_bytes(),
            &record.ip_addresses(),
        );
        if let Err(error) = release {
            errors.push(error);
        }
    }
    if errors.is_empty() {
        records.remove(&record.network, &record.container_id, &record.ifname)?;
    }
    Error::from_all(errors)
}
