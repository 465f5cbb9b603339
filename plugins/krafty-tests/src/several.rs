//! Pods with several krafty attachments, as Multus makes them: one container ID, `net1` and
//! `net2`, on two networks or on one network twice. The same scenarios run on this machine's
//! kernel without VRFs (tests/attachments.rs) and with them in the VM (tests/vrf.rs).

use krafty_cni::Attachment;
use serde_json::Value;

use crate::{address_of, container_id, pod_network, shared_network, Node, Pod};

/// One attachment of a test pod: its network's conflist, the container and interface.
pub struct Attached {
    pub conflist: Value,
    pub id: String,
    pub ifname: String,
    pub result: Value,
}

impl Attached {
    /// ADD of `conflist` for `pod` as container `id`'s `ifname`, which must succeed.
    pub fn add(node: &Node, conflist: &Value, pod: &Pod, id: &str, ifname: &str) -> Attached {
        let list = node.conflist(conflist.clone());
        let result = node
            .cni_if("add", &list, id, &pod.netns_path(), ifname)
            .ok();
        Attached {
            conflist: conflist.clone(),
            id: id.to_string(),
            ifname: ifname.to_string(),
            result,
        }
    }

    pub fn network(&self) -> &str {
        self.conflist["name"]
            .as_str()
            .expect("the conflist has a name")
    }

    pub fn attachment(&self) -> Attachment {
        Attachment::new(self.network(), &self.id, &self.ifname).expect("valid test names")
    }

    pub fn address(&self) -> String {
        address_of(&self.result, false)
    }

    pub fn gateway(&self) -> String {
        let gateway = &self.result["ips"][0]["gateway"];
        gateway
            .as_str()
            .expect("the result names a gateway")
            .to_string()
    }

    /// DEL, which must succeed.
    pub fn del(&self, node: &Node, pod: &Pod) {
        let list = node.conflist(self.conflist.clone());
        node.cni_if("del", &list, &self.id, &pod.netns_path(), &self.ifname)
            .ok();
    }

    /// The devices of this attachment alone that exist on the node (host veth, and in pod
    /// scope its bridge and VRF).
    pub fn own_devices(&self, node: &Node) -> Vec<String> {
        let attachment = self.attachment();
        [
            attachment.host_veth_name(),
            attachment.bridge_name(),
            attachment.vrf_name(),
        ]
        .into_iter()
        .filter(|name| {
            node.link(name)
                .is_some_and(|link| link["ifalias"] == attachment.mark().as_str())
        })
        .collect()
    }

    /// The lease files of this attachment on its network.
    pub fn leases(&self, node: &Node) -> Vec<String> {
        node.leases(self.network())
            .into_iter()
            .filter(|address| {
                let lease = node.ipam_dir().join(self.network()).join(address);
                std::fs::read_to_string(lease)
                    .is_ok_and(|owner| owner == format!("{}\r\n{}", self.id, self.ifname))
            })
            .collect()
    }

    pub fn has_record(&self, node: &Node) -> bool {
        let file = self.attachment().record_file();
        node.records().contains(&file.display().to_string())
    }

    /// What must stay when another attachment of the pod goes: devices, lease, record, and the
    /// pod reaching the gateway over this interface.
    pub fn snapshot(&self, node: &Node, pod: &Pod) -> Snapshot {
        Snapshot {
            devices: self.own_devices(node),
            leases: self.leases(node),
            record: self.has_record(node),
            reaches_gateway: pod.ping_from(&self.ifname, &self.gateway()),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub devices: Vec<String>,
    pub leases: Vec<String>,
    pub record: bool,
    pub reaches_gateway: bool,
}

/// Asserts `attachment` is whole: its devices (`pod_scope`: veth, bridge and VRF when
/// `with_vrf`; else the veth), one lease, a record, and the gateway within reach.
fn assert_whole(node: &Node, pod: &Pod, attachment: &Attached, pod_scope: bool, with_vrf: bool) {
    let expected = match (pod_scope, with_vrf) {
        (true, true) => 3,
        (true, false) => 2,
        (false, _) => 1,
    };
    let snapshot = attachment.snapshot(node, pod);
    assert_eq!(
        snapshot.devices.len(),
        expected,
        "{}: {snapshot:?}",
        attachment.attachment()
    );
    assert_eq!(snapshot.leases.len(), 1, "{snapshot:?}");
    assert!(snapshot.record && snapshot.reaches_gateway, "{snapshot:?}");
}

/// Asserts nothing of `attachment` is left: no device, lease or record.
fn assert_gone(node: &Node, attachment: &Attached) {
    assert_eq!(attachment.own_devices(node), Vec::<String>::new());
    assert_eq!(attachment.leases(node), Vec::<String>::new());
    assert!(!attachment.has_record(node));
}

/// net1 on one network and net2 on another, both pod scope: each gets its own devices and
/// address, and DEL of either leaves the other whole and working.
pub fn two_networks_in_one_pod(with_vrf: bool) {
    let node = Node::new();
    let blue = pod_network("blue", "172.16.31.0/24", "172.16.31.1", with_vrf);
    let green = pod_network("green", "172.16.32.0/24", "172.16.32.1", with_vrf);
    let pod = node.pod("p");
    let id = container_id();
    let net1 = Attached::add(&node, &blue, &pod, &id, "net1");
    let net2 = Attached::add(&node, &green, &pod, &id, "net2");
    assert!(net1.address().starts_with("172.16.31."));
    assert!(net2.address().starts_with("172.16.32."));
    assert!(pod
        .addresses("net1")
        .contains(&format!("{}/24", net1.address())));
    assert!(pod
        .addresses("net2")
        .contains(&format!("{}/24", net2.address())));
    assert_whole(&node, &pod, &net1, true, with_vrf);
    assert_whole(&node, &pod, &net2, true, with_vrf);
    assert_eq!(node.records().len(), 2);

    let net1_before = net1.snapshot(&node, &pod);
    net2.del(&node, &pod);
    assert_gone(&node, &net2);
    assert!(pod.addresses("net2").is_empty(), "net2 left the pod");
    assert_eq!(net1.snapshot(&node, &pod), net1_before, "net1 is untouched");

    // The other way round, from a fresh pair.
    let net2 = Attached::add(&node, &green, &pod, &id, "net2");
    let net2_before = net2.snapshot(&node, &pod);
    net1.del(&node, &pod);
    assert_gone(&node, &net1);
    assert_eq!(net2.snapshot(&node, &pod), net2_before, "net2 is untouched");
    net2.del(&node, &pod);
    node.assert_clean();
}

/// net1 and net2 on the same network, pod or network scope: two addresses from one range, two
/// veths; DEL of one and GC with one valid leave the other whole.
pub fn one_network_twice_in_one_pod(pod_scope: bool, with_vrf: bool) {
    let node = Node::new();
    let network = if pod_scope {
        pod_network("twice", "172.16.33.0/24", "172.16.33.1", with_vrf)
    } else {
        shared_network("twice", &[("172.16.33.0/24", "172.16.33.1")], with_vrf)
    };
    let pod = node.pod("p");
    let other_pod = node.pod("q");
    let id = container_id();
    let net1 = Attached::add(&node, &network, &pod, &id, "net1");
    let net2 = Attached::add(&node, &network, &pod, &id, "net2");
    assert_ne!(net1.address(), net2.address());
    assert_whole(&node, &pod, &net1, pod_scope, with_vrf);
    assert_whole(&node, &pod, &net2, pod_scope, with_vrf);
    assert_eq!(node.leases("twice").len(), 2);

    // DEL of net1 leaves net2 whole.
    let net2_before = net2.snapshot(&node, &pod);
    net1.del(&node, &pod);
    assert_gone(&node, &net1);
    assert_eq!(net2.snapshot(&node, &pod), net2_before);

    // GC with one of the pod's two valid: net1 and net2, and another pod's net1 beside them.
    let net1 = Attached::add(&node, &network, &pod, &id, "net1");
    let neighbour = Attached::add(&node, &network, &other_pod, &container_id(), "net1");
    let net2_before = net2.snapshot(&node, &pod);
    let neighbour_before = neighbour.snapshot(&node, &other_pod);
    node.gc_keeping(&network, &[(&id, "net2"), (&neighbour.id, "net1")])
        .ok();
    assert_gone(&node, &net1);
    assert!(pod.addresses("net1").is_empty(), "net1 left the pod");
    assert_eq!(
        net2.snapshot(&node, &pod),
        net2_before,
        "GC removed net1 only"
    );
    assert_eq!(neighbour.snapshot(&node, &other_pod), neighbour_before);

    net2.del(&node, &pod);
    neighbour.del(&node, &other_pod);
    node.gc(&network, &[]).ok();
    node.assert_clean();
}

/// A second network asked onto an interface the container already has is refused by the
/// chain's first plugin, before anything of it exists; the first network keeps working, and
/// the DEL a runtime sends after the failed ADD leaves it alone.
pub fn the_same_interface_on_two_networks_is_refused(pod_scope: bool, with_vrf: bool) {
    let node = Node::new();
    let (first, second) = if pod_scope {
        (
            pod_network("first", "172.16.34.0/24", "172.16.34.1", with_vrf),
            pod_network("second", "172.16.35.0/24", "172.16.35.1", with_vrf),
        )
    } else {
        (
            shared_network("first", &[("172.16.34.0/24", "172.16.34.1")], with_vrf),
            shared_network("second", &[("172.16.35.0/24", "172.16.35.1")], with_vrf),
        )
    };
    let pod = node.pod("p");
    let id = container_id();
    let net1 = Attached::add(&node, &first, &pod, &id, "net1");
    let before = net1.snapshot(&node, &pod);
    let links_before = node.link_names();

    let list = node.conflist(second.clone());
    let refused = node.cni_if("add", &list, &id, &pod.netns_path(), "net1");
    let error = refused.error(103, "belongs to another krafty attachment");
    assert!(
        error["msg"].as_str().unwrap_or_default().contains("first"),
        "the message names the attachment that holds the interface: {error}"
    );
    assert_eq!(node.link_names(), links_before, "nothing was created");
    assert!(node.leases("second").is_empty());
    assert_eq!(net1.snapshot(&node, &pod), before);

    node.cni_if("del", &list, &id, &pod.netns_path(), "net1")
        .ok();
    assert_eq!(
        net1.snapshot(&node, &pod),
        before,
        "the runtime's DEL of the refused ADD"
    );

    net1.del(&node, &pod);
    node.gc(&first, &[]).ok();
    node.assert_clean();
}
