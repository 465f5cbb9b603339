//! When is an attachment orphaned?
//!
//! Only when both hold: its pod no longer exists on this node (by namespace and name, and by
//! UID when the record has one: a pod recreated under the same name is a different pod), and
//! its network namespace path is gone. An attachment whose pod still exists is never touched,
//! whatever state its namespace is in: the runtime owns that pod's teardown.

use std::collections::HashMap;
use std::path::Path;

use super::record::AttachmentRecord;

/// The pods on this node as the pod watch last saw them: namespace/name to UID.
#[derive(Debug, Clone, Default)]
pub struct PodsOnNode {
    uids: HashMap<(String, String), Option<String>>,
}

impl PodsOnNode {
    pub fn insert(&mut self, namespace: &str, name: &str, uid: Option<&str>) {
        self.uids.insert(
            (namespace.to_string(), name.to_string()),
            uid.map(str::to_string),
        );
    }

    pub fn len(&self) -> usize {
        self.uids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
    }

    /// Whether the record's pod exists. A pod without a UID (never the case for a real pod)
    /// matches any recorded UID: when in doubt, the pod exists.
    pub fn holds_pod_of(&self, record: &AttachmentRecord) -> bool {
        let key = (record.pod_namespace.clone(), record.pod_name.clone());
        match (self.uids.get(&key), record.pod_uid()) {
            (None, _) => false,
            (Some(_), None) | (Some(None), Some(_)) => true,
            (Some(Some(live)), Some(recorded)) => live == recorded,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The pod exists: keep.
    PodExists,
    /// The pod is gone but its network namespace is still there (teardown in progress): keep.
    NetnsPresent,
    /// Pod and network namespace are gone: clean up.
    Orphaned,
}

pub fn decide(
    record: &AttachmentRecord,
    pods: &PodsOnNode,
    netns_present: impl Fn(&Path) -> bool,
) -> Verdict {
    if pods.holds_pod_of(record) {
        Verdict::PodExists
    } else if netns_present(Path::new(&record.netns)) {
        Verdict::NetnsPresent
    } else {
        Verdict::Orphaned
    }
}

/// Whether a network namespace path is present. A path that cannot be checked (permissions,
/// I/O) counts as present: only a definite "not there" may lead to a cleanup.
pub fn netns_present(path: &Path) -> bool {
    !matches!(path.try_exists(), Ok(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(namespace: &str, name: &str, uid: &str) -> AttachmentRecord {
        serde_json::from_value(serde_json::json!({
            "network": "net-a", "containerId": "c", "ifname": "net1",
            "netns": "/run/netns/cni-1",
            "podNamespace": namespace, "podName": name, "podUid": uid,
        }))
        .unwrap()
    }

    fn pods() -> PodsOnNode {
        let mut pods = PodsOnNode::default();
        pods.insert("default", "web-0", Some("uid-1"));
        pods.insert("default", "no-uid", None);
        pods
    }

    const GONE: fn(&Path) -> bool = |_| false;
    const THERE: fn(&Path) -> bool = |_| true;

    #[test]
    fn a_live_pod_keeps_its_attachment_whatever_the_netns() {
        for netns in [GONE, THERE] {
            assert_eq!(
                decide(&record("default", "web-0", "uid-1"), &pods(), netns),
                Verdict::PodExists
            );
            assert_eq!(
                decide(&record("default", "web-0", ""), &pods(), netns),
                Verdict::PodExists
            );
            assert_eq!(
                decide(&record("default", "no-uid", "uid-9"), &pods(), netns),
                Verdict::PodExists
            );
        }
    }

    #[test]
    fn a_gone_pod_with_its_netns_still_there_is_kept() {
        assert_eq!(
            decide(&record("default", "gone", "u"), &pods(), THERE),
            Verdict::NetnsPresent
        );
    }

    #[test]
    fn gone_pod_and_gone_netns_is_orphaned() {
        assert_eq!(
            decide(&record("default", "gone", "u"), &pods(), GONE),
            Verdict::Orphaned
        );
        // Same name in another namespace is another pod.
        assert_eq!(
            decide(&record("other", "web-0", ""), &pods(), GONE),
            Verdict::Orphaned
        );
    }

    #[test]
    fn a_recreated_pod_with_the_same_name_does_not_keep_the_old_attachment() {
        assert_eq!(
            decide(&record("default", "web-0", "uid-0"), &pods(), GONE),
            Verdict::Orphaned
        );
        assert_eq!(
            decide(&record("default", "web-0", "uid-0"), &pods(), THERE),
            Verdict::NetnsPresent
        );
    }

    #[test]
    fn netns_presence_is_definite_only_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(netns_present(dir.path()));
        assert!(!netns_present(&dir.path().join("absent")));
    }
}
