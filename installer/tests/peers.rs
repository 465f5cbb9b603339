//! The node agent's peer keeping for networks stretched across nodes: three node namespaces
//! on an underlay bridge, the agent's peer loop running in each (peers from a file, or from
//! the Nodes and pods of a fake API server: no API server runs here), pods attached through
//! libcni. A node taken out of the peers file or deleted from the API is unreachable within
//! 2 s, and its return heals it as fast; a pod the API places on another node is reached
//! without flooding.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use krafty_cni::multinode;
use krafty_cni::naming;
use krafty_installer::cluster::nodes;
use krafty_installer::peers::{self, PeerKeeper};
use krafty_tests::multinode::{fdb, flood_list, stretched_network, Lab};
use krafty_tests::node_task::NodeTask;
use krafty_tests::{address_of, run_checked, Node, Pod};
use serde_json::json;

/// How fast the agent must follow the peers file (issue 14).
const CONVERGENCE: Duration = Duration::from_secs(2);

/// How fast a watch whose history is gone (410) lists again: kube's watcher backs off (0.8 s
/// at first, with jitter) before it does.
const RELIST: Duration = Duration::from_secs(5);

/// The agent's peer loop on `peers_file` in a node's namespace, until dropped.
fn peer_loop(node: &Node, peers_file: PathBuf) -> NodeTask {
    let keeper = PeerKeeper {
        peers_file,
        state_root: node.state_dir(),
    };
    NodeTask::spawn(node, move |stop| peers::run(keeper, stop))
}

/// The agent's watch of the Nodes and pods of `api` in lab node `i`'s namespace (its Node
/// being `lab-<i>`), until dropped.
fn peer_watch(lab: &Lab, i: usize, api: &FakeApi) -> NodeTask {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let api = api.clone();
    let node = &lab.nodes[i];
    let state_root = node.state_dir();
    // The client needs the agent's runtime (its buffer spawns a task there).
    NodeTask::spawn(node, move |stop| async move {
        let client = api.client();
        let (nodes_api, pods_api) = (kube::Api::all(client.clone()), kube::Api::all(client));
        nodes::run_peer_watch(nodes_api, pods_api, format!("lab-{i}"), state_root, stop).await;
    })
}

/// Polls `done` until it holds or `limit` has passed; how long it took, or `None`.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Nodes 0 and 1 flood to exactly the others of `listed` within [`CONVERGENCE`].
fn nodes_follow(lab: &Lab, port: &str, listed: &[usize], event: &str) {
    for i in [0, 1] {
        let took = within(CONVERGENCE, || {
            flood_list(&lab.nodes[i], port) == peers_of(lab, i, listed)
        });
        assert!(took.is_some(), "node {i} {event} within {CONVERGENCE:?}");
        eprintln!("node {i} {event}: {took:?}");
    }
}

/// Whether `pod` reaches `address` again within [`CONVERGENCE`]: a neighbour entry that failed
/// while the node was cut off may cost the first ping after the flood list is back.
fn heals(pod: &Pod, address: &str) -> bool {
    within(CONVERGENCE, || answers(pod, address)).is_some()
}

fn answers(pod: &Pod, address: &str) -> bool {
    pod.exec(&["ping", "-c", "1", "-W", "1", address]).success
}

/// The IPv4 underlay addresses of the nodes `listed` but node `i`: its port's flood list.
fn peers_of(lab: &Lab, i: usize, listed: &[usize]) -> Vec<String> {
    listed
        .iter()
        .filter(|&&j| j != i)
        .map(|&j| lab.v4(j))
        .collect()
}

/// A pod on every node on `network`, each node's port flooding to the two others, and node 0's
/// pod reaching node 2's.
fn pods_flooding_to_everyone(lab: &Lab, network: &str) -> Vec<(Pod, serde_json::Value)> {
    let port = naming::shared_vxlan_name(network);
    let pods = lab.pod_on_every_node(network, &json!({}), false);
    for (i, node) in lab.nodes.iter().enumerate() {
        assert_eq!(flood_list(node, &port), peers_of(lab, i, &[0, 1, 2]));
    }
    let far = address_of(&pods[2].1, false);
    assert!(answers(&pods[0].0, &far), "node 2's pod answers before");
    pods
}

#[test]
fn tunnels_follow_the_peers_file_within_two_seconds() {
    let lab = Lab::new(3, 1500);
    let network = "peers";
    let port = naming::shared_vxlan_name(network);
    // The agents write the node lists the plugins read, from their peers files.
    let peers_files: Vec<PathBuf> = lab.nodes.iter().map(|n| n.dir.join("peers")).collect();
    let write_peers = |listed: &[usize]| {
        for file in &peers_files {
            std::fs::write(file, lab.node_list(listed)).expect("peers file");
        }
    };
    for node in &lab.nodes {
        std::fs::remove_file(multinode::nodes_file(&node.state_dir())).expect("no node list");
    }
    write_peers(&[0, 1, 2]);
    let _agents: Vec<NodeTask> = lab
        .nodes
        .iter()
        .zip(&peers_files)
        .map(|(node, file)| peer_loop(node, file.clone()))
        .collect();
    for node in &lab.nodes {
        let list = multinode::nodes_file(&node.state_dir());
        let written = within(CONVERGENCE, || {
            std::fs::read_to_string(&list).is_ok_and(|text| text == lab.node_list(&[0, 1, 2]))
        });
        assert!(written.is_some(), "{} gets its node list", node.name);
    }

    let pods = pods_flooding_to_everyone(&lab, network);
    let far = address_of(&pods[2].1, false);

    // Node 2 leaves the cluster.
    write_peers(&[0, 1]);
    nodes_follow(&lab, &port, &[0, 1], "drops node 2");
    assert!(!answers(&pods[0].0, &far), "node 2's pod is cut off");
    assert!(!answers(&pods[1].0, &far));
    assert!(
        answers(&pods[0].0, &address_of(&pods[1].1, false)),
        "the others still reach each other"
    );

    // And comes back.
    write_peers(&[0, 1, 2]);
    nodes_follow(&lab, &port, &[0, 1, 2], "takes node 2 back");
    for pod in [&pods[0].0, &pods[1].0] {
        assert!(heals(pod, &far), "node 2's pod answers {} again", pod.name);
    }
}

#[test]
fn a_port_made_from_an_older_node_list_is_corrected() {
    let lab = Lab::new(3, 1500);
    let network = "stale";
    let port = naming::shared_vxlan_name(network);
    let node = &lab.nodes[0];
    let nodes_file = multinode::nodes_file(&node.state_dir());
    let peers_file = node.dir.join("peers");
    std::fs::write(&peers_file, lab.node_list(&[0, 1])).unwrap();
    let _agent = peer_loop(node, peers_file.clone());
    within(CONVERGENCE, || {
        std::fs::read_to_string(&nodes_file).is_ok_and(|text| text == lab.node_list(&[0, 1]))
    })
    .expect("the agent writes the node list");
    // A plugin that read the list before the agent's last write: its new port floods to node
    // 2. The agent sees the port appear and sets it right, with no change to the peers file.
    std::fs::write(&nodes_file, lab.node_list(&[0, 2])).unwrap();
    let pod = node.pod("a");
    node.attach(
        &node.conflist(stretched_network(network, json!({}), 0, false)),
        &pod,
    );
    let took = within(CONVERGENCE, || flood_list(node, &port) == [lab.v4(1)]);
    assert!(
        took.is_some(),
        "the port floods to the peers file's nodes: {:?}",
        flood_list(node, &port)
    );

    // A missing peers file changes nothing: it is not an empty cluster.
    std::fs::remove_file(&peers_file).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(flood_list(node, &port), [lab.v4(1)]);
}

#[test]
fn a_peers_file_from_a_config_map_volume_is_followed_when_the_kubelet_swaps_it() {
    let lab = Lab::new(3, 1500);
    let node = &lab.nodes[0];
    let port = naming::shared_vxlan_name("configmap");
    // As the kubelet lays out a ConfigMap volume: peers -> ..data/peers, ..data -> ..<version>.
    let volume = node.dir.join("volume");
    let publish = |version: &str, listed: &[usize]| {
        let dir = volume.join(format!("..{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("peers"), lab.node_list(listed)).unwrap();
        let staged = volume.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &staged).unwrap();
        std::fs::rename(&staged, volume.join("..data")).unwrap();
    };
    publish("v1", &[0, 1, 2]);
    std::os::unix::fs::symlink("..data/peers", volume.join("peers")).unwrap();
    let _agent = peer_loop(node, volume.join("peers"));
    let _pods = lab.pod_on_every_node("configmap", &json!({}), false);
    let everyone = [lab.v4(1), lab.v4(2)];
    within(CONVERGENCE, || flood_list(node, &port) == everyone).expect("the first version");
    publish("v2", &[0, 1]);
    let took = within(CONVERGENCE, || flood_list(node, &port) == [lab.v4(1)]);
    assert!(took.is_some(), "the swapped version within {CONVERGENCE:?}");
}

#[test]
fn tunnels_follow_the_nodes_of_the_api_within_two_seconds() {
    let lab = Lab::new(3, 1500);
    let network = "nodes";
    let port = naming::shared_vxlan_name(network);
    let api = FakeApi::new();
    let internal_ips =
        |i: usize| -> Vec<IpAddr> { vec![lab.v4(i).parse().unwrap(), lab.v6(i).parse().unwrap()] };
    for i in 0..3 {
        api.set_node(&format!("lab-{i}"), &internal_ips(i));
    }
    // A Node without an InternalIP (not yet reported by its kubelet) is no peer yet.
    api.add_node("no-address");
    for node in &lab.nodes {
        std::fs::remove_file(multinode::nodes_file(&node.state_dir())).expect("no node list");
    }
    let _agents: Vec<NodeTask> = (0..3).map(|i| peer_watch(&lab, i, &api)).collect();
    let has_node_list = |i: usize, text: &str| {
        std::fs::read_to_string(multinode::nodes_file(&lab.nodes[i].state_dir()))
            .is_ok_and(|written| written == text)
    };
    for i in 0..3 {
        let written = within(CONVERGENCE, || has_node_list(i, &lab.node_list(&[0, 1, 2])));
        assert!(
            written.is_some(),
            "node {i} gets its node list from the API"
        );
    }

    let pods = pods_flooding_to_everyone(&lab, network);
    let peers_of = |i: usize, listed: &[usize]| peers_of(&lab, i, listed);
    let far = address_of(&pods[2].1, false);

    // Node 2's Node is deleted.
    api.delete_node("lab-2", false);
    for i in [0, 1] {
        let took = within(CONVERGENCE, || {
            flood_list(&lab.nodes[i], &port) == peers_of(i, &[0, 1])
                && has_node_list(i, &lab.node_list(&[0, 1]))
        });
        assert!(
            took.is_some(),
            "node {i} drops node 2 within {CONVERGENCE:?}"
        );
        eprintln!("node {i} dropped node 2 in {took:?}");
    }
    assert!(!answers(&pods[0].0, &far), "node 2's pod is cut off");
    assert!(
        answers(&pods[0].0, &address_of(&pods[1].1, false)),
        "the others still reach each other"
    );

    // It registers again.
    api.set_node("lab-2", &internal_ips(2));
    nodes_follow(&lab, &port, &[0, 1, 2], "takes node 2 back");
    assert!(heals(&pods[0].0, &far), "node 2's pod answers again");

    // Node 1's Node changes: its IPv6 address goes (an IPv4-only port keeps flooding to it).
    api.set_node("lab-1", &internal_ips(1)[..1]);
    let expected = format!(
        "lab-0 {}\nlab-0 {}\nlab-1 {}\nlab-2 {}\nlab-2 {}\n",
        lab.v4(0),
        lab.v6(0),
        lab.v4(1),
        lab.v4(2),
        lab.v6(2)
    );
    for i in [0, 2] {
        let took = within(CONVERGENCE, || has_node_list(i, &expected));
        assert!(
            took.is_some(),
            "node {i} follows node 1's change within {CONVERGENCE:?}"
        );
    }
    assert_eq!(flood_list(&lab.nodes[0], &port), peers_of(0, &[0, 1, 2]));
}

/// The MAC of the pod's interface in an attachment's result.
fn pod_mac(result: &serde_json::Value) -> String {
    result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["sandbox"].is_string())
        .and_then(|i| i["mac"].as_str())
        .expect("the pod's interface in the result")
        .to_string()
}

/// The remote MACs `port` knows: its own entries `(MAC, destination)`, and the bridge's
/// static entries for it.
fn remote_macs(node: &Node, port: &str) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let entries = fdb(node, port);
    let unicast = entries.iter().filter(|e| e["mac"] != "00:00:00:00:00:00");
    let sent = unicast
        .clone()
        .filter(|e| {
            e["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "self"))
        })
        .map(|e| {
            (
                e["mac"].as_str().unwrap().to_string(),
                e["dst"].as_str().unwrap_or("none").to_string(),
            )
        })
        .collect();
    let behind = unicast
        .filter(|e| e["master"].is_string() && e["state"] == "static")
        .map(|e| e["mac"].as_str().unwrap().to_string())
        .collect();
    (sent, behind)
}

/// Counts the frames for one MAC that `node`'s bridge takes in from the tunnel (an nftables
/// counter in the bridge family, in a table of its own): the pods' own multicast, which floods
/// rightly, is not counted.
struct FramesFromTunnel<'a> {
    node: &'a Node,
}

impl<'a> FramesFromTunnel<'a> {
    const TABLE: &'static str = "krafty_test_frames";

    fn nft(node: &Node, args: &[&str]) -> String {
        let out = run_checked(
            Command::new("ip")
                .args(["netns", "exec", &node.name, "nft"])
                .args(args),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn new(node: &'a Node, port: &str, mac: &str) -> FramesFromTunnel<'a> {
        let table = Self::TABLE;
        Self::nft(node, &["add", "table", "bridge", table]);
        let hook = "{ type filter hook forward priority 0; }";
        Self::nft(node, &["add", "chain", "bridge", table, "forward", hook]);
        let rule = ["iifname", port, "ether", "daddr", mac, "counter"];
        Self::nft(
            node,
            &[&["add", "rule", "bridge", table, "forward"][..], &rule].concat(),
        );
        FramesFromTunnel { node }
    }

    fn count(&self) -> u64 {
        let listed = Self::nft(self.node, &["-j", "list", "table", "bridge", Self::TABLE]);
        let listed: serde_json::Value = serde_json::from_str(&listed).expect("nft -j");
        listed["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .find_map(|expr| expr["counter"]["packets"].as_u64())
            .expect("the counter")
    }
}

#[test]
fn pods_the_api_places_on_other_nodes_are_reached_without_flooding() {
    const PINGS: u64 = 100;
    let lab = Lab::new(3, 1500);
    let network = "known";
    let port = naming::shared_vxlan_name(network);
    let api = FakeApi::new();
    for i in 0..3 {
        api.set_node(&format!("lab-{i}"), &[lab.v4(i).parse().unwrap()]);
    }
    let pods = pods_flooding_to_everyone(&lab, network);
    let macs: Vec<String> = pods.iter().map(|(_, result)| pod_mac(result)).collect();
    // As Multus reports it: the cluster network first, then the NAD (namespace/name).
    let network_status = |i: usize| {
        json!([
            {"name": "cilium", "interface": "eth0", "ips": ["10.0.0.9"],
             "mac": "02:42:ac:11:00:09", "default": true},
            {"name": format!("lab/{network}"), "interface": "net1",
             "ips": [address_of(&pods[i].1, false)], "mac": macs[i]},
        ])
    };
    for i in 0..3 {
        api.set_pod(
            "lab",
            &format!("pod-{i}"),
            &format!("lab-{i}"),
            &network_status(i),
        );
    }
    let _agents: Vec<NodeTask> = (0..3).map(|i| peer_watch(&lab, i, &api)).collect();
    // Node i sends each other node's pod's MAC to that node alone, and its bridge sends it to
    // the port alone.
    let knows = |i: usize, pods_known: &[usize]| {
        let others = pods_known.iter().filter(|&&j| j != i);
        let sent: BTreeSet<(String, String)> = others
            .clone()
            .map(|&j| (macs[j].clone(), lab.v4(j)))
            .collect();
        let behind: BTreeSet<String> = others.map(|&j| macs[j].clone()).collect();
        remote_macs(&lab.nodes[i], &port) == (sent, behind)
    };
    let nodes_know = |nodes: &[usize], pods_known: &[usize], limit: Duration, event: &str| {
        for &i in nodes {
            let took = within(limit, || knows(i, pods_known));
            let entries = remote_macs(&lab.nodes[i], &port);
            assert!(
                took.is_some(),
                "node {i} {event} within {limit:?}: {entries:?}"
            );
            eprintln!("node {i} {event} in {took:?}");
        }
    };
    nodes_know(&[0, 1, 2], &[0, 1, 2], CONVERGENCE, "knows the other pods");

    // Node 0's pod pings node 1's: none of it reaches node 2.
    let near = address_of(&pods[1].1, false);
    let counter = FramesFromTunnel::new(&lab.nodes[2], &port, &macs[1]);
    let frames_at_node_2 = || {
        assert!(answers(&pods[0].0, &near), "node 1's pod answers");
        let before = counter.count();
        let pings = PINGS.to_string();
        let pinged = pods[0]
            .0
            .exec(&["ping", "-q", "-c", &pings, "-i", "0.01", &near]);
        assert!(pinged.success, "{PINGS} pings to node 1's pod");
        counter.count() - before
    };
    let known = frames_at_node_2();
    assert_eq!(known, 0, "frames to a known pod reached node 2");

    // Pod 1 goes from the API: the others forget its MAC within 2 s and flood to it again,
    // so node 2 receives every frame for it (and it still answers).
    api.delete_pod("lab", "pod-1");
    nodes_know(&[0, 2], &[0, 2], CONVERGENCE, "forgets pod 1");
    let unknown = frames_at_node_2();
    assert!(
        unknown >= PINGS,
        "only {unknown} of {PINGS} frames to an unknown pod were flooded to node 2"
    );

    // It comes back: known again, and the gateway's MAC is never behind the port.
    api.set_pod("lab", "pod-1", "lab-1", &network_status(1));
    nodes_know(&[0, 2], &[0, 1, 2], CONVERGENCE, "knows pod 1 again");
    // It goes while the watches' history is compacted away: their 410 Gone makes them list
    // again (after the watcher's backoff), and the list shows it gone; the Nodes' watches
    // list again too and the flood lists stay as they are.
    api.delete_pod_unseen("lab", "pod-1");
    nodes_know(&[0, 2], &[0, 2], RELIST, "forgets pod 1 after a relist");
    nodes_follow(&lab, &port, &[0, 1, 2], "keeps its peers through a relist");
    api.set_pod("lab", "pod-1", "lab-1", &network_status(1));
    nodes_know(&[0, 2], &[0, 1, 2], CONVERGENCE, "follows the new watch");
    for node in &lab.nodes {
        let gateway = node.ip(&[
            "-j",
            "link",
            "show",
            "dev",
            &naming::shared_bridge_name(network),
        ]);
        let gateway: serde_json::Value = serde_json::from_str(&gateway).unwrap();
        let gateway_mac = gateway[0]["address"].as_str().unwrap();
        assert!(fdb(node, &port).iter().all(|e| e["mac"] != gateway_mac));
    }
}
