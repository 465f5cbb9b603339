//! Attachment records: one small JSON file per attachment on the node, enough to undo the
//! attachment later without the runtime's help (GC, and the node agent's cleanup of
//! attachments whose DEL never came).
//!
//! Layout: `<stateDir>/attachments/<network>/<container id>.<ifname>.json`, written atomically
//! (temporary file, rename) by krafty-veth at the end of ADD and removed by its DEL. Records are
//! not fsynced: a power loss that loses a fresh record also takes the devices it describes, and an
//! fsync on every ADD costs more than the rest of krafty-veth's file work (docs/benchmarks.md);
//! host-local does not fsync its leases either.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::PodRef;
use crate::error::Error;

/// A device the attachment uses, and whether it belongs to the attachment alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedDevice {
    pub name: String,
    /// `vrf`, `bridge` or `veth`.
    pub kind: String,
    /// Shared devices (network scope) outlive the attachment.
    pub shared: bool,
}

/// How the attachment's addresses are released again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedIpam {
    pub plugin: String,
    /// The plugin config krafty-veth received, replayed on DEL as a runtime would.
    pub config: Value,
    pub cni_path: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRecord {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub devices: Vec<RecordedDevice>,
    pub addresses: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<RecordedIpam>,
    pub created: String,
}

impl AttachmentRecord {
    /// The attachment's addresses, without their prefix lengths.
    pub fn ip_addresses(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(IpNet::addr).collect()
    }

    pub fn pod(&self) -> PodRef {
        PodRef {
            namespace: self.pod_namespace.clone(),
            name: self.pod_name.clone(),
            uid: self.pod_uid.clone(),
        }
    }
}

/// The records below one state directory.
#[derive(Debug, Clone)]
pub struct Records {
    root: PathBuf,
}

impl Records {
    pub fn new(state_dir: &Path) -> Records {
        Records {
            root: state_dir.join("attachments"),
        }
    }

    fn network_dir(&self, network: &str) -> PathBuf {
        self.root.join(network)
    }

    /// Names are validated before they get here (network name, container ID, ifname).
    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.network_dir(network)
            .join(format!("{container_id}.{ifname}.json"))
    }

    pub fn write(&self, record: &AttachmentRecord) -> Result<(), Error> {
        let dir = self.network_dir(&record.network);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = self.path(&record.network, &record.container_id, &record.ifname);
        let temporary = dir.join(format!(
            ".{}.{}.tmp",
            record.container_id,
            std::process::id()
        ));
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::State(e.to_string()))?;
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temporary)?;
            file.write_all(&bytes)?;
            std::fs::rename(&temporary, &path)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            Error::io(format!("writing {}", path.display()), e)
        })
    }

    pub fn read(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<AttachmentRecord>, Error> {
        read_record(&self.path(network, container_id, ifname))
    }

    /// Removes a record; one that is already gone counts as removed. The network's directory
    /// goes with its last record.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        let path = self.path(network, container_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
        // Fails harmlessly while other records (or a concurrent writer) are in it.
        let _ = std::fs::remove_dir(self.network_dir(network));
        Ok(())
    }

    /// Every readable record of `network`, and the errors of the unreadable ones.
    pub fn list(&self, network: &str) -> (Vec<AttachmentRecord>, Vec<Error>) {
        list_dir(&self.network_dir(network))
    }

    /// Every readable record of every network.
    pub fn list_all(&self) -> (Vec<AttachmentRecord>, Vec<Error>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let Ok(networks) = std::fs::read_dir(&self.root) else {
            return (records, errors);
        };
        for network in networks.flatten() {
            let (found, failed) = list_dir(&network.path());
            records.extend(found);
            errors.extend(failed);
        }
        (records, errors)
    }
}

fn read_record(path: &Path) -> Result<Option<AttachmentRecord>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::State(format!(
                "{} is not an attachment record: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn list_dir(dir: &Path) -> (Vec<AttachmentRecord>, Vec<Error>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (records, errors);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            match read_record(&path) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
    }
    (records, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AttachmentRecord {
        AttachmentRecord {
            network: "krafty".into(),
            container_id: id.into(),
            ifname: "net1".into(),
            netns: "/run/netns/p".into(),
            pod_namespace: "default".into(),
            pod_name: "p".into(),
            pod_uid: "u".into(),
            devices: vec![RecordedDevice {
                name: "vethabc".into(),
                kind: "veth".into(),
                shared: false,
            }],
            addresses: vec!["172.16.10.10/24".parse().unwrap()],
            gateways: vec!["172.16.10.1".parse().unwrap()],
            ipam: None,
            created: "2026-11-22T00:00:00Z".into(),
        }
    }

    #[test]
    fn write_read_list_remove() {
        let dir = std::env::temp_dir().join(format!("krafty-state-test-{}", std::process::id()));
        let records = Records::new(&dir);
        records.write(&record("aaa")).unwrap();
        records.write(&record("bbb")).unwrap();
        assert_eq!(
            records.read("krafty", "aaa", "net1").unwrap(),
            Some(record("aaa"))
        );
        std::fs::write(records.network_dir("krafty").join("junk.json"), b"{").unwrap();
        let (found, errors) = records.list("krafty");
        assert_eq!(found.len(), 2);
        assert_eq!(
            errors.len(),
            1,
            "an unreadable record is reported, not fatal"
        );
        std::fs::remove_file(records.network_dir("krafty").join("junk.json")).unwrap();
        records.remove("krafty", "aaa", "net1").unwrap();
        records.remove("krafty", "aaa", "net1").unwrap();
        records.remove("krafty", "bbb", "net1").unwrap();
        assert!(
            !records.network_dir("krafty").exists(),
            "the last record takes its directory"
        );
        assert_eq!(records.list_all().0.len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
