//! Kill at every step, on this machine's kernel (bridge + veth; the VRF chain is killed in the
//! VM, tests/vrf.rs): every plugin of the chain, in ADD, DEL and GC, in pod and network scope,
//! killed at each of its state-changing system calls, then DEL and GC as a runtime sends them.
//! Afterwards nothing is left and the attachment can be added again (see krafty_tests::kill).

use krafty_tests::kill::{self, Case, Verb};
use krafty_tests::multinode::{stretched_network, Lab};
use krafty_tests::{blocks_network, bridge_veth_conflist, shared_network, Node};
use serde_json::{json, Value};

const CHAIN: [&str; 2] = ["krafty-bridge", "krafty-veth"];

fn every_step(name: &str, conflist: &Value, verb: Verb) {
    every_step_on(&Node::new(), name, conflist, verb);
}

fn every_step_on(node: &Node, name: &str, conflist: &Value, verb: Verb) {
    let case = Case::new(node, conflist);
    let points: usize = CHAIN
        .iter()
        .map(|plugin| {
            kill::at_every_step(&case, plugin, verb, |case, id, pod| {
                case.runtime_recovery(id, pod)
            })
        })
        .sum();
    assert!(points > 0, "no kill point at all: is strace there?");
    kill::report(name, &[(verb, points)]);
}

fn shared() -> Value {
    shared_network("killnet", &[("172.16.60.0/24", "172.16.60.1")], false)
}

#[test]
fn add_in_pod_scope() {
    every_step("host-add-pod", &bridge_veth_conflist("1.0.0"), Verb::Add);
}

#[test]
fn add_in_network_scope() {
    every_step("host-add-network", &shared(), Verb::Add);
}

#[test]
fn del_in_pod_scope() {
    every_step("host-del-pod", &bridge_veth_conflist("1.0.0"), Verb::Del);
}

#[test]
fn del_in_network_scope() {
    every_step("host-del-network", &shared(), Verb::Del);
}

#[test]
fn gc_in_pod_scope() {
    every_step("host-gc-pod", &bridge_veth_conflist("1.0.0"), Verb::Gc);
}

#[test]
fn gc_in_network_scope() {
    every_step("host-gc-network", &shared(), Verb::Gc);
}

/// A multi-node network's node, its blocks written as the node agent would: krafty-veth
/// leases from them in process (`krafty-blocks`).
fn with_blocks(name: &str, verb: Verb) {
    let node = Node::new();
    let subnet = ("172.16.61.0/24", "172.16.61.1");
    node.write_blocks("killblocks", &[(subnet.0, subnet.1, &["172.16.61.64/26"])]);
    every_step_on(&node, name, &blocks_network("killblocks", &[subnet]), verb);
}

#[test]
fn add_with_address_blocks() {
    with_blocks("host-add-blocks", Verb::Add);
}

#[test]
fn del_with_address_blocks() {
    with_blocks("host-del-blocks", Verb::Del);
}

/// A network stretched across nodes: the VXLAN port is made, joined and given its peers under
/// the network's lock; a kill anywhere in that leaves nothing once DEL and GC ran.
fn multi_node() -> Value {
    stretched_network("killmulti", json!({}), 0, false)
}

#[test]
fn add_of_a_multi_node_network() {
    let lab = Lab::new(2, 1500);
    every_step_on(
        &lab.nodes[0],
        "host-add-multinode",
        &multi_node(),
        Verb::Add,
    );
}

/// GC removes the VXLAN port with the bridge; killed between the two, the next GC finishes.
#[test]
fn gc_of_a_multi_node_network() {
    let lab = Lab::new(2, 1500);
    every_step_on(&lab.nodes[0], "host-gc-multinode", &multi_node(), Verb::Gc);
}
