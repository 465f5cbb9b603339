//! Networks stretched across nodes (`multiNode`), for real: three node namespaces joined by an
//! underlay bridge, pods on each attached through libcni and host-local, the nodes' bridges
//! joined by krafty's VXLAN ports (bridge + veth, no VRF: the VRF variant is in vrf.rs).

use std::process::Command;

use krafty_cni::naming;
use krafty_cni::netlink::format_mac;
use krafty_tests::multinode::{fdb, flood_list, stretched_network, Lab};
use krafty_tests::{address_of, Node, Pod};
use serde_json::{json, Value};

/// A device's received and sent packet counts in `node`.
fn packets(node: &Node, device: &str) -> (u64, u64) {
    let text = node.ip(&["-s", "-j", "link", "show", "dev", device]);
    let value: Value = serde_json::from_str(&text).expect("ip -j prints JSON");
    let stats = &value[0]["stats64"];
    let count = |direction: &str| stats[direction]["packets"].as_u64().unwrap_or(0);
    (count("rx"), count("tx"))
}

/// Sends `count` Ethernet broadcast frames (of the local experimental type 0x88b5) out of the
/// pod's `net1`.
fn broadcast_from(pod: &Pod, count: usize) {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind(('net1', 0))\n\
         frame = b'\\xff' * 6 + s.getsockname()[4] + b'\\x88\\xb5' + b'krafty' * 10\n\
         for _ in range({count}): s.send(frame)\n"
    );
    let out = pod.exec(&["python3", "-c", &script]);
    assert!(out.success, "{}", out.stderr);
}

fn mtu(link: &Value) -> u64 {
    link["mtu"].as_u64().expect("a link has an MTU")
}

/// ADD of `list` for `pod` under a fresh container ID.
fn add_anew(node: &Node, list: &std::path::Path, pod: &Pod) -> krafty_tests::Outcome {
    node.cni(
        "add",
        list,
        &krafty_tests::container_id(),
        &pod.netns_path(),
    )
}

/// Devices, records, leases and locks on a lab node after a refused ADD: only its underlay.
fn assert_nothing_left(node: &Node) {
    let mut names = node.link_names();
    names.sort();
    assert_eq!(names, ["eth0", "lo"], "devices left on the node");
    assert_eq!(node.records(), Vec::<String>::new(), "records left");
    assert_eq!(node.all_leases(), Vec::<String>::new(), "leases left");
}

#[test]
fn pods_on_three_nodes_reach_each_other_and_one_gateway_answered_at_home() {
    let lab = Lab::new(3, 1500);
    let network = "stretch";
    let port = naming::shared_vxlan_name(network);
    let bridge = naming::shared_bridge_name(network);
    let mut pods: Vec<(usize, Pod, Value)> = Vec::new();
    for (i, node) in lab.nodes.iter().enumerate() {
        let conflist = node.conflist(stretched_network(network, json!({}), i, false));
        for label in ["a", "b"] {
            let pod = node.pod(label);
            let (_, result) = node.attach(&conflist, &pod);
            pods.push((i, pod, result));
        }
    }

    let gateway_mac = format_mac(&naming::bridge_mac(&naming::network_mark(network)));
    for (i, node) in lab.nodes.iter().enumerate() {
        let vxlan = node.link(&port).expect("the VXLAN port exists");
        let data = &vxlan["linkinfo"]["info_data"];
        assert_eq!(data["id"], naming::derived_vni(network), "{vxlan}");
        assert_eq!(data["port"], naming::DEFAULT_VXLAN_PORT, "{vxlan}");
        assert_eq!(data["local"], lab.v4(i).as_str(), "{vxlan}");
        assert_eq!(
            data["learning"], false,
            "the VXLAN device learns nothing: {vxlan}"
        );
        let as_port = &vxlan["linkinfo"]["info_slave_data"];
        assert_eq!(
            as_port["learning"], false,
            "the bridge learns nothing behind it"
        );
        assert_eq!(
            as_port["neigh_suppress"], true,
            "ARP/ND for the gateway stays home"
        );
        assert_eq!(vxlan["master"], bridge.as_str());
        assert_eq!(vxlan["ifalias"], naming::network_mark(network).as_str());
        // An IPv4 underlay of 1500 leaves 1450 for the bridge, its ports and the pods.
        assert_eq!(mtu(&vxlan), 1450);
        let bridge_link = node.link(&bridge).expect("the bridge exists");
        assert_eq!(mtu(&bridge_link), 1450);
        assert_eq!(
            bridge_link["address"],
            gateway_mac.as_str(),
            "one gateway MAC everywhere"
        );
        let others: Vec<String> = (0..3).filter(|&j| j != i).map(|j| lab.v4(j)).collect();
        assert_eq!(
            flood_list(node, &port),
            others,
            "one all-zero entry per peer"
        );
    }

    for (i, pod, _) in &pods {
        let net1 = pod.exec(&["ip", "-j", "link", "show", "net1"]).json();
        assert_eq!(mtu(&net1[0]), 1450, "pod on node {i}");
        for gateway in ["10.77.0.1", "fd00:77::1"] {
            assert!(
                pod.ping(gateway),
                "pod on node {i} reaches gateway {gateway}"
            );
        }
        let neighbours = pod
            .exec(&["ip", "-j", "neigh", "show", "dev", "net1"])
            .json();
        let gateway_entry = neighbours
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["dst"] == "10.77.0.1")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(gateway_entry["lladdr"], gateway_mac.as_str());
        for (j, other, other_result) in &pods {
            if i == j {
                continue;
            }
            for v6 in [false, true] {
                let address = address_of(other_result, v6);
                assert!(
                    pod.ping(&address),
                    "{} on node {i} reaches {} on node {j} at {address}",
                    pod.name,
                    other.name
                );
            }
        }
    }

    // The bridges' IPv6 addresses are the same on every node (so is the MAC their link-local
    // address derives from): none of them may be found a duplicate over the tunnel.
    for node in &lab.nodes {
        let settled = (0..50).any(|_| {
            let text = node.ip(&["-6", "addr", "show", "dev", &bridge]);
            if text.contains("tentative") {
                std::thread::sleep(std::time::Duration::from_millis(100));
                false
            } else {
                true
            }
        });
        let text = node.ip(&["-6", "addr", "show", "dev", &bridge]);
        assert!(
            settled && !text.contains("dadfailed"),
            "{}: {text}",
            node.name
        );
    }

    // After all that traffic: no node knows the gateway MAC behind its tunnel, and every MAC
    // behind it was put there by krafty or is a flood entry (no learning).
    for node in &lab.nodes {
        for entry in fdb(node, &port) {
            assert_ne!(entry["mac"], gateway_mac.as_str(), "{}: {entry}", node.name);
            let state = entry["state"].as_str().unwrap_or("");
            assert!(
                state == "permanent" || state == "static" || state.is_empty(),
                "{}: a learned entry {entry}",
                node.name
            );
            assert!(
                !entry["flags"].to_string().contains("extern_learn"),
                "{}: {entry}",
                node.name
            );
        }
    }
}

#[test]
fn resolving_the_gateway_never_crosses_the_tunnel_and_resolving_a_remote_pod_does() {
    let lab = Lab::new(2, 1500);
    let pods = lab.pod_on_every_node("resolve", &json!({}), false);
    let watch = lab.watch_resolutions(1, naming::DEFAULT_VXLAN_PORT);
    let (pod, _) = &pods[0];
    let remote_v4 = address_of(&pods[1].1, false);
    let remote_v6 = address_of(&pods[1].1, true);
    for target in [
        "10.77.0.1",
        "fd00:77::1",
        remote_v4.as_str(),
        remote_v6.as_str(),
    ] {
        pod.exec(&["ip", "neigh", "flush", "dev", "net1"]);
        assert!(pod.ping(target), "{target}");
    }
    let seen = watch.stop();
    // The remote pod's resolutions do cross (the watch sees what it should) ...
    for remote in [format!("arp {remote_v4}"), format!("ns {remote_v6}")] {
        assert!(seen.contains(&remote), "{remote} not in {seen:?}");
    }
    // ... the gateway's never: the node's own bridge answers.
    for gateway in ["arp 10.77.0.1", "ns fd00:77::1"] {
        assert!(
            !seen.iter().any(|l| l == gateway),
            "{gateway} crossed: {seen:?}"
        );
    }
}

#[test]
fn a_broadcast_reaches_every_other_node_once() {
    let lab = Lab::new(3, 1500);
    let network = "flood";
    let port = naming::shared_vxlan_name(network);
    let pods = lab.pod_on_every_node(network, &json!({}), false);
    let sent = 200;
    let before: Vec<(u64, u64)> = lab.nodes.iter().map(|n| packets(n, &port)).collect();
    broadcast_from(&pods[0].0, sent);
    let after: Vec<(u64, u64)> = lab.nodes.iter().map(|n| packets(n, &port)).collect();
    // Node 0 sends each frame once to each of the two others; each receives it once. A few
    // packets of the nodes' own (neighbour discovery) may ride along.
    let sent = sent as u64;
    let tx0 = after[0].1 - before[0].1;
    assert!(
        (2 * sent..2 * sent + 10).contains(&tx0),
        "node 0 sent {tx0}"
    );
    for i in [1, 2] {
        let rx = after[i].0 - before[i].0;
        assert!((sent..sent + 10).contains(&rx), "node {i} received {rx}");
    }
}

#[test]
fn an_ipv6_underlay_costs_70_bytes_and_carries_both_families() {
    let lab = Lab::new(2, 1500);
    let network = "stretch6";
    let port = naming::shared_vxlan_name(network);
    let multi = json!({ "underlay": "ipv6", "vni": 4242, "port": 4799 });
    let pods = lab.pod_on_every_node(network, &multi, false);
    for (i, node) in lab.nodes.iter().enumerate() {
        let vxlan = node.link(&port).expect("the VXLAN port exists");
        let data = &vxlan["linkinfo"]["info_data"];
        assert_eq!(
            (data["id"].clone(), data["port"].clone()),
            (json!(4242), json!(4799))
        );
        assert_eq!(data["local6"], lab.v6(i).as_str(), "{vxlan}");
        assert_eq!(mtu(&vxlan), 1430);
        assert_eq!(
            mtu(&node.link(&naming::shared_bridge_name(network)).unwrap()),
            1430
        );
        assert_eq!(flood_list(node, &port), [lab.v6(1 - i)]);
    }
    for v6 in [false, true] {
        assert!(pods[0].0.ping(&address_of(&pods[1].1, v6)));
        assert!(pods[1].0.ping(&address_of(&pods[0].1, v6)));
    }
    // A full-size frame of the pods' MTU crosses without fragments (1430 less the IPv4 and
    // ICMP headers).
    let far = address_of(&pods[1].1, false);
    let big = pods[0]
        .0
        .exec(&["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1402", &far]);
    assert!(big.success, "{}{}", big.stdout, big.stderr);
}

#[test]
fn a_jumbo_underlay_gives_jumbo_pods() {
    let lab = Lab::new(2, 9000);
    let pods = lab.pod_on_every_node("jumbo", &json!({}), false);
    let node = &lab.nodes[0];
    assert_eq!(
        mtu(&node.link(&naming::shared_vxlan_name("jumbo")).unwrap()),
        8950
    );
    assert_eq!(
        mtu(&node.link(&naming::shared_bridge_name("jumbo")).unwrap()),
        8950
    );
    let net1 = pods[0].0.exec(&["ip", "-j", "link", "show", "net1"]).json();
    assert_eq!(mtu(&net1[0]), 8950);
    // 8950 less 28 bytes of IPv4 and ICMP headers crosses whole.
    let far = address_of(&pods[1].1, false);
    let big = pods[0]
        .0
        .exec(&["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "8922", &far]);
    assert!(big.success, "{}{}", big.stdout, big.stderr);
}

#[test]
fn an_mtu_the_underlay_cannot_carry_is_refused_and_leaves_nothing() {
    let lab = Lab::new(2, 1500);
    let node = &lab.nodes[0];
    let mut network = stretched_network("toobig", json!({}), 0, false);
    network["plugins"][0]["mtu"] = json!(1460);
    let pod = node.pod("a");
    let list = node.conflist(network.clone());
    let out = add_anew(node, &list, &pod);
    out.error(7, "does not fit the tunnel");
    assert_nothing_left(node);

    // One that fits is taken as it is.
    network["plugins"][0]["mtu"] = json!(1400);
    let fits = node.conflist(network.clone());
    let (first, _) = node.attach(&fits, &pod);
    let vxlan = node.link(&naming::shared_vxlan_name("toobig")).unwrap();
    assert_eq!(mtu(&vxlan), 1400);
    node.cni("check", &fits, &first, &pod.netns_path()).ok();

    // A pod MTU above the tunnel's is refused by krafty-veth.
    network["plugins"][1]["mtu"] = json!(1450);
    let second = node.pod("b");
    let list = node.conflist(network);
    let id = krafty_tests::container_id();
    let out = node.cni("add", &list, &id, &second.netns_path());
    out.error(7, "mtu 1450 is more than the 1400");
    node.cni("del", &list, &id, &second.netns_path()).ok();
    assert!(!second.exec(&["ip", "link", "show", "net1"]).success);

    // CHECK finds a tunnel port that learns, or went down.
    let port = naming::shared_vxlan_name("toobig");
    node.ip(&["link", "set", &port, "type", "vxlan", "learning"]);
    node.cni("check", &fits, &first, &pod.netns_path())
        .error(104, "learning true");
    node.ip(&["link", "set", &port, "type", "vxlan", "nolearning"]);
    node.cni("check", &fits, &first, &pod.netns_path()).ok();
    node.ip(&["link", "set", &naming::shared_vxlan_name("toobig"), "down"]);
    node.cni("check", &fits, &first, &pod.netns_path())
        .error(104, "must be up");
}

#[test]
fn without_this_node_in_the_node_list_add_says_try_again_later_and_leaves_nothing() {
    let lab = Lab::new(2, 1500);
    let node = &lab.nodes[0];
    let pod = node.pod("a");
    let list = node.conflist(stretched_network("early", json!({}), 0, false));
    let nodes_file = krafty_cni::multinode::nodes_file(&node.state_dir());
    std::fs::remove_file(&nodes_file).unwrap();
    add_anew(node, &list, &pod).error(11, "does not exist yet");
    assert_nothing_left(node);
    std::fs::write(&nodes_file, lab.node_list(&[1])).unwrap();
    add_anew(node, &list, &pod).error(11, "holds none of the ipv4 addresses");
    assert_nothing_left(node);
    std::fs::write(&nodes_file, lab.node_list(&[0, 1])).unwrap();
    add_anew(node, &list, &pod).ok();
}

#[test]
fn a_vni_or_udp_port_taken_on_the_node_is_refused_and_leaves_nothing() {
    let lab = Lab::new(2, 1500);
    let node = &lab.nodes[0];
    let pod = node.pod("a");

    // Another VXLAN device with the network's VNI on its port.
    let vni = naming::derived_vni("taken").to_string();
    let port = naming::DEFAULT_VXLAN_PORT.to_string();
    node.ip(&[
        "link",
        "add",
        "other",
        "type",
        "vxlan",
        "id",
        &vni,
        "dstport",
        &port,
        "local",
        &lab.v4(0),
    ]);
    let list = node.conflist(stretched_network("taken", json!({}), 0, false));
    let out = add_anew(node, &list, &pod);
    let error = out.error(7, "multiNode.vni");
    assert!(
        error["msg"].to_string().contains("other"),
        "names the holder: {error}"
    );
    node.ip(&["link", "del", "other"]);
    assert_nothing_left(node);

    // A UDP socket (not a VXLAN device) on the network's port.
    let holder = Command::new("ip")
        .args(["netns", "exec", &node.name, "python3", "-c"])
        .arg(format!(
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0', {port}))\n\
             print('bound', flush=True)\n\
             time.sleep(60)"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut holder = KillOnDrop(holder);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "bound");
    let out = add_anew(node, &list, &pod);
    out.error(7, "multiNode.port");
    assert_nothing_left(node);
    drop(holder);
}

/// A child process killed (by its own ID) when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
