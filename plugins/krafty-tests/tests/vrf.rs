//! Everything VRF, on a kernel that has it: run inside the VM (`scripts/vm-run.sh`), where
//! Debian's kernel loads the vrf module. On a kernel without VRF these tests fail, loudly.

use krafty_cni::{naming, Attachment};
use krafty_tests::{
    address_of, container_id, full_conflist, interface_names, kill, several, shared_network, Node,
    NETWORK,
};
use serde_json::{json, Value};

/// The `krafty` plugin (the original's config) with VRF. (A crate root's `mod original;` would
/// be tests/original.rs, the host tests.)
#[path = "vrf/original.rs"]
mod original;

/// The interface group `ip -j link` shows for the devices of attachment `id` in pod scope.
fn attachment_group(id: &str) -> String {
    naming::attachment_group(&naming::attachment_mark(NETWORK, id, "net1")).to_string()
}

/// A pod-scope attachment's own node devices, the host veth first as DEL has them.
fn pod_devices(id: &str) -> Vec<String> {
    vec![
        naming::host_veth_name(id, "net1"),
        naming::bridge_name(id, "net1"),
        naming::vrf_name(id, "net1"),
    ]
}

fn vrf_table(node: &Node, vrf: &str) -> u64 {
    let link = node.link(vrf).unwrap_or_else(|| panic!("VRF {vrf} exists"));
    assert_eq!(link["linkinfo"]["info_kind"], "vrf", "{link}");
    link["linkinfo"]["info_data"]["table"]
        .as_u64()
        .expect("a VRF has a table")
}

fn main_table_reaches(node: &Node, prefix: &str) -> bool {
    node.ip(&["route", "show", "table", "main"])
        .contains(prefix)
}

#[test]
fn the_full_chain_puts_the_pod_behind_a_bridge_in_its_own_vrf() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(full_conflist("1.0.0"));
    let id = container_id();
    let result = node.cni("add", &conflist, &id, &pod.netns_path()).ok();

    let vrf = naming::vrf_name(&id, "net1");
    let bridge = naming::bridge_name(&id, "net1");
    let names = interface_names(&result);
    assert_eq!(
        names,
        vec![
            vrf.as_str(),
            bridge.as_str(),
            &naming::host_veth_name(&id, "net1"),
            "net1"
        ]
    );
    assert!(
        result["interfaces"][0].get("sandbox").is_none(),
        "the VRF lives on the node"
    );

    assert_eq!(
        vrf_table(&node, &vrf),
        u64::from(naming::derived_table(&vrf))
    );
    assert_eq!(
        node.link(&bridge).unwrap()["master"],
        vrf.as_str(),
        "bridge enslaved to the VRF"
    );
    assert!(
        pod.ping("172.16.10.1"),
        "the pod reaches its gateway inside the VRF"
    );
    assert!(
        !main_table_reaches(&node, "172.16.10.0/24"),
        "the main table knows nothing of the pod subnet"
    );
    let table = vrf_table(&node, &vrf).to_string();
    assert!(node
        .ip(&["route", "show", "table", &table])
        .contains("172.16.10.0/24"));
    for device in pod_devices(&id) {
        assert_eq!(
            node.link(&device).unwrap()["group"],
            attachment_group(&id),
            "{device} is in the attachment's group"
        );
    }

    node.cni("check", &conflist, &id, &pod.netns_path()).ok();
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn a_pods_vrf_bridge_and_veth_go_in_one_request_and_a_stranger_in_their_group_stays() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    let conflist = node.conflist(full_conflist("1.0.0"));
    let (id_a, _) = node.attach(&conflist, &a);
    let (id_b, _) = node.attach(&conflist, &b);
    // Somebody else's device whose group collides with b's: a group DEL would take it.
    let stranger_group = attachment_group(&id_b);
    node.ip(&[
        "link",
        "add",
        "kt-stranger",
        "group",
        &stranger_group,
        "type",
        "vrf",
        "table",
        "4343",
    ]);

    assert_eq!(
        node.delete_as_del_does(
            &Attachment::new(NETWORK, &id_a, "net1").unwrap(),
            &pod_devices(&id_a)
        ),
        1
    );
    node.cni("del", &conflist, &id_a, &a.netns_path()).ok();
    assert!(b.ping("172.16.10.1"), "b's VRF is untouched");

    node.cni("del", &conflist, &id_b, &b.netns_path()).ok();
    for device in pod_devices(&id_a).into_iter().chain(pod_devices(&id_b)) {
        assert!(node.link(&device).is_none(), "{device} is gone");
    }
    assert_eq!(node.link("kt-stranger").unwrap()["group"], stranger_group);
    node.cni("del", &conflist, &id_b, &b.netns_path()).ok();
    node.ip(&["link", "del", "kt-stranger"]);
    node.assert_clean();
}

#[test]
fn two_pods_in_their_own_vrfs_share_one_gateway_address() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    let conflist = node.conflist(full_conflist("1.0.0"));
    let (id_a, _) = node.attach(&conflist, &a);
    let (id_b, _) = node.attach(&conflist, &b);
    assert!(a.ping("172.16.10.1"));
    assert!(b.ping("172.16.10.1"));
    assert_ne!(
        vrf_table(&node, &naming::vrf_name(&id_a, "net1")),
        vrf_table(&node, &naming::vrf_name(&id_b, "net1"))
    );
    assert!(!main_table_reaches(&node, "172.16.10.0/24"));
    node.cni("del", &conflist, &id_a, &a.netns_path()).ok();
    node.cni("del", &conflist, &id_b, &b.netns_path()).ok();
    node.assert_clean();
}

/// A shared network whose VRF uses routing table `table` (vrfTable names a network's table).
fn with_vrf_table(network: &str, subnet: &str, gateway: &str, table: u64) -> Value {
    let mut conflist = shared_network(network, &[(subnet, gateway)], true);
    conflist["plugins"][0]["vrfTable"] = json!(table);
    conflist
}

#[test]
fn an_explicit_vrf_table_serves_every_pod_of_its_network_and_no_other_network() {
    let node = Node::new();
    let (a, b, c) = (node.pod("a"), node.pod("b"), node.pod("c"));
    let tabled = with_vrf_table("tabled", "172.16.63.0/24", "172.16.63.1", 4242);
    let conflist = node.conflist(tabled.clone());
    let (id_a, id_b, id_c) = (container_id(), container_id(), container_id());
    node.cni("add", &conflist, &id_a, &a.netns_path()).ok();
    let result_b = node.cni("add", &conflist, &id_b, &b.netns_path()).ok();
    assert_eq!(vrf_table(&node, &naming::shared_vrf_name("tabled")), 4242);
    node.cni("check", &conflist, &id_a, &a.netns_path()).ok();
    assert!(
        a.ping(&address_of(&result_b, false)),
        "every pod of the network"
    );

    // Another network cannot have the table too.
    let other = node.conflist(with_vrf_table(
        "other",
        "172.16.64.0/24",
        "172.16.64.1",
        4242,
    ));
    node.cni("add", &other, &id_c, &c.netns_path())
        .error(7, "vrfTable 4242 is already used");
    assert!(node.link(&naming::shared_vrf_name("other")).is_none());

    node.cni("del", &other, &id_c, &c.netns_path()).ok();
    node.cni("del", &conflist, &id_b, &b.netns_path()).ok();
    node.cni("del", &conflist, &id_a, &a.netns_path()).ok();
    node.gc(&tabled, &[]).ok();
    node.assert_clean();
}

#[test]
fn a_derived_table_in_use_moves_to_the_next_free_one() {
    let node = Node::new();
    let pod = node.pod("a");
    let id = container_id();
    let vrf = naming::vrf_name(&id, "net1");
    let derived = naming::derived_table(&vrf);
    // Somebody else's VRF already uses the table krafty would derive.
    node.ip(&[
        "link",
        "add",
        "foreign-vrf",
        "type",
        "vrf",
        "table",
        &derived.to_string(),
    ]);

    let conflist = node.conflist(full_conflist("1.0.0"));
    node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    let expected = naming::first_free_table(derived, |t| t == derived).unwrap();
    assert_eq!(vrf_table(&node, &vrf), u64::from(expected));
    assert!(pod.ping("172.16.10.1"));

    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    assert_eq!(
        vrf_table(&node, "foreign-vrf"),
        u64::from(derived),
        "the foreign VRF is untouched"
    );
    node.ip(&["link", "del", "foreign-vrf"]);
    node.assert_clean();
}

#[test]
fn an_explicit_table_of_a_foreign_vrf_is_refused() {
    let node = Node::new();
    let pod = node.pod("a");
    node.ip(&["link", "add", "foreign-vrf", "type", "vrf", "table", "777"]);
    let conflist = node.conflist(with_vrf_table(
        "foreign",
        "172.16.65.0/24",
        "172.16.65.1",
        777,
    ));
    let id = container_id();
    node.cni("add", &conflist, &id, &pod.netns_path())
        .error(7, "foreign-vrf");
    node.ip(&["link", "del", "foreign-vrf"]);
    node.assert_clean();
}

#[test]
fn check_names_a_bridge_that_left_its_vrf() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(full_conflist("1.0.0"));
    let id = container_id();
    node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    let bridge = naming::bridge_name(&id, "net1");
    node.ip(&["link", "set", &bridge, "nomaster"]);
    node.cni("check", &conflist, &id, &pod.netns_path())
        .error(104, &bridge);
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn the_chain_works_in_every_result_version() {
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let node = Node::new();
        let pod = node.pod("a");
        let conflist = node.conflist(full_conflist(version));
        let id = container_id();
        let result = node.cni("add", &conflist, &id, &pod.netns_path()).ok();
        assert_eq!(result["cniVersion"], version);
        assert_eq!(result["interfaces"].as_array().unwrap().len(), 4);
        assert!(pod.ping("172.16.10.1"), "{version}");
        node.cni("del", &conflist, &id, &pod.netns_path()).ok();
        node.assert_clean();
    }
}

#[test]
fn a_shared_network_in_a_vrf_connects_its_pods_and_isolates_others() {
    let node = Node::new();
    let blue = shared_network("blue", &[("172.16.31.0/24", "172.16.31.1")], true);
    let red = shared_network("red", &[("172.16.32.0/24", "172.16.32.1")], true);
    let (a, b, c) = (node.pod("a"), node.pod("b"), node.pod("c"));
    let (blue_list, red_list) = (node.conflist(blue.clone()), node.conflist(red.clone()));
    let (id_a, id_b, id_c) = (container_id(), container_id(), container_id());
    let result_a = node.cni("add", &blue_list, &id_a, &a.netns_path()).ok();
    let result_b = node.cni("add", &blue_list, &id_b, &b.netns_path()).ok();
    let result_c = node.cni("add", &red_list, &id_c, &c.netns_path()).ok();

    let vrf = naming::shared_vrf_name("blue");
    assert_eq!(
        node.link(&naming::shared_bridge_name("blue")).unwrap()["master"],
        vrf.as_str()
    );
    for shared in [&vrf, &naming::shared_bridge_name("blue")] {
        assert_eq!(
            node.link(shared).unwrap()["group"],
            naming::network_group("blue").to_string(),
            "{shared} is in its network's group, out of every attachment's"
        );
    }
    assert!(
        a.ping(&address_of(&result_b, false)),
        "pods of one network reach each other"
    );
    assert!(
        !c.ping(&address_of(&result_a, false)),
        "red cannot reach blue"
    );
    assert!(
        !a.ping(&address_of(&result_c, false)),
        "blue cannot reach red"
    );
    assert!(!main_table_reaches(&node, "172.16.31.0/24"));
    assert!(!main_table_reaches(&node, "172.16.32.0/24"));
    let table = vrf_table(&node, &vrf).to_string();
    assert!(node
        .ip(&["route", "show", "table", &table])
        .contains("172.16.31.0/24"));

    node.cni("check", &blue_list, &id_a, &a.netns_path()).ok();
    node.cni("del", &blue_list, &id_a, &a.netns_path()).ok();
    assert!(node.link(&vrf).is_some(), "DEL keeps the shared VRF");
    assert!(b.ping("172.16.31.1"));
    node.cni("del", &blue_list, &id_b, &b.netns_path()).ok();
    node.cni("del", &red_list, &id_c, &c.netns_path()).ok();
    node.gc(&blue, &[]).ok();
    node.gc(&red, &[]).ok();
    node.assert_clean();
}

#[test]
fn dual_stack_inside_a_vrf() {
    let node = Node::new();
    let network = shared_network(
        "dual",
        &[
            ("172.16.33.0/24", "172.16.33.1"),
            ("fd10:16:33::/64", "fd10:16:33::1"),
        ],
        true,
    );
    let list = node.conflist(network.clone());
    let (a, b) = (node.pod("a"), node.pod("b"));
    let (id_a, _) = node.attach(&list, &a);
    let (id_b, result_b) = node.attach(&list, &b);
    assert!(a.ping(&address_of(&result_b, false)));
    assert!(
        a.ping(&address_of(&result_b, true)),
        "IPv6 between pods inside the VRF"
    );
    assert!(
        a.ping("fd10:16:33::1"),
        "the IPv6 gateway survived enslavement"
    );
    let table = vrf_table(&node, &naming::shared_vrf_name("dual")).to_string();
    assert!(node
        .ip(&["-6", "route", "show", "table", &table])
        .contains("fd10:16:33::/64"));
    assert!(!node
        .ip(&["-6", "route", "show", "table", "main"])
        .contains("fd10:16:33::"));
    node.cni("del", &list, &id_a, &a.netns_path()).ok();
    node.cni("del", &list, &id_b, &b.netns_path()).ok();
    node.gc(&network, &[]).ok();
    node.assert_clean();
}

#[test]
fn gc_removes_an_orphan_and_the_shared_devices_once_unused() {
    let node = Node::new();
    let network = shared_network("gcvrf", &[("172.16.34.0/24", "172.16.34.1")], true);
    let list = node.conflist(network.clone());
    let (a, b) = (node.pod("a"), node.pod("b"));
    let (id_a, _) = node.attach(&list, &a);
    let (id_b, _) = node.attach(&list, &b);
    // Pod b's DEL never comes; its namespace is gone.
    drop(b);
    node.gc(&network, &[&id_a]).ok();
    assert!(node.link(&naming::host_veth_name(&id_b, "net1")).is_none());
    assert_eq!(
        node.all_leases().len(),
        1,
        "b's lease is released, a's kept"
    );
    assert!(a.ping("172.16.34.1"), "the valid attachment is intact");
    assert!(node.link(&naming::shared_vrf_name("gcvrf")).is_some());

    node.cni("del", &list, &id_a, &a.netns_path()).ok();
    node.gc(&network, &[]).ok();
    node.assert_clean();
}

#[test]
fn gc_of_pod_scoped_vrfs() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = full_conflist("1.0.0");
    let list = node.conflist(conflist.clone());
    let id = container_id();
    node.cni("add", &list, &id, &pod.netns_path()).ok();
    node.gc(&conflist, &[&id]).ok();
    assert!(
        node.link(&naming::vrf_name(&id, "net1")).is_some(),
        "a valid attachment keeps its VRF"
    );
    node.gc(&conflist, &[]).ok();
    node.assert_clean();
}

#[test]
fn status_of_the_full_chain_succeeds_where_vrf_exists() {
    let node = Node::new();
    node.status(&full_conflist("1.0.0")).ok();
    node.assert_clean();
}

#[test]
fn two_networks_in_one_pod_each_in_its_own_vrf() {
    several::two_networks_in_one_pod(true);
}

#[test]
fn one_pod_scope_network_twice_in_one_pod_in_two_vrfs() {
    several::one_network_twice_in_one_pod(true, true);
}

#[test]
fn one_shared_network_twice_in_one_pod_in_its_vrf() {
    several::one_network_twice_in_one_pod(false, true);
}

#[test]
fn the_same_interface_on_two_networks_with_vrfs_is_refused() {
    several::the_same_interface_on_two_networks_is_refused(true, true);
    several::the_same_interface_on_two_networks_is_refused(false, true);
}

/// krafty-vrf killed at every step of `verb` in the full chain, then DEL and GC (see
/// krafty_tests::kill; krafty-bridge and krafty-veth are killed on the host's kernel).
fn vrf_killed_at_every_step(name: &str, conflist: &Value, verb: kill::Verb) {
    let node = Node::new();
    let case = kill::Case::new(&node, conflist);
    let points = kill::at_every_step(&case, "krafty-vrf", verb, |case, id, pod| {
        case.runtime_recovery(id, pod)
    });
    assert!(points > 0, "no kill point at all: is strace there?");
    kill::report(name, &[(verb, points)]);
}

fn shared_vrf_network() -> Value {
    shared_network("killvrf", &[("172.16.62.0/24", "172.16.62.1")], true)
}

#[test]
fn krafty_vrf_killed_at_every_step_of_add() {
    vrf_killed_at_every_step("vm-add-pod", &full_conflist("1.0.0"), kill::Verb::Add);
    vrf_killed_at_every_step("vm-add-network", &shared_vrf_network(), kill::Verb::Add);
}

#[test]
fn krafty_vrf_killed_at_every_step_of_del() {
    vrf_killed_at_every_step("vm-del-pod", &full_conflist("1.0.0"), kill::Verb::Del);
    vrf_killed_at_every_step("vm-del-network", &shared_vrf_network(), kill::Verb::Del);
}

#[test]
fn krafty_vrf_killed_at_every_step_of_gc() {
    vrf_killed_at_every_step("vm-gc-pod", &full_conflist("1.0.0"), kill::Verb::Gc);
    vrf_killed_at_every_step("vm-gc-network", &shared_vrf_network(), kill::Verb::Gc);
}

#[test]
fn mixed_scopes_are_refused_and_the_networks_pods_undisturbed() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    let good = shared_network("mixed", &[("172.16.66.0/24", "172.16.66.1")], true);
    let list = node.conflist(good.clone());
    let (id_a, _) = node.attach(&list, &a);
    let bridge = naming::shared_bridge_name("mixed");
    let master = |node: &Node| node.link(&bridge).expect("the shared bridge")["master"].clone();
    let master_before = master(&node);

    // A pod's VRF before the network's bridge, and the network's VRF before a pod's bridge.
    for (vrf_scope, bridge_scope) in [("pod", "network"), ("network", "pod")] {
        let mut mixed = good.clone();
        mixed["plugins"][0]["scope"] = json!(vrf_scope);
        mixed["plugins"][1]["scope"] = json!(bridge_scope);
        let mixed = node.conflist(mixed);
        let id_b = container_id();
        let error = node
            .cni("add", &mixed, &id_b, &b.netns_path())
            .error(7, "give krafty-vrf and krafty-bridge the same scope");
        let msg = error["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("{bridge_scope:?}")) && msg.contains(&format!("{vrf_scope:?}")),
            "the message names both scopes: {msg}"
        );
        assert_eq!(
            master(&node),
            master_before,
            "the shared bridge stays in its VRF"
        );
        assert!(
            a.ping("172.16.66.1"),
            "the pod already on the network keeps working"
        );
        node.cni("del", &mixed, &id_b, &b.netns_path()).ok();
    }
    node.cni("del", &list, &id_a, &a.netns_path()).ok();
    node.gc(&good, &[]).ok();
    node.assert_clean();
}

#[test]
fn a_network_stretched_across_nodes_works_behind_its_vrf() {
    use krafty_tests::multinode::Lab;
    let lab = Lab::new(2, 1500);
    let network = "stretchvrf";
    let pods = lab.pod_on_every_node(network, &json!({}), true);
    let vrf = naming::shared_vrf_name(network);
    let bridge = naming::shared_bridge_name(network);
    for node in &lab.nodes {
        let vxlan = node
            .link(&naming::shared_vxlan_name(network))
            .expect("the VXLAN port exists");
        assert_eq!(vxlan["master"], bridge.as_str(), "{vxlan}");
        assert_eq!(node.link(&bridge).unwrap()["master"], vrf.as_str());
        // The tunnel's packets leave through the underlay in the main table, not the VRF.
        assert_eq!(vxlan["linkinfo"]["info_data"]["learning"], false);
    }
    for (pod, _) in &pods {
        assert!(
            pod.ping("10.77.0.1") && pod.ping("fd00:77::1"),
            "{}",
            pod.name
        );
    }
    for v6 in [false, true] {
        assert!(pods[0].0.ping(&address_of(&pods[1].1, v6)));
        assert!(pods[1].0.ping(&address_of(&pods[0].1, v6)));
    }
}

/// A network of per-node address blocks behind its shared VRF (the chart's default for
/// `addressing: blocks`): addresses only from the node's block, the pods reach each other and
/// the gateway in the VRF's table, and DEL and GC leave nothing.
#[test]
fn address_blocks_behind_the_networks_vrf() {
    let node = Node::new();
    let network = "blocksvrf";
    let mut conflist = krafty_tests::blocks_network(network, &[("172.16.72.0/24", "172.16.72.1")]);
    conflist["plugins"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({ "type": "krafty-vrf", "scope": "network" }));
    node.write_blocks(
        network,
        &[("172.16.72.0/24", "172.16.72.1", &["172.16.72.64/28"])],
    );
    let list = node.conflist(conflist.clone());
    let pods: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let pod = node.pod(name);
            let id = container_id();
            let result = node.cni("add", &list, &id, &pod.netns_path()).ok();
            (pod, id, result)
        })
        .collect();
    for (_, _, result) in &pods {
        let address: std::net::Ipv4Addr = address_of(result, false).parse().unwrap();
        assert!(
            (64..80).contains(&address.octets()[3]),
            "{address} is outside the node's block 172.16.72.64/28"
        );
    }
    let vrf = naming::shared_vrf_name(network);
    assert_eq!(
        node.link(&naming::shared_bridge_name(network)).unwrap()["master"],
        vrf.as_str()
    );
    assert!(!main_table_reaches(&node, "172.16.72.0/24"));
    assert!(pods[0].0.ping("172.16.72.1"));
    assert!(pods[0].0.ping(&address_of(&pods[1].2, false)));
    for (pod, id, _) in &pods {
        node.cni("del", &list, id, &pod.netns_path()).ok();
    }
    node.gc(&conflist, &[]).ok();
    node.assert_clean();
}
