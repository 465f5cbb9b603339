//! Shared networks, dual-stack, runtime-provided addresses, concurrency, STATUS and GC, on
//! the running kernel (bridge + veth; STATUS also asks about VRF, whichever answer the kernel
//! gives), through the real libcni and host-local.

use std::thread;

use krafty_cni::naming;
use krafty_tests::{
    address_of, bridge_veth_conflist, container_id, full_conflist, shared_network, Node, Pod,
};
use serde_json::{json, Value};

fn attach(node: &Node, conflist: &Value, pod: &Pod) -> (String, Value) {
    node.attach(&node.conflist(conflist.clone()), pod)
}

fn detach(node: &Node, conflist: &Value, id: &str, pod: &Pod) {
    let list = node.conflist(conflist.clone());
    node.cni("del", &list, id, &pod.netns_path()).ok();
}

#[test]
fn pods_of_a_shared_network_reach_each_other_and_del_keeps_the_bridge() {
    let node = Node::new();
    let network = shared_network("labnet", &[("172.16.20.0/24", "172.16.20.1")], false);
    let (a, b) = (node.pod("a"), node.pod("b"));
    let (id_a, result_a) = attach(&node, &network, &a);
    let (id_b, result_b) = attach(&node, &network, &b);

    let bridge = naming::shared_bridge_name("labnet");
    assert_eq!(result_a["interfaces"][0]["name"], bridge.as_str());
    assert_eq!(result_b["interfaces"][0]["name"], bridge.as_str());
    assert_eq!(node.link(&bridge).unwrap()["ifalias"], "krafty:labnet");
    assert!(
        a.ping(&address_of(&result_b, false)),
        "pod a reaches pod b over the bridge"
    );
    assert!(b.ping(&address_of(&result_a, false)));

    // The gateway's MAC is the bridge's own, not its lowest port's: it stays when a pod goes.
    let gateway_mac = krafty_cni::netlink::format_mac(&naming::bridge_mac("krafty:labnet"));
    assert_eq!(node.link(&bridge).unwrap()["address"], gateway_mac.as_str());
    assert_eq!(result_a["interfaces"][0]["mac"], gateway_mac.as_str());
    detach(&node, &network, &id_a, &a);
    assert!(node.link(&bridge).is_some(), "DEL leaves the shared bridge");
    assert_eq!(node.link(&bridge).unwrap()["address"], gateway_mac.as_str());
    assert!(b.ping("172.16.20.1"), "the other pod keeps working");
    detach(&node, &network, &id_b, &b);
    assert!(node.link(&bridge).is_some());

    node.gc(&network, &[]).ok();
    node.assert_clean();
}

#[test]
fn two_shared_networks_stay_isolated() {
    let node = Node::new();
    let blue = shared_network("blue", &[("172.16.21.0/24", "172.16.21.1")], false);
    let green = shared_network("green", &[("172.16.22.0/24", "172.16.22.1")], false);
    let (a, b, c) = (node.pod("a"), node.pod("b"), node.pod("c"));
    let (id_a, result_a) = attach(&node, &blue, &a);
    let (id_b, result_b) = attach(&node, &blue, &b);
    let (id_c, _) = attach(&node, &green, &c);
    assert!(a.ping(&address_of(&result_b, false)));
    assert!(
        !c.ping(&address_of(&result_a, false)),
        "green cannot reach blue"
    );
    assert!(!c.ping(&address_of(&result_b, false)));
    assert_ne!(
        naming::shared_bridge_name("blue"),
        naming::shared_bridge_name("green")
    );

    detach(&node, &blue, &id_a, &a);
    detach(&node, &blue, &id_b, &b);
    detach(&node, &green, &id_c, &c);
    node.gc(&blue, &[]).ok();
    assert!(
        node.link(&naming::shared_bridge_name("green")).is_some(),
        "GC of blue leaves green alone"
    );
    node.gc(&green, &[]).ok();
    node.assert_clean();
}

#[test]
fn dual_stack_pods_reach_each_other_over_both_families() {
    let node = Node::new();
    let network = shared_network(
        "dual",
        &[
            ("172.16.23.0/24", "172.16.23.1"),
            ("fd10:16:23::/64", "fd10:16:23::1"),
        ],
        false,
    );
    let (a, b) = (node.pod("a"), node.pod("b"));
    let (id_a, result_a) = attach(&node, &network, &a);
    let (id_b, result_b) = attach(&node, &network, &b);
    assert_eq!(result_a["ips"].as_array().unwrap().len(), 2);
    assert!(a.ping(&address_of(&result_b, false)));
    assert!(
        a.ping(&address_of(&result_b, true)),
        "IPv6 works at once: DAD is off"
    );
    assert!(
        b.ping("fd10:16:23::1"),
        "the IPv6 gateway on the bridge answers"
    );
    let v6 = b
        .exec(&[
            "ip", "-j", "-6", "addr", "show", "dev", "net1", "scope", "global",
        ])
        .ok();
    let address = &v6[0]["addr_info"][0];
    assert_eq!(address["nodad"], true, "{address}");
    assert!(address.get("tentative").is_none(), "{address}");

    detach(&node, &network, &id_a, &a);
    detach(&node, &network, &id_b, &b);
    node.gc(&network, &[]).ok();
    node.assert_clean();
}

#[test]
fn enable_dad_keeps_duplicate_address_detection() {
    let node = Node::new();
    let mut network = shared_network("daddy", &[("fd10:16:24::/64", "fd10:16:24::1")], false);
    network["plugins"][1]["enableDad"] = json!(true);
    let pod = node.pod("a");
    let (id, result) = attach(&node, &network, &pod);
    let v6 = pod
        .exec(&[
            "ip", "-j", "-6", "addr", "show", "dev", "net1", "scope", "global",
        ])
        .ok();
    // Whether DAD is still running when we look depends on the machine's speed; whether the
    // address was added without it does not.
    let address = &v6[0]["addr_info"][0];
    assert_eq!(
        address["local"],
        address_of(&result, true).as_str(),
        "{address}"
    );
    assert!(address.get("nodad").is_none(), "{address}");
    detach(&node, &network, &id, &pod);
    node.gc(&network, &[]).ok();
    node.assert_clean();
}

#[test]
fn addresses_and_mac_from_the_runtime() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = json!({
        "cniVersion": "1.0.0", "name": "krafty", "plugins": [
            { "type": "krafty-bridge", "subnet": "172.16.10.0/24", "gateway": "172.16.10.1" },
            { "type": "krafty-veth", "capabilities": { "ips": true, "mac": true } }
        ]
    });
    let list = node.conflist(conflist);
    let id = container_id();
    let runtime = r#"{"ips":["172.16.10.55/24"],"mac":"02:aa:bb:cc:dd:ee"}"#;
    let result = node
        .cni_with(
            "add",
            &list,
            &id,
            &pod.netns_path(),
            &["--runtime-config", runtime],
        )
        .ok();
    assert_eq!(result["ips"][0]["address"], "172.16.10.55/24");
    let link = pod.exec(&["ip", "-j", "link", "show", "net1"]).ok();
    assert_eq!(link[0]["address"], "02:aa:bb:cc:dd:ee");
    assert!(pod.ping("172.16.10.1"));
    node.cni_with(
        "del",
        &list,
        &id,
        &pod.netns_path(),
        &["--runtime-config", runtime],
    )
    .ok();
    node.assert_clean();
}

#[test]
fn addresses_from_args_cni() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(json!({
        "cniVersion": "1.0.0", "name": "krafty", "plugins": [
            { "type": "krafty-bridge", "subnet": "172.16.10.0/24", "gateway": "172.16.10.1" },
            { "type": "krafty-veth", "podIP": "172.16.10.5/24",
              "args": { "cni": { "ips": ["172.16.10.66/24"] } } }
        ]
    }));
    let id = container_id();
    let result = node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    assert_eq!(
        result["ips"][0]["address"], "172.16.10.66/24",
        "the runtime's address wins over podIP"
    );
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn thirty_two_concurrent_adds_then_dels_on_one_network() {
    const PODS: usize = 32;
    let node = Node::new();
    let network = shared_network("busy", &[("172.16.25.0/24", "172.16.25.1")], false);
    let list = node.conflist(network.clone());
    let pods: Vec<(Pod, String)> = (0..PODS)
        .map(|i| (node.pod(&format!("p{i}")), container_id()))
        .collect();

    let results: Vec<Value> = thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(pod, id)| scope.spawn(|| node.cni("add", &list, id, &pod.netns_path()).ok()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    let mut addresses: Vec<String> = results.iter().map(|r| address_of(r, false)).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), PODS, "every pod got its own address");
    assert_eq!(node.records().len(), PODS);
    let bridges: Vec<String> = node
        .link_names()
        .into_iter()
        .filter(|n| n.starts_with("krb"))
        .collect();
    assert_eq!(
        bridges.len(),
        1,
        "one shared bridge, created once: {bridges:?}"
    );
    assert!(pods[0].0.ping(&addresses[PODS - 1]));

    thread::scope(|scope| {
        for (pod, id) in &pods {
            let list = &list;
            let node = &node;
            scope.spawn(move || node.cni("del", list, id, &pod.netns_path()).ok());
        }
    });
    let veths: Vec<String> = node
        .link_names()
        .into_iter()
        .filter(|n| n.starts_with("veth"))
        .collect();
    assert!(veths.is_empty(), "veths left: {veths:?}");
    assert!(node.all_leases().is_empty());
    assert!(node.records().is_empty());
    node.gc(&network, &[]).ok();
    node.assert_clean();
}

#[test]
fn status_says_whether_the_chain_can_serve_add() {
    let node = Node::new();
    node.status(&bridge_veth_conflist("1.0.0")).ok();
    // krafty-vrf's answer must match what the running kernel does when asked for a VRF.
    let with_vrf = node.status(&full_conflist("1.0.0"));
    if kernel_makes_vrfs() {
        with_vrf.ok();
    } else {
        with_vrf.error(50, "VRF");
    }
    node.assert_clean();
}

/// Whether the running kernel creates a VRF, asked without krafty: `ip link add` of one in a
/// throwaway network namespace (the kernel loads the module on demand, as for krafty's own
/// probe). A bridge made the same way first shows that a refusal is the kernel's answer about
/// VRFs and not a broken probe.
fn kernel_makes_vrfs() -> bool {
    let add = |kind: &[&str]| {
        let output = std::process::Command::new("unshare")
            .args(["--net", "ip", "link", "add", "krafty-probe", "type"])
            .args(kind)
            .output()
            .expect("cannot run unshare (util-linux)");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (bridge_made, why) = add(&["bridge"]);
    assert!(bridge_made, "the probe itself does not work: {why}");
    add(&["vrf", "table", "100"]).0
}

#[test]
fn gc_removes_what_the_runtime_forgot_and_keeps_valid_attachments() {
    let node = Node::new();
    let network = shared_network("gcnet", &[("172.16.26.0/24", "172.16.26.1")], false);
    let (a, b) = (node.pod("a"), node.pod("b"));
    let (id_a, _) = attach(&node, &network, &a);
    let (id_b, result_b) = attach(&node, &network, &b);
    let lease_b = format!("gcnet/{}", address_of(&result_b, false));
    assert!(node.all_leases().contains(&lease_b));

    // The runtime lost pod b without a DEL; GC with only pod a valid cleans b up.
    node.gc(&network, &[&id_a]).ok();
    assert!(
        node.link(&naming::host_veth_name(&id_b, "net1")).is_none(),
        "b's veth is gone"
    );
    assert!(
        !node.all_leases().contains(&lease_b),
        "b's address is released"
    );
    assert_eq!(node.records().len(), 1, "only a's record is left");
    assert!(node.link(&naming::host_veth_name(&id_a, "net1")).is_some());
    assert!(a.ping("172.16.26.1"), "pod a is untouched");
    assert!(
        node.link(&naming::shared_bridge_name("gcnet")).is_some(),
        "still used by a"
    );

    // Once nothing is valid, the shared bridge goes too.
    node.gc(&network, &[]).ok();
    node.assert_clean();
}

#[test]
fn gc_of_pod_scoped_devices_and_of_other_networks() {
    let node = Node::new();
    let pod = node.pod("a");
    let mine = bridge_veth_conflist("1.0.0");
    let (id, _) = attach(&node, &mine, &pod);
    // GC of another network never touches this one's devices.
    let mut other = bridge_veth_conflist("1.0.0");
    other["name"] = json!("other");
    node.gc(&other, &[]).ok();
    assert!(node.link(&naming::bridge_name(&id, "net1")).is_some());
    assert!(node.link(&naming::host_veth_name(&id, "net1")).is_some());
    node.gc(&mine, &[]).ok();
    node.assert_clean();
}

#[test]
fn gc_honours_disable_gc() {
    let node = Node::new();
    let pod = node.pod("a");
    let mut network = bridge_veth_conflist("1.0.0");
    let (id, _) = attach(&node, &network, &pod);
    network["disableGC"] = json!(true);
    node.gc(&network, &[]).ok();
    assert!(
        node.link(&naming::host_veth_name(&id, "net1")).is_some(),
        "GC did nothing"
    );
    network.as_object_mut().unwrap().remove("disableGC");
    // Each plugin honours disableGC on its own too, whoever calls it.
    let plugin_config = json!({
        "cniVersion": "1.1.0", "name": "krafty", "type": "krafty-veth", "disableGC": true,
        "podIP": "172.16.10.9/24", "cni.dev/valid-attachments": []
    });
    node.plugin(
        "krafty-veth",
        &[("CNI_COMMAND", "GC")],
        &plugin_config.to_string(),
    )
    .ok();
    assert!(node.link(&naming::host_veth_name(&id, "net1")).is_some());
    detach(&node, &network, &id, &pod);
    node.assert_clean();
}

#[test]
fn configs_of_version_1_1_0_are_served() {
    let node = Node::new();
    let pod = node.pod("a");
    let id = container_id();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", id.as_str()),
        ("CNI_NETNS", &pod.netns_path()),
        ("CNI_IFNAME", "net1"),
    ];
    let bridge = r#"{"cniVersion":"1.1.0","name":"krafty","type":"krafty-bridge","subnet":"172.16.10.0/24","gateway":"172.16.10.1"}"#;
    let result = node.plugin("krafty-bridge", &env, bridge).ok();
    assert_eq!(result["cniVersion"], "1.1.0");
    let mut del = env;
    del[0] = ("CNI_COMMAND", "DEL");
    node.plugin("krafty-bridge", &del, bridge).ok();
    node.assert_clean();
}

#[test]
fn a_node_without_ipv6_still_serves_ipv4_networks() {
    let node = Node::new();
    let pod = node.pod("a");
    for (netns, _) in [(&node.name, ()), (&pod.name, ())] {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let conflist = bridge_veth_conflist("1.0.0");
    let (id, _) = attach(&node, &conflist, &pod);
    assert!(pod.ping("172.16.10.1"));
    detach(&node, &conflist, &id, &pod);
    node.assert_clean();
}
