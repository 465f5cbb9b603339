//! krafty's in-process host-local (`krafty_cni::host_local`) against Debian's host-local binary:
//! the same operations on two stores give the same results, the same errors and the same files,
//! and both implementations can serve one store side by side, also at the same time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use krafty_cni::env::{CniArgs, Command as Verb, Environment};
use krafty_cni::host_local::HostLocal;
use krafty_cni::Error;
use krafty_tests::REFERENCE_PLUGIN_DIR;
use serde_json::{json, Value};

/// What an ADD or DEL answered: the result's `ips` and `routes`, or the error's code and msg.
type Outcome = Result<Value, (u64, String)>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Implementation {
    Reference,
    Krafty,
}

/// A data directory of its own, removed at the end.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> DataDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "krafty-host-local-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        DataDir(dir)
    }

    /// Every file of the network's store but the lock, with its content.
    fn files(&self, network: &str) -> BTreeMap<String, String> {
        std::fs::read_dir(self.0.join(network))
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_name() != "lock")
            .map(|entry| {
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(entry.path()).unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(network: &str, data_dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir);
    json!({"cniVersion": "1.0.0", "name": network, "type": "krafty-veth", "ipam": ipam})
}

fn environment(verb: Verb, id: &str, ifname: &str) -> Environment {
    Environment {
        command: verb,
        container_id: id.into(),
        netns: Some("/proc/self/ns/net".into()),
        ifname: ifname.into(),
        cni_path: vec![REFERENCE_PLUGIN_DIR.into()],
        args: CniArgs::default(),
    }
}

fn run(implementation: Implementation, verb: Verb, config: &Value, id: &str) -> Outcome {
    match implementation {
        Implementation::Reference => run_reference(verb, config, id),
        Implementation::Krafty => run_krafty(verb, config, id),
    }
}

fn run_reference(verb: Verb, config: &Value, id: &str) -> Outcome {
    let binary = Path::new(REFERENCE_PLUGIN_DIR).join("host-local");
    assert!(
        binary.is_file(),
        "{} is missing: install Debian's containernetworking-plugins",
        binary.display()
    );
    let mut child = Command::new(&binary)
        .env("CNI_COMMAND", verb.as_str())
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", REFERENCE_PLUGIN_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout: Value = if output.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&output.stdout).unwrap()
    };
    if output.status.success() {
        Ok(essentials(&stdout))
    } else {
        Err((
            stdout["code"].as_u64().unwrap(),
            stdout["msg"].as_str().unwrap().to_string(),
        ))
    }
}

fn run_krafty(verb: Verb, config: &Value, id: &str) -> Outcome {
    let env = environment(verb, id, "net1");
    let host_local = HostLocal::from_invocation(config.to_string().as_bytes(), &env)
        .unwrap_or_else(|| panic!("krafty should serve this config in process: {config}"));
    let outcome = match verb {
        Verb::Add => host_local
            .add(&env)
            .map(|result| essentials(&serde_json::to_value(result).unwrap())),
        Verb::Del => host_local.del(&env, &[]).map(|()| Value::Null),
        other => panic!("{other:?} is not served in process"),
    };
    outcome.map_err(|error| match error {
        Error::IpamReported { code, msg, .. } => (code.into(), msg),
        other => panic!("an error host-local would not give: {other}"),
    })
}

/// The part of a result both implementations must agree on.
fn essentials(result: &Value) -> Value {
    if result.is_null() {
        return Value::Null;
    }
    let or_empty = |v: &Value| if v.is_null() { json!([]) } else { v.clone() };
    json!({"ips": or_empty(&result["ips"]), "routes": or_empty(&result["routes"])})
}

/// Runs `steps` ("+id" for ADD, "-id" for DEL) on a fresh store per implementation and checks
/// that every answer and the final files are the same; returns the reference's answers.
fn same_on_both(ipam: Value, seed: &[(&str, &str)], steps: &[&str]) -> Vec<Outcome> {
    let stores = [DataDir::new(), DataDir::new()];
    let mut answers = [Vec::new(), Vec::new()];
    for (store, (implementation, answers)) in stores.iter().zip(
        [Implementation::Reference, Implementation::Krafty]
            .into_iter()
            .zip(&mut answers),
    ) {
        let network_dir = store.0.join("net");
        std::fs::create_dir_all(&network_dir).unwrap();
        for (name, content) in seed {
            std::fs::write(network_dir.join(name), content).unwrap();
        }
        let config = config("net", &store.0, ipam.clone());
        for step in steps {
            let (verb, id) = match step.split_at(1) {
                ("+", id) => (Verb::Add, id),
                ("-", id) => (Verb::Del, id),
                _ => panic!("bad step {step}"),
            };
            answers.push(run(implementation, verb, &config, id));
        }
    }
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(
            answers[1][i], answers[0][i],
            "step {i} ({step}) of {ipam}: krafty (left) differs from host-local (right)"
        );
    }
    assert_eq!(
        stores[1].files("net"),
        stores[0].files("net"),
        "the stores differ after {steps:?} with {ipam}"
    );
    let [reference, _] = answers;
    reference
}

const CYCLE: [&str; 11] = [
    "+a", "+b", "+c", "-b", "+d", "+e", "+f", "+g", "-a", "+h", "-zz",
];

#[test]
fn one_small_subnet_round_robin_exhaustion_and_wrap() {
    let answers = same_on_both(
        json!({"ranges": [[{"subnet": "10.1.0.0/29"}]]}),
        &[],
        &CYCLE,
    );
    assert!(
        answers
            .iter()
            .any(|a| matches!(a, Err((999, msg)) if msg.contains("no IP addresses available"))),
        "the cycle reaches exhaustion: {answers:?}"
    );
}

#[test]
fn range_bounds_and_a_gateway_inside_the_range() {
    let ipam = json!({"ranges": [[{"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10",
                                   "rangeEnd": "10.2.0.14", "gateway": "10.2.0.12"}]],
                      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.7.0/24", "gw": "10.2.0.12"}]});
    same_on_both(ipam, &[], &CYCLE);
}

#[test]
fn several_ranges_in_one_set_are_walked_in_order() {
    let ipam = json!({"ranges": [[{"subnet": "10.3.0.0/30"}, {"subnet": "10.3.1.0/29", "gateway": "10.3.1.6"}]]});
    same_on_both(ipam, &[], &CYCLE);
}

#[test]
fn dual_stack_releases_the_first_family_when_the_second_runs_out() {
    let ipam = json!({"ranges": [[{"subnet": "10.4.0.0/29"}], [{"subnet": "fd00:4::/126"}]]});
    let answers = same_on_both(ipam, &[], &["+a", "+b", "+c", "-a", "+d", "+e"]);
    assert!(
        matches!(&answers[2], Err((_, msg)) if msg.starts_with("failed to allocate for range 1")),
        "{answers:?}"
    );
}

#[test]
fn ipv6_only() {
    let ipam = json!({"ranges": [[{"subnet": "fd00:6::/125", "rangeStart": "fd00:6::3"}]],
                      "routes": [{"dst": "::/0"}]});
    same_on_both(ipam, &[], &CYCLE);
}

#[test]
fn the_legacy_single_range_comes_before_ranges() {
    let ipam = json!({"subnet": "10.5.0.0/29", "gateway": "10.5.0.6",
                      "ranges": [[{"subnet": "10.6.0.0/29"}]],
                      "routes": [{"dst": "10.0.0.0/8"}]});
    same_on_both(ipam, &[], &CYCLE);
}

#[test]
fn a_stale_last_reserved_address_and_old_leases_are_read_as_host_local_reads_them() {
    let ipam = json!({"ranges": [[{"subnet": "10.7.0.0/29"}]]});
    // An address outside the set restarts the walk; a lease written by host-local before 0.7
    // holds only the container ID and is released by that ID.
    let seed = [("last_reserved_ip.0", "10.99.0.1"), ("10.7.0.3", "old")];
    same_on_both(ipam.clone(), &seed, &["+a", "+b", "-old", "+c", "+d"]);
    let seed = [("last_reserved_ip.0", "10.7.0.4")];
    same_on_both(ipam, &seed, &["+a", "+b", "+c"]);
}

#[test]
fn both_implementations_share_one_store() {
    let store = DataDir::new();
    let config = config(
        "net",
        &store.0,
        json!({"ranges": [[{"subnet": "10.8.0.0/24"}]]}),
    );
    let both = [Implementation::Reference, Implementation::Krafty];
    let mut addresses = Vec::new();
    for i in 0..6 {
        let answer = run(both[i % 2], Verb::Add, &config, &format!("pod{i}")).unwrap();
        addresses.push(answer["ips"][0]["address"].as_str().unwrap().to_string());
    }
    let expected: Vec<String> = (2..8).map(|i| format!("10.8.0.{i}/24")).collect();
    assert_eq!(addresses, expected, "one round-robin walk across both");
    // Each releases what the other handed out.
    for i in 0..6 {
        run(both[(i + 1) % 2], Verb::Del, &config, &format!("pod{i}")).unwrap();
    }
    assert_eq!(
        store.files("net").into_keys().collect::<Vec<_>>(),
        vec!["last_reserved_ip.0"],
        "every lease is gone"
    );
}

#[test]
fn concurrent_allocations_from_both_never_share_an_address() {
    let store = DataDir::new();
    let config = config(
        "net",
        &store.0,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}]]}),
    );
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let config = config.clone();
            std::thread::spawn(move || {
                let implementation = if worker % 2 == 0 {
                    Implementation::Reference
                } else {
                    Implementation::Krafty
                };
                (0..5)
                    .map(|i| {
                        let answer = run(
                            implementation,
                            Verb::Add,
                            &config,
                            &format!("w{worker}p{i}"),
                        );
                        answer.unwrap()["ips"][0]["address"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut addresses: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 40, "40 ADDs, 40 different addresses");
    assert_eq!(
        store.files("net").len(),
        41,
        "40 leases and last_reserved_ip.0"
    );
}

#[test]
fn what_krafty_does_not_serve_goes_to_host_local() {
    let store = DataDir::new();
    let served = |config: &Value, env: &Environment| {
        HostLocal::from_invocation(config.to_string().as_bytes(), env).is_some()
    };
    let plain = config(
        "net",
        &store.0,
        json!({"ranges": [[{"subnet": "10.10.0.0/24"}]]}),
    );
    let add = environment(Verb::Add, "a", "net1");
    assert!(served(&plain, &add));

    let mut with_k8s_args = add.clone();
    with_k8s_args.args =
        CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p").unwrap();
    assert!(served(&plain, &with_k8s_args), "kubelet's CNI_ARGS");
    let mut with_ip = add.clone();
    with_ip.args = CniArgs::parse("IgnoreUnknown=1;IP=10.10.0.9").unwrap();
    assert!(!served(&plain, &with_ip), "CNI_ARGS IP=");

    let variants = [
        (
            "runtimeConfig.ips",
            json!({"runtimeConfig": {"ips": ["10.10.0.9/24"]}}),
        ),
        (
            "runtimeConfig.ipRanges",
            json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.11.0.0/24"}]]}}),
        ),
        (
            "args.cni.ips",
            json!({"args": {"cni": {"ips": ["10.10.0.9"]}}}),
        ),
        ("cniVersion 0.2.0", json!({"cniVersion": "0.2.0"})),
    ];
    for (what, overlay) in variants {
        let mut config = plain.clone();
        for (key, value) in overlay.as_object().unwrap() {
            config[key] = value.clone();
        }
        assert!(!served(&config, &add), "{what}");
    }
    let ipam_variants = [
        (
            "resolvConf",
            json!({"ranges": [[{"subnet": "10.10.0.0/24"}]], "resolvConf": "/etc/resolv.conf"}),
        ),
        (
            "a field spelled in another case",
            json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangestart": "10.10.0.9"}]]}),
        ),
        (
            "a start outside the subnet",
            json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangeStart": "10.0.0.1"}]]}),
        ),
        (
            "an IPv4-mapped IPv6 gateway",
            json!({"ranges": [[{"subnet": "10.10.0.0/24", "gateway": "::ffff:10.10.0.1"}]]}),
        ),
        (
            "overlapping range sets",
            json!({"ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "10.10.0.0/25"}]]}),
        ),
        (
            "a subnet too small",
            json!({"ranges": [[{"subnet": "10.10.0.0/31"}]]}),
        ),
        ("no range", json!({"routes": []})),
        (
            "a route field of a later CNI",
            json!({"ranges": [[{"subnet": "10.10.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0", "mtu": 1400}]}),
        ),
    ];
    for (what, ipam) in ipam_variants {
        assert!(!served(&config("net", &store.0, ipam), &add), "{what}");
    }
}

#[test]
fn host_local_refuses_what_krafty_leaves_to_it() {
    // The configs krafty does not serve because they are invalid are refused by host-local
    // itself, with its own words (krafty-veth delegates them).
    let store = DataDir::new();
    for ipam in [
        json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangeStart": "10.0.0.1"}]]}),
        json!({"ranges": [[{"subnet": "10.10.0.0/31"}]]}),
        json!({"ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "10.10.0.0/25"}]]}),
    ] {
        let config = config("net", &store.0, ipam);
        assert!(
            run_reference(Verb::Add, &config, "a").is_err(),
            "host-local accepts {config}"
        );
    }
}

/// DEL given the addresses an attachment's record names: released directly when they are its
/// leases; when one is not (another attachment's, or gone), every lease is read instead, as
/// host-local does, and only the attachment's own leases go.
#[test]
fn del_releases_the_recorded_addresses_and_otherwise_reads_every_lease() {
    let store = DataDir::new();
    let config = config(
        "net",
        &store.0,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00:9::/120"}]]}),
    );
    let stdin = config.to_string();
    let host_local = |id: &str, verb: Verb| {
        let env = environment(verb, id, "net1");
        (
            HostLocal::from_invocation(stdin.as_bytes(), &env).unwrap(),
            env,
        )
    };
    let add = |id: &str| -> Vec<std::net::IpAddr> {
        let (host_local, env) = host_local(id, Verb::Add);
        let result = host_local.add(&env).unwrap();
        result.ips.iter().map(|ip| ip.address.addr()).collect()
    };
    let del = |id: &str, known: &[std::net::IpAddr]| {
        let (host_local, env) = host_local(id, Verb::Del);
        host_local.del(&env, known).unwrap();
    };
    let leases = || -> Vec<String> {
        store
            .files("net")
            .into_iter()
            .filter(|(name, _)| !name.starts_with("last_reserved_ip"))
            .map(|(name, holder)| format!("{name}={}", holder.replace("\r\n", "/")))
            .collect()
    };

    let a = add("a");
    let b = add("b");
    assert_eq!(a.len(), 2, "one address per family: {a:?}");
    del("a", &a);
    assert_eq!(leases(), ["10.9.0.3=b/net1", "fd00:9::3=b/net1"]);

    // A record naming another attachment's address: b's leases stay, c's own go.
    let c = add("c");
    del("c", &b[..1]);
    assert_eq!(
        leases(),
        ["10.9.0.3=b/net1", "fd00:9::3=b/net1"],
        "c held {c:?}"
    );

    // A record naming an address that is no longer leased.
    add("d");
    del("d", &a);
    assert_eq!(leases(), ["10.9.0.3=b/net1", "fd00:9::3=b/net1"]);
    del("b", &b);
    assert_eq!(leases(), Vec::<String>::new());
}
