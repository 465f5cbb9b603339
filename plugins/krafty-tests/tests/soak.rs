//! Soak: ADD/DEL churn at 8-way concurrency over pod- and network-scope networks, with plugin
//! processes SIGKILLed at random moments; then the runtime's DELs of everything ever added and
//! one GC per network must leave no device, lease, record or lock behind.
//!
//! KRAFTY_SOAK_OPS sets the number of ADD/DEL pairs (240 in the test command; scripts/soak.sh
//! runs 2000 and writes the report to docs/soak.md through KRAFTY_SOAK_REPORT).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krafty_tests::{container_id, pod_network, shared_network, Node, Pod};
use serde_json::Value;

const WORKERS: usize = 8;
const PLUGINS: [&str; 3] = ["krafty-vrf", "krafty-bridge", "krafty-veth"];

/// A small xorshift: reproducible from its seed, no dependency.
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// The plugin processes working for `node` (their environment names its state root).
fn plugins_of(node: &Node) -> Vec<u32> {
    let marker = format!("KRAFTY_STATE_ROOT={}", node.state_dir().display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            PLUGINS.contains(&comm.trim())
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}

#[derive(Default)]
struct Counts {
    adds: AtomicUsize,
    adds_failed: AtomicUsize,
    dels: AtomicUsize,
    dels_failed: AtomicUsize,
    kills: AtomicUsize,
}

#[test]
fn churn_with_random_kills_leaves_nothing() {
    let ops: usize = std::env::var("KRAFTY_SOAK_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(240);
    let node = Arc::new(Node::new());
    // Two shared networks used by every worker at once, and a pod-scope network per worker (one
    // pod at a time each: without VRFs a pod-scope network holds one pod per node).
    let mut networks: Vec<Value> = vec![
        shared_network("soak-a", &[("172.16.80.0/24", "172.16.80.1")], false),
        shared_network("soak-b", &[("172.16.81.0/24", "172.16.81.1")], false),
    ];
    for worker in 0..WORKERS {
        networks.push(pod_network(
            &format!("soak-pod-{worker}"),
            &format!("172.16.{}.0/24", 90 + worker),
            &format!("172.16.{}.1", 90 + worker),
            false,
        ));
    }
    let lists: Vec<_> = networks.iter().map(|n| node.conflist(n.clone())).collect();
    let counts = Arc::new(Counts::default());
    let done = Arc::new(AtomicBool::new(false));
    // Every attachment ever tried, for the runtime's DELs at the end: network index, ID, pod.
    let tried: Arc<Mutex<Vec<(usize, String, Pod)>>> = Arc::default();
    let started = Instant::now();

    let killer = {
        let (node, counts, done) = (Arc::clone(&node), Arc::clone(&counts), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ started.elapsed().as_nanos() as u64);
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10 + random.next(90)));
                let victims = plugins_of(&node);
                if victims.is_empty() {
                    continue;
                }
                let victim = victims[random.next(victims.len() as u64) as usize];
                let killed = std::process::Command::new("kill")
                    .args(["-KILL", &victim.to_string()])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if killed {
                    counts.kills.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (node, counts, tried, lists) = (&node, &counts, &tried, &lists);
            scope.spawn(move || {
                let mut random = Random(worker as u64 * 7919 + 17);
                for op in 0..ops.div_ceil(WORKERS) {
                    // Half the workers' rounds on a shared network, the rest on their own.
                    let network = match random.next(2) {
                        0 => random.next(2) as usize,
                        _ => 2 + worker,
                    };
                    let pod = node.pod(&format!("s{worker}-{op}"));
                    let id = container_id();
                    let list = &lists[network];
                    counts.adds.fetch_add(1, Ordering::SeqCst);
                    let added = node.cni("add", list, &id, &pod.netns_path()).success;
                    if !added {
                        counts.adds_failed.fetch_add(1, Ordering::SeqCst);
                    }
                    // A runtime sends DEL after a failed ADD as after a live one.
                    counts.dels.fetch_add(1, Ordering::SeqCst);
                    if node.cni("del", list, &id, &pod.netns_path()).success {
                        drop(pod);
                    } else {
                        counts.dels_failed.fetch_add(1, Ordering::SeqCst);
                        tried.lock().unwrap().push((network, id, pod));
                    }
                }
            });
        }
    });
    done.store(true, Ordering::SeqCst);
    killer.join().expect("the killer");
    let churn = started.elapsed();

    // The runtime's DELs of what failed, then one GC per network (1.1.0).
    let pending = std::mem::take(&mut *tried.lock().unwrap());
    let retried = pending.len();
    for (network, id, pod) in pending {
        node.cni("del", &lists[network], &id, &pod.netns_path())
            .ok();
    }
    for network in &networks {
        node.gc(network, &[]).ok();
    }
    let leftovers = Leftovers::of(&node);
    let report = format!(
        "| ADD/DEL pairs | {} |\n| ADDs failed (killed, or after a kill) | {} |\n\
         | DELs failed (killed) and sent again | {} |\n| plugin processes killed | {} |\n\
         | workers | {WORKERS} |\n| networks | 2 shared, {WORKERS} pod-scope |\n\
         | churn duration | {:.1} s |\n| leftovers after the DELs and GC | {} |\n",
        counts.adds.load(Ordering::SeqCst),
        counts.adds_failed.load(Ordering::SeqCst),
        retried,
        counts.kills.load(Ordering::SeqCst),
        churn.as_secs_f64(),
        leftovers.describe()
    );
    eprintln!("{report}");
    if let Some(path) = std::env::var_os("KRAFTY_SOAK_REPORT") {
        std::fs::write(Path::new(&path), &report).expect("the soak report");
    }
    assert!(
        counts.kills.load(Ordering::SeqCst) > 0,
        "nothing was killed: the soak proves nothing"
    );
    node.assert_clean();
}

/// What is left on the node, by kind.
struct Leftovers(BTreeMap<&'static str, usize>);

impl Leftovers {
    fn of(node: &Node) -> Leftovers {
        let mut kinds = BTreeMap::new();
        kinds.insert("devices", node.link_names().len().saturating_sub(1));
        kinds.insert("leases", node.all_leases().len());
        kinds.insert("records", node.records().len());
        let locks = std::fs::read_dir(node.run_dir().join("locks"));
        kinds.insert("lock files", locks.map_or(0, |entries| entries.count()));
        Leftovers(kinds)
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
