//! Interface groups: a pod-scope attachment's own devices share a group derived from its mark,
//! so that DEL removes them in one kernel batch; shared devices are in their network's group; a
//! stranger in the group sends DEL back to one deletion per device. On this machine's kernel
//! (bridge + veth); the VRF's group is checked in the VM tier (tests/vrf.rs).

use krafty_cni::{naming, Attachment};
use krafty_tests::{
    bridge_veth_conflist, container_id, pod_network, shared_network, Node, NETWORK,
};
use serde_json::Value;

/// The group `ip -j link` shows for the devices of `network`'s attachment of container `id`.
fn group_of_attachment(network: &str, id: &str) -> String {
    naming::attachment_group(&naming::attachment_mark(network, id, "net1")).to_string()
}

/// A second pod-scope network: without VRFs, two pods of one pod-scope network cannot share a
/// node (their bridges would carry the same gateway in its main table).
const OTHER: &str = "other";

fn other_network() -> Value {
    pod_network(OTHER, "172.16.11.0/24", "172.16.11.1", false)
}

fn group_of_device(node: &Node, name: &str) -> Value {
    node.link(name).unwrap_or_else(|| panic!("{name} exists"))["group"].clone()
}

/// The pod-scope devices of attachment `id` on this kernel: the host veth first, as DEL has it.
fn pod_devices(id: &str) -> Vec<String> {
    vec![
        naming::host_veth_name(id, "net1"),
        naming::bridge_name(id, "net1"),
    ]
}

#[test]
fn pod_scope_devices_share_the_attachments_group_and_del_removes_only_them() {
    let node = Node::new();
    let (a, b, c) = (node.pod("a"), node.pod("b"), node.pod("c"));
    let pod_scope = node.conflist(bridge_veth_conflist("1.0.0"));
    let other = node.conflist(other_network());
    let shared = shared_network("grpnet", &[("172.16.40.0/24", "172.16.40.1")], false);
    let shared_list = node.conflist(shared.clone());
    let (id_a, id_b, id_c) = (container_id(), container_id(), container_id());
    node.cni("add", &pod_scope, &id_a, &a.netns_path()).ok();
    node.cni("add", &shared_list, &id_b, &b.netns_path()).ok();
    node.cni("add", &other, &id_c, &c.netns_path()).ok();

    for device in pod_devices(&id_a) {
        assert_eq!(
            group_of_device(&node, &device),
            group_of_attachment(NETWORK, &id_a)
        );
    }
    for device in pod_devices(&id_c) {
        assert_eq!(
            group_of_device(&node, &device),
            group_of_attachment(OTHER, &id_c)
        );
    }
    assert_ne!(
        group_of_attachment(NETWORK, &id_a),
        group_of_attachment(OTHER, &id_c)
    );
    // Every device is created in a group, so that it is known for krafty's before its mark:
    // a shared bridge in its network's, the veth on it in its attachment's.
    assert_eq!(
        group_of_device(&node, &naming::shared_bridge_name("grpnet")),
        naming::network_group("grpnet").to_string()
    );
    assert_eq!(
        group_of_device(&node, &naming::host_veth_name(&id_b, "net1")),
        naming::attachment_group(&naming::attachment_mark("grpnet", &id_b, "net1")).to_string()
    );

    node.cni("del", &pod_scope, &id_a, &a.netns_path()).ok();
    for device in pod_devices(&id_a) {
        assert!(node.link(&device).is_none(), "{device} is gone");
    }
    assert!(a.addresses("net1").is_empty(), "the pod end went too");
    assert!(node.leases(NETWORK).is_empty(), "a's lease is released");
    assert_eq!(node.leases(OTHER).len(), 1, "c's is not");
    assert_eq!(node.records().len(), 2, "a's record is removed");
    assert!(b.ping("172.16.40.1"), "the shared network is untouched");
    assert!(
        c.ping("172.16.11.1"),
        "the other pod's devices are untouched"
    );

    node.cni("del", &pod_scope, &id_a, &a.netns_path()).ok();
    node.cni("del", &other, &id_c, &c.netns_path()).ok();
    node.cni("del", &shared_list, &id_b, &b.netns_path()).ok();
    node.gc(&shared, &[]).ok();
    node.assert_clean();
}

#[test]
fn a_stranger_in_the_attachments_group_survives_del_and_gc() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    let list = node.conflist(bridge_veth_conflist("1.0.0"));
    let (id_a, _) = node.attach(&list, &a);
    let (id_b, _) = node.attach(&node.conflist(other_network()), &b);
    // Devices of others whose group collides with a's and b's: a group DEL would take them.
    let (group_a, group_b) = (
        group_of_attachment(NETWORK, &id_a),
        group_of_attachment(OTHER, &id_b),
    );
    node.ip(&[
        "link",
        "add",
        "kt-stranger-a",
        "group",
        &group_a,
        "type",
        "bridge",
    ]);
    node.ip(&[
        "link",
        "add",
        "kt-stranger-b",
        "group",
        &group_b,
        "type",
        "bridge",
    ]);

    node.cni("del", &list, &id_a, &a.netns_path()).ok();
    for device in pod_devices(&id_a) {
        assert!(node.link(&device).is_none(), "{device} is gone");
    }
    assert_eq!(group_of_device(&node, "kt-stranger-a"), group_a);
    node.cni("del", &list, &id_a, &a.netns_path()).ok();

    // GC undoes b's attachment from its record the same way.
    node.gc(&other_network(), &[]).ok();
    for device in pod_devices(&id_b) {
        assert!(node.link(&device).is_none(), "{device} is gone");
    }
    assert_eq!(group_of_device(&node, "kt-stranger-b"), group_b);

    node.ip(&["link", "del", "kt-stranger-a"]);
    node.ip(&["link", "del", "kt-stranger-b"]);
    node.assert_clean();
}

#[test]
fn the_group_goes_in_one_request_unless_a_stranger_is_in_it() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    let list = node.conflist(bridge_veth_conflist("1.0.0"));
    let other = node.conflist(other_network());
    let (id_a, _) = node.attach(&list, &a);
    let (id_b, _) = node.attach(&other, &b);
    node.ip(&[
        "link",
        "add",
        "kt-stranger",
        "group",
        &group_of_attachment(OTHER, &id_b),
        "type",
        "bridge",
    ]);

    let devices = pod_devices(&id_a);
    assert_eq!(
        node.delete_as_del_does(&Attachment::new(NETWORK, &id_a, "net1").unwrap(), &devices),
        1
    );
    let devices = pod_devices(&id_b);
    assert_eq!(
        node.delete_as_del_does(&Attachment::new(OTHER, &id_b, "net1").unwrap(), &devices),
        devices.len(),
        "one request per device"
    );
    assert!(node.link("kt-stranger").is_some());
    for device in pod_devices(&id_a).into_iter().chain(devices) {
        assert!(node.link(&device).is_none(), "{device} is gone");
    }

    // DEL finds the devices gone and releases the rest.
    node.cni("del", &list, &id_a, &a.netns_path()).ok();
    node.cni("del", &other, &id_b, &b.netns_path()).ok();
    node.ip(&["link", "del", "kt-stranger"]);
    node.assert_clean();
}
