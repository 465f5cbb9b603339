//! Kill at every step: a plugin killed with SIGKILL at any of its state-changing system calls,
//! then what a runtime (or the node agent) does afterwards, must leave nothing behind.
//!
//! The killing is done from outside, with no hook in the product: the plugin under test is
//! replaced on CNI_PATH by a script that runs it under `strace -f -e inject=SYSCALL:signal=KILL:
//! when=N`. strace counts invocations per system call and per thread, so a kill point is (system
//! call, N): the first thread to make its N-th call of that kind dies there, with the whole
//! process. For every system call of [`STATE_CHANGING`], N goes up from 1 until the plugin runs
//! to its end unkilled.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::{container_id, plugin_path, Node, Outcome, Pod};

/// The system calls by which a plugin changes the node: netlink requests, file writes, renames,
/// unlinks, directories and locks.
pub const STATE_CHANGING: [&str; 13] = [
    "sendto",
    "sendmsg",
    "write",
    "pwrite64",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "flock",
];

/// The verb a plugin is killed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Gc,
}

/// A CNI bin directory in which one plugin dies at a kill point; the others are as built.
pub struct Wrapped {
    dir: PathBuf,
    status: PathBuf,
}

impl Wrapped {
    pub fn new(node: &Node, plugin: &str, syscall: &str, nth: u32) -> Wrapped {
        let dir = node.dir.join("killing");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the wrapper's directory");
        let status = dir.join("status");
        for other in ["krafty-vrf", "krafty-bridge", "krafty-veth", "krafty"] {
            if other != plugin {
                std::os::unix::fs::symlink(plugin_path(other), dir.join(other))
                    .expect("a link to the plugin");
            }
        }
        let script = format!(
            "#!/bin/sh\nstrace -f -qq -o /dev/null -e trace={syscall} \
             -e inject={syscall}:signal=KILL:when={nth} {} \"$@\"\nstatus=$?\n\
             echo $status > {}\nexit $status\n",
            plugin_path(plugin).display(),
            status.display()
        );
        let wrapper = dir.join(plugin);
        std::fs::write(&wrapper, script).expect("the wrapper");
        run(Command::new("chmod").arg("755").arg(&wrapper));
        Wrapped { dir, status }
    }

    /// The driver flag that puts this directory first on CNI_PATH.
    pub fn cni_path(&self, node: &Node) -> [String; 2] {
        [
            "--cni-path".to_string(),
            format!("{}:{}", self.dir.display(), node.cni_path()),
        ]
    }

    /// Whether the plugin died by SIGKILL (strace ends with the status its tracee ended with).
    pub fn killed(&self) -> bool {
        std::fs::read_to_string(&self.status).is_ok_and(|s| s.trim() == "137")
    }
}

fn run(command: &mut Command) {
    let status = command.status().expect("the command runs");
    assert!(status.success(), "{command:?} failed");
}

/// A device that is not krafty's, on the node through every kill: nothing may touch it.
pub const FOREIGN: &str = "foreign0";

/// One attachment's story: its node, network and pod, and the container ID it is added as.
pub struct Case<'a> {
    pub node: &'a Node,
    pub conflist: Value,
    pub list: PathBuf,
    /// The node's devices before the case began (its underlay in a multi-node lab) and the
    /// foreign one: what must be there after every kill, and nothing else.
    pub expected_devices: Vec<String>,
}

impl<'a> Case<'a> {
    /// A case on `node`, with a foreign bridge beside it carrying an address and an alias.
    pub fn new(node: &'a Node, conflist: &Value) -> Case<'a> {
        node.ip(&["link", "add", FOREIGN, "type", "bridge"]);
        node.ip(&["link", "set", FOREIGN, "alias", "someone-else", "up"]);
        node.ip(&["addr", "add", "198.51.100.1/24", "dev", FOREIGN]);
        let mut expected_devices = node.link_names();
        expected_devices.sort();
        Case {
            expected_devices,
            node,
            conflist: conflist.clone(),
            list: node.conflist(conflist.clone()),
        }
    }

    pub fn add(&self, id: &str, pod: &Pod, extra: &[&str]) -> Outcome {
        self.node
            .cni_with("add", &self.list, id, &pod.netns_path(), extra)
    }

    pub fn del(&self, id: &str, pod: &Pod, extra: &[&str]) -> Outcome {
        self.node
            .cni_with("del", &self.list, id, &pod.netns_path(), extra)
    }

    /// GC with no attachment valid (1.1.0).
    pub fn gc(&self, extra: &[&str]) -> Outcome {
        self.node.gc_with(&self.conflist, &[], extra)
    }

    /// What a runtime does after a failed verb: DEL, and GC (on a 1.1.0 network).
    pub fn runtime_recovery(&self, id: &str, pod: &Pod) {
        self.del(id, pod, &[]).ok();
        self.gc(&[]).ok();
    }

    /// Nothing of krafty's is left: no device, lease, record or lock file, the pod has no
    /// `net1`, and the foreign device is as it was.
    pub fn assert_clean(&self, pod: &Pod, context: &str) {
        let node = self.node;
        let mut names = node.link_names();
        names.sort();
        assert_eq!(names, self.expected_devices, "devices left {context}");
        let foreign = node.link(FOREIGN).expect("the foreign device");
        assert_eq!(foreign["ifalias"], "someone-else", "{context}");
        assert!(
            node.ip(&["addr", "show", "dev", FOREIGN])
                .contains("198.51.100.1/24"),
            "the foreign device's address {context}"
        );
        assert_eq!(
            node.all_leases(),
            Vec::<String>::new(),
            "leases left {context}"
        );
        assert_eq!(
            node.records(),
            Vec::<String>::new(),
            "records left {context}"
        );
        assert_eq!(
            crate::files_below(&node.run_dir()),
            Vec::<String>::new(),
            "lock files left {context}"
        );
        assert!(
            !pod.exec(&["ip", "link", "show", "net1"]).success,
            "net1 left in the pod {context}"
        );
    }
}

/// Kills `plugin` at every step of `verb` on `case`'s network. After each kill `recover` runs
/// (what a runtime or the node agent would do, given the container ID and the pod, which it may
/// destroy); then nothing may be left, and the same attachment must ADD and DEL cleanly again.
/// Returns the number of kill points.
pub fn at_every_step(
    case: &Case,
    plugin: &str,
    verb: Verb,
    recover: impl Fn(&Case, &str, &Pod),
) -> usize {
    let node = case.node;
    let mut points = 0;
    for syscall in STATE_CHANGING {
        for nth in 1.. {
            let pod = node.pod(&format!("k{nth}"));
            let id = container_id();
            if verb != Verb::Add {
                case.add(&id, &pod, &[]).ok();
            }
            let wrapped = Wrapped::new(node, plugin, syscall, nth);
            let flags = wrapped.cni_path(node);
            let flags = [flags[0].as_str(), flags[1].as_str()];
            let outcome = match verb {
                Verb::Add => case.add(&id, &pod, &flags),
                Verb::Del => case.del(&id, &pod, &flags),
                Verb::Gc => case.gc(&flags),
            };
            let context = format!("after {plugin} {verb:?} was killed at {syscall} #{nth}");
            if !wrapped.killed() {
                // The plugin ran to its end: every kill point of this system call is done.
                outcome.ok();
                case.runtime_recovery(&id, &pod);
                case.assert_clean(&pod, &format!("after {plugin} {verb:?} ran unkilled"));
                break;
            }
            assert!(!outcome.success, "{context}, the verb succeeded");
            points += 1;
            recover(case, &id, &pod);
            case.assert_clean(&pod, &context);
            // The same attachment again, from the start.
            let pod = node.pod(&format!("k{nth}again"));
            case.add(&id, &pod, &[]).ok();
            case.runtime_recovery(&id, &pod);
            case.assert_clean(&pod, &format!("{context}, and a fresh ADD and DEL"));
        }
    }
    points
}

/// Records how many kill points a test went through, for the test command's summary:
/// `<KRAFTY_KILL_POINTS, or target/test-logs/kill-points>/<name>` holds `<verb> <count>` lines.
pub fn report(name: &str, counts: &[(Verb, usize)]) {
    let dir = std::env::var_os("KRAFTY_KILL_POINTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir().join("test-logs").join("kill-points"));
    std::fs::create_dir_all(&dir).expect("the kill-point report's directory");
    let text: String = counts
        .iter()
        .map(|(verb, count)| format!("{verb:?} {count}\n"))
        .collect();
    std::fs::write(dir.join(name), text).expect("the kill-point report");
}
