//! The `krafty` plugin (the original krafty's single-plugin config) on a kernel with VRF,
//! through libcni as a `.conf` and as a one-plugin conflist: the chain's devices, names,
//! marks, groups and records, so that either can CHECK and DEL what the other added; `podIP`;
//! `vrfTable` as the network's table for every pod of the node; STATUS and GC. Runs in the VM
//! with the rest of `vrf.rs` (one binary, one boot).

use krafty_cni::naming;
use krafty_tests::{
    address_of, full_conflist, interface_names, one_plugin_conflist, original_config,
    original_with, Node, NETWORK,
};
use serde_json::{json, Value};

use super::{attachment_group, pod_devices, vrf_table};

/// The one attachment record on `node`, as JSON.
fn the_record(node: &Node) -> Value {
    let records = node.records();
    assert_eq!(records.len(), 1, "one record: {records:?}");
    let path = node.state_dir().join("attachments").join(&records[0]);
    serde_json::from_str(&std::fs::read_to_string(path).expect("the record")).expect("JSON")
}

/// The pod-scope attachment `id` as the chain makes it: names in the result, the VRF with its
/// derived table, the bridge in it, every device marked and in the attachment's group.
fn assert_the_chains_devices(node: &Node, id: &str, result: &Value) {
    let names = interface_names(result);
    let devices = pod_devices(id);
    let (veth, bridge, vrf) = (&devices[0], &devices[1], &devices[2]);
    assert_eq!(names, [vrf.as_str(), bridge, veth, "net1"], "{result}");
    assert_eq!(vrf_table(node, vrf), u64::from(naming::derived_table(vrf)));
    assert_eq!(
        node.link(bridge).expect("the bridge")["master"],
        vrf.as_str()
    );
    let mark = naming::attachment_mark(NETWORK, id, "net1");
    for device in &devices {
        let link = node.link(device).expect("the device");
        assert_eq!(link["ifalias"], mark.as_str(), "{device}: {link}");
        assert_eq!(link["group"], attachment_group(id), "{device}: {link}");
    }
}

#[test]
fn the_seed_example_as_a_conf_and_as_a_conflist_makes_the_chains_devices() {
    let node = Node::new();
    for config in [
        original_config("1.0.0"),
        one_plugin_conflist(&original_config("1.0.0")),
    ] {
        let pod = node.pod("a");
        let list = node.conflist(config);
        let (id, result) = node.attach(&list, &pod);
        assert_the_chains_devices(&node, &id, &result);
        let address: std::net::Ipv4Addr = address_of(&result, false).parse().unwrap();
        assert!(
            (10..=250).contains(&address.octets()[3]),
            "host-local's range .10-.250: {address}"
        );
        assert!(pod.ping("172.16.10.1"), "the pod reaches its gateway");
        let record = the_record(&node);
        let recorded: Vec<&str> = record["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["name"].as_str().unwrap_or_default())
            .collect();
        let devices = pod_devices(&id);
        assert_eq!(recorded, [&devices[2], &devices[1], &devices[0]]);
        assert_eq!(record["ipam"]["plugin"], "host-local");
        node.cni("check", &list, &id, &pod.netns_path()).ok();
        node.cni("del", &list, &id, &pod.netns_path()).ok();
        node.cni("del", &list, &id, &pod.netns_path()).ok();
        node.assert_clean();
    }
}

#[test]
fn the_chain_checks_and_deletes_what_krafty_added_and_the_other_way_round() {
    let node = Node::new();
    let original = node.conflist(original_config("1.0.0"));
    let chain = node.conflist(full_conflist("1.0.0"));
    for (adds, undoes) in [(&original, &chain), (&chain, &original)] {
        let pod = node.pod("a");
        let (id, result) = node.attach(adds, &pod);
        assert_the_chains_devices(&node, &id, &result);
        node.cni("check", undoes, &id, &pod.netns_path()).ok();
        node.cni("del", undoes, &id, &pod.netns_path()).ok();
        node.assert_clean();
    }
}

#[test]
fn a_static_pod_ip() {
    let node = Node::new();
    let config = original_with(json!({
        "ipam": null, "podIP": "172.16.10.5/24", "routes": [{"dst": "0.0.0.0/0"}]
    }));
    for config in [config.clone(), one_plugin_conflist(&config)] {
        let pod = node.pod("a");
        let list = node.conflist(config);
        let (id, result) = node.attach(&list, &pod);
        assert_the_chains_devices(&node, &id, &result);
        let addresses = pod.addresses("net1");
        assert!(
            addresses.contains(&"172.16.10.5/24".to_string()),
            "{addresses:?}"
        );
        assert!(pod.ping("172.16.10.1"));
        assert!(pod
            .exec(&["ip", "route", "show", "default"])
            .stdout
            .contains("via 172.16.10.1 dev net1"));
        node.cni("check", &list, &id, &pod.netns_path()).ok();
        node.cni("del", &list, &id, &pod.netns_path()).ok();
        node.assert_clean();
    }
}

#[test]
fn a_vrf_table_is_the_networks_for_every_pod_of_the_node() {
    let node = Node::new();
    // 1.0.0 for libcni 1.1's ADD; STATUS and GC are asked in 1.1.0 (Node::status, Node::gc).
    let config = original_with(json!({"vrfTable": 4242}));
    let list = node.conflist(config.clone());
    let (a, b) = (node.pod("a"), node.pod("b"));
    let (id_a, result_a) = node.attach(&list, &a);
    let (id_b, result_b) = node.attach(&list, &b);
    let (vrf, bridge) = (
        naming::shared_vrf_name(NETWORK),
        naming::shared_bridge_name(NETWORK),
    );
    assert_eq!(vrf_table(&node, &vrf), 4242);
    for result in [&result_a, &result_b] {
        assert_eq!(result["interfaces"][0]["name"], vrf.as_str(), "{result}");
        assert_eq!(result["interfaces"][1]["name"], bridge.as_str(), "{result}");
    }
    let shared = node.link(&vrf).expect("the network's VRF");
    assert_eq!(shared["ifalias"], naming::network_mark(NETWORK).as_str());
    assert_eq!(shared["group"], naming::network_group(NETWORK).to_string());
    assert!(
        a.ping(&address_of(&result_b, false)),
        "pods of the network meet"
    );
    node.cni("check", &list, &id_a, &a.netns_path()).ok();
    node.status(&config).ok();

    // One pod gone, the other keeps the network's VRF; GC keeps what is valid.
    node.cni("del", &list, &id_a, &a.netns_path()).ok();
    node.gc(&config, &[&id_b]).ok();
    assert_eq!(vrf_table(&node, &vrf), 4242);
    assert!(b.ping("172.16.10.1"));
    node.cni("check", &list, &id_b, &b.netns_path()).ok();
    // GC of nothing valid undoes b and, unused, the network's devices.
    node.gc(&config, &[]).ok();
    node.assert_clean();
}

#[test]
fn status_succeeds_where_vrf_exists() {
    let node = Node::new();
    node.status(&original_config("1.1.0")).ok();
    node.status(&one_plugin_conflist(&original_config("1.1.0")))
        .ok();
}
