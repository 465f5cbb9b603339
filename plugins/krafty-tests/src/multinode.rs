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
                "mtu",
                &mtu.to_string(),
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

    /// Watches node `i`'s wire on the underlay from now on: the address resolutions (ARP
    /// requests and neighbour solicitations) that reach it through a tunnel, on UDP `port`.
    pub fn watch_resolutions(&self, i: usize, port: u16) -> ResolutionWatch {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.underlay,
                "python3",
                "-c",
                RESOLUTION_SNIFFER,
            ])
            .args([format!("n{i}"), port.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut ready = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut reader = std::io::BufReader::new(stdout);
        std::io::BufRead::read_line(&mut reader, &mut ready).expect("the sniffer starts");
        assert_eq!(ready.trim(), "ready");
        ResolutionWatch { child, reader }
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

/// Prints `ready`, then one line per tunnelled ARP request (`arp TARGET`) or neighbour
/// solicitation (`ns TARGET`) seen on device argv[1], for UDP port argv[2], until killed.
const RESOLUTION_SNIFFER: &str = r#"
import ipaddress, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
port = int(sys.argv[2])
print("ready", flush=True)
while True:
    frame = s.recv(65535)
    if frame[12:14] == b"\x08\x00" and frame[23] == 17:
        outer = 14 + (frame[14] & 15) * 4
    elif frame[12:14] == b"\x86\xdd" and frame[20] == 17:
        outer = 14 + 40
    else:
        continue
    if struct.unpack("!H", frame[outer + 2:outer + 4])[0] != port:
        continue
    inner = frame[outer + 16:]
    if inner[12:14] == b"\x08\x06" and inner[20:22] == b"\x00\x01":
        print("arp", ipaddress.ip_address(inner[38:42]), flush=True)
    elif inner[12:14] == b"\x86\xdd" and inner[20] == 58 and inner[54] == 135:
        print("ns", ipaddress.ip_address(inner[62:78]), flush=True)
"#;

/// The resolutions one node's wire saw, collected when stopped.
pub struct ResolutionWatch {
    child: std::process::Child,
    reader: std::io::BufReader<std::process::ChildStdout>,
}

impl ResolutionWatch {
    /// Stops watching: every resolution seen, as `arp ADDRESS` or `ns ADDRESS`.
    pub fn stop(mut self) -> Vec<String> {
        // Frames already read by the sniffer are printed right away; give the last ones time.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let _ = self.child.kill();
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut self.reader, &mut text);
        let _ = self.child.wait();
        text.lines().map(String::from).collect()
    }
}

impl Drop for ResolutionWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let out = run_checked(
        Command::new("bridge").args(["-n", &node.name, "-j", "fdb", "show", "dev", port]),
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
