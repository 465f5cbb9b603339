//! `krafty-blocks`, the IPAM of multi-node networks, through the real libcni: krafty-veth hands
//! out addresses only from the blocks the node agent wrote for its node (here the test plays the
//! agent and writes the blocks file), answers code 11 before there is a block and when the
//! blocks are full, and two nodes with different blocks never hand out the same address.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::thread;

use ipnet::IpNet;
use krafty_cni::naming::shared_bridge_name;
use krafty_tests::{address_of, blocks_network, Node, Outcome, Pod};
use serde_json::{json, Value};

const SUBNET: &str = "172.16.70.0/24";
const GATEWAY: &str = "172.16.70.1";

fn network(name: &str) -> Value {
    blocks_network(name, &[(SUBNET, GATEWAY)])
}

fn add(node: &Node, conflist: &Value, id: &str, pod: &Pod) -> Outcome {
    node.cni(
        "add",
        &node.conflist(conflist.clone()),
        id,
        &pod.netns_path(),
    )
}

fn del(node: &Node, conflist: &Value, id: &str, pod: &Pod) {
    node.cni(
        "del",
        &node.conflist(conflist.clone()),
        id,
        &pod.netns_path(),
    )
    .ok();
}

fn ipv4(result: &Value) -> IpAddr {
    address_of(result, false).parse().unwrap()
}

/// net1's addresses but the kernel's IPv6 link-local one.
fn global_addresses(pod: &Pod) -> Vec<String> {
    let mut addresses = pod.addresses("net1");
    addresses.retain(|address| !address.starts_with("fe80:"));
    addresses
}

fn inside(address: IpAddr, blocks: &[&str]) -> bool {
    blocks
        .iter()
        .any(|block| block.parse::<IpNet>().unwrap().contains(&address))
}

#[test]
fn add_answers_11_before_the_node_has_a_block_then_takes_only_the_nodes_blocks() {
    let node = Node::new();
    let conflist = network("multi");
    let pod = node.pod("early");
    let id = krafty_tests::container_id();
    let error = add(&node, &conflist, &id, &pod).error(11, "no address block on this node yet");
    assert!(
        error["msg"].as_str().unwrap().contains("--address-pools"),
        "{error}"
    );
    // The refused ADD undid itself before the runtime's DEL: no pod device, no lease, no record.
    assert_eq!(pod.addresses("net1"), Vec::<String>::new());
    assert!(node.block_leases("multi").is_empty());
    assert!(node.records().is_empty(), "{:?}", node.records());
    assert_eq!(
        node.link_names(),
        ["lo".to_string(), shared_bridge_name("multi")],
        "only the network's shared bridge (GC's to remove) may stay"
    );
    del(&node, &conflist, &id, &pod);

    // The agent claimed two blocks; nothing else of the subnet is ever handed out, and the
    // result carries the whole subnet's prefix and the network's gateway.
    let blocks: &[&str] = &["172.16.70.64/30", "172.16.70.200/30"];
    node.write_blocks("multi", &[(SUBNET, GATEWAY, blocks)]);
    let pods: Vec<Pod> = (0..8).map(|n| node.pod(&format!("p{n}"))).collect();
    let mut handed_out = BTreeSet::new();
    let mut ids = Vec::new();
    for pod in &pods {
        let id = krafty_tests::container_id();
        let result = add(&node, &conflist, &id, pod).ok();
        let address = ipv4(&result);
        assert!(inside(address, blocks), "{address} is outside {blocks:?}");
        assert!(handed_out.insert(address), "{address} handed out twice");
        assert_eq!(
            global_addresses(pod),
            [format!("{address}/24")],
            "the pod gets the subnet's prefix"
        );
        assert_eq!(result["ips"][0]["gateway"], GATEWAY);
        ids.push(id);
    }
    assert_eq!(handed_out.len(), 8, "two /30 blocks hold eight addresses");
    assert!(
        pods[0].ping(&handed_out.last().unwrap().to_string()),
        "pods of the node reach each other"
    );

    // Full: code 11, saying which blocks are full, and nothing is taken.
    let extra = node.pod("extra");
    let extra_id = krafty_tests::container_id();
    add(&node, &conflist, &extra_id, &extra)
        .error(11, "are full (172.16.70.64/30, 172.16.70.200/30)");
    del(&node, &conflist, &extra_id, &extra);
    assert_eq!(node.block_leases("multi").len(), 8);

    // DEL frees an address, which the next ADD may take again; a block the agent adds is used.
    del(&node, &conflist, &ids[0], &pods[0]);
    add(&node, &conflist, &extra_id, &extra).ok();
    node.write_blocks(
        "multi",
        &[(
            SUBNET,
            GATEWAY,
            &["172.16.70.64/30", "172.16.70.200/30", "172.16.70.128/30"],
        )],
    );
    let late = node.pod("late");
    let late_id = krafty_tests::container_id();
    let late_address = ipv4(&add(&node, &conflist, &late_id, &late).ok());
    assert!(
        inside(late_address, &["172.16.70.128/30"]),
        "{late_address}"
    );

    // DEL needs no blocks file: the agent may be gone, and DEL always works.
    std::fs::remove_file(
        node.state_dir()
            .join(krafty_cni::blocks::BLOCKS_DIR)
            .join("multi.json"),
    )
    .unwrap();
    for (id, pod) in ids.iter().zip(&pods).skip(1) {
        del(&node, &conflist, id, pod);
    }
    del(&node, &conflist, &extra_id, &extra);
    del(&node, &conflist, &late_id, &late);
    assert_eq!(node.block_leases("multi"), Vec::<IpAddr>::new());
    node.gc(&conflist, &[]).ok();
    node.assert_clean();
}

#[test]
fn two_nodes_with_different_blocks_never_hand_out_the_same_address() {
    let (a, b) = (Node::new(), Node::new());
    let conflist = blocks_network("stretched", &[("172.16.71.0/26", "172.16.71.1")]);
    let blocks_a: &[&str] = &["172.16.71.0/29", "172.16.71.16/29"];
    let blocks_b: &[&str] = &["172.16.71.8/29"];
    a.write_blocks("stretched", &[("172.16.71.0/26", "172.16.71.1", blocks_a)]);
    b.write_blocks("stretched", &[("172.16.71.0/26", "172.16.71.1", blocks_b)]);

    // Both nodes fill their blocks at the same time, each until code 11.
    let fill = |node: &Node, blocks: &[&str]| -> Vec<IpAddr> {
        let mut addresses = Vec::new();
        let mut pods = Vec::new();
        for n in 0.. {
            let pod = node.pod(&format!("f{n}"));
            let id = krafty_tests::container_id();
            let outcome = add(node, &conflist, &id, &pod);
            if !outcome.success {
                outcome.error(11, "are full");
                del(node, &conflist, &id, &pod);
                break;
            }
            let address = ipv4(&outcome.json());
            assert!(inside(address, blocks), "{address} is outside {blocks:?}");
            addresses.push(address);
            pods.push((id, pod));
        }
        for (id, pod) in &pods {
            del(node, &conflist, id, pod);
        }
        addresses
    };
    let (on_a, on_b) = thread::scope(|scope| {
        let on_a = scope.spawn(|| fill(&a, blocks_a));
        let on_b = scope.spawn(|| fill(&b, blocks_b));
        (on_a.join().unwrap(), on_b.join().unwrap())
    });
    // .0/29 loses .0 and the gateway .1; the other blocks give all eight.
    assert_eq!(on_a.len(), 6 + 8, "{on_a:?}");
    assert_eq!(on_b.len(), 8, "{on_b:?}");
    let all: BTreeSet<IpAddr> = on_a.iter().chain(&on_b).copied().collect();
    assert_eq!(
        all.len(),
        on_a.len() + on_b.len(),
        "an address was handed out on both nodes"
    );
    for node in [&a, &b] {
        node.gc(&conflist, &[]).ok();
        node.assert_clean();
    }
}

#[test]
fn dual_stack_takes_one_address_of_each_family_and_waits_for_both_blocks() {
    let node = Node::new();
    let subnets = [
        ("172.16.72.0/24", "172.16.72.1"),
        ("fd10:72::/64", "fd10:72::1"),
    ];
    let conflist = blocks_network("dual", &subnets);
    node.write_blocks(
        "dual",
        &[
            (subnets[0].0, subnets[0].1, &["172.16.72.64/26"]),
            (subnets[1].0, subnets[1].1, &[]),
        ],
    );
    let pod = node.pod("d");
    let id = krafty_tests::container_id();
    add(&node, &conflist, &id, &pod).error(11, "no IPv6 address block on node");
    del(&node, &conflist, &id, &pod);
    assert!(
        node.block_leases("dual").is_empty(),
        "the IPv4 lease went back"
    );

    node.write_blocks(
        "dual",
        &[
            (subnets[0].0, subnets[0].1, &["172.16.72.64/26"]),
            (subnets[1].0, subnets[1].1, &["fd10:72::40/122"]),
        ],
    );
    let result = add(&node, &conflist, &id, &pod).ok();
    assert!(inside(ipv4(&result), &["172.16.72.64/26"]));
    let v6: IpAddr = address_of(&result, true).parse().unwrap();
    assert!(inside(v6, &["fd10:72::40/122"]), "{v6}");
    let mut addresses = global_addresses(&pod);
    addresses.sort();
    assert_eq!(
        addresses,
        [format!("{}/24", ipv4(&result)), format!("{v6}/64")]
    );
    del(&node, &conflist, &id, &pod);
    node.gc(&conflist, &[]).ok();
    node.assert_clean();
}

#[test]
fn status_gc_and_bad_configs() {
    let node = Node::new();
    let conflist = network("stat");
    node.status(&conflist).error(50, "no address block");
    node.write_blocks("stat", &[(SUBNET, GATEWAY, &["172.16.70.0/28"])]);
    node.status(&conflist).ok();

    // GC releases a lease no valid attachment holds (one left by anyone), keeps the valid ones.
    let pod = node.pod("kept");
    let (id, _) = node.attach(&node.conflist(conflist.clone()), &pod);
    let leases = node.state_dir().join("blocks").join("stat");
    std::fs::write(leases.join("172.16.70.9"), "gone-container\r\nnet1").unwrap();
    node.gc(&conflist, &[id.as_str()]).ok();
    assert_eq!(
        node.block_leases("stat").len(),
        1,
        "only the valid attachment's lease stays"
    );
    del(&node, &conflist, &id, &pod);

    // The ipam block takes nothing but its type: a field there would only be ignored.
    let mut bad = conflist.clone();
    bad["plugins"][1]["ipam"]["subnet"] = json!(SUBNET);
    let pod = node.pod("bad");
    add(&node, &bad, &krafty_tests::container_id(), &pod)
        .error(7, "ipam.subnet is not a field of krafty-blocks");
    node.gc(&conflist, &[]).ok();
    node.assert_clean();
}
