//! The multi-node part (this machine's kernel only): node namespaces on an underlay bridge
//! (the test harness's `Lab`), a krafty `multiNode` network between two of them against the
//! floor, a VXLAN made by hand with `ip` and `bridge` between two others (same underlay, same
//! MTU); ADD on a `multiNode` network against a node-local `scope: network` one; and how fast
//! the node agent's peer loop (installer/src/peers.rs) follows a node joining and leaving.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use krafty_cni::naming;
use krafty_installer::peers::{self, PeerKeeper};
use krafty_tests::multinode::{flood_list, stretched_network, Lab};
use krafty_tests::node_task::NodeTask;
use krafty_tests::{address_of, container_id, run_checked, Node, Pod};
use serde_json::{json, Value};

use crate::{
    ip_batch, latency_row, median_ratio_interval, ms, ratio, samples, summary, timed_cni, verdict,
};

/// The underlay's MTU, for both the krafty lab and the floor's (1450 left inside the tunnel).
const UNDERLAY_MTU: u32 = 1500;
const TUNNEL_MTU: u32 = UNDERLAY_MTU - 50;
const NETWORK: &str = "mnbench";
/// The floor's pods' subnet (krafty's is the lab's 10.77.0.0/24).
const FLOOR_SUBNET: &str = "10.78.0";
const FLOOR_VNI: u32 = 4242;
const VXLAN_UDP_PORT: u16 = 4789;
/// Pings per round, 10 ms apart.
const PINGS_PER_ROUND: usize = 20;
/// How long one convergence event may take before the run gives up.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(10);

/// How many samples the multi-node part takes.
pub struct Counts {
    /// iperf3 runs per variant, interleaved.
    pub throughput_rounds: usize,
    /// Seconds per iperf3 run.
    pub throughput_seconds: u32,
    /// Rounds of [`PINGS_PER_ROUND`] pings per variant, interleaved.
    pub ping_rounds: usize,
    /// ADD/DEL cycles per network, interleaved.
    pub add_cycles: usize,
    /// Joins and leaves, each.
    pub peer_events: usize,
}

/// Everything the multi-node part measures, as the report reads it.
pub fn measure(counts: &Counts) -> Value {
    let krafty = Lab::new(2, UNDERLAY_MTU);
    let pods: Vec<(Pod, Value)> = krafty.pod_on_every_node(NETWORK, &json!({}), false);
    let krafty_far = address_of(&pods[1].1, false);
    let floor = Lab::new(2, UNDERLAY_MTU);
    let floor_pods = hand_made_vxlan(&floor);
    let floor_far = format!("{FLOOR_SUBNET}.11");

    eprintln!(
        "krafty-bench: multi-node throughput, {} rounds of {} s",
        counts.throughput_rounds, counts.throughput_seconds
    );
    let servers = [
        IperfServer::start(&pods[1].0),
        IperfServer::start(&floor_pods[1]),
    ];
    let mut throughput = [Vec::new(), Vec::new()];
    let mut rtt = [Vec::new(), Vec::new()];
    let clients = [(&pods[0].0, &krafty_far), (&floor_pods[0], &floor_far)];
    for (pod, far) in clients {
        assert!(
            pod.ping(far),
            "{} reaches {far} across the tunnel",
            pod.name
        );
    }
    for round in 0..counts.throughput_rounds {
        for turn in 0..2 {
            let variant = (round + turn) % 2;
            let (pod, far) = clients[variant];
            throughput[variant].push(iperf(pod, far, counts.throughput_seconds));
        }
    }
    drop(servers);
    eprintln!(
        "krafty-bench: multi-node ping, {} rounds",
        counts.ping_rounds
    );
    for round in 0..counts.ping_rounds {
        for turn in 0..2 {
            let variant = (round + turn) % 2;
            let (pod, far) = clients[variant];
            rtt[variant].extend(ping_rtts(pod, far));
        }
    }

    eprintln!(
        "krafty-bench: ADD on a multiNode network vs a node-local one, {} cycles",
        counts.add_cycles
    );
    let add = add_cycles(&krafty.nodes[0], counts.add_cycles);

    eprintln!(
        "krafty-bench: the agent following {} joins and leaves",
        counts.peer_events
    );
    let convergence = convergence(&krafty, &pods[0].0, &krafty_far, counts.peer_events);

    json!({
        "throughput_bps": { "krafty": throughput[0], "floor": throughput[1] },
        "rtt_us": { "krafty": rtt[0], "floor": rtt[1] },
        "add": add,
        "convergence_us": convergence,
        "underlay_mtu": UNDERLAY_MTU,
        "throughput_seconds": counts.throughput_seconds,
    })
}

/// The floor: on each lab node a bridge, a VXLAN port flooding to the other node, and a pod on
/// a veth pair, all of MTU [`TUNNEL_MTU`], made with `ip -batch` and `bridge`. The pods.
fn hand_made_vxlan(lab: &Lab) -> Vec<Pod> {
    lab.nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let pod = node.pod("f");
            ip_batch(&node.name, &floor_node_batch(&lab.v4(i), &pod.name));
            run_checked(
                Command::new("bridge")
                    .args(["-n", &node.name, "fdb", "append", "00:00:00:00:00:00"])
                    .args(["dev", "flvx", "dst", &lab.v4(1 - i)]),
            );
            ip_batch(
                &pod.name,
                &format!(
                    "addr add {FLOOR_SUBNET}.{}/24 dev net1\nlink set net1 up\n",
                    10 + i
                ),
            );
            pod
        })
        .collect()
}

/// The floor's node side on a node whose underlay address is `local`, its pod `pod`.
fn floor_node_batch(local: &str, pod: &str) -> String {
    format!(
        "link add flbr mtu {TUNNEL_MTU} type bridge\n\
         link add flvx mtu {TUNNEL_MTU} master flbr type vxlan id {FLOOR_VNI} local {local} \
         dstport {VXLAN_UDP_PORT} nolearning\n\
         link set flvx up\n\
         link set flbr up\n\
         link add flv0 mtu {TUNNEL_MTU} master flbr up type veth peer name net1 mtu {TUNNEL_MTU} \
         netns {pod}\n"
    )
}

/// An iperf3 server in a pod, stopped on drop.
struct IperfServer(Child);

impl IperfServer {
    fn start(pod: &Pod) -> IperfServer {
        let child = Command::new("ip")
            .args(["netns", "exec", &pod.name, "iperf3", "--server"])
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 runs (scripts/setup.sh bench installs it)");
        IperfServer(child)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 run from `pod` to `server` for `seconds` (one TCP stream): the bits per second
/// the server received. Retried while the server is starting.
fn iperf(pod: &Pod, server: &str, seconds: u32) -> f64 {
    let seconds = seconds.to_string();
    let started = Instant::now();
    loop {
        let out = pod.exec(&["iperf3", "--client", server, "--time", &seconds, "--json"]);
        let report: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "iperf3 to {server} failed: {}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One round of pings from `pod` to `address`, 10 ms apart: each reply's round-trip time, µs.
fn ping_rtts(pod: &Pod, address: &str) -> Vec<f64> {
    let count = PINGS_PER_ROUND.to_string();
    let out = pod.exec(&["ping", "-n", "-c", &count, "-i", "0.01", address]);
    assert!(out.success, "ping {address}: {}{}", out.stdout, out.stderr);
    parse_ping_times(&out.stdout)
}

/// The `time=X ms` of each reply in ping's output, in µs.
fn parse_ping_times(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter_map(|line| line.split("time=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|ms| ms.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect()
}

/// ADD/DEL cycles on `node` of a pod on the lab's `multiNode` network and of one on a
/// node-local network of the same configuration without `multiNode` (other subnets), taking
/// turns: `{"multinode": {"add_us", "del_us"}, "local": {...}}`.
fn add_cycles(node: &Node, cycles: usize) -> Value {
    let stretched = stretched_network(NETWORK, json!({}), 0, false);
    let local = node_local_twin(&stretched, "mnlocal");
    let lists = [node.conflist(stretched), node.conflist(local)];
    let pods = [node.pod("m"), node.pod("l")];
    let mut series: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for cycle in 0..cycles {
        for turn in 0..2 {
            let variant = (cycle + turn) % 2;
            let id = container_id();
            let add = timed_cni(node, "add", &lists[variant], &id, &pods[variant], &[]);
            let del = timed_cni(node, "del", &lists[variant], &id, &pods[variant], &[]);
            series[variant].0.push(add.wall_us);
            series[variant].1.push(del.wall_us);
        }
    }
    let as_json = |(add, del): &(Vec<f64>, Vec<f64>)| json!({ "add_us": add, "del_us": del });
    json!({ "multinode": as_json(&series[0]), "local": as_json(&series[1]) })
}

/// `stretched` as a node-local network `name`: no `multiNode`, its subnets moved to 10.79/16
/// and fd00:79::/64 so that its gateway and routes do not meet the stretched network's.
fn node_local_twin(stretched: &Value, name: &str) -> Value {
    let mut local = stretched.clone();
    local["name"] = json!(name);
    for plugin in local["plugins"].as_array_mut().expect("plugins") {
        if let Some(fields) = plugin.as_object_mut() {
            fields.remove("multiNode");
        }
    }
    let text = local
        .to_string()
        .replace("10.77.", "10.79.")
        .replace("fd00:77:", "fd00:79:");
    serde_json::from_str(&text).expect("JSON")
}

/// The agent's peer loop on `peers_file` in `node`'s namespace, until dropped.
fn peer_loop(node: &Node, peers_file: &Path) -> NodeTask {
    let keeper = PeerKeeper {
        peers_file: peers_file.to_path_buf(),
        state_root: node.state_dir(),
    };
    NodeTask::spawn(node, move |stop| peers::run(keeper, stop))
}

/// Node 1 leaves and joins node 0's peers file `events` times each, with node 0's agent
/// running: the time from the file's replacement (a rename, as the kubelet publishes a
/// ConfigMap) to node 1's flood entry absent / present on node 0's VXLAN port, and, after a
/// join, to the first ping from node 0's pod `pod` to node 1's pod at `far` that is answered.
fn convergence(lab: &Lab, pod: &Pod, far: &str, events: usize) -> Value {
    let node = &lab.nodes[0];
    let port = naming::shared_vxlan_name(NETWORK);
    let peers_file = node.dir.join("peers");
    let publish = |listed: &[usize]| {
        let temporary = node.dir.join(".peers.tmp");
        std::fs::write(&temporary, lab.node_list(listed)).expect("peers file");
        std::fs::rename(&temporary, &peers_file).expect("peers file");
        Instant::now()
    };
    let peer = lab.v4(1);
    let flooded = || flood_list(node, &port).contains(&peer);
    publish(&[0, 1]);
    let _agent = peer_loop(node, &peers_file);
    wait_for(Instant::now(), flooded);
    let (mut leave, mut join, mut first_ping) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..events {
        let start = publish(&[0]);
        leave.push(wait_for(start, || !flooded()));
        let start = publish(&[0, 1]);
        join.push(wait_for(start, flooded));
        first_ping.push(wait_for(start, || {
            pod.exec(&["ping", "-n", "-c", "1", "-W", "0.2", far])
                .success
        }));
    }
    json!({ "leave": leave, "join": join, "join_first_ping": first_ping })
}

/// Polls `done` (with no pause: each poll is a process) until it holds: µs since `start`.
fn wait_for(start: Instant, mut done: impl FnMut() -> bool) -> f64 {
    while !done() {
        assert!(
            start.elapsed() < CONVERGENCE_LIMIT,
            "no convergence within {CONVERGENCE_LIMIT:?}"
        );
    }
    start.elapsed().as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// How fast the agent must follow a node joining or leaving (issue 14).
const CONVERGENCE_TARGET_US: f64 = 2e6;

/// The multi-node rows of the targets table, from `results["multinode"]`.
pub fn target_rows(results: &Value) -> String {
    let series = |path: &[&str]| -> Vec<f64> {
        samples(path.iter().fold(results, |value, key| &value[*key]))
    };
    let mtu = results["underlay_mtu"].as_u64().unwrap_or_default();
    let mut text = bounded_row(
        &format!(
            "cross-node TCP throughput ≥ 0.9 × a hand-made VXLAN (one iperf3 stream, underlay \
             MTU {mtu})"
        ),
        (
            &series(&["throughput_bps", "krafty"]),
            &series(&["throughput_bps", "floor"]),
        ),
        Bound::AtLeast(0.9),
        gbits,
    );
    text += &bounded_row(
        "cross-node ping RTT p50 ≤ 1.1 × the hand-made VXLAN's",
        (
            &series(&["rtt_us", "krafty"]),
            &series(&["rtt_us", "floor"]),
        ),
        Bound::AtMost(1.1),
        micros,
    );
    text += &bounded_row(
        "ADD p50 on a multiNode network ≤ 1.1 × a node-local one (`scope: network`)",
        (
            &series(&["add", "multinode", "add_us"]),
            &series(&["add", "local", "add_us"]),
        ),
        Bound::AtMost(1.1),
        millis,
    );
    for event in ["join", "leave"] {
        let p99 = summary(&series(&["convergence_us", event]))[2];
        text += &format!(
            "| the agent follows a node's {event} within 2 s (p99: peers file replaced → flood \
             entry {}) | {} ms | {} |\n",
            if event == "join" { "present" } else { "absent" },
            ms(p99),
            verdict(p99 <= CONVERGENCE_TARGET_US)
        );
    }
    text
}

/// The section on networks stretched across nodes, from `results["multinode"]`.
pub fn section(results: &Value) -> String {
    let mut text = String::from(
        "## Across nodes (this machine's kernel): a `multiNode` network vs a hand-made VXLAN\n\n",
    );
    text += &format!(
        "Two node namespaces on an underlay bridge (MTU {}), one pod each; the floor is two \
         other such nodes joined by a VXLAN made with `ip` and `bridge` (a bridge, a VXLAN port \
         without learning flooding to the other node, a veth pair to the pod, all of the same \
         MTU as krafty's). The two take turns: {} s of one iperf3 TCP stream each, then rounds \
         of {PINGS_PER_ROUND} pings 10 ms apart. The multi-node part took {:.0} s.\n\n\
         | variant | throughput p50 | throughput p10 | RTT p50 | RTT p90 | RTT p99 |\n\
         |---|---|---|---|---|---|\n",
        results["underlay_mtu"],
        results["throughput_seconds"],
        results["took_s"].as_f64().unwrap_or(f64::NAN),
    );
    for variant in ["krafty", "floor"] {
        let throughput = samples(&results["throughput_bps"][variant]);
        let [r50, r90, r99] = summary(&samples(&results["rtt_us"][variant]));
        text += &format!(
            "| {variant} | {} | {} | {} | {} | {} |\n",
            gbits(summary(&throughput)[0]),
            gbits(super::percentile(&throughput, 10.0).unwrap_or(f64::NAN)),
            micros(r50),
            micros(r90),
            micros(r99)
        );
    }
    text += "\nADD/DEL of a pod on the multiNode network and on a node-local network of the same \
             configuration without `multiNode` (other subnets), taking turns on one node (ms):\n\n\
             | network | ADD p50 | ADD p90 | ADD p99 | DEL p50 | DEL p90 | DEL p99 |\n\
             |---|---|---|---|---|---|---|\n";
    text += &latency_row("multiNode", &results["add"]["multinode"]);
    text += &latency_row("node-local", &results["add"]["local"]);
    text += "\nThe node agent's peer loop (installer/src/peers.rs) in one node's namespace, the \
             other node leaving and joining its peers file (replaced with a rename, as the \
             kubelet publishes a ConfigMap): time from the rename to the other node's all-zero \
             entry absent / present on the VXLAN port (polled with `bridge fdb`, a process per \
             poll, so a few ms of resolution), and after a join to the first answered ping \
             between the pods (ms):\n\n\
             | event | count | p50 | p99 |\n|---|---|---|---|\n";
    for (event, label) in [
        ("leave", "leave: entry absent"),
        ("join", "join: entry present"),
        ("join_first_ping", "join: first ping answered"),
    ] {
        let values = samples(&results["convergence_us"][event]);
        let [c50, _, c99] = summary(&values);
        text += &format!(
            "| {label} | {} | {} | {} |\n",
            values.len(),
            ms(c50),
            ms(c99)
        );
    }
    text + "\n"
}

/// Which side of the ratio of the medians (measured / baseline) a target allows.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// `| target | medians and their ratio [95% interval] | verdict |`, the medians shown by `unit`.
fn bounded_row(
    label: &str,
    (measured, baseline): (&[f64], &[f64]),
    bound: Bound,
    unit: fn(f64) -> String,
) -> String {
    let (measured_p50, baseline_p50) = (summary(measured)[0], summary(baseline)[0]);
    let (low, high) = median_ratio_interval(measured, baseline);
    let value = ratio(measured_p50, baseline_p50);
    let (met, limit) = match bound {
        Bound::AtLeast(limit) => (value >= limit, limit),
        Bound::AtMost(limit) => (value <= limit, limit),
    };
    let noise = if low <= limit && limit <= high {
        " (the bound is inside the interval)"
    } else {
        ""
    };
    format!(
        "| {label} | {} / {} = {value:.2} [{low:.2}, {high:.2}] | {}{noise} |\n",
        unit(measured_p50),
        unit(baseline_p50),
        verdict(met)
    )
}

fn gbits(bps: f64) -> String {
    format!("{:.2} Gbit/s", bps / 1e9)
}

fn micros(us: f64) -> String {
    format!("{us:.0} µs")
}

fn millis(us: f64) -> String {
    format!("{} ms", ms(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_times_are_read_from_each_reply() {
        let output = "PING 10.77.0.30 (10.77.0.30) 56(84) bytes of data.\n\
                      64 bytes from 10.77.0.30: icmp_seq=1 ttl=64 time=0.052 ms\n\
                      64 bytes from 10.77.0.30: icmp_seq=2 ttl=64 time=1.10 ms\n\n\
                      rtt min/avg/max/mdev = 0.052/0.576/1.100/0.524 ms\n";
        assert_eq!(parse_ping_times(output), [52.0, 1100.0]);
    }

    #[test]
    fn the_node_local_twin_differs_only_in_multinode_and_subnets() {
        let stretched = stretched_network(NETWORK, json!({}), 0, false);
        let local = node_local_twin(&stretched, "mnlocal");
        assert_eq!(local["name"], "mnlocal");
        assert!(local["plugins"][0].get("multiNode").is_none());
        assert_eq!(local["plugins"][0]["scope"], "network");
        assert_eq!(
            local["plugins"][0]["gateway"],
            json!(["10.79.0.1", "fd00:79::1"])
        );
        let back = local
            .to_string()
            .replace("10.79.", "10.77.")
            .replace("fd00:79:", "fd00:77:")
            .replace("mnlocal", NETWORK);
        let mut without = stretched.clone();
        without["plugins"][0]
            .as_object_mut()
            .unwrap()
            .remove("multiNode");
        assert_eq!(serde_json::from_str::<Value>(&back).unwrap(), without);
    }

    #[test]
    fn the_floor_s_tunnel_has_the_tunnel_mtu_and_learns_nothing() {
        let batch = floor_node_batch("192.168.77.1", "pod");
        assert!(batch.contains(
            "link add flvx mtu 1450 master flbr type vxlan id 4242 local 192.168.77.1 dstport 4789 nolearning"
        ));
        assert!(batch.contains("peer name net1 mtu 1450 netns pod"));
    }

    /// Multi-node results with constant samples: krafty's throughput `krafty_gbit` against
    /// the floor's 10 Gbit/s, RTT 55 against 50 µs, ADD 11 against 10 ms, joins followed in
    /// 30 ms and leaves in `leave_ms`.
    fn results(krafty_gbit: f64, leave_ms: f64) -> Value {
        json!({
            "throughput_bps": { "krafty": vec![krafty_gbit * 1e9; 5], "floor": vec![10e9; 5] },
            "rtt_us": { "krafty": vec![55.0; 20], "floor": vec![50.0; 20] },
            "add": {
                "multinode": { "add_us": vec![11_000.0; 5], "del_us": vec![20_000.0; 5] },
                "local": { "add_us": vec![10_000.0; 5], "del_us": vec![20_000.0; 5] },
            },
            "convergence_us": {
                "join": vec![30_000.0; 20],
                "leave": vec![leave_ms * 1000.0; 20],
                "join_first_ping": vec![40_000.0; 20],
            },
            "underlay_mtu": 1500,
            "throughput_seconds": 2,
            "took_s": 61.0,
        })
    }

    fn row<'a>(table: &'a str, starts: &str) -> &'a str {
        table
            .lines()
            .find(|line| line.starts_with(starts))
            .unwrap_or_else(|| panic!("no row {starts} in\n{table}"))
    }

    #[test]
    fn targets_at_their_bounds_are_met() {
        let table = target_rows(&results(9.0, 25.0));
        let throughput = row(&table, "| cross-node TCP throughput ≥ 0.9 ×");
        assert!(
            throughput.contains("9.00 Gbit/s / 10.00 Gbit/s = 0.90 [0.90, 0.90]")
                && throughput.contains("underlay MTU 1500")
                && throughput.contains("| **met**"),
            "{throughput}"
        );
        let rtt = row(&table, "| cross-node ping RTT");
        assert!(
            rtt.contains("55 µs / 50 µs = 1.10") && rtt.contains("| **met**"),
            "{rtt}"
        );
        let add = row(&table, "| ADD p50 on a multiNode network");
        assert!(
            add.contains("11.00 ms / 10.00 ms = 1.10") && add.contains("| **met**"),
            "{add}"
        );
        let join = row(&table, "| the agent follows a node's join");
        assert!(join.contains("| 30.00 ms | **met** |"), "{join}");
        assert_eq!(table.lines().count(), 5, "{table}");
    }

    #[test]
    fn slow_throughput_and_slow_convergence_are_missed() {
        let table = target_rows(&results(8.9, 2100.0));
        assert!(row(&table, "| cross-node TCP throughput").contains("| **missed**"));
        assert!(row(&table, "| the agent follows a node's leave")
            .contains("| 2100.00 ms | **missed** |"));
        assert!(row(&table, "| the agent follows a node's join").contains("| **met**"));
    }

    #[test]
    fn a_bound_inside_the_interval_is_flagged_as_noise() {
        let krafty: Vec<f64> = (0..40).map(|i| 8e9 + 1e8 * f64::from(i % 20)).collect();
        let floor = vec![10e9; 40];
        let text = bounded_row("x", (&krafty, &floor), Bound::AtLeast(0.9), gbits);
        assert!(
            text.contains("(the bound is inside the interval)"),
            "{text}"
        );
    }

    #[test]
    fn the_section_tables_every_measurement() {
        let text = section(&results(9.0, 25.0));
        assert!(text.contains("took 61 s"), "{text}");
        assert!(
            row(&text, "| krafty |").starts_with("| krafty | 9.00 Gbit/s | 9.00 Gbit/s | 55 µs |")
        );
        assert!(row(&text, "| floor |").starts_with("| floor | 10.00 Gbit/s |"));
        assert!(row(&text, "| multiNode |")
            .starts_with("| multiNode | 11.00 | 11.00 | 11.00 | 20.00 |"));
        assert!(row(&text, "| node-local |").starts_with("| node-local | 10.00 |"));
        assert_eq!(
            row(&text, "| leave: entry absent |"),
            "| leave: entry absent | 20 | 25.00 | 25.00 |"
        );
        assert_eq!(
            row(&text, "| join: first ping answered |"),
            "| join: first ping answered | 20 | 40.00 | 40.00 |"
        );
    }
}
