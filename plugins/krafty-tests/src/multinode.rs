//! A lab of several nodes for networks stretched across nodes (`multiNode`): each [`Node`]'s
//! namespace gets an `eth0` onto an underlay, a bridge in a namespace of its own, with the
//! node's IPv4 and IPv6 address on it, and the node list (`NAME ADDRESS`) the node agent
//! would keep in its state root.

use std::process::Command;

use krafty_cni::multinode;
use serde_json::{json, Value};

use crate::{run_checked, Node, Pod, COUNTER};

/// The underlay's IPv4 prefix; node `i` is `.(i + 1)`.
const UNDERLAY_V4: &str = "192.168.77";
/// The underlay's IPv6 prefix; node `i` is `::(i + 1)`.
const UNDERLAY_V6: &str = "fd77::";

/// Nodes joined by an underlay bridge; all removed on drop.
pub struct Lab {
    /// The namespace holding the underlay bridge.
    pub underlay: String,
    pub nodes: Vec<Node>,
}

impl Lab {
    /// `count` nodes on an underlay of MTU `mtu`, each listing every node (itself too, as
    /// the node agent does) under `lab-<i>`.
    pub fn new(count: usize, mtu: u32) -> Lab {
        let nodes: Vec<Node> = (0..count).map(|_| Node::new()).collect();
        let underlay = format!(
            "kt-ul-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        run_checked(Command::new("ip").args(["netns", "add", &underlay]));
        let ul = |args: &[&str]| run_checked(Command::new("ip").args(["-n", &underlay]).args(args));
        ul(&["link", "add", "ul", "type", "bridge"]);
        ul(&["link", "set", "ul", "mtu", &mtu.to_string(), "up"]);
        let lab = Lab {
            underlay: underlay.clone(),
            nodes,
        };
        for (i, node) in lab.nodes.iter().enumerate() {
            let port = format!("n{i}");
            run_checked(Command::new("ip").args([
                "-n",
                &lab.underlay,
                "link",
                "add",
                &port,
                "mtu",
                &mtu.to_string(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.name,
            ]));
            ul(&["link", "set", &port, "master", "ul", "up"]);
            node.ip(&["addr", "add", &format!("{}/24", lab.v4(i)), "dev", "eth0"]);
            node.ip(&[
                "addr",
                "add",
                &format!("{}/64", lab.v6(i)),
                "dev",
                "eth0",
                "nodad",
            ]);
            node.ip(&["link", "set", "eth0", "up"]);
        }
        lab.write_node_lists(&(0..count).collect::<Vec<_>>());
        lab
    }

    /// Node `i`'s IPv4 address on the underlay.
    pub fn v4(&self, i: usize) -> String {
        format!("{UNDERLAY_V4}.{}", i + 1)
    }

    /// Node `i`'s IPv6 address on the underlay.
    pub fn v6(&self, i: usize) -> String {
        format!("{UNDERLAY_V6}{:x}", i + 1)
    }

    /// The node list of the nodes `listed` (both addresses of each), as the agent writes it.
    pub fn node_list(&self, listed: &[usize]) -> String {
        listed
            .iter()
            .map(|&i| format!("lab-{i} {}\nlab-{i} {}\n", self.v4(i), self.v6(i)))
            .collect()
    }

    /// Writes [`Lab::node_list`] of `listed` on every node.
    pub fn write_node_lists(&self, listed: &[usize]) {
        let text = self.node_list(listed);
        for node in &self.nodes {
            std::fs::create_dir_all(node.state_dir()).expect("state root");
            std::fs::write(multinode::nodes_file(&node.state_dir()), &text).expect("node list");
        }
    }

    /// One pod (`a`) on every node, attached to the stretched network `network` (its
    /// `multiNode` being `multi_node`, each node with its own address range): the pods and
    /// their results.
    pub fn pod_on_every_node(
        &self,
        network: &str,
        multi_node: &Value,
        with_vrf: bool,
    ) -> Vec<(Pod, Value)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let conflist = stretched_network(network, multi_node.clone(), i, with_vrf);
                let pod = node.pod("a");
                let (_, result) = node.attach(&node.conflist(conflist), &pod);
                (pod, result)
            })
            .collect()
    }

    /// Cuts node `i` off the underlay, or joins it again.
    pub fn set_reachable(&self, i: usize, reachable: bool) {
        let state = if reachable { "up" } else { "down" };
        run_checked(Command::new("ip").args([
            "-n",
            &self.underlay,
            "link",
            "set",
            &format!("n{i}"),
            state,
        ]));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.underlay])
            .output();
    }
}

/// A shared network stretched across nodes (`multiNode`, with `multi_node`'s fields) with
/// host-local over range `range` of 20 addresses (one range per node keeps the nodes' pods
/// apart until per-node blocks exist), dual-stack: `10.77.0.0/24` and `fd00:77::/64`, gateways
/// `.1` and `::1`.
pub fn stretched_network(name: &str, multi_node: Value, range: usize, with_vrf: bool) -> Value {
    let first = 10 + 20 * range;
    let last = first + 19;
    let mut plugins = vec![
        json!({ "type": "krafty-bridge", "scope": "network", "multiNode": multi_node,
                "subnet": ["10.77.0.0/24", "fd00:77::/64"],
                "gateway": ["10.77.0.1", "fd00:77::1"] }),
        json!({ "type": "krafty-veth", "ipam": { "type": "host-local", "ranges": [
            [{ "subnet": "10.77.0.0/24", "gateway": "10.77.0.1",
               "rangeStart": format!("10.77.0.{first}"), "rangeEnd": format!("10.77.0.{last}") }],
            [{ "subnet": "fd00:77::/64", "gateway": "fd00:77::1",
               "rangeStart": format!("fd00:77::{first:x}"),
               "rangeEnd": format!("fd00:77::{last:x}") }]
        ], "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }] } }),
    ];
    if with_vrf {
        plugins.insert(0, json!({ "type": "krafty-vrf", "scope": "network" }));
    }
    json!({ "cniVersion": "1.0.0", "name": name, "plugins": plugins })
}

/// The VXLAN port's and the bridge's forwarding entries for the port, as `bridge -j fdb`.
pub fn fdb(node: &Node, port: &str) -> Vec<Value> {
    let out = Command::new("bridge")
        .args(["-n", &node.name, "-j", "fdb", "show", "dev", port])
        .output()
        .expect("bridge runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The destinations of `port`'s all-zero entries: where broadcast and unknown traffic goes.
pub fn flood_list(node: &Node, port: &str) -> Vec<String> {
    let mut list: Vec<String> = fdb(node, port)
        .iter()
        .filter(|e| e["mac"] == "00:00:00:00:00:00")
        .map(|e| e["dst"].as_str().unwrap_or("none").to_string())
        .collect();
    list.sort();
    list
}
