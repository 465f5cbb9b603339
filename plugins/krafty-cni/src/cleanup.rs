//! Undoing an attachment from its record alone, as GC and the node agent do for attachments
//! whose DEL never came: its own devices, its addresses (the IPAM plugin's DEL, replayed the
//! way a runtime would), then the record.

use crate::env::{CniArgs, Command, Environment};
use crate::error::Error;
use crate::ipam::Ipam;
use crate::naming;
use crate::netlink::Netlink;
use crate::state::{AttachmentRecord, Records};

/// Undoes `record`, keeping going past errors; the record is removed only when everything
/// else succeeded, so a failed cleanup can be tried again.
pub async fn undo_attachment(
    netlink: &Netlink,
    records: &Records,
    record: &AttachmentRecord,
) -> Result<(), Error> {
    let mark = naming::attachment_mark(&record.network, &record.container_id);
    let mut errors = Vec::new();
    // The veth first (its peer goes with it), then what it was plugged into.
    for device in record.devices.iter().filter(|d| !d.shared).rev() {
        match netlink.link(&device.name).await {
            Ok(Some(link)) if link.is_marked(&mark) => {
                if let Err(error) = netlink.delete(&link).await {
                    errors.push(error);
                }
            }
            Ok(_) => {}
            Err(error) => errors.push(error),
        }
    }
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
        .del(&env, ipam.config.to_string().as_bytes());
        if let Err(error) = release {
            errors.push(error);
        }
    }
    if errors.is_empty() {
        records.remove(&record.network, &record.container_id, &record.ifname)?;
    }
    Error::from_all(errors)
}
