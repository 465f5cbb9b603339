//! The krafty benchmark (run by `scripts/bench.sh`, see docs/benchmarks.md).
//!
//! `krafty-bench run --kernel host|vm --cycles N --out FILE` measures, on hermetic node
//! namespaces of the test harness, ADD/DEL cycles of (a) the krafty chain, (b) the reference
//! chain of Debian's containernetworking-plugins doing the same work with the same host-local
//! IPAM and (c) the floor: the same kernel work issued by `ip -batch`, without plugins or IPAM.
//! The three alternate cycle by cycle so that noise from other work on the machine falls on all
//! of them alike. It also records each plugin process's peak RSS, ADD/DEL at 1, 100 and 500
//! existing attachments of one network, and 32 concurrent ADDs, and writes raw samples as JSON.
//!
//! `krafty-bench report --host FILE [--vm FILE] --out docs/benchmarks.md` turns them into the
//! document (tools/bench/plot.py draws the plot from the same files).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use krafty_cni::naming;
use krafty_tests::{bin_dir, container_id, Node, Pod, REFERENCE_PLUGIN_DIR};
use serde_json::{json, Value};

mod multinode;

const SUBNET: &str = "172.16.10.0/24";
const GATEWAY: &str = "172.16.10.1";
/// The scale test needs more than 500 addresses.
const SCALE_SUBNET: &str = "172.20.0.0/22";
const SCALE_GATEWAY: &str = "172.20.0.1";
const SCALE_LEVELS: [usize; 3] = [1, 100, 500];
const SCALE_PROBES: usize = 100;
/// How long the nodes are left alone after the levels' attachments are made, before the probes:
/// the pods' first IPv6 packets (router solicitations, MLD reports, flooded to every port), the
/// kernel's deferred link events and the file system's recently freed inodes belong to the burst
/// of ADDs, not to the steady state of N attachments that the level measures.
const SCALE_SETTLE: std::time::Duration = std::time::Duration::from_secs(15);
const CONCURRENT_ADDS: usize = 32;
const CONCURRENT_ROUNDS: usize = 3;
const RSS_CYCLES: usize = 10;
const DELETION_ROUNDS: usize = 60;
/// Under emulation a round of the VM's five cases takes seconds.
const DELETION_ROUNDS_VM: usize = 12;
const BOOTSTRAP_RESAMPLES: usize = 2000;
/// The interface group of the deletion-cost cases (their own node namespace, so any number).
const DELETION_GROUP: u32 = 4242;
/// Plugins whose peak RSS and size are reported.
/// The reference's pod-scope DEL samples that include removing the bridge it leaves.
const SAME_WORK_DEL: &str = "del_with_bridge_removal_us";
const KRAFTY_PLUGINS: [&str; 3] = ["krafty-vrf", "krafty-bridge", "krafty-veth"];
const REFERENCE_PLUGINS: [&str; 3] = ["vrf", "bridge", "host-local"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&flags(&args[1..])),
        Some("report") => report(&flags(&args[1..])),
        _ => {
            eprintln!(
                "usage: krafty-bench run --kernel host|vm --cycles N --out FILE [--scale no] \
                 [--concurrent no] [--multinode no] [--multinode-rounds N] [--peer-events N]\n       \
                 krafty-bench report --host FILE [--vm FILE] --out FILE"
            );
            std::process::exit(2);
        }
    }
}

/// `--name value` pairs.
fn flags(args: &[String]) -> BTreeMap<String, String> {
    args.chunks(2)
        .map(|pair| match pair {
            [name, value] if name.starts_with("--") => {
                (name.trim_start_matches("--").to_string(), value.clone())
            }
            _ => panic!("expected --name value pairs, got {pair:?}"),
        })
        .collect()
}

fn required<'a>(flags: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    flags
        .get(name)
        .unwrap_or_else(|| panic!("--{name} is required"))
}

// ---------------------------------------------------------------------------------------------
// Statistics (pure)
// ---------------------------------------------------------------------------------------------

/// The `q`-th percentile (0 < q <= 100) by the nearest-rank method: the smallest sample with
/// at least q% of the samples at or below it. `None` for no samples.
fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p90 and p99.
fn summary(samples: &[f64]) -> [f64; 3] {
    [50.0, 90.0, 99.0].map(|q| percentile(samples, q).unwrap_or(f64::NAN))
}

/// A 95% interval for the ratio of two medians: the 2.5th and 97.5th percentiles of the ratio
/// over bootstrap resamples of both sample sets. The generator is seeded, so a report is
/// reproducible from its data.
fn median_ratio_interval(numerator: &[f64], denominator: &[f64]) -> (f64, f64) {
    if numerator.is_empty() || denominator.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    // xorshift64*: plenty for picking resample indices.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next_index = |len: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % len as u64) as usize
    };
    let mut resampled_median = |samples: &[f64]| {
        let resample: Vec<f64> = (0..samples.len())
            .map(|_| samples[next_index(samples.len())])
            .collect();
        percentile(&resample, 50.0).unwrap_or(f64::NAN)
    };
    let ratios: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| resampled_median(numerator) / resampled_median(denominator))
        .collect();
    (
        percentile(&ratios, 2.5).unwrap_or(f64::NAN),
        percentile(&ratios, 97.5).unwrap_or(f64::NAN),
    )
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    numerator / denominator
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kernel {
    /// This machine's kernel: no VRF, so the chains are bridge + veth.
    Host,
    /// Debian's kernel in the VM: the full chains with VRF.
    Vm,
}

#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Pod,
    Network,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Pod => "pod",
            Scope::Network => "network",
        }
    }
}

/// One timed run of the libcni driver: the libcni call and each plugin process, in µs.
struct Timing {
    wall_us: f64,
    plugins: Vec<(String, f64)>,
}

/// Runs `verb` through the libcni driver and returns the driver's own timing of the libcni
/// call (the driver's start-up, which a long-lived runtime does not pay, is left out).
fn timed_cni(
    node: &Node,
    verb: &str,
    conflist: &Path,
    id: &str,
    pod: &Pod,
    extra: &[&str],
) -> Timing {
    let timing_file = node.dir.join(format!("timing-{id}-{verb}.json"));
    let timing_arg = timing_file.display().to_string();
    let mut args = vec!["--timing", timing_arg.as_str()];
    args.extend_from_slice(extra);
    let outcome = node.cni_with(verb, conflist, id, &pod.netns_path(), &args);
    outcome.ok();
    let line = std::fs::read_to_string(&timing_file).expect("the driver wrote its timing");
    let _ = std::fs::remove_file(&timing_file);
    let record: Value = serde_json::from_str(line.trim()).expect("timing is JSON");
    Timing {
        wall_us: record["wallUs"].as_f64().expect("wallUs"),
        plugins: record["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["plugin"].as_str().unwrap_or_default().to_string(),
                    p["wallUs"].as_f64().unwrap_or_default(),
                )
            })
            .collect(),
    }
}

/// Runs `ip -n NAMESPACE -batch -` with `commands` on stdin; returns nothing, panics on failure.
fn ip_batch(namespace: &str, commands: &str) {
    let mut child = Command::new("ip")
        .args(["-n", namespace, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(commands.as_bytes())
        .expect("ip reads its batch");
    let output = child.wait_with_output().expect("ip ends");
    assert!(
        output.status.success(),
        "ip -n {namespace} -batch failed on\n{commands}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ipam(subnet: &str, gateway: &str) -> Value {
    json!({ "type": "host-local", "ranges": [[{ "subnet": subnet, "gateway": gateway }]],
            "routes": [{ "dst": "0.0.0.0/0" }] })
}

fn krafty_conflist(
    kernel: Kernel,
    scope: Scope,
    network: &str,
    subnet: &str,
    gateway: &str,
) -> Value {
    let mut plugins = vec![
        json!({ "type": "krafty-bridge", "scope": scope.name(), "subnet": subnet, "gateway": gateway }),
        json!({ "type": "krafty-veth", "ipam": ipam(subnet, gateway) }),
    ];
    if kernel == Kernel::Vm {
        plugins.insert(0, json!({ "type": "krafty-vrf", "scope": scope.name() }));
    }
    json!({ "cniVersion": "1.0.0", "name": network, "plugins": plugins })
}

/// The reference chain: `bridge` (+ `vrf` in the VM) with host-local, one bridge per
/// attachment in pod scope (named like krafty's, with another prefix), one shared otherwise.
fn reference_conflist(kernel: Kernel, bridge: &str, id: &str) -> Value {
    reference_conflist_in(kernel, bridge, id, SUBNET, GATEWAY)
}

fn reference_conflist_in(
    kernel: Kernel,
    bridge: &str,
    id: &str,
    subnet: &str,
    gateway: &str,
) -> Value {
    let mut plugins = vec![json!({
        "type": "bridge", "bridge": bridge, "isGateway": true, "ipam": ipam(subnet, gateway)
    })];
    if kernel == Kernel::Vm {
        plugins.push(json!({ "type": "vrf", "vrfname": format!("rfv{}", &id[..12]) }));
    }
    json!({ "cniVersion": "1.0.0", "name": "reference", "plugins": plugins })
}

fn reference_bridge(scope: Scope, id: &str) -> String {
    match scope {
        Scope::Pod => format!("rfb{}", &id[..12]),
        Scope::Network => "rfbshared".into(),
    }
}

/// The floor's node side: the VRF and bridge (pod scope) and the veth pair with its pod end
/// created inside the pod, on the bridge and up. `vrf_table` is `None` without VRF.
fn floor_node_add(scope: Scope, id: &str, pod: &Pod, vrf_table: Option<u32>) -> String {
    let (vrf, bridge, veth) = floor_names(scope, id);
    let mut batch = String::new();
    if scope == Scope::Pod {
        batch += &floor_devices(&vrf, &bridge, vrf_table);
    }
    batch += &format!(
        "link add {veth} master {bridge} up type veth peer name net1 netns {}\n",
        pod.name
    );
    batch
}

fn floor_devices(vrf: &str, bridge: &str, vrf_table: Option<u32>) -> String {
    let mut batch = String::new();
    let mut master = String::new();
    if let Some(table) = vrf_table {
        batch += &format!("link add {vrf} type vrf table {table}\nlink set {vrf} up\n");
        master = format!(" master {vrf}");
    }
    batch += &format!(
        "link add {bridge}{master} type bridge\naddr add {GATEWAY}/24 dev {bridge}\nlink set {bridge} up\n"
    );
    batch
}

/// The floor's pod side: address, link up, default route (what IPAM's result makes the chain do).
fn floor_pod_add(address: &str) -> String {
    format!(
        "addr add {address}/24 dev net1\nlink set net1 up\nroute add default via {GATEWAY} metric 4096\n"
    )
}

fn floor_del(scope: Scope, id: &str, with_vrf: bool) -> String {
    let (vrf, bridge, veth) = floor_names(scope, id);
    let mut batch = format!("link del {veth}\n");
    if scope == Scope::Pod {
        batch += &format!("link del {bridge}\n");
        if with_vrf {
            batch += &format!("link del {vrf}\n");
        }
    }
    batch
}

/// (VRF, bridge, host veth) of the floor: krafty's names for this ID.
fn floor_names(scope: Scope, id: &str) -> (String, String, String) {
    match scope {
        Scope::Pod => (
            naming::vrf_name(id, "net1"),
            naming::bridge_name(id, "net1"),
            naming::host_veth_name(id, "net1"),
        ),
        Scope::Network => (
            "flvshared".into(),
            "flbshared".into(),
            naming::host_veth_name(id, "net1"),
        ),
    }
}

#[derive(Default)]
struct Series {
    add: Vec<f64>,
    del: Vec<f64>,
    /// Per plugin and verb, each plugin process's wall time.
    plugins: BTreeMap<String, Vec<f64>>,
    /// Pod scope, reference only: each DEL plus the deletion of the bridge it leaves, so that
    /// the reference is also measured doing the same work as krafty's DEL.
    del_with_bridge_removal: Vec<f64>,
}

impl Series {
    fn record(&mut self, verb: &str, timing: Timing) {
        match verb {
            "add" => self.add.push(timing.wall_us),
            _ => self.del.push(timing.wall_us),
        }
        for (plugin, wall) in timing.plugins {
            self.plugins
                .entry(format!("{plugin} {}", verb.to_uppercase()))
                .or_default()
                .push(wall);
        }
    }

    fn to_json(&self) -> Value {
        let mut value =
            json!({ "add_us": self.add, "del_us": self.del, "plugins_us": self.plugins });
        if !self.del_with_bridge_removal.is_empty() {
            value[SAME_WORK_DEL] = json!(self.del_with_bridge_removal);
        }
        value
    }
}

/// The main comparison in one scope: `cycles` ADD/DEL cycles of each variant, interleaved,
/// the order of the three rotating from cycle to cycle.
fn compare(kernel: Kernel, scope: Scope, cycles: usize) -> Value {
    let with_vrf = kernel == Kernel::Vm;
    let (krafty_node, reference_node, floor_node) = (Node::new(), Node::new(), Node::new());
    let (krafty_pod, reference_pod, floor_pod) = (
        krafty_node.pod("k"),
        reference_node.pod("r"),
        floor_node.pod("f"),
    );
    let krafty_list =
        krafty_node.conflist(krafty_conflist(kernel, scope, "krafty", SUBNET, GATEWAY));
    let shared_reference_list = (scope == Scope::Network)
        .then(|| reference_node.conflist(reference_conflist(kernel, "rfbshared", &container_id())));
    if scope == Scope::Network {
        let (vrf, bridge, _) = floor_names(scope, "");
        ip_batch(
            &floor_node.name,
            &floor_devices(&vrf, &bridge, with_vrf.then_some(100_001)),
        );
    }
    let mut series: [Series; 3] = Default::default();
    for cycle in 0..cycles {
        for turn in 0..3 {
            let variant = (cycle + turn) % 3;
            let id = container_id();
            match variant {
                0 => {
                    for verb in ["add", "del"] {
                        let timing =
                            timed_cni(&krafty_node, verb, &krafty_list, &id, &krafty_pod, &[]);
                        series[0].record(verb, timing);
                    }
                }
                1 => {
                    let bridge = reference_bridge(scope, &id);
                    let list = shared_reference_list.clone().unwrap_or_else(|| {
                        reference_node.conflist(reference_conflist(kernel, &bridge, &id))
                    });
                    for verb in ["add", "del"] {
                        let timing =
                            timed_cni(&reference_node, verb, &list, &id, &reference_pod, &[]);
                        series[1].record(verb, timing);
                    }
                    if scope == Scope::Pod {
                        // The reference bridge plugin leaves its bridge on DEL. Its removal is
                        // timed apart: the reference's DEL is reported both as the plugin does
                        // it and with the bridge gone, which is the work krafty's DEL does.
                        let start = Instant::now();
                        reference_node.ip(&["link", "del", &bridge]);
                        let removal = start.elapsed().as_secs_f64() * 1e6;
                        let del = series[1].del.last().copied().unwrap_or(f64::NAN);
                        series[1].del_with_bridge_removal.push(del + removal);
                        let _ = std::fs::remove_file(list);
                    }
                }
                _ => {
                    let address = format!("172.16.10.{}", 10 + cycle % 200);
                    let table = with_vrf.then_some(100_100 + cycle as u32);
                    let node_batch = floor_node_add(scope, &id, &floor_pod, table);
                    let pod_batch = floor_pod_add(&address);
                    let del_batch = floor_del(scope, &id, with_vrf);
                    let start = Instant::now();
                    ip_batch(&floor_node.name, &node_batch);
                    ip_batch(&floor_pod.name, &pod_batch);
                    series[2].add.push(start.elapsed().as_secs_f64() * 1e6);
                    let start = Instant::now();
                    ip_batch(&floor_node.name, &del_batch);
                    series[2].del.push(start.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
    }
    json!({
        "scope": scope.name(),
        "krafty": series[0].to_json(),
        "reference": series[1].to_json(),
        "floor": series[2].to_json(),
    })
}

/// A pod's second attachment against its first, in `scope`: `cycles` rounds, each an ADD and
/// DEL of net1 in an empty pod and of net2 in a pod that holds net1 on another network, the
/// two taking turns (issue 13: the second costs what the first does).
fn second_attachment(kernel: Kernel, scope: Scope, cycles: usize) -> Value {
    let node = Node::new();
    let (empty, holding) = (node.pod("e"), node.pod("h"));
    let measured = node.conflist(krafty_conflist(kernel, scope, "krafty", SUBNET, GATEWAY));
    let other = node.conflist(krafty_conflist(
        kernel,
        scope,
        "held",
        "172.16.11.0/24",
        "172.16.11.1",
    ));
    let holder = container_id();
    node.cni("add", &other, &holder, &holding.netns_path()).ok();
    let mut series: [Series; 2] = Default::default();
    for cycle in 0..cycles {
        for turn in 0..2 {
            let which = (cycle + turn) % 2;
            let (id, pod, extra): (String, &Pod, &[&str]) = match which {
                0 => (container_id(), &empty, &[]),
                _ => (holder.clone(), &holding, &["--ifname", "net2"]),
            };
            for verb in ["add", "del"] {
                series[which].record(verb, timed_cni(&node, verb, &measured, &id, pod, extra));
            }
        }
    }
    node.cni("del", &other, &holder, &holding.netns_path()).ok();
    json!({ "first": series[0].to_json(), "second": series[1].to_json() })
}

/// What the kernel charges for deleting devices, each case timed around one `ip link del`
/// (`ip`'s start-up included, as in the floor) right after the devices were made: the yardstick
/// for "pod-scope DEL near the cost of one device". The cases take turns, round by round.
fn deletion_costs(kernel: Kernel) -> Value {
    let node = Node::new();
    let pod = node.pod("d");
    let (group, peer) = (
        DELETION_GROUP,
        format!("peer name kd-peer netns {}", pod.name),
    );
    let bridge = "type bridge mcast_snooping 0";
    let mut cases: Vec<(&str, String, String)> = vec![
        (
            "a veth (its peer in the pod)",
            format!("link add kd-veth up type veth {peer}\n"),
            "link del kd-veth\n".into(),
        ),
        (
            "an empty bridge",
            format!("link add kd-br {bridge}\nlink set kd-br up\n"),
            "link del kd-br\n".into(),
        ),
        (
            "a bridge and a veth on it, by group",
            format!(
                "link add kd-br group {group} {bridge}\nlink set kd-br up\n\
                 link add kd-veth group {group} master kd-br up type veth {peer}\n"
            ),
            format!("link del group {group}\n"),
        ),
    ];
    if kernel == Kernel::Vm {
        cases.push((
            "a VRF",
            "link add kd-vrf type vrf table 4242\nlink set kd-vrf up\n".into(),
            "link del kd-vrf\n".into(),
        ));
        cases.push((
            "a VRF, a bridge in it and a veth on the bridge, by group",
            format!(
                "link add kd-vrf group {group} type vrf table 4242\nlink set kd-vrf up\n\
                 link add kd-br group {group} master kd-vrf {bridge}\nlink set kd-br up\n\
                 link add kd-veth group {group} master kd-br up type veth {peer}\n"
            ),
            format!("link del group {group}\n"),
        ));
    }
    let mut costs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let rounds = match kernel {
        Kernel::Host => DELETION_ROUNDS,
        Kernel::Vm => DELETION_ROUNDS_VM,
    };
    for round in 0..rounds {
        for turn in 0..cases.len() {
            let (label, create, delete) = &cases[(round + turn) % cases.len()];
            ip_batch(&node.name, create);
            let start = Instant::now();
            ip_batch(&node.name, delete);
            costs
                .entry(label)
                .or_default()
                .push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    json!(costs)
}

/// Peak RSS of every plugin process: a few cycles of both chains with each plugin replaced by
/// tools/bench/maxrss (built by scripts/bench.sh at KRAFTY_BENCH_MAXRSS).
fn peak_rss(kernel: Kernel, cycles: usize) -> Value {
    let maxrss = std::env::var("KRAFTY_BENCH_MAXRSS").expect("KRAFTY_BENCH_MAXRSS is set");
    let node = Node::new();
    let wrapped = node.dir.join("wrapped");
    std::fs::create_dir_all(wrapped.join("real")).expect("wrapper dir");
    for plugin in KRAFTY_PLUGINS {
        wrap(&wrapped, plugin, &bin_dir().join(plugin), &maxrss);
    }
    for plugin in REFERENCE_PLUGINS {
        wrap(
            &wrapped,
            plugin,
            &Path::new(REFERENCE_PLUGIN_DIR).join(plugin),
            &maxrss,
        );
    }
    let log = node.dir.join("maxrss.log");
    // The plugins inherit the driver's environment, which inherits ours.
    std::env::set_var("KRAFTY_BENCH_RSS_LOG", &log);
    let cni_path = wrapped.display().to_string();
    let extra = ["--cni-path", cni_path.as_str()];
    let pod = node.pod("rss");
    for scope in [Scope::Pod, Scope::Network] {
        let krafty = node.conflist(krafty_conflist(kernel, scope, "krafty", SUBNET, GATEWAY));
        for _ in 0..cycles.min(RSS_CYCLES) {
            let id = container_id();
            let bridge = reference_bridge(scope, &id);
            let reference = node.conflist(reference_conflist(kernel, &bridge, &id));
            for (list, remove) in [(&krafty, None), (&reference, Some(&bridge))] {
                for verb in ["add", "del"] {
                    timed_cni(&node, verb, list, &id, &pod, &extra);
                }
                if let (Some(bridge), Scope::Pod) = (remove, scope) {
                    node.ip(&["link", "del", bridge]);
                }
            }
        }
    }
    std::env::remove_var("KRAFTY_BENCH_RSS_LOG");
    let mut peaks: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in std::fs::read_to_string(&log).expect("maxrss log").lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [plugin, command, kib] = fields[..] {
            peaks
                .entry(format!("{plugin} {command}"))
                .or_default()
                .push(kib.parse().expect("KiB"));
        }
    }
    json!(peaks)
}

fn wrap(dir: &Path, plugin: &str, real: &Path, maxrss: &str) {
    std::fs::copy(maxrss, dir.join(plugin)).expect("copy the wrapper");
    std::os::unix::fs::symlink(real, dir.join("real").join(plugin)).expect("link the plugin");
}

/// One more pod on a network that already has 1, 100 or 500 attachments. Each level is a
/// network on a node namespace of its own, all made up front and left alone for
/// [`SCALE_SETTLE`]; then the levels take turns probe by probe, in rotating order, so that
/// drift on the machine during the probes falls on every level alike instead of on whichever
/// level was measured last.
fn scale(kernel: Kernel) -> Value {
    struct Level {
        node: Node,
        list: PathBuf,
        probe: Pod,
        _existing: Vec<Pod>,
        series: Series,
    }
    let mut levels: Vec<Level> = SCALE_LEVELS
        .iter()
        .map(|&count| {
            let node = Node::new();
            let list = node.conflist(krafty_conflist(
                kernel,
                Scope::Network,
                "scale",
                SCALE_SUBNET,
                SCALE_GATEWAY,
            ));
            let existing: Vec<Pod> = (0..count)
                .map(|i| {
                    let pod = node.pod(&format!("s{i}"));
                    timed_cni(&node, "add", &list, &container_id(), &pod, &[]);
                    pod
                })
                .collect();
            eprintln!("krafty-bench: scale level {count} made");
            let probe = node.pod("probe");
            Level {
                node,
                list,
                probe,
                _existing: existing,
                series: Series::default(),
            }
        })
        .collect();
    std::thread::sleep(SCALE_SETTLE);
    for round in 0..SCALE_PROBES {
        for turn in 0..levels.len() {
            let count = levels.len();
            let level = &mut levels[(round + turn) % count];
            let id = container_id();
            for verb in ["add", "del"] {
                let timing = timed_cni(&level.node, verb, &level.list, &id, &level.probe, &[]);
                level.series.record(verb, timing);
            }
        }
    }
    json!(SCALE_LEVELS
        .iter()
        .zip(&levels)
        .map(|(count, level)| json!({ "existing": count, "series": level.series.to_json() }))
        .collect::<Vec<_>>())
}

/// 32 ADDs at once (then their DELs at once) through separate driver processes.
fn concurrent(kernel: Kernel) -> Value {
    let mut results = Vec::new();
    for round in 0..CONCURRENT_ROUNDS {
        for (variant, scope) in [
            ("krafty", Scope::Pod),
            ("reference", Scope::Pod),
            ("krafty", Scope::Network),
            ("reference", Scope::Network),
        ] {
            let node = Node::new();
            let pods: Vec<Pod> = (0..CONCURRENT_ADDS)
                .map(|i| node.pod(&format!("c{i}")))
                .collect();
            let ids: Vec<String> = pods.iter().map(|_| container_id()).collect();
            let lists: Vec<PathBuf> = ids
                .iter()
                .enumerate()
                .map(|(index, id)| {
                    let (subnet, gateway) = concurrent_subnet(kernel, scope, index);
                    node.conflist(match variant {
                        "krafty" => krafty_conflist(kernel, scope, "krafty", &subnet, &gateway),
                        _ => reference_conflist_in(
                            kernel,
                            &reference_bridge(scope, id),
                            id,
                            &subnet,
                            &gateway,
                        ),
                    })
                })
                .collect();
            let mut entry = json!({ "variant": variant, "scope": scope.name(), "round": round });
            for verb in ["add", "del"] {
                let start = Instant::now();
                let latencies: Vec<f64> = std::thread::scope(|threads| {
                    let handles: Vec<_> = pods
                        .iter()
                        .zip(&ids)
                        .zip(&lists)
                        .map(|((pod, id), list)| {
                            let node = &node;
                            threads.spawn(move || timed_cni(node, verb, list, id, pod, &[]).wall_us)
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("a concurrent invocation"))
                        .collect()
                });
                entry[format!("{verb}_us")] = json!(latencies);
                entry[format!("{verb}_total_us")] = json!(start.elapsed().as_secs_f64() * 1e6);
            }
            results.push(entry);
        }
    }
    json!(results)
}

/// The subnet and gateway of the `index`th concurrent pod. Without a VRF each pod-scope bridge
/// would put the same gateway in the main table, which krafty refuses (one pod per node), so
/// there every pod gets a subnet of its own, for the reference too.
fn concurrent_subnet(kernel: Kernel, scope: Scope, index: usize) -> (String, String) {
    if kernel == Kernel::Host && scope == Scope::Pod {
        (format!("172.18.{index}.0/24"), format!("172.18.{index}.1"))
    } else {
        (SUBNET.into(), GATEWAY.into())
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn environment() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    json!({
        "kernel": command_output("uname", &["-r"]),
        "cpu": cpu,
        "cpus": command_output("nproc", &[]),
        "memory": memory,
        "iproute2": command_output("ip", &["-V"]),
        // What was measured, taken when it was measured.
        "versions": command_output(
            "sh",
            &[
                "-c",
                "echo \"krafty $(git describe --always --dirty), $(rustc -V), \
                 $(go version | cut -d' ' -f3), libcni $(dpkg-query -W -f '${Version}' \
                 golang-github-appc-cni-dev), containernetworking-plugins $(dpkg-query -W -f \
                 '${Version}' containernetworking-plugins)\""
            ]
        ),
    })
}

fn run(flags: &BTreeMap<String, String>) {
    let kernel = match required(flags, "kernel") {
        "host" => Kernel::Host,
        "vm" => Kernel::Vm,
        other => panic!("--kernel host|vm, not {other}"),
    };
    let cycles: usize = required(flags, "cycles").parse().expect("--cycles N");
    let with_scale = flags.get("scale").is_none_or(|v| v == "yes");
    let with_concurrent = flags.get("concurrent").is_none_or(|v| v == "yes");
    let mut results = json!({
        "environment": environment(),
        "cycles": cycles,
        "sizes": binary_sizes(),
    });
    for scope in [Scope::Pod, Scope::Network] {
        eprintln!("krafty-bench: {cycles} cycles in {} scope", scope.name());
        results["compare"][scope.name()] = compare(kernel, scope, cycles);
        eprintln!(
            "krafty-bench: a pod's second attachment, {} scope",
            scope.name()
        );
        results["second_attachment"][scope.name()] = second_attachment(kernel, scope, cycles);
    }
    eprintln!("krafty-bench: the kernel's cost of deleting devices");
    results["deletion_us"] = deletion_costs(kernel);
    eprintln!("krafty-bench: peak RSS");
    results["rss_kib"] = peak_rss(kernel, cycles);
    if with_concurrent {
        eprintln!("krafty-bench: {CONCURRENT_ADDS} concurrent ADDs");
        results["concurrent"] = concurrent(kernel);
    }
    if with_scale {
        eprintln!("krafty-bench: scale");
        results["scale"] = scale(kernel);
    }
    if flags
        .get("multinode")
        .map_or(kernel == Kernel::Host, |v| v == "yes")
    {
        let rounds: usize = flags
            .get("multinode-rounds")
            .map_or(10, |n| n.parse().expect("--multinode-rounds N"));
        let counts = multinode::Counts {
            throughput_rounds: rounds,
            throughput_seconds: 2,
            ping_rounds: rounds,
            add_cycles: cycles,
            peer_events: flags
                .get("peer-events")
                .map_or(20, |n| n.parse().expect("--peer-events N")),
        };
        let start = Instant::now();
        results["multinode"] = multinode::measure(&counts);
        results["multinode"]["took_s"] = json!(start.elapsed().as_secs_f64());
    }
    let out = required(flags, "out");
    std::fs::write(out, serde_json::to_vec_pretty(&results).expect("JSON")).expect("write results");
    eprintln!("krafty-bench: wrote {out}");
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn samples(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

fn report(flags: &BTreeMap<String, String>) {
    let read = |path: &str| -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}")))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let host = read(required(flags, "host"));
    let vm = flags.get("vm").map(|path| read(path));
    let analysis = flags
        .get("analysis")
        .map(|path| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_default();
    let plot = flags.get("plot").cloned().unwrap_or_default();
    let mut doc = String::new();
    doc += "# Benchmarks\n\n";
    doc += "Generated by `make bench` (`scripts/bench.sh`) from a real run; do not edit by hand \
            (the prose under \"Where the time goes\" comes from `tools/bench/analysis.md`). \
            Rerun with `make bench` (`KRAFTY_BENCH_CYCLES`, `KRAFTY_BENCH_VM_CYCLES` set the \
            cycle counts).\n\n";
    doc += &method(&host, vm.as_ref());
    if !plot.is_empty() {
        doc += &format!("![Latency distributions]({plot})\n\n");
    }
    doc += &targets(&host);
    doc += "## This machine's kernel (no VRF): krafty-bridge + krafty-veth vs `bridge`\n\n";
    doc += &kernel_section(&host);
    if host["multinode"].is_object() {
        doc += &multinode::section(&host["multinode"]);
    }
    if let Some(vm) = &vm {
        doc += "## Debian's kernel in the VM (VRF): the full chain vs `bridge` + `vrf`\n\n";
        doc += "Under qemu software emulation (TCG) every instruction is emulated, so absolute \
                numbers are several times the host's; compare the ratios.\n\n";
        doc += &kernel_section(vm);
    }
    doc += &sizes(&host);
    doc += &analysis;
    let out = required(flags, "out");
    std::fs::write(out, doc).expect("write the report");
    eprintln!("krafty-bench: wrote {out}");
}

fn method(host: &Value, vm: Option<&Value>) -> String {
    let mut text = String::from("## Setup\n\n");
    let describe = |label: &str, results: &Value| {
        let env = &results["environment"];
        format!(
            "- **{label}**: kernel `{}`, {} × {} ({}), `{}`; {} cycles per variant and scope\n",
            env["kernel"].as_str().unwrap_or_default(),
            env["cpus"].as_str().unwrap_or_default(),
            env["cpu"].as_str().unwrap_or_default(),
            env["memory"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            env["iproute2"].as_str().unwrap_or_default(),
            results["cycles"],
        )
    };
    text += &describe("host", host);
    if let Some(vm) = vm {
        text += &describe("VM (qemu TCG, virtme-ng)", vm);
    }
    text += &format!(
        "- versions: {}\n\n",
        host["environment"]["versions"].as_str().unwrap_or_default()
    );
    text += "The krafty plugins are measured as they ship (installer/Dockerfile): release builds, \
             stripped, statically linked against musl (`--target x86_64-unknown-linux-musl`), \
             as the reference plugins are static Go binaries.\n\n";
    text += "Each cycle is one ADD then one DEL of a fresh container ID on a hermetic node \
             namespace (a reused pod namespace per variant), for three variants taken in \
             rotating order so that noise from other work on this shared 2-core machine \
             falls on all three alike:\n\n\
             - **krafty**: the krafty chain through libcni (`tools/cnidriver`), host-local IPAM. \
             The time is the libcni call as the driver measures it (`--timing`), so the Go \
             driver's own start-up, which a long-lived runtime does not pay per pod, is left out; \
             every plugin process's start-up is in.\n\
             - **reference**: Debian's `bridge` (`isGateway`, host-local IPAM, in the VM \
             followed by `vrf`), through the same driver. In pod scope each attachment gets its \
             own bridge, as krafty's does; `bridge` leaves it on DEL, so it is then removed with \
             `ip link del`, timed on its own: the reference's DEL is reported as the plugin \
             does it, and added to that removal as the reference doing the same work as \
             krafty's DEL, which removes the bridge.\n\
             - **floor**: the same kernel work without plugins or IPAM, timed around \
             `ip -n NODE -batch -` (the VRF and bridge in pod scope, the veth pair created with \
             its peer directly inside the pod as `net1`, on the bridge, up) followed by \
             `ip -n POD -batch -` (address, link up, default route); DEL is one `ip -batch` \
             deleting the host veth (and the bridge and VRF in pod scope), one device per line. \
             iproute2 6.1's batch mode cannot switch namespaces per line, so the floor is two \
             `ip` processes for ADD, one for DEL.\n\n\
             Scopes: **pod** (default: a VRF and bridge per attachment, DEL removes them) and \
             **network** (one shared VRF and bridge per network, DEL removes the veth only).\n\n";
    text
}

fn series_of<'a>(results: &'a Value, scope: &str, variant: &str) -> &'a Value {
    &results["compare"][scope][variant]
}

fn p50(results: &Value, scope: &str, variant: &str, verb: &str) -> f64 {
    summary(&samples(
        &series_of(results, scope, variant)[format!("{verb}_us")],
    ))[0]
}

fn targets(host: &Value) -> String {
    let mut text = String::from(
        "## Targets (this machine's kernel)\n\n\
         In brackets: a 95% interval for the ratio of the two medians, by bootstrap (2000 \
         resamples of both sides), to show how much of a ratio is this run's noise.\n\n\
         | target | measured | verdict |\n|---|---|---|\n",
    );
    // (verb, baseline variant, the largest krafty/baseline ratio the target allows)
    let latency_targets = [
        ("add", "reference", 0.5),
        ("add", "floor", 2.0),
        ("del", "reference", 0.8),
        ("del", "floor", 1.25),
    ];
    for scope in ["pod", "network"] {
        for (verb, baseline, bound) in latency_targets {
            let key = format!("{verb}_us");
            let krafty = samples(&series_of(host, scope, "krafty")[&key]);
            let baseline_series = series_of(host, scope, baseline);
            let label = format!(
                "{} p50 ≤ {bound} × {baseline} ({scope} scope)",
                verb.to_uppercase()
            );
            text += &ratio_row(&label, &krafty, &samples(&baseline_series[&key]), bound);
            if verb == "del" && baseline_series[SAME_WORK_DEL].is_array() {
                let label = format!(
                    "DEL p50 ≤ {bound} × {baseline} doing the same work ({scope} scope: its DEL, \
                     then the bridge it leaves deleted with `ip link del`, both timed)"
                );
                text += &ratio_row(
                    &label,
                    &krafty,
                    &samples(&baseline_series[SAME_WORK_DEL]),
                    bound,
                );
            }
        }
    }
    for scope in ["pod", "network"] {
        let pair = &host["second_attachment"][scope];
        for verb in ["add", "del"] {
            let key = format!("{verb}_us");
            let (second, first) = (
                samples(&pair["second"][&key]),
                samples(&pair["first"][&key]),
            );
            if second.is_empty() || first.is_empty() {
                continue;
            }
            text += &within_row(
                &format!(
                    "a pod's second attachment: {} p50 within 10% of its first ({scope} scope)",
                    verb.to_uppercase()
                ),
                &second,
                &first,
                0.1,
            );
        }
    }
    if let Some((device, cost)) = dearest_single_deletion(host) {
        let krafty = p50(host, "pod", "krafty", "del");
        text += &format!(
            "| DEL p50 near the cost of deleting one device (pod scope; \"near\" read as ≤ 1.25 ×, \
             the floor's bound) | {} ms / {device} {} ms = {:.2} | {} |\n",
            ms(krafty),
            ms(cost),
            ratio(krafty, cost),
            verdict(ratio(krafty, cost) <= 1.25)
        );
    }
    for plugin in KRAFTY_PLUGINS {
        let size = recorded_size(host, "krafty", plugin);
        text += &format!(
            "| {plugin} ≤ 1.5 MB stripped | {:.2} MB ({size} bytes) | {} |\n",
            size as f64 / 1e6,
            verdict(size as f64 <= 1.5e6)
        );
    }
    let peak = host["rss_kib"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.starts_with("krafty-"))
        .flat_map(|(_, v)| samples(v))
        .fold(0.0, f64::max);
    text += &format!(
        "| peak RSS of a krafty plugin invocation ≤ 4 MB | {:.2} MB ({peak} KiB) | {} |\n",
        peak * 1024.0 / 1e6,
        verdict(peak * 1024.0 <= 4e6)
    );
    if let Some(levels) = host["scale"].as_array() {
        let at = |i: usize| summary(&samples(&levels[i]["series"]["add_us"]))[0];
        let (one, last) = (at(0), at(levels.len() - 1));
        text += &format!(
            "| ADD p50 at {} attachments ≤ 1.2 × at {} | {} / {} ms = {:.2} | {} |\n",
            levels[levels.len() - 1]["existing"],
            levels[0]["existing"],
            ms(last),
            ms(one),
            ratio(last, one),
            verdict(ratio(last, one) <= 1.2)
        );
    }
    if host["multinode"].is_object() {
        text += &multinode::target_rows(&host["multinode"]);
    }
    text += "\n";
    text
}

/// `| target | medians and their ratio [95% interval] | verdict |` for krafty's samples against
/// a baseline's, met when the ratio of the medians is at most `bound`.
fn ratio_row(label: &str, krafty: &[f64], baseline: &[f64], bound: f64) -> String {
    let (krafty_p50, baseline_p50) = (summary(krafty)[0], summary(baseline)[0]);
    let (low, high) = median_ratio_interval(krafty, baseline);
    let noise = if low <= bound && bound <= high {
        " (the bound is inside the interval)"
    } else {
        ""
    };
    let measured = ratio(krafty_p50, baseline_p50);
    format!(
        "| {label} | {} / {} ms = {measured:.2} [{low:.2}, {high:.2}] | {}{noise} |\n",
        ms(krafty_p50),
        ms(baseline_p50),
        verdict(measured <= bound)
    )
}

/// `| target | medians and their ratio [95% interval] | verdict |`, met when the ratio of the
/// medians is within `tolerance` of 1 on either side.
fn within_row(label: &str, measured: &[f64], baseline: &[f64], tolerance: f64) -> String {
    let (measured_p50, baseline_p50) = (summary(measured)[0], summary(baseline)[0]);
    let (low, high) = median_ratio_interval(measured, baseline);
    let value = ratio(measured_p50, baseline_p50);
    format!(
        "| {label} | {} / {} ms = {value:.2} [{low:.2}, {high:.2}] | {} |\n",
        ms(measured_p50),
        ms(baseline_p50),
        verdict((value - 1.0).abs() <= tolerance)
    )
}

/// `| label | ADD p50 | p90 | p99 | DEL p50 | p90 | p99 |` of one series of samples.
fn latency_row(label: &str, series: &Value) -> String {
    let row: Vec<String> = ["add_us", "del_us"]
        .iter()
        .flat_map(|verb| summary(&samples(&series[verb])))
        .map(ms)
        .collect();
    format!("| {label} | {} |\n", row.join(" | "))
}

fn kernel_section(results: &Value) -> String {
    let mut text = String::new();
    for scope in ["pod", "network"] {
        text += &format!(
            "### {scope} scope: latency (ms)\n\n| variant | ADD p50 | ADD p90 | ADD p99 | DEL p50 | DEL p90 | DEL p99 |\n|---|---|---|---|---|---|---|\n"
        );
        for variant in ["krafty", "reference", "floor"] {
            text += &latency_row(variant, series_of(results, scope, variant));
        }
        let same_work = samples(&series_of(results, scope, "reference")[SAME_WORK_DEL]);
        if !same_work.is_empty() {
            let [d50, d90, d99] = summary(&same_work).map(ms);
            text += &format!(
                "| reference, then the bridge it leaves deleted (`ip link del`) | | | | {d50} | {d90} | {d99} |\n"
            );
        }
        text += "\n| p50 ratio | ADD | DEL |\n|---|---|---|\n";
        for (label, other) in [
            ("krafty / reference", "reference"),
            ("krafty / floor", "floor"),
        ] {
            text += &format!(
                "| {label} | {:.2} | {:.2} |\n",
                ratio(
                    p50(results, scope, "krafty", "add"),
                    p50(results, scope, other, "add")
                ),
                ratio(
                    p50(results, scope, "krafty", "del"),
                    p50(results, scope, other, "del")
                )
            );
        }
        if !same_work.is_empty() {
            text += &format!(
                "| krafty / reference doing the same work | | {:.2} |\n",
                ratio(p50(results, scope, "krafty", "del"), summary(&same_work)[0])
            );
        }
        text += "\nWall time of each plugin process within the libcni call (ms, p50; DEL runs the chain in reverse):\n\n| plugin | p50 | p90 |\n|---|---|---|\n";
        for variant in ["krafty", "reference"] {
            for (plugin, walls) in series_of(results, scope, variant)["plugins_us"]
                .as_object()
                .into_iter()
                .flatten()
            {
                let [w50, w90, _] = summary(&samples(walls));
                text += &format!("| {variant}: {plugin} | {} | {} |\n", ms(w50), ms(w90));
            }
        }
        text += "\n";
    }
    if results["deletion_us"].is_object() {
        text += &deletion_table(results);
    }
    text += "### Peak RSS per plugin process (KiB, max over the invocations)\n\n| plugin | command | invocations | peak RSS |\n|---|---|---|---|\n";
    for (key, values) in results["rss_kib"].as_object().into_iter().flatten() {
        let values = samples(values);
        let (plugin, command) = key.split_once(' ').unwrap_or((key, ""));
        text += &format!(
            "| {plugin} | {command} | {} | {} |\n",
            values.len(),
            values.iter().copied().fold(0.0, f64::max)
        );
    }
    text += "\n(Measured with `tools/bench/maxrss`, a static wrapper that runs the plugin and \
             reads `ru_maxrss` from `wait4`. host-local appears as the IPAM child of \
             `krafty-veth` and `bridge`.)\n\n";
    if results["concurrent"].is_array() {
        text += &concurrent_table(results);
    }
    if let Some(levels) = results["scale"].as_array() {
        text += &scale_table(levels);
    }
    text
}

/// The kernel's price of each deletion, and pod-scope DEL against the dearest single device.
fn deletion_table(results: &Value) -> String {
    let mut text = String::from(
        "### What the kernel charges for a deletion (one `ip link del`, ms)\n\n\
         | deleted | p50 | p90 | p99 |\n|---|---|---|---|\n",
    );
    for (label, values) in results["deletion_us"].as_object().into_iter().flatten() {
        let [d50, d90, d99] = summary(&samples(values));
        text += &format!("| {label} | {} | {} | {} |\n", ms(d50), ms(d90), ms(d99));
    }
    if let Some((device, cost)) = dearest_single_deletion(results) {
        let krafty = p50(results, "pod", "krafty", "del");
        text += &format!(
            "\nkrafty's pod-scope DEL (p50 {} ms: the whole chain, its devices in one batch, the \
             address, the record, every plugin process) against the dearest single device, {device} \
             (p50 {} ms): {:.2}.\n",
            ms(krafty),
            ms(cost),
            ratio(krafty, cost)
        );
    }
    text + "\n"
}

/// The single device whose deletion costs most (p50), with that cost.
fn dearest_single_deletion(results: &Value) -> Option<(String, f64)> {
    results["deletion_us"]
        .as_object()?
        .iter()
        .filter(|(label, _)| !label.contains(" by group"))
        .map(|(label, values)| (label.clone(), summary(&samples(values))[0]))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn concurrent_table(results: &Value) -> String {
    let mut text = format!(
        "### {CONCURRENT_ADDS} concurrent ADDs, then {CONCURRENT_ADDS} concurrent DELs ({CONCURRENT_ROUNDS} rounds, ms)\n\n\
         | variant | scope | ADD p50 | ADD p99 | ADD max | all ADDs done | DEL p50 | DEL p99 | all DELs done |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut groups: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for entry in results["concurrent"].as_array().into_iter().flatten() {
        groups
            .entry((
                entry["variant"].as_str().unwrap_or_default().into(),
                entry["scope"].as_str().unwrap_or_default().into(),
            ))
            .or_default()
            .push(entry);
    }
    for ((variant, scope), entries) in &groups {
        let all =
            |key: &str| -> Vec<f64> { entries.iter().flat_map(|e| samples(&e[key])).collect() };
        let total = |key: &str| -> f64 {
            let totals: Vec<f64> = entries.iter().filter_map(|e| e[key].as_f64()).collect();
            percentile(&totals, 50.0).unwrap_or(f64::NAN)
        };
        let adds = all("add_us");
        let dels = all("del_us");
        let [a50, _, a99] = summary(&adds);
        let [d50, _, d99] = summary(&dels);
        text += &format!(
            "| {variant} | {scope} | {} | {} | {} | {} | {} | {} | {} |\n",
            ms(a50),
            ms(a99),
            ms(adds.iter().copied().fold(0.0, f64::max)),
            ms(total("add_total_us")),
            ms(d50),
            ms(d99),
            ms(total("del_total_us"))
        );
    }
    text += "\n(\"all done\": the median over the rounds of the time from starting the 32 to the last one finishing.)\n\n";
    text
}

fn scale_table(levels: &[Value]) -> String {
    let mut text = format!(
            "### One more pod on a network with N attachments (network scope, krafty, {SCALE_PROBES} probes per level, the levels taking turns, ms)\n\n\
             | existing attachments | ADD p50 | ADD p90 | ADD p99 | DEL p50 | DEL p90 | DEL p99 |\n|---|---|---|---|---|---|---|\n"
        );
    for level in levels {
        text += &latency_row(&level["existing"].to_string(), &level["series"]);
    }
    text += "\n";
    text
}

/// The stripped size of every plugin the report compares, taken when the samples are, so
/// that the report describes the binaries that were measured.
fn binary_sizes() -> Value {
    let size = |path: PathBuf| -> u64 {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len()
    };
    let krafty: BTreeMap<&str, u64> = KRAFTY_PLUGINS
        .iter()
        .map(|plugin| (*plugin, size(bin_dir().join(plugin))))
        .collect();
    let reference: BTreeMap<&str, u64> = REFERENCE_PLUGINS
        .iter()
        .map(|plugin| (*plugin, size(Path::new(REFERENCE_PLUGIN_DIR).join(plugin))))
        .collect();
    json!({ "krafty": krafty, "reference": reference })
}

/// A size from the results; results without one are from an older run and cannot be reported.
fn recorded_size(results: &Value, family: &str, plugin: &str) -> u64 {
    results["sizes"][family][plugin]
        .as_u64()
        .filter(|&bytes| bytes > 0)
        .unwrap_or_else(|| {
            panic!("the results record no size for {plugin}: rerun `krafty-bench run`")
        })
}

fn sizes(host: &Value) -> String {
    let mut text = String::from(
        "## Binary sizes (stripped; krafty from `cargo build --release --target x86_64-unknown-linux-musl`, reference from Debian)\n\n| krafty | bytes | reference | bytes |\n|---|---|---|---|\n",
    );
    for (krafty, reference) in KRAFTY_PLUGINS.iter().zip(REFERENCE_PLUGINS) {
        text += &format!(
            "| {krafty} | {} | {reference} | {} |\n",
            recorded_size(host, "krafty", krafty),
            recorded_size(host, "reference", reference)
        );
    }
    text += "\n";
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_takes_the_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 90.0), Some(90.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
    }

    #[test]
    fn percentile_ignores_the_order_of_the_samples() {
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[5.0, 1.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[5.0, 1.0], 51.0), Some(5.0));
    }

    #[test]
    fn percentile_of_few_or_no_samples() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 1.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn sizes_come_from_the_results() {
        let results = json!({ "sizes": { "krafty": { "krafty-veth": 1_496_256 } } });
        assert_eq!(recorded_size(&results, "krafty", "krafty-veth"), 1_496_256);
    }

    #[test]
    #[should_panic(expected = "no size for krafty-veth")]
    fn results_without_sizes_cannot_be_reported() {
        recorded_size(
            &json!({ "sizes": { "krafty": { "krafty-veth": 0 } } }),
            "krafty",
            "krafty-veth",
        );
    }

    #[test]
    fn the_median_ratio_interval_brackets_the_ratio_and_narrows_with_agreeing_samples() {
        let steady = [10.0; 50];
        assert_eq!(median_ratio_interval(&steady, &steady), (1.0, 1.0));
        let numerator: Vec<f64> = (0..200).map(|i| 10.0 + f64::from(i % 7)).collect();
        let denominator: Vec<f64> = (0..200).map(|i| 20.0 + f64::from(i % 11)).collect();
        let point = percentile(&numerator, 50.0).unwrap() / percentile(&denominator, 50.0).unwrap();
        let (low, high) = median_ratio_interval(&numerator, &denominator);
        assert!(low <= point && point <= high, "{low} <= {point} <= {high}");
        assert!(high - low < 0.2, "[{low}, {high}]");
        assert_eq!(
            median_ratio_interval(&numerator, &denominator),
            (low, high),
            "seeded"
        );
        assert!(median_ratio_interval(&[], &steady).0.is_nan());
    }

    /// Host results with constant samples: krafty's DEL 40 ms, the reference's 20 ms, and
    /// with `same_work`, 60 ms once its bridge is removed too.
    fn host_results(same_work: bool) -> Value {
        let series = |add: f64, del: f64| json!({ "add_us": vec![add; 5], "del_us": vec![del; 5] });
        let mut reference = series(13_000.0, 20_000.0);
        if same_work {
            reference[SAME_WORK_DEL] = json!(vec![60_000.0; 5]);
        }
        let scope = json!({
            "krafty": series(6_000.0, 40_000.0),
            "reference": reference,
            "floor": series(6_000.0, 60_000.0),
        });
        let sizes: serde_json::Map<String, Value> = KRAFTY_PLUGINS
            .iter()
            .map(|plugin| (plugin.to_string(), json!(1_000_000)))
            .collect();
        json!({
            "compare": { "pod": scope, "network": scope },
            "sizes": { "krafty": sizes },
            "rss_kib": { "krafty-veth DEL": [1440] },
        })
    }

    #[test]
    fn the_reference_doing_the_same_work_is_a_target_row_only_when_measured() {
        let table = targets(&host_results(true));
        let rows: Vec<&str> = table
            .lines()
            .filter(|row| row.contains("doing the same work"))
            .collect();
        assert_eq!(rows.len(), 2, "one per scope in this fixture:\n{table}");
        assert!(
            rows[0].contains("40.00 / 60.00 ms = 0.67") && rows[0].ends_with("| **met** |"),
            "{}",
            rows[0]
        );
        let plain = table
            .lines()
            .find(|row| row.starts_with("| DEL p50 ≤ 0.8 × reference (pod scope)"))
            .unwrap();
        assert!(
            plain.contains("= 2.00") && plain.contains("**missed**"),
            "{plain}"
        );
        assert!(!targets(&host_results(false)).contains("same work"));
        assert!(kernel_section(&host_results(true))
            .contains("| krafty / reference doing the same work | | 0.67 |"));
    }

    #[test]
    fn the_multi_node_rows_and_section_appear_only_when_measured() {
        let without = host_results(false);
        assert!(!targets(&without).contains("cross-node"));
        let mut with = without;
        with["multinode"] = json!({
            "throughput_bps": { "krafty": [9e9], "floor": [1e10] },
            "rtt_us": { "krafty": [50.0], "floor": [50.0] },
        });
        assert!(targets(&with).contains("| cross-node TCP throughput ≥ 0.9 ×"));
    }

    #[test]
    fn within_rows_are_met_on_either_side_of_one() {
        let base = [10_000.0; 5];
        assert!(within_row("x", &[10_500.0; 5], &base, 0.1).contains("| **met** |"));
        assert!(within_row("x", &[9_500.0; 5], &base, 0.1).contains("| **met** |"));
        assert!(within_row("x", &[11_500.0; 5], &base, 0.1).contains("| **missed** |"));
        assert!(within_row("x", &[8_500.0; 5], &base, 0.1).contains("| **missed** |"));
    }

    #[test]
    fn flags_are_name_value_pairs() {
        let parsed = flags(&["--cycles".into(), "5".into(), "--out".into(), "x".into()]);
        assert_eq!(parsed["cycles"], "5");
        assert_eq!(parsed["out"], "x");
    }

    #[test]
    fn floor_batches_do_the_chain_s_kernel_work() {
        let id = "0123456789abcdef";
        let pod = Pod { name: "p".into() };
        let add = floor_node_add(Scope::Pod, id, &pod, Some(100_001));
        assert!(add.contains("link add krv0123456789ab type vrf table 100001"));
        assert!(add.contains("link add krb0123456789ab master krv0123456789ab type bridge"));
        assert!(add.contains(
            "link add veth0123456789a master krb0123456789ab up type veth peer name net1 netns p"
        ));
        std::mem::forget(pod); // dropping a Pod deletes its namespace
        assert_eq!(
            floor_del(Scope::Network, id, true),
            "link del veth0123456789a\n"
        );
        assert_eq!(
            floor_del(Scope::Pod, id, false),
            "link del veth0123456789a\nlink del krb0123456789ab\n"
        );
    }
}
