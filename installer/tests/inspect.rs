//! `krafty-installer attachments` against real attachments (libcni, host-local, a node
//! namespace): what it lists, device by device, and what it says when devices or records go.
//! `krafty-installer peers` in a lab of node namespaces on an underlay: the node list, and each
//! tunnel port's flood list against it, as ports drift and the list changes.

use std::process::Command;

use krafty_cni::{multinode, naming};
use krafty_tests::multinode::Lab;
use krafty_tests::several::Attached;
use krafty_tests::{container_id, pod_network, shared_network, Node};
use serde_json::{json, Value};

const INSTALLER: &str = env!("CARGO_BIN_EXE_krafty-installer");

/// `krafty-installer ARGS` in `node`'s namespace, on its state directory: its stdout.
fn inspect(node: &Node, args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", &node.name, INSTALLER, "--state-dir"])
        .arg(node.state_dir())
        .args(args)
        .output()
        .expect("krafty-installer runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn listing(node: &Node) -> Vec<Value> {
    serde_json::from_str::<Value>(&inspect(node, &["attachments", "--json"]))
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

fn peers(node: &Node) -> Value {
    serde_json::from_str(&inspect(node, &["peers", "--json"])).expect("one JSON document")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn peers_shows_the_node_list_and_each_tunnel_port_against_it() {
    let lab = Lab::new(3, 1500);
    let network = "inspected";
    let port = naming::shared_vxlan_name(network);
    lab.pod_on_every_node(network, &json!({ "vni": 4343, "port": 4799 }), false);

    let first = &lab.nodes[0];
    let report = peers(first);
    let nodes: Vec<(String, String)> = report["nodes"]
        .as_array()
        .expect("a node list")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().into(),
                n["address"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        nodes.len(),
        6,
        "two addresses of each of three nodes: {nodes:?}"
    );
    assert!(nodes.contains(&("lab-2".into(), lab.v6(2))), "{nodes:?}");
    assert_eq!(
        report["nodeList"],
        multinode::nodes_file(&first.state_dir())
            .display()
            .to_string()
    );
    let ports = report["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "{ports:?}");
    let tunnel = &ports[0];
    assert_eq!(tunnel["network"], network);
    assert_eq!(tunnel["port"], port.as_str());
    assert_eq!(tunnel["vni"], 4343);
    assert_eq!(tunnel["udpPort"], 4799);
    assert_eq!(tunnel["local"], lab.v4(0));
    let others = vec![lab.v4(1), lab.v4(2)];
    assert_eq!(strings(&tunnel["floodTo"]), others);
    assert_eq!(strings(&tunnel["expected"]), others);
    assert_eq!(tunnel["missing"], json!([]));
    assert_eq!(tunnel["extra"], json!([]));
    let table = inspect(first, &["peers"]);
    assert!(table.contains("lab-1 "), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with(network))
        .expect("the port's line");
    assert!(line.ends_with(" ok"), "{line}");

    // The port drifts: a peer's entry gone, a stranger's added.
    let bridge = |args: &[&str]| {
        let status = Command::new("bridge")
            .args(["-n", &first.name, "fdb"])
            .args(args)
            .status()
            .expect("bridge runs");
        assert!(status.success(), "bridge fdb {args:?}");
    };
    bridge(&["del", "00:00:00:00:00:00", "dev", &port, "dst", &lab.v4(2)]);
    bridge(&[
        "append",
        "00:00:00:00:00:00",
        "dev",
        &port,
        "dst",
        "192.168.77.99",
    ]);
    let tunnel = &peers(first)["ports"][0];
    assert_eq!(strings(&tunnel["missing"]), [lab.v4(2)]);
    assert_eq!(strings(&tunnel["extra"]), ["192.168.77.99"]);
    assert_eq!(tunnel["remoteMacs"], json!({}));

    // A remote pod's MAC, sent to its node alone (as the agent does for the pods it knows).
    bridge(&[
        "add",
        "02:00:00:00:77:02",
        "dev",
        &port,
        "dst",
        &lab.v4(1),
        "self",
        "permanent",
    ]);
    let tunnel = &peers(first)["ports"][0];
    assert_eq!(
        tunnel["remoteMacs"],
        json!({ "02:00:00:00:77:02": lab.v4(1) })
    );
    let table = inspect(first, &["peers"]);
    let line = table
        .lines()
        .find(|l| l.starts_with(network))
        .expect("the port's line");
    assert!(
        line.ends_with(&format!(" missing {} extra 192.168.77.99", lab.v4(2))),
        "{line}"
    );

    // The node list changes under a port that follows it no more.
    lab.write_node_lists(&[0, 1]);
    let tunnel = &peers(first)["ports"][0];
    assert_eq!(strings(&tunnel["expected"]), [lab.v4(1)]);
    assert_eq!(tunnel["missing"], json!([]));
    assert_eq!(strings(&tunnel["extra"]), ["192.168.77.99"]);

    // No node list yet: said so, and every flood entry is extra.
    std::fs::remove_file(multinode::nodes_file(&first.state_dir())).unwrap();
    let report = peers(first);
    assert_eq!(report["nodes"], Value::Null);
    assert_eq!(report["ports"][0]["expected"], json!([]));
    let table = inspect(first, &["peers"]);
    assert!(table.starts_with("no node list at "), "{table}");
}

#[test]
fn peers_on_a_node_without_tunnels_lists_no_port() {
    let node = Node::new();
    let report = peers(&node);
    assert_eq!(report["ports"], json!([]));
}
