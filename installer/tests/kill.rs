//! Kill at every step, recovered by the node agent instead of the runtime: each plugin of the
//! chain killed at each state-changing system call of its ADD, then no DEL ever comes; the pod
//! and its namespace go, and the agent's orphan cleanup and shared-device removal must leave
//! nothing behind (see krafty_tests::kill).

mod common;

use krafty_installer::attachments::PodsOnNode;
use krafty_tests::kill::{self, Case, Verb};
use krafty_tests::multinode::{stretched_network, Lab};
use krafty_tests::{bridge_veth_conflist, shared_network, Node, Pod};
use serde_json::{json, Value};

use common::node_agent;

/// What the node agent does for a pod whose runtime never sent DEL: the pod is gone (from the
/// API and its namespace), then an orphan scan and a look for unused shared devices.
fn node_agent_recovery(case: &Case, _id: &str, pod: &Pod) {
    pod.destroy();
    let (summary, _) = node_agent::reconcile(case.node, PodsOnNode::default());
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    node_agent::sweep_now(case.node);
}

fn every_step(name: &str, conflist: &Value) {
    every_step_on(&Node::new(), name, conflist);
}

fn every_step_on(node: &Node, name: &str, conflist: &Value) {
    let case = Case::new(node, conflist);
    let points: usize = ["krafty-bridge", "krafty-veth"]
        .iter()
        .map(|plugin| kill::at_every_step(&case, plugin, Verb::Add, node_agent_recovery))
        .sum();
    assert!(points > 0, "no kill point at all: is strace there?");
    kill::report(name, &[(Verb::Add, points)]);
}

#[test]
fn add_in_pod_scope_then_the_node_agent() {
    every_step("agent-add-pod", &bridge_veth_conflist("1.0.0"));
}

#[test]
fn add_in_network_scope_then_the_node_agent() {
    every_step(
        "agent-add-network",
        &shared_network("killnet", &[("172.16.61.0/24", "172.16.61.1")], false),
    );
}

#[test]
fn add_of_a_multi_node_network_then_the_node_agent() {
    let lab = Lab::new(2, 1500);
    let network = stretched_network("killmulti", json!({}), 0, false);
    every_step_on(&lab.nodes[0], "agent-add-multinode", &network);
}
