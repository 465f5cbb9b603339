//! `krafty-installer attachments` against real attachments (libcni, host-local, a node
//! namespace): what it lists, device by device, and what it says when devices or records go.

use std::process::Command;

use krafty_tests::several::Attached;
use krafty_tests::{container_id, pod_network, shared_network, Node};
use serde_json::Value;

const INSTALLER: &str = env!("CARGO_BIN_EXE_krafty-installer");

fn listing(node: &Node) -> Vec<Value> {
    let output = Command::new("ip")
        .args(["netns", "exec", &node.name, INSTALLER, "--state-dir"])
        .arg(node.state_dir())
        .args(["attachments", "--json"])
        .output()
        .expect("krafty-installer runs");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice::<Value>(&output.stdout)
        .expect("one JSON document")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(listed: &'a [Value], attached: &Attached) -> &'a Value {
    listed
        .iter()
        .find(|e| {
            e["containerId"] == attached.id.as_str() && e["ifname"] == attached.ifname.as_str()
        })
        .unwrap_or_else(|| panic!("{} is not listed: {listed:?}", attached.attachment()))
}

fn device_states(entry: &Value) -> Vec<(String, bool, bool)> {
    entry["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or_default().to_string(),
                d["present"] == true,
                d["marked"] == true,
            )
        })
        .collect()
}

#[test]
fn every_attachment_is_listed_with_its_devices_and_what_is_missing() {
    let node = Node::new();
    let pod = node.pod("p");
    let id = container_id();
    let net1 = Attached::add(
        &node,
        &pod_network("blue", "172.16.51.0/24", "172.16.51.1", false),
        &pod,
        &id,
        "net1",
    );
    let net2 = Attached::add(
        &node,
        &shared_network("shared", &[("172.16.52.0/24", "172.16.52.1")], false),
        &pod,
        &id,
        "net2",
    );

    let listed = listing(&node);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let first = entry(&listed, &net1);
    assert_eq!(first["network"], "blue");
    assert_eq!(first["pod"], format!("default/pod-{id}"));
    assert_eq!(first["addresses"][0], format!("{}/24", net1.address()));
    let attachment = net1.attachment();
    assert_eq!(
        device_states(first),
        [
            (attachment.bridge_name(), true, true),
            (attachment.host_veth_name(), true, true)
        ]
    );
    let second = entry(&listed, &net2);
    let shared_bridge = &second["devices"][0];
    assert_eq!(shared_bridge["shared"], true);
    assert_eq!(shared_bridge["present"], true);
    assert_eq!(shared_bridge["marked"], true);

    // A device gone, a device not krafty's any more, a record gone.
    node.ip(&["link", "del", &attachment.host_veth_name()]);
    node.ip(&[
        "link",
        "set",
        &attachment.bridge_name(),
        "alias",
        "someone-else",
    ]);
    std::fs::remove_file(
        node.state_dir()
            .join("attachments")
            .join(net2.attachment().record_file()),
    )
    .unwrap();
    let listed = listing(&node);
    assert_eq!(
        device_states(entry(&listed, &net1)),
        [
            (attachment.bridge_name(), true, false),
            (attachment.host_veth_name(), false, false)
        ]
    );
    let unrecorded = entry(&listed, &net2);
    assert_eq!(
        unrecorded["record"], "",
        "devices of an attachment without a record"
    );
    assert_eq!(
        device_states(unrecorded),
        [(net2.attachment().host_veth_name(), true, true)]
    );
}
