//! One small JSON file per attachment, written by krafty-veth under the state directory:
//! `<state dir>/attachments/<network>/<container id>.<ifname>.json` (see `krafty_cni::state`).
//!
//! Only the fields the orphan decision needs are read here (camelCase, as the plugins write
//! them; `containerID` and `ifName`, the CNI spellings, are accepted too); the rest of the
//! record (devices, addresses, IPAM replay) is the cleaner's business. Reading is lenient: a
//! file that cannot be read or parsed is logged and skipped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Records are small; anything larger is not one and is not read into memory.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The records' directory under the state directory; one subdirectory per network.
pub const ATTACHMENTS_DIR: &str = "attachments";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRecord {
    /// The CNI network name.
    pub network: String,
    #[serde(alias = "containerID")]
    pub container_id: String,
    #[serde(alias = "ifName")]
    pub ifname: String,
    /// The network namespace path the runtime passed (`CNI_NETNS`).
    pub netns: PathBuf,
    pub pod_namespace: String,
    pub pod_name: String,
    /// The pod's UID when the runtime passed it (`K8S_POD_UID`); empty means unknown.
    #[serde(default)]
    pub pod_uid: String,
}

impl AttachmentRecord {
    pub fn pod_uid(&self) -> Option<&str> {
        Some(self.pod_uid.as_str()).filter(|uid| !uid.is_empty())
    }

    /// `network/containerId/ifname`, how logs and Events name an attachment.
    pub fn describe(&self) -> String {
        format!("{}/{}/{}", self.network, self.container_id, self.ifname)
    }

    /// The first required field that is empty: such a record cannot be judged safely.
    fn missing_field(&self) -> Option<&'static str> {
        [
            ("network", self.network.is_empty()),
            ("containerId", self.container_id.is_empty()),
            ("ifname", self.ifname.is_empty()),
            ("netns", self.netns.as_os_str().is_empty()),
            ("podNamespace", self.pod_namespace.is_empty()),
            ("podName", self.pod_name.is_empty()),
        ]
        .into_iter()
        .find_map(|(field, empty)| empty.then_some(field))
    }
}

/// A record and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub path: PathBuf,
    pub record: AttachmentRecord,
}

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is larger than {MAX_RECORD_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not an attachment record: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has no {field}")]
    Incomplete { path: PathBuf, field: &'static str },
}

/// Every readable record under `state_dir` (`attachments/<network>/*.json`, not hidden, not
/// through symlinks), sorted by path. A missing directory holds no records.
pub fn read_records(state_dir: &Path) -> Vec<StoredRecord> {
    let mut paths = Vec::new();
    for network in entries(&state_dir.join(ATTACHMENTS_DIR), |t| t.is_dir()) {
        paths.extend(
            entries(&network, |t| t.is_file())
                .into_iter()
                .filter(|path| path.extension().is_some_and(|ext| ext == "json")),
        );
    }
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| match read_record(&path) {
            Ok(record) => Some(StoredRecord { path, record }),
            Err(error) => {
                tracing::warn!("skipping an attachment record: {error}");
                None
            }
        })
        .collect()
}

/// The non-hidden entries of `dir` whose own type (symlinks not followed) passes `wanted`.
fn entries(dir: &Path, wanted: impl Fn(&fs::FileType) -> bool) -> Vec<PathBuf> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            tracing::warn!("cannot list {}: {error}", dir.display());
            return Vec::new();
        }
    };
    listing
        .flatten()
        // Hidden files are the plugins' temporary files, still being written.
        .filter(|entry| !entry.file_name().as_encoded_bytes().starts_with(b"."))
        .filter(|entry| entry.file_type().is_ok_and(|t| wanted(&t)))
        .map(|entry| entry.path())
        .collect()
}

fn read_record(path: &Path) -> Result<AttachmentRecord, RecordError> {
    let read_error = |source| RecordError::Read {
        path: path.to_path_buf(),
        source,
    };
    if fs::metadata(path).map_err(read_error)?.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let bytes = fs::read(path).map_err(read_error)?;
    let record: AttachmentRecord =
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    match record.missing_field() {
        Some(field) => Err(RecordError::Incomplete {
            path: path.to_path_buf(),
            field,
        }),
        None => Ok(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"network":"net-a","containerId":"c1","ifname":"net1",
        "netns":"/run/netns/x","podNamespace":"ns","podName":"p","podUid":"u","extra":1}"#;

    #[test]
    fn reads_good_records_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let net_a = dir.path().join(ATTACHMENTS_DIR).join("net-a");
        let net_b = dir.path().join(ATTACHMENTS_DIR).join("net-b");
        fs::create_dir_all(&net_a).unwrap();
        fs::create_dir_all(&net_b).unwrap();
        fs::write(net_a.join("c1.net1.json"), GOOD).unwrap();
        fs::write(
            net_b.join("c2.eth1.json"),
            r#"{"network":"n","containerID":"c2","ifName":"eth1","netns":"/x",
               "podNamespace":"ns","podName":"q"}"#,
        )
        .unwrap();
        fs::write(net_a.join("garbage.json"), "{not json").unwrap();
        fs::write(
            net_a.join("empty-name.json"),
            GOOD.replace(r#""podName":"p""#, r#""podName":"""#),
        )
        .unwrap();
        fs::write(net_a.join(".c3.1234.tmp"), GOOD).unwrap();
        fs::write(net_a.join(".c4.json"), GOOD).unwrap();
        fs::write(net_a.join("notes.txt"), GOOD).unwrap();
        fs::write(
            net_a.join("huge.json"),
            " ".repeat(MAX_RECORD_BYTES as usize + 1),
        )
        .unwrap();
        // Outside the layout: not records.
        fs::write(dir.path().join("c5.json"), GOOD).unwrap();
        fs::write(dir.path().join(ATTACHMENTS_DIR).join("c6.json"), GOOD).unwrap();
        std::os::unix::fs::symlink(&net_a, dir.path().join(ATTACHMENTS_DIR).join("link")).unwrap();

        let records = read_records(dir.path());
        let ids: Vec<_> = records
            .iter()
            .map(|r| r.record.container_id.as_str())
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert_eq!(records[0].record.pod_uid(), Some("u"));
        assert_eq!(records[0].path, net_a.join("c1.net1.json"));
        assert_eq!(records[1].record.pod_uid(), None);
        assert_eq!(records[1].record.ifname, "eth1");
    }

    #[test]
    fn a_missing_state_dir_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_records(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(&path, GOOD.replace(r#""ifname":"net1""#, r#""ifname":"""#)).unwrap();
        let error = read_record(&path).unwrap_err();
        assert!(error.to_string().ends_with("has no ifname"), "{error}");
    }
}
