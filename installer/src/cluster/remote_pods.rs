//! Where the pods of other nodes are, from the API: every pod's Multus network-status
//! annotation names the MAC of each of its interfaces and the network (the
//! NetworkAttachmentDefinition, `namespace/name`) it is on, and its spec the node it runs on.
//! A multi-node network's tunnel port then sends those MACs to their node alone
//! ([`crate::peers`]). A network is matched by its NetworkAttachmentDefinition's name, which is
//! the network's name wherever the chart renders it; pods of other NADs stay reachable by
//! flooding.
//!
//! Only a small summary of each pod is kept (not the pods themselves): a watch of every pod in
//! the cluster, which no reflector store has to hold.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde::Deserialize;

use crate::peers::RemotePods;

/// Multus' annotation of what each network of a pod got.
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// One network of a pod, as Multus reports it (the fields used here).
#[derive(Debug, Deserialize)]
struct NetworkStatus {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    default: bool,
}

/// A pod interface on another node: (network, MAC, node).
type RemoteInterface = (String, [u8; 6], String);

/// The interfaces of `pod` that another node's tunnels can send to directly: none when the
/// pod runs on `this_node`, is not scheduled, or has finished (its networks are torn down).
pub fn remote_interfaces(pod: &Pod, this_node: &str) -> Vec<RemoteInterface> {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let Some(node) = node.filter(|node| *node != this_node) else {
        return Vec::new();
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NETWORK_STATUS));
    let Some(annotation) = annotation else {
        return Vec::new();
    };
    let Ok(networks) = serde_json::from_str::<Vec<NetworkStatus>>(annotation) else {
        tracing::debug!(
            "pod {}/{}: its {NETWORK_STATUS} is not a list of networks",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        return Vec::new();
    };
    networks
        .into_iter()
        .filter(|n| !n.default)
        .filter_map(|n| {
            let mac = parse_unicast_mac(n.mac.as_deref()?)?;
            let network = n.name.rsplit('/').next()?.to_string();
            Some((network, mac, node.to_string()))
        })
        .collect()
}

/// A MAC in `aa:bb:cc:dd:ee:ff` form that a single interface can have (not group, not zero).
fn parse_unicast_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    let group = mac[0] & 1 == 1;
    (parts.next().is_none() && !group && mac != [0; 6]).then_some(mac)
}

/// The summaries of the pods seen, by namespace/name.
#[derive(Debug, Default)]
pub struct PodSummaries(HashMap<String, Vec<RemoteInterface>>);

impl PodSummaries {
    fn key(pod: &Pod) -> String {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        )
    }

    /// Takes in the pod as it is now; whether that changed what is known (most pod updates,
    /// status changes above all, do not).
    pub fn apply(&mut self, pod: &Pod, this_node: &str) -> bool {
        let interfaces = remote_interfaces(pod, this_node);
        if interfaces.is_empty() {
            self.0.remove(&Self::key(pod)).is_some()
        } else {
            self.0.insert(Self::key(pod), interfaces.clone()) != Some(interfaces)
        }
    }

    /// Forgets the pod; whether it was known.
    pub fn delete(&mut self, pod: &Pod) -> bool {
        self.0.remove(&Self::key(pod)).is_some()
    }

    /// Every known MAC by network. A MAC reported on two nodes at once (a stale report, or a
    /// clash) is left out: flooding reaches it wherever it is.
    pub fn remote_pods(&self) -> RemotePods {
        let mut by_network: BTreeMap<String, BTreeMap<[u8; 6], Option<String>>> = BTreeMap::new();
        for (network, mac, node) in self.0.values().flatten() {
            by_network
                .entry(network.clone())
                .or_default()
                .entry(*mac)
                .and_modify(|known| {
                    if known.as_deref() != Some(node.as_str()) {
                        *known = None;
                    }
                })
                .or_insert_with(|| Some(node.clone()));
        }
        RemotePods(
            by_network
                .into_iter()
                .map(|(network, macs)| {
                    let macs = macs
                        .into_iter()
                        .filter_map(|(mac, node)| Some((mac, node?)))
                        .collect();
                    (network, macs)
                })
                .collect(),
        )
    }
}

/// Watches every pod of `api` and calls `changed` with the remote pods after every full list
/// and every change to a pod's summary, until the watch ends.
pub async fn watch(api: Api<Pod>, this_node: &str, mut changed: impl FnMut(RemotePods)) {
    let mut known = PodSummaries::default();
    // A (re)list builds its summaries apart, and they replace the known ones when it is done.
    let mut relisting = PodSummaries::default();
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        // Whether what is known changed: the whole map is summed up again only then.
        let changed_known = match event {
            Ok(watcher::Event::Init) => {
                relisting = PodSummaries::default();
                false
            }
            Ok(watcher::Event::InitApply(pod)) => {
                relisting.apply(&pod, this_node);
                false
            }
            Ok(watcher::Event::InitDone) => {
                known = std::mem::take(&mut relisting);
                true
            }
            Ok(watcher::Event::Apply(pod)) => known.apply(&pod, this_node),
            Ok(watcher::Event::Delete(pod)) => known.delete(&pod),
            Err(error) => {
                tracing::warn!("watching the pods of the cluster: {error}");
                false
            }
        };
        if changed_known {
            changed(known.remote_pods());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "lab", "name": name,
                         "annotations": {NETWORK_STATUS: status.to_string()}},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn entry(network: &str, mac: &str) -> serde_json::Value {
        json!({"name": network, "interface": "net1", "ips": ["10.1.0.5"], "mac": mac})
    }

    #[test]
    fn a_pod_on_another_node_names_its_networks_macs() {
        let status = json!([
            {"name": "cilium", "interface": "eth0", "mac": "02:00:00:00:00:01", "default": true},
            entry("lab/stretched", "0A:58:0a:01:00:05"),
            entry("other", "02:00:00:00:00:02"),
        ]);
        let interfaces = remote_interfaces(&pod("a", "node-2", "Running", status), "node-1");
        assert_eq!(
            interfaces,
            vec![
                (
                    "stretched".into(),
                    [0x0a, 0x58, 0x0a, 1, 0, 5],
                    "node-2".into()
                ),
                ("other".into(), [2, 0, 0, 0, 0, 2], "node-2".into()),
            ]
        );
    }

    #[test]
    fn own_finished_and_unscheduled_pods_and_odd_macs_are_not_remote() {
        let status = json!([entry("n", "02:00:00:00:00:01")]);
        assert!(
            remote_interfaces(&pod("a", "node-1", "Running", status.clone()), "node-1").is_empty()
        );
        assert!(
            remote_interfaces(&pod("a", "node-2", "Succeeded", status.clone()), "node-1")
                .is_empty()
        );
        let mut unscheduled = pod("a", "node-2", "Pending", status);
        unscheduled.spec.as_mut().unwrap().node_name = None;
        assert!(remote_interfaces(&unscheduled, "node-1").is_empty());
        for odd in [
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "02:00:00:00:00",
            "zz:00:00:00:00:01",
            "02:00:00:00:00:01:03",
        ] {
            let status = json!([entry("n", odd)]);
            assert!(
                remote_interfaces(&pod("a", "node-2", "Running", status), "node-1").is_empty(),
                "{odd}"
            );
        }
        let mut garbage = pod("a", "node-2", "Running", json!([]));
        garbage
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(NETWORK_STATUS.into(), "{".into());
        assert!(remote_interfaces(&garbage, "node-1").is_empty());
    }

    #[test]
    fn a_mac_on_two_nodes_is_left_to_flooding_and_deleted_pods_are_forgotten() {
        let mut summaries = PodSummaries::default();
        summaries.apply(
            &pod(
                "a",
                "node-2",
                "Running",
                json!([entry("n", "02:00:00:00:00:01")]),
            ),
            "node-1",
        );
        summaries.apply(
            &pod(
                "b",
                "node-3",
                "Running",
                json!([entry("n", "02:00:00:00:00:01")]),
            ),
            "node-1",
        );
        summaries.apply(
            &pod(
                "c",
                "node-3",
                "Running",
                json!([entry("n", "02:00:00:00:00:03")]),
            ),
            "node-1",
        );
        let again = pod(
            "c",
            "node-3",
            "Running",
            json!([entry("n", "02:00:00:00:00:03")]),
        );
        assert!(
            !summaries.apply(&again, "node-1"),
            "the same summary changes nothing"
        );
        let known = summaries.remote_pods();
        assert_eq!(known.0["n"].len(), 1);
        assert_eq!(known.0["n"][&[2, 0, 0, 0, 0, 3]], "node-3");
        summaries.delete(&pod("b", "node-3", "Running", json!([])));
        assert_eq!(
            summaries.remote_pods().0["n"][&[2, 0, 0, 0, 0, 1]],
            "node-2"
        );
        // A pod that moves to this node is no longer remote.
        summaries.apply(
            &pod(
                "a",
                "node-1",
                "Running",
                json!([entry("n", "02:00:00:00:00:01")]),
            ),
            "node-1",
        );
        assert!(!summaries.remote_pods().0["n"].contains_key(&[2, 0, 0, 0, 0, 1]));
    }
}
