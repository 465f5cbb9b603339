//! Attachment records: one small JSON file per attachment on the node, enough to undo the
//! attachment later without the runtime's help (GC, and the node agent's cleanup of
//! attachments whose DEL never came). Plugins and node agent read and write this one type.
//!
//! Layout: `<stateDir>/attachments/<network>/<container id>.<ifname>.json`, written atomically
//! (temporary file, rename). The chain's first plugin writes it before it changes anything
//! ([`AttachmentRecord::begun`]: the identity, netns and pod), krafty-veth again before it asks
//! IPAM for addresses (with the IPAM config to replay) and at the end of ADD (everything), so
//! that an ADD killed at any point leaves a record saying what to undo; DEL removes it. Records are
//! not fsynced: a power loss that loses a fresh record also takes the devices it describes, and an
//! fsync on every ADD costs more than the rest of krafty-veth's file work (docs/benchmarks.md);
//! host-local does not fsync its leases either.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attachment::Attachment;
use crate::env::{Environment, PodRef};
use crate::error::Error;
use crate::invocation_log::rfc3339;

/// The records' directory below a state directory; one subdirectory per network.
pub const ATTACHMENTS_DIR: &str = "attachments";

/// Records are small; anything larger is not one and is not read into memory.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

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
    /// The network namespace path the runtime passed (`CNI_NETNS`).
    pub netns: String,
    /// The pod, when the runtime is Kubernetes' (`K8S_POD_*` in CNI_ARGS); empty otherwise.
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: String,
    #[serde(default)]
    pub pod_uid: String,
    #[serde(default)]
    pub devices: Vec<RecordedDevice>,
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    #[serde(default)]
    pub gateways: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<RecordedIpam>,
    #[serde(default)]
    pub created: String,
}

impl AttachmentRecord {
    /// The record of an attachment whose ADD has begun: who it is for, nothing made yet.
    pub fn begun(attachment: &Attachment, env: &Environment) -> AttachmentRecord {
        AttachmentRecord {
            network: attachment.network().to_string(),
            container_id: attachment.container_id().to_string(),
            ifname: attachment.ifname().to_string(),
            netns: env
                .netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            pod_namespace: env.args.pod.namespace.clone(),
            pod_name: env.args.pod.name.clone(),
            pod_uid: env.args.pod.uid.clone(),
            devices: Vec::new(),
            addresses: Vec::new(),
            gateways: Vec::new(),
            ipam: None,
            created: rfc3339(SystemTime::now()),
        }
    }

    /// The attachment this record is of, its names checked as the plugins check their input:
    /// a record file could have been written by anyone who can write the state directory.
    pub fn attachment(&self) -> Result<Attachment, Error> {
        Attachment::new(&self.network, &self.container_id, &self.ifname)
    }

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

    /// The pod's UID, when the runtime passed one.
    pub fn pod_uid(&self) -> Option<&str> {
        Some(self.pod_uid.as_str()).filter(|uid| !uid.is_empty())
    }
}

/// A record, the attachment it names and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub path: PathBuf,
    pub attachment: Attachment,
    pub record: AttachmentRecord,
}

/// The records below one state directory.
#[derive(Debug, Clone)]
pub struct Records {
    state_dir: PathBuf,
    root: PathBuf,
}

impl Records {
    pub fn new(state_dir: &Path) -> Records {
        Records {
            state_dir: state_dir.to_path_buf(),
            root: state_dir.join(ATTACHMENTS_DIR),
        }
    }

    /// The state directory the records are kept below (which also holds, for instance, the
    /// address blocks of `krafty-blocks`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn path(&self, attachment: &Attachment) -> PathBuf {
        self.root.join(attachment.record_file())
    }

    /// Where a record is written before it is renamed into place: one name per attachment, so
    /// that one left by a writer killed before the rename is found again (and replaced, or
    /// removed with the record). Only one invocation works on an attachment at a time.
    fn temporary_path(&self, attachment: &Attachment) -> PathBuf {
        let path = self.path(attachment);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()))
    }

    /// Whether the attachment has a record (a fresh ADD has none).
    pub fn exists(&self, attachment: &Attachment) -> bool {
        self.path(attachment).exists()
    }

    /// Writes `record` in place of the attachment's record.
    pub fn write(&self, record: &AttachmentRecord) -> Result<(), Error> {
        let attachment = record.attachment()?;
        let path = self.path(&attachment);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let temporary = self.temporary_path(&attachment);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::State(e.to_string()))?;
        // A DEL of the network's last other attachment removes the directory when it empties; if
        // that happens between creating it and renaming into it, make it again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let written = create_dir(&dir).and_then(|()| write_new(&temporary, &bytes));
            let written = written.and_then(|()| fs::rename(&temporary, &path));
            match written {
                Ok(()) => return Ok(()),
                // NotFound: the directory went before the file was in it; AlreadyExists: it
                // went while it was being made (create_dir_all then finds no directory).
                Err(e)
                    if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::AlreadyExists)
                        && attempts < 10 =>
                {
                    let _ = fs::remove_file(&temporary);
                }
                Err(e) => {
                    let _ = fs::remove_file(&temporary);
                    return Err(Error::io(format!("writing {}", path.display()), e));
                }
            }
        }
    }

    pub fn read(&self, attachment: &Attachment) -> Result<Option<AttachmentRecord>, Error> {
        match read_record(&self.path(attachment)) {
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
            other => other.map(|stored| Some(stored.record)),
        }
    }

    /// Removes a record; one that is already gone counts as removed. The network's directory
    /// goes with its last record.
    pub fn remove(&self, attachment: &Attachment) -> Result<(), Error> {
        let path = self.path(attachment);
        for file in [self.temporary_path(attachment), path.clone()] {
            match fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", file.display()), e)),
            }
        }
        // Fails harmlessly while other records are in it; a writer racing this makes it again.
        if let Some(dir) = path.parent() {
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    /// Removes the attachment's record if it holds nothing to give back (no IPAM, no address):
    /// one begun by krafty-vrf or krafty-bridge for an ADD that never reached krafty-veth,
    /// which is what their DEL may remove. An unreadable record is left for the verbs that
    /// know what it holds.
    pub fn remove_if_begun(&self, attachment: &Attachment) -> Result<(), Error> {
        match self.read(attachment) {
            Ok(Some(record)) if record.ipam.is_none() && record.addresses.is_empty() => {
                self.remove(attachment)
            }
            _ => Ok(()),
        }
    }

    /// Removes the temporary files of writers killed before their rename (of `network`, or of
    /// every network). Harmless to a writer alive: its rename fails and it writes again.
    pub fn remove_temporaries(&self, network: Option<&str>) {
        let dirs = match network {
            Some(network) => vec![self.root.join(network)],
            None => std::fs::read_dir(&self.root)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default(),
        };
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
            // The network's last record may have been a temporary one.
            let _ = fs::remove_dir(&dir);
        }
    }

    /// Every readable record of `network`, and the errors of the unreadable ones.
    pub fn list(&self, network: &str) -> (Vec<StoredRecord>, Vec<Error>) {
        list_dir(&self.root.join(network))
    }

    /// Every readable record of every network, sorted by path, and the errors of the unreadable
    /// ones. A missing state directory holds no records.
    pub fn list_all(&self) -> (Vec<StoredRecord>, Vec<Error>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for network in entries(&self.root, |t| t.is_dir(), &mut errors) {
            let (found, failed) = list_dir(&network);
            records.extend(found);
            errors.extend(failed);
        }
        records.sort_by(|a, b| a.path.cmp(&b.path));
        (records, errors)
    }
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?
        .write_all(bytes)
}

/// One record file, which must be a small regular file (not followed through a symlink) and
/// name its attachment with valid names.
fn read_record(path: &Path) -> Result<StoredRecord, Error> {
    let describe = || path.display().to_string();
    let metadata =
        fs::symlink_metadata(path).map_err(|e| Error::io(format!("reading {}", describe()), e))?;
    if !metadata.is_file() {
        return Err(Error::State(format!(
            "{} is not a regular file",
            describe()
        )));
    }
    if metadata.len() > MAX_RECORD_BYTES {
        return Err(Error::State(format!(
            "{} is larger than {MAX_RECORD_BYTES} bytes",
            describe()
        )));
    }
    let bytes = fs::read(path).map_err(|e| Error::io(format!("reading {}", describe()), e))?;
    let record: AttachmentRecord = serde_json::from_slice(&bytes)
        .map_err(|e| Error::State(format!("{} is not an attachment record: {e}", describe())))?;
    let attachment = record
        .attachment()
        .map_err(|e| Error::State(format!("{}: {e}", describe())))?;
    if record.netns.is_empty() {
        return Err(Error::State(format!("{} has no netns", describe())));
    }
    Ok(StoredRecord {
        path: path.to_path_buf(),
        attachment,
        record,
    })
}

/// The records of one network's directory; hidden files are temporary files still being
/// written.
fn list_dir(dir: &Path) -> (Vec<StoredRecord>, Vec<Error>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for path in entries(dir, |t| t.is_file(), &mut errors) {
        if path.extension().is_some_and(|e| e == "json") {
            match read_record(&path) {
                Ok(stored) => records.push(stored),
                // Removed since the listing: a DEL got there first.
                Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
                Err(error) => errors.push(error),
            }
        }
    }
    (records, errors)
}

/// The non-hidden entries of `dir` whose own type (symlinks not followed) passes `wanted`.
fn entries(
    dir: &Path,
    wanted: impl Fn(&fs::FileType) -> bool,
    errors: &mut Vec<Error>,
) -> Vec<PathBuf> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(Error::io(format!("listing {}", dir.display()), e));
            return Vec::new();
        }
    };
    listing
        .flatten()
        .filter(|entry| !entry.file_name().as_encoded_bytes().starts_with(b"."))
        .filter(|entry| entry.file_type().is_ok_and(|t| wanted(&t)))
        .map(|entry| entry.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, ifname: &str) -> AttachmentRecord {
        AttachmentRecord {
            network: "krafty".into(),
            container_id: id.into(),
            ifname: ifname.into(),
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

    fn attachment(id: &str, ifname: &str) -> Attachment {
        Attachment::new("krafty", id, ifname).unwrap()
    }

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile_dir("rw");
        let records = Records::new(&dir);
        records.write(&record("aaa", "net1")).unwrap();
        records.write(&record("aaa", "net2")).unwrap();
        records.write(&record("bbb", "net1")).unwrap();
        assert_eq!(
            records.read(&attachment("aaa", "net2")).unwrap(),
            Some(record("aaa", "net2"))
        );
        assert_eq!(records.read(&attachment("ccc", "net1")).unwrap(), None);
        let network_dir = dir.join(ATTACHMENTS_DIR).join("krafty");
        fs::write(network_dir.join("junk.json"), b"{").unwrap();
        let (found, errors) = records.list("krafty");
        assert_eq!(found.len(), 3);
        assert_eq!(
            errors.len(),
            1,
            "an unreadable record is reported, not fatal"
        );
        fs::remove_file(network_dir.join("junk.json")).unwrap();
        records.remove(&attachment("aaa", "net1")).unwrap();
        records.remove(&attachment("aaa", "net1")).unwrap();
        assert_eq!(
            records.read(&attachment("aaa", "net2")).unwrap(),
            Some(record("aaa", "net2")),
            "one interface's record goes, the other's stays"
        );
        records.remove(&attachment("aaa", "net2")).unwrap();
        records.remove(&attachment("bbb", "net1")).unwrap();
        assert!(!network_dir.exists(), "the last record takes its directory");
        assert_eq!(records.list_all().0.len(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_racing_the_removal_of_its_directory_lands() {
        let dir = tempfile_dir("race");
        let records = Records::new(&dir);
        let writer = {
            let records = records.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    records.write(&record(&format!("w{i}"), "net1")).unwrap();
                    records
                        .remove(&attachment(&format!("w{i}"), "net1"))
                        .unwrap();
                }
            })
        };
        for i in 0..300 {
            records.write(&record(&format!("r{i}"), "net1")).unwrap();
            records
                .remove(&attachment(&format!("r{i}"), "net1"))
                .unwrap();
        }
        writer.join().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listing_skips_what_is_not_a_record_and_reports_what_is_broken() {
        let dir = tempfile_dir("list");
        let root = dir.join(ATTACHMENTS_DIR);
        let (net_a, net_b) = (root.join("net-a"), root.join("net-b"));
        fs::create_dir_all(&net_a).unwrap();
        fs::create_dir_all(&net_b).unwrap();
        let good = |network: &str, id: &str| {
            let mut r = record(id, "net1");
            r.network = network.into();
            serde_json::to_string(&r).unwrap()
        };
        fs::write(net_a.join("c1.net1.json"), good("net-a", "c1")).unwrap();
        // The fields a record needs: its identity and netns; the rest is optional.
        fs::write(
            net_b.join("c2.eth1.json"),
            r#"{"network":"net-b","containerId":"c2","ifname":"eth1","netns":"/x"}"#,
        )
        .unwrap();
        fs::write(net_a.join("garbage.json"), "{not json").unwrap();
        fs::write(
            net_a.join("bad-id.json"),
            good("net-a", "c1").replace("\"c1\"", "\"../c\""),
        )
        .unwrap();
        fs::write(net_a.join(".c3.net1.1234.tmp"), good("net-a", "c3")).unwrap();
        fs::write(net_a.join(".c4.json"), good("net-a", "c4")).unwrap();
        fs::write(net_a.join("notes.txt"), good("net-a", "c5")).unwrap();
        fs::write(
            net_a.join("huge.json"),
            " ".repeat(MAX_RECORD_BYTES as usize + 1),
        )
        .unwrap();
        std::os::unix::fs::symlink(net_a.join("c1.net1.json"), net_a.join("link.json")).unwrap();
        // Outside the layout: not records.
        fs::write(dir.join("c6.json"), good("net-a", "c6")).unwrap();
        fs::write(root.join("c7.json"), good("net-a", "c7")).unwrap();
        std::os::unix::fs::symlink(&net_a, root.join("link")).unwrap();

        let (records, errors) = Records::new(&dir).list_all();
        let ids: Vec<_> = records
            .iter()
            .map(|r| r.record.container_id.as_str())
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert_eq!(records[0].path, net_a.join("c1.net1.json"));
        assert_eq!(records[1].record.pod_uid(), None);
        assert_eq!(
            errors.len(),
            3,
            "garbage, a bad ID, a huge file: {errors:?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(label: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::env::temp_dir().join(format!(
            "krafty-state-{label}-{}-{nanos}",
            std::process::id()
        ))
    }
}
