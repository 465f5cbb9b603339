//! The krafty test harness: each test gets its own "node" (a fresh network namespace) with
//! its own state directory, runs the plugins there through the real libcni (the Go driver in
//! tools/cnidriver) or directly, and checks the kernel with `ip -j`. Everything a test creates
//! is removed when its [`Node`] is dropped, so tests are hermetic and can run in parallel.
//!
//! The harness needs root, the built plugins (`cargo build`), the driver
//! (`scripts/build-cnidriver.sh`) and Debian's containernetworking-plugins; when any of them
//! is missing it panics with what to do, so a test never passes without having run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod kill;
pub mod multinode;
pub mod node_task;
pub mod several;

use krafty_cni::attachment::{self, Attachment};
use krafty_cni::blocks::{self, FamilyBlocks, NetworkBlocks, NodeBlocks};
use krafty_cni::netns::NetNs;
use serde_json::{json, Value};

/// Where Debian's containernetworking-plugins put host-local, tuning, bridge, vrf...
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";
/// The network name of the default conflist, as in the chart's default NAD.
pub const NETWORK: &str = "krafty";

/// The extension of a single plugin's config, as runtimes tell it from a conflist.
const SINGLE_CONFIG_EXTENSION: &str = "conf";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Names this test process's nodes: the PID alone repeats across VMs booted side by side,
/// which share the target directory the nodes keep their files in.
fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        format!("{}.{nanos:x}", std::process::id())
    })
}

/// `target/<profile>`, where cargo put the plugin binaries (KRAFTY_BIN_DIR overrides).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KRAFTY_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test binaries live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The repository's target directory.
pub fn target_dir() -> PathBuf {
    bin_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf()
}

/// Where nodes keep their files: `<target>/krafty-tests`, or KRAFTY_TEST_NODES (the VM puts
/// them on its tmpfs: flock does not work across its 9p share of the target directory).
pub fn nodes_root() -> PathBuf {
    std::env::var_os("KRAFTY_TEST_NODES")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("krafty-tests"))
}

pub fn plugin_path(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests",
        path.display()
    );
    path
}

pub fn driver_path() -> PathBuf {
    let path = std::env::var_os("KRAFTY_CNIDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("cnidriver"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-cnidriver.sh before the tests",
        path.display()
    );
    path
}

fn require_root_and_reference_plugins() {
    // `id -u` keeps the harness free of libc bindings.
    let uid = run_checked(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the namespace tests need root"
    );
    for plugin in ["host-local", "tuning"] {
        assert!(
            Path::new(REFERENCE_PLUGIN_DIR).join(plugin).is_file(),
            "{REFERENCE_PLUGIN_DIR}/{plugin} is missing: apt-get install containernetworking-plugins"
        );
    }
}

/// Runs `command`; panics with its stderr unless it succeeds.
pub fn run_checked(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The outcome of one plugin or driver run.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    fn from_output(output: Output) -> Outcome {
        Outcome {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// stdout as one JSON document (the protocol allows nothing else on stdout).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}): {:?}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns stdout's JSON (or Null when stdout is empty).
    pub fn ok(&self) -> Value {
        assert!(
            self.success,
            "expected success, got {:?}\nstderr: {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts a CNI error with `code` whose message mentions `mentions`; returns the error.
    pub fn error(&self, code: u64, mentions: &str) -> Value {
        assert!(
            !self.success,
            "expected error {code}, got success: {}",
            self.stdout
        );
        let error = self.json();
        assert_eq!(
            error["code"], code,
            "wrong code in {error}\nstderr: {}",
            self.stderr
        );
        let msg = error["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(mentions),
            "message {msg:?} should mention {mentions:?}"
        );
        error
    }
}

/// A network-namespace "pod".
pub struct Pod {
    pub name: String,
}

impl Pod {
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the pod's namespace.
    pub fn exec(&self, args: &[&str]) -> Outcome {
        Outcome::from_output(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args)
                .output()
                .expect("ip netns exec runs"),
        )
    }

    pub fn ping(&self, address: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", address]).success
    }

    /// Whether `address` answers a ping sent out of interface `ifname`.
    pub fn ping_from(&self, ifname: &str, address: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", "-I", ifname, address])
            .success
    }

    /// `ip -j addr show dev IFNAME` inside the pod: the addresses as `a.b.c.d/len`.
    pub fn addresses(&self, ifname: &str) -> Vec<String> {
        let out = self.exec(&["ip", "-j", "addr", "show", "dev", ifname]);
        if !out.success {
            return Vec::new();
        }
        let value: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        value[0]["addr_info"]
            .as_array()
            .map(|infos| {
                infos
                    .iter()
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes the pod's namespace now (as a runtime does after a pod dies).
    pub fn destroy(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// A hermetic "node": a network namespace plus a state directory.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
}

impl Node {
    pub fn new() -> Node {
        require_root_and_reference_plugins();
        let id = format!(
            "{}-{}",
            process_tag(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let name = format!("kt-node-{id}");
        let dir = nodes_root().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state dir");
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        run_checked(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Node { name, dir }
    }

    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Deletes the devices named `names` of `attachment` inside the node the way DEL does
    /// ([`Attachment::start_deleting`]) and returns how many deletion requests that took: one
    /// for all the devices of an interface group that went in one batch.
    pub fn delete_as_del_does(&self, attachment: &Attachment, names: &[String]) -> usize {
        let netns = NetNs::open(Path::new(&self.netns_path())).expect("the node namespace opens");
        let deletions = netns
            .run(|netlink| async move {
                let mut devices = Vec::new();
                for name in names {
                    devices.extend(netlink.link(name).await?);
                }
                Ok(attachment.start_deleting(&netlink, devices).await)
            })
            .expect("the devices are looked up");
        let requests = deletions.len();
        let errors = attachment::finish(deletions);
        assert!(errors.is_empty(), "deleting {names:?}: {errors:?}");
        requests
    }

    /// A new pod namespace, removed when the returned value is dropped.
    pub fn pod(&self, label: &str) -> Pod {
        let name = format!("{}-{label}", self.name.replace("kt-node", "kt-pod"));
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        run_checked(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Pod { name }
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The directories plugins are looked up in: krafty's build output, then Debian's.
    pub fn cni_path(&self) -> String {
        format!("{}:{REFERENCE_PLUGIN_DIR}", bin_dir().display())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Environment every plugin of this node gets: the node's own log, state and lock roots.
    fn plugin_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "KRAFTY_LOG_ROOT".into(),
                self.log_dir().display().to_string(),
            ),
            (
                "KRAFTY_STATE_ROOT".into(),
                self.state_dir().display().to_string(),
            ),
            (
                "KRAFTY_RUN_DIR".into(),
                self.run_dir().display().to_string(),
            ),
        ]
    }

    /// Whether this kernel can make VRF devices: one made (and removed again) in the node.
    pub fn can_make_vrfs(&self) -> bool {
        let probe = "kt-vrf-probe";
        let made = Command::new("ip")
            .args([
                "-n", &self.name, "link", "add", probe, "type", "vrf", "table", "1",
            ])
            .output()
            .expect("ip runs")
            .status
            .success();
        if made {
            self.ip(&["link", "del", probe]);
        }
        made
    }

    /// The attachment records krafty keeps on this node (file names, every network).
    pub fn records(&self) -> Vec<String> {
        files_below(&self.state_dir().join("attachments"))
    }

    /// Writes a network config and returns its path: a conflist, or a single plugin's config
    /// (no `plugins` list), written as a `.conf`, which the driver runs as runtimes and Multus
    /// run one. Every `ipam` block but `krafty-blocks` (whose leases live in the node's state
    /// directory) gets this node's `dataDir`, so leases stay inside the test.
    pub fn conflist(&self, mut conflist: Value) -> PathBuf {
        let single = conflist.get("plugins").is_none();
        let plugins = match conflist.get_mut("plugins").and_then(Value::as_array_mut) {
            Some(plugins) => plugins.iter_mut().collect(),
            None => vec![&mut conflist],
        };
        for plugin in plugins {
            if let Some(ipam) = plugin.get_mut("ipam").and_then(Value::as_object_mut) {
                if ipam.get("type").and_then(Value::as_str) != Some(blocks::PLUGIN) {
                    ipam.insert("dataDir".into(), json!(self.ipam_dir()));
                }
            }
        }
        let path = self.dir.join(format!(
            "conflist-{}.{}",
            COUNTER.fetch_add(1, Ordering::SeqCst),
            if single {
                SINGLE_CONFIG_EXTENSION
            } else {
                "json"
            }
        ));
        std::fs::write(&path, serde_json::to_vec_pretty(&conflist).unwrap()).unwrap();
        path
    }

    /// ADD of `conflist` for `pod` under a fresh container ID, which must succeed: the ID and
    /// the result.
    pub fn attach(&self, conflist: &Path, pod: &Pod) -> (String, Value) {
        let id = container_id();
        let result = self.cni("add", conflist, &id, &pod.netns_path()).ok();
        (id, result)
    }

    /// Runs the libcni driver inside the node: `verb` on `conflist` for the attachment of
    /// container `container_id` as `net1`.
    pub fn cni(&self, verb: &str, conflist: &Path, container_id: &str, netns: &str) -> Outcome {
        self.cni_with(verb, conflist, container_id, netns, &[])
    }

    /// [`Node::cni`] for the container's interface `ifname`.
    pub fn cni_if(
        &self,
        verb: &str,
        conflist: &Path,
        container_id: &str,
        netns: &str,
        ifname: &str,
    ) -> Outcome {
        self.driver(verb, conflist, container_id, netns, ifname, &[])
    }

    /// [`Node::cni`] with more driver flags (a later flag wins: `--cni-path` replaces the
    /// node's plugin path).
    pub fn cni_with(
        &self,
        verb: &str,
        conflist: &Path,
        container_id: &str,
        netns: &str,
        extra: &[&str],
    ) -> Outcome {
        self.driver(verb, conflist, container_id, netns, "net1", extra)
    }

    fn driver(
        &self,
        verb: &str,
        conflist: &Path,
        container_id: &str,
        netns: &str,
        ifname: &str,
        extra: &[&str],
    ) -> Outcome {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(driver_path())
            .arg(verb)
            .arg(
                if conflist
                    .extension()
                    .is_some_and(|e| e == SINGLE_CONFIG_EXTENSION)
                {
                    "--conf"
                } else {
                    "--conflist"
                },
            )
            .arg(conflist)
            .args(["--id", container_id, "--netns", netns, "--ifname", ifname])
            .args([
                "--pod-namespace",
                "default",
                "--pod-name",
                &format!("pod-{container_id}"),
            ])
            .args(["--pod-uid", &format!("uid-{container_id}")])
            .arg("--cni-path")
            .arg(self.cni_path())
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(extra)
            .envs(self.plugin_env());
        Outcome::from_output(command.output().expect("the driver runs"))
    }

    /// GC of `conflist` (re-versioned to 1.1.0, which libcni 1.1.2 cannot ADD with) keeping
    /// the `net1` attachments of `valid` container IDs.
    pub fn gc(&self, conflist: &Value, valid: &[&str]) -> Outcome {
        let valid: Vec<(&str, &str)> = valid.iter().map(|id| (*id, "net1")).collect();
        self.gc_keeping(conflist, &valid)
    }

    /// GC of `conflist` keeping the attachments listed as (container ID, interface name).
    pub fn gc_keeping(&self, conflist: &Value, valid: &[(&str, &str)]) -> Outcome {
        self.gc_with(conflist, valid, &[])
    }

    /// [`Node::gc_keeping`] with more driver flags.
    pub fn gc_with(&self, conflist: &Value, valid: &[(&str, &str)], extra: &[&str]) -> Outcome {
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({ "containerID": id, "ifname": ifname }))
            .collect();
        let list = self.conflist(with_version(conflist, "1.1.0"));
        let attachments = Value::Array(attachments).to_string();
        let mut flags = vec!["--valid-attachments", &attachments];
        flags.extend(extra);
        self.cni_with("gc", &list, "", "", &flags)
    }

    /// STATUS of `conflist`, re-versioned to 1.1.0.
    pub fn status(&self, conflist: &Value) -> Outcome {
        let list = self.conflist(with_version(conflist, "1.1.0"));
        self.cni("status", &list, "", "")
    }

    /// Runs one plugin binary directly inside the node, with the given CNI variables.
    pub fn plugin(&self, plugin: &str, env: &[(&str, &str)], stdin: &str) -> Outcome {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(plugin_path(plugin))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_PATH", self.cni_path())
            .envs(self.plugin_env())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the plugin starts");
        let written = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes());
        // A plugin may answer a bad environment before reading its config; a runtime ignores
        // that broken pipe (as Go's os/exec does) and reads the answer.
        if let Err(error) = written {
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::BrokenPipe,
                "writing the plugin's config: {error}"
            );
        }
        Outcome::from_output(child.wait_with_output().expect("the plugin ends"))
    }

    /// `ip -j -d link show` in the node, as JSON objects.
    pub fn links(&self) -> Vec<Value> {
        let out =
            run_checked(Command::new("ip").args(["-n", &self.name, "-j", "-d", "link", "show"]));
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    pub fn link(&self, name: &str) -> Option<Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    pub fn link_names(&self) -> Vec<String> {
        self.links()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    /// Runs `ip ARGS` in the node and returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_checked(Command::new("ip").args(["-n", &self.name]).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Addresses host-local still has leased on `network` (its files named after addresses).
    pub fn leases(&self, network: &str) -> Vec<String> {
        let dir = self.ipam_dir().join(network);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// Every lease host-local or krafty-blocks holds on this node, of every network, as
    /// `network/address` (`blocks/network/address` for krafty-blocks).
    pub fn all_leases(&self) -> Vec<String> {
        let names_an_address = |file: &String| {
            file.rsplit('/')
                .next()
                .is_some_and(|name| name.parse::<std::net::IpAddr>().is_ok())
        };
        let host_local = files_below(&self.ipam_dir());
        let blocks = files_below(&self.state_dir().join(blocks::BLOCKS_DIR))
            .into_iter()
            .map(|file| format!("{}/{file}", blocks::BLOCKS_DIR));
        host_local
            .into_iter()
            .chain(blocks)
            .filter(names_an_address)
            .collect()
    }

    /// Addresses krafty-blocks has leased on `network` on this node.
    pub fn block_leases(&self, network: &str) -> Vec<std::net::IpAddr> {
        NetworkBlocks::new(&self.state_dir(), network)
            .leased()
            .expect("the leases can be listed")
    }

    /// Plays the node agent: writes this node's blocks of `network`, one family per
    /// `(subnet, gateway, blocks)`.
    pub fn write_blocks(&self, network: &str, families: &[(&str, &str, &[&str])]) {
        let parse = |text: &str| text.parse().expect("an address or CIDR");
        let file = NodeBlocks {
            network: network.into(),
            node: self.name.clone(),
            families: families
                .iter()
                .map(|(subnet, gateway, blocks)| FamilyBlocks {
                    subnet: subnet.parse().expect("a CIDR"),
                    gateway: parse(gateway),
                    blocks: blocks.iter().map(|b| b.parse().expect("a CIDR")).collect(),
                })
                .collect(),
        };
        NetworkBlocks::new(&self.state_dir(), network)
            .write(&file)
            .expect("the blocks file is written");
    }

    /// Asserts the node holds nothing but its loopback, host-local holds no lease, and krafty
    /// keeps no attachment record and no lock file.
    pub fn assert_clean(&self) {
        assert_eq!(
            self.link_names(),
            vec!["lo".to_string()],
            "devices left on the node"
        );
        assert_eq!(self.all_leases(), Vec::<String>::new(), "leases left");
        assert_eq!(
            self.records(),
            Vec::<String>::new(),
            "attachment records left"
        );
        assert_eq!(
            files_below(&self.run_dir()),
            Vec::<String>::new(),
            "lock files left"
        );
    }

    /// The invocation log's entries.
    pub fn log_entries(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_dir().join("krafty.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The files below `dir`, recursively, as paths relative to it.
pub(crate) fn files_below(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(
                    path.strip_prefix(dir)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    files.sort();
    files
}

/// `conflist` with another `cniVersion`.
pub fn with_version(conflist: &Value, version: &str) -> Value {
    let mut copy = conflist.clone();
    copy["cniVersion"] = json!(version);
    copy
}

/// The IPAM block of the original krafty network (host-local, .10-.250, default route).
pub fn host_local_ipam() -> Value {
    json!({
        "type": "host-local",
        "ranges": [[{
            "subnet": "172.16.10.0/24", "rangeStart": "172.16.10.10",
            "rangeEnd": "172.16.10.250", "gateway": "172.16.10.1"
        }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
    })
}

/// The bridge + veth chain, for kernels without VRF.
pub fn bridge_veth_conflist(cni_version: &str) -> Value {
    json!({
        "cniVersion": cni_version, "name": NETWORK, "plugins": [
            { "type": "krafty-bridge", "subnet": "172.16.10.0/24", "gateway": "172.16.10.1" },
            { "type": "krafty-veth", "ipam": host_local_ipam() }
        ]
    })
}

/// The full three-plugin chain of the original network.
pub fn full_conflist(cni_version: &str) -> Value {
    let mut conflist = bridge_veth_conflist(cni_version);
    conflist["plugins"]
        .as_array_mut()
        .expect("plugins is a list")
        .insert(0, json!({ "type": "krafty-vrf" }));
    conflist
}

/// The original krafty's network as its single plugin takes it, a single config (`.conf`):
/// `"type": "krafty"` with the seed's example (subnet, gateway, host-local over .10-.250 with
/// the default route).
pub fn original_config(cni_version: &str) -> Value {
    json!({
        "cniVersion": cni_version, "name": NETWORK, "type": "krafty",
        "subnet": "172.16.10.0/24", "gateway": "172.16.10.1", "ipam": host_local_ipam()
    })
}

/// [`original_config`] (1.0.0) with `fields` set (a null removes the field).
pub fn original_with(fields: Value) -> Value {
    let mut config = original_config("1.0.0");
    for (key, value) in fields.as_object().expect("fields are an object") {
        if value.is_null() {
            config.as_object_mut().unwrap().remove(key);
        } else {
            config[key] = value.clone();
        }
    }
    config
}

/// A conflist holding one plugin: the single config `config`.
pub fn one_plugin_conflist(config: &Value) -> Value {
    let mut plugin = config.clone();
    let fields = plugin.as_object_mut().expect("a config is an object");
    let (version, name) = (fields.remove("cniVersion"), fields.remove("name"));
    json!({ "cniVersion": version, "name": name, "plugins": [plugin] })
}

/// A shared (`scope: network`) network with host-local IPAM and a default route: one
/// `(subnet, gateway)` per address family, behind a shared VRF when `with_vrf`.
pub fn shared_network(name: &str, subnets: &[(&str, &str)], with_vrf: bool) -> Value {
    let ranges: Vec<Value> = subnets
        .iter()
        .map(|(subnet, gateway)| json!([{ "subnet": subnet, "gateway": gateway }]))
        .collect();
    let (subnet, gateway): (Vec<&str>, Vec<&str>) = subnets.iter().copied().unzip();
    let mut plugins = vec![
        json!({ "type": "krafty-bridge", "scope": "network", "subnet": subnet, "gateway": gateway }),
        json!({ "type": "krafty-veth", "ipam": { "type": "host-local", "ranges": ranges,
                                                 "routes": [{ "dst": "0.0.0.0/0" }] } }),
    ];
    if with_vrf {
        plugins.insert(0, json!({ "type": "krafty-vrf", "scope": "network" }));
    }
    json!({ "cniVersion": "1.0.0", "name": name, "plugins": plugins })
}

/// A shared (`scope: network`) network whose addresses come from the node's address blocks
/// (`krafty-blocks`, a multi-node network's IPAM), one `(subnet, gateway)` per address family,
/// with a default route.
pub fn blocks_network(name: &str, subnets: &[(&str, &str)]) -> Value {
    let (subnet, gateway): (Vec<&str>, Vec<&str>) = subnets.iter().copied().unzip();
    json!({ "cniVersion": "1.0.0", "name": name, "plugins": [
        { "type": "krafty-bridge", "scope": "network", "subnet": subnet, "gateway": gateway },
        { "type": "krafty-veth", "ipam": { "type": blocks::PLUGIN },
          "routes": [{ "dst": "0.0.0.0/0" }] }
    ] })
}

/// A pod-scope network of its own name and subnet (gateway `.1`, host-local over the subnet,
/// no default route), behind a VRF per attachment when `with_vrf`: a second network for pods
/// with several attachments.
pub fn pod_network(name: &str, subnet: &str, gateway: &str, with_vrf: bool) -> Value {
    let mut plugins = vec![
        json!({ "type": "krafty-bridge", "subnet": subnet, "gateway": gateway }),
        json!({ "type": "krafty-veth", "ipam": { "type": "host-local",
            "ranges": [[{ "subnet": subnet, "gateway": gateway }]] } }),
    ];
    if with_vrf {
        plugins.insert(0, json!({ "type": "krafty-vrf" }));
    }
    json!({ "cniVersion": "1.0.0", "name": name, "plugins": plugins })
}

/// The names of a result's `interfaces`, in order.
pub fn interface_names(result: &Value) -> Vec<&str> {
    result["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("a result lists interfaces: {result}"))
        .iter()
        .map(|i| i["name"].as_str().expect("an interface has a name"))
        .collect()
}

/// The pod's IPv4 (or, with `v6`, IPv6) address in a result, without its prefix length.
pub fn address_of(result: &Value, v6: bool) -> String {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .find(|address| address.contains(':') == v6)
        .and_then(|address| address.split('/').next())
        .unwrap_or_else(|| panic!("no IPv{} address in {result}", if v6 { 6 } else { 4 }))
        .to_string()
}

/// A container ID as runtimes make them: 64 hex characters, unique per call.
pub fn container_id() -> String {
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
    );
    // FNV-1a over a few seeds gives 64 hex chars with distinct 12-char prefixes.
    (0..8u8)
        .map(|round| {
            let hash = seed.bytes().chain([round]).fold(0x811c_9dc5_u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            format!("{hash:08x}")
        })
        .collect()
}
