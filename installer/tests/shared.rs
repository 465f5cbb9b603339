//! The removal of shared devices whose network has no attachment left, against real devices in
//! a node namespace, real attachments through libcni, and concurrent ADDs racing it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use krafty_cni::naming;
use krafty_cni::netlink::Netlink;
use krafty_installer::attachments::shared::SharedDeviceSweeper;
use krafty_tests::{container_id, shared_network, Node};

use common::node_agent;

/// Runs `work` with a sweeper of `node` (grace `grace`) inside the node's namespace.
fn in_node<T: Send + 'static>(
    node: &Node,
    grace: Duration,
    work: impl FnOnce(&mut SharedDeviceSweeper, &Netlink, &tokio::runtime::Runtime) -> T
        + Send
        + 'static,
) -> T {
    let mut sweeper = node_agent::sweeper(node, grace);
    node_agent::in_node(node, move |netlink, runtime| {
        work(&mut sweeper, netlink, runtime)
    })
}

#[test]
fn shared_devices_go_a_grace_period_after_their_last_attachment() {
    let node = Node::new();
    let network = shared_network("sweep", &[("172.16.70.0/24", "172.16.70.1")], false);
    let list = node.conflist(network.clone());
    let pod = node.pod("a");
    let id = container_id();
    node.cni("add", &list, &id, &pod.netns_path()).ok();
    let bridge = naming::shared_bridge_name("sweep");
    let grace = Duration::from_secs(300);

    let (in_use, just_unused, after_grace) = {
        let (node_ref, list, id, pod_netns) = (&node, list.clone(), id.clone(), pod.netns_path());
        let t0 = Instant::now();
        let in_use = in_node(node_ref, grace, move |sweeper, netlink, rt| {
            rt.block_on(sweeper.sweep(netlink, t0 + grace * 2))
        });
        node.cni("del", &list, &id, &pod_netns).ok();
        // A fresh sweeper starts its clock at its first sight of the unused device.
        in_node(node_ref, grace, move |sweeper, netlink, rt| {
            let just = rt.block_on(sweeper.sweep(netlink, t0));
            let before = rt.block_on(sweeper.sweep(netlink, t0 + grace / 2));
            let after = rt.block_on(sweeper.sweep(netlink, t0 + grace));
            (in_use, [just, before].concat(), after)
        })
    };
    assert_eq!(
        in_use,
        Vec::<String>::new(),
        "a network in use keeps its bridge"
    );
    assert_eq!(
        just_unused,
        Vec::<String>::new(),
        "not before the grace period"
    );
    assert_eq!(after_grace, vec![bridge.clone()]);
    assert!(node.link(&bridge).is_none());
    node.assert_clean();
}

#[test]
fn only_shared_devices_are_removed_and_an_unmarked_one_is_recognised() {
    let node = Node::new();
    // Left by an ADD killed between creating the bridge (in its network's group) and marking it.
    let interrupted = naming::shared_bridge_name("gone");
    let group = naming::network_group("gone").to_string();
    node.ip(&[
        "link",
        "add",
        &interrupted,
        "group",
        &group,
        "type",
        "bridge",
    ]);
    // Not krafty's: an unmarked bridge outside the range, a bridge marked for a network but
    // not named after it, and a pod's own bridge.
    node.ip(&["link", "add", "krbadmin", "type", "bridge"]);
    node.ip(&["link", "add", "krbfake", "type", "bridge"]);
    node.ip(&["link", "set", "krbfake", "alias", "krafty:fake"]);
    let pod = node.pod("a");
    let pod_scope = node.conflist(krafty_tests::bridge_veth_conflist("1.0.0"));
    let id = container_id();
    node.cni("add", &pod_scope, &id, &pod.netns_path()).ok();

    let removed = in_node(&node, Duration::ZERO, |sweeper, netlink, rt| {
        rt.block_on(sweeper.sweep(netlink, Instant::now()))
    });
    assert_eq!(removed, vec![interrupted]);
    let names = node.link_names();
    for kept in ["krbadmin", "krbfake", &naming::bridge_name(&id, "net1")] {
        assert!(
            names.iter().any(|n| n == kept),
            "{kept} was removed: {names:?}"
        );
    }
    node.cni("del", &pod_scope, &id, &pod.netns_path()).ok();
}

#[test]
fn adds_racing_the_removal_never_fail_and_leave_nothing() {
    let node = Arc::new(Node::new());
    let network = shared_network("race", &[("172.16.71.0/24", "172.16.71.1")], false);
    let list = node.conflist(network.clone());
    let done = Arc::new(AtomicBool::new(false));
    let sweeps = {
        let (node, done) = (Arc::clone(&node), Arc::clone(&done));
        std::thread::spawn(move || {
            in_node(&node, Duration::ZERO, move |sweeper, netlink, rt| {
                let mut removed = 0;
                while !done.load(Ordering::SeqCst) {
                    removed += rt.block_on(sweeper.sweep(netlink, Instant::now())).len();
                }
                removed
            })
        })
    };
    let pod = node.pod("a");
    for round in 0..40 {
        let id = container_id();
        let added = node.cni("add", &list, &id, &pod.netns_path());
        assert!(added.success, "ADD {round} failed: {}", added.stdout);
        assert!(
            pod.ping("172.16.71.1"),
            "round {round}: the gateway answers"
        );
        node.cni("del", &list, &id, &pod.netns_path()).ok();
    }
    done.store(true, Ordering::SeqCst);
    let removed = sweeps.join().expect("the sweeper");
    assert!(
        removed > 0,
        "the sweeper never won a race: the test proves nothing"
    );
    // The last DEL left the devices to the sweeper, which takes them at its next look.
    node_agent::sweep_now(&node);
    node.assert_clean();
}

#[test]
fn a_multi_node_network_s_vxlan_port_goes_with_its_bridge() {
    let lab = krafty_tests::multinode::Lab::new(2, 1500);
    let node = &lab.nodes[0];
    let network =
        krafty_tests::multinode::stretched_network("sweepmulti", serde_json::json!({}), 0, false);
    let list = node.conflist(network);
    let pod = node.pod("a");
    let id = container_id();
    node.cni("add", &list, &id, &pod.netns_path()).ok();
    let port = naming::shared_vxlan_name("sweepmulti");
    assert!(node.link(&port).is_some());
    assert_eq!(node_agent::sweep_now(node), Vec::<String>::new(), "in use");
    node.cni("del", &list, &id, &pod.netns_path()).ok();
    assert!(
        node.link(&port).is_some(),
        "DEL leaves the network's devices"
    );
    let mut removed = node_agent::sweep_now(node);
    removed.sort();
    let mut expected = vec![naming::shared_bridge_name("sweepmulti"), port];
    expected.sort();
    assert_eq!(removed, expected);
    let mut left = node.link_names();
    left.sort();
    assert_eq!(left, ["eth0", "lo"]);
}
