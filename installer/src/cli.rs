//! The command line. Every flag has an environment-variable fallback so a DaemonSet can set
//! them from the downward API or a ConfigMap without rewriting `args`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tracing::level_filters::LevelFilter;

/// The plugins krafty ships, as `--plugins` takes them: the chain, in order, and the original
/// krafty's single plugin, which does the chain's work in one process.
pub const DEFAULT_PLUGINS: &str = "krafty-vrf,krafty-bridge,krafty-veth,krafty";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "krafty-installer",
    version,
    about = "Installs the krafty CNI plugins into a node's CNI bin directory and keeps them installed",
    long_about = "Installs the krafty CNI plugins into a node's CNI bin directory and keeps them \
                  installed.\n\nWithout --once it then watches the source and target directories \
                  (inotify), restores deleted or altered plugins, installs rebuilt ones, and serves \
                  /healthz, /readyz and /metrics until SIGTERM, which leaves the plugins in place. \
                  With --node-name and in-cluster credentials it also annotates its Node, posts \
                  Events and reconciles orphaned attachments."
)]
pub struct Args {
    /// Directory in the image that holds the plugin binaries.
    #[arg(long, env = "KRAFTY_SOURCE", default_value = "/opt/krafty/bin")]
    pub source: PathBuf,

    /// The node's CNI bin directory, mounted from the host.
    #[arg(long, env = "KRAFTY_TARGET", default_value = "/host/opt/cni/bin")]
    pub target: PathBuf,

    /// Install and verify once, then exit: 0 when every plugin is installed, 1 otherwise.
    #[arg(long, env = "KRAFTY_ONCE")]
    pub once: bool,

    /// Address for /healthz, /readyz and /metrics (daemon mode only).
    #[arg(long, env = "KRAFTY_LISTEN", default_value = "0.0.0.0:9650")]
    pub listen: SocketAddr,

    /// This node's name (downward API `spec.nodeName`); enables the annotation, Events and
    /// the orphaned-attachment reconciler when in-cluster credentials are present.
    #[arg(long, env = "KRAFTY_NODE_NAME")]
    pub node_name: Option<String>,

    /// The plugin binaries to install, comma-separated.
    #[arg(
        long,
        env = "KRAFTY_PLUGINS",
        value_delimiter = ',',
        default_value = DEFAULT_PLUGINS,
        value_parser = parse_plugin_name
    )]
    pub plugins: Vec<String>,

    /// Directory where the plugins keep one JSON record per attachment.
    #[arg(
        long,
        env = "KRAFTY_STATE_DIR",
        default_value = "/var/lib/krafty",
        global = true
    )]
    pub state_dir: PathBuf,

    /// Directory where the plugins keep their locks; the cleanup of an orphan takes its
    /// network's lock, as the plugins' DEL and GC do.
    #[arg(long, env = "KRAFTY_RUN_DIR", default_value = "/run/krafty")]
    pub run_dir: PathBuf,

    /// What to do with an orphaned attachment (pod and network namespace gone): `delete` its
    /// devices, address and record (needs the host network and CAP_NET_ADMIN), or only
    /// `report` it in the log and the metrics.
    #[arg(long, env = "KRAFTY_ORPHAN_CLEANUP", value_enum, default_value_t = OrphanCleanup::Delete)]
    pub orphan_cleanup: OrphanCleanup,

    /// Where to find an orphan's IPAM plugin, comma-separated, instead of the CNI_PATH
    /// recorded at ADD (a node path; in the container the node's CNI bin directory is
    /// mounted elsewhere). Empty: the recorded path.
    #[arg(long, env = "KRAFTY_IPAM_PATH", value_delimiter = ',')]
    pub ipam_path: Vec<PathBuf>,

    /// The plugins' invocation logs to export as metrics (`krafty_plugin_*`), comma-separated:
    /// the default file, and any `logFile` a network sets. Empty: none.
    #[arg(
        long,
        env = "KRAFTY_INVOCATION_LOG",
        value_delimiter = ',',
        default_value = "/var/log/krafty/krafty.log",
        value_parser = parse_optional_path
    )]
    pub invocation_log: Vec<PathBuf>,

    /// Quiet time after the last file event before installing, in milliseconds.
    #[arg(long, env = "KRAFTY_DEBOUNCE_MS", default_value_t = 50)]
    pub debounce_ms: u64,

    /// Seconds a `scope: network` network's shared VRF and bridge stay on the node after its
    /// last attachment went (delete mode: runtimes at CNI 1.0.0 never send the GC that would
    /// remove them).
    #[arg(long, env = "KRAFTY_SHARED_DEVICE_GRACE_SECS", default_value_t = 300)]
    pub shared_device_grace_secs: u64,

    /// A file of `NAME ADDRESS` lines, one per node of the cluster (and address family):
    /// the peers of every multi-node network's tunnel on this node, re-read on every change.
    /// The agent writes it to the node list the plugins read (`<state dir>/nodes`).
    #[arg(long, env = "KRAFTY_PEERS_FILE")]
    pub peers_file: Option<PathBuf>,

    /// Where the nodes of the cluster (the tunnels' peers) come from: `auto` takes the
    /// --peers-file when one is given, else the Nodes of the Kubernetes API (with --node-name
    /// and credentials); `file` and `cluster` insist on one; `none` keeps no peers.
    #[arg(long, env = "KRAFTY_PEERS_SOURCE", value_enum, default_value_t = PeersSource::Auto)]
    pub peers_source: PeersSource,

    /// Seconds between full orphan scans, on top of the scans that pod deletions trigger.
    #[arg(long, env = "KRAFTY_RECONCILE_INTERVAL_SECS", default_value_t = 300)]
    pub reconcile_interval_secs: u64,

    /// The address pools of multi-node networks (a JSON file, see `blocks::pool`): with
    /// --node-name and credentials the agent claims address blocks of them for its node and
    /// writes them below --state-dir for krafty-veth (`"ipam": {"type": "krafty-blocks"}`).
    #[arg(long, env = "KRAFTY_ADDRESS_POOLS")]
    pub address_pools: Option<PathBuf>,

    /// Seconds a block's owner Node must have been absent (deleted, or re-registered with
    /// another uid) before an agent deletes the block so that other nodes can claim it.
    #[arg(
        long,
        env = "KRAFTY_ADDRESS_BLOCK_RECLAIM_GRACE_SECS",
        default_value_t = 600
    )]
    pub address_block_reclaim_grace_secs: u64,

    /// Log level: error, warn, info, debug or trace. Logs go to stderr.
    #[arg(long, env = "KRAFTY_LOG_LEVEL", default_value_t = LevelFilter::INFO, global = true)]
    pub log_level: LevelFilter,

    /// A one-off inspection of the node instead of the agent.
    #[command(subcommand)]
    pub tool: Option<Tool>,
}

/// The node-side tools (see `inspect`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Tool {
    /// Prints, as JSON, the names and marks of one attachment's devices: what the plugins
    /// name them, without looking at the node.
    Attachment {
        #[arg(long)]
        network: String,
        #[arg(long)]
        container_id: String,
        #[arg(long, default_value = "net1")]
        ifname: String,
        /// `pod`: the attachment's own VRF and bridge; `network`: its network's shared ones.
        #[arg(long, value_enum, default_value_t = Scope::Pod)]
        scope: Scope,
    },
    /// Lists every attachment on this node (records below --state-dir, devices in this
    /// network namespace): network, pod, container, interface, addresses, record, and each
    /// device, present and marked or not.
    Attachments {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints the node list the agent keeps (below --state-dir) and, for every multi-node
    /// network's VXLAN port in this network namespace, the nodes it floods to and whether
    /// they are exactly the listed nodes of its underlay family but this one.
    Peers {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Whether an attachment's VRF and bridge are its own or its network's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    Pod,
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrphanCleanup {
    Delete,
    Report,
}

/// `--peers-source`: see [`Args::peers_source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeersSource {
    Auto,
    File,
    Cluster,
    None,
}

/// Where the agent takes the tunnels' peers from, once the flags are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    None,
    File(PathBuf),
    /// The Nodes of the API, when the agent has --node-name and credentials.
    Cluster,
}

impl Args {
    /// The peers source: `--peers-source`, with `auto` resolved by whether a --peers-file
    /// is given. A flag that the chosen source would ignore is an error.
    pub fn peers(&self) -> Result<Peers, String> {
        match (self.peers_source, &self.peers_file) {
            (PeersSource::Auto | PeersSource::File, Some(file)) => Ok(Peers::File(file.clone())),
            (PeersSource::Auto | PeersSource::Cluster, None) => Ok(Peers::Cluster),
            (PeersSource::None, None) => Ok(Peers::None),
            (PeersSource::File, None) => Err("--peers-source=file needs a --peers-file".into()),
            (PeersSource::Cluster | PeersSource::None, Some(file)) => Err(format!(
                "--peers-file {} is not read with --peers-source={}",
                file.display(),
                if self.peers_source == PeersSource::None {
                    "none"
                } else {
                    "cluster"
                }
            )),
        }
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.reconcile_interval_secs)
    }

    pub fn address_block_reclaim_grace(&self) -> Duration {
        Duration::from_secs(self.address_block_reclaim_grace_secs)
    }

    pub fn shared_device_grace(&self) -> Duration {
        Duration::from_secs(self.shared_device_grace_secs)
    }

    /// How often unused shared devices are looked for: a quarter of the grace period, between
    /// one second and a minute.
    pub fn shared_device_sweep_interval(&self) -> Duration {
        (self.shared_device_grace() / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// The invocation logs to follow (`--invocation-log=` follows none).
    pub fn invocation_logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = Vec::new();
        for path in &self.invocation_log {
            if !path.as_os_str().is_empty() && !logs.contains(path) {
                logs.push(path.clone());
            }
        }
        logs
    }
}

/// A plugin name becomes a file name in the target directory: it must not be able to reach
/// outside it, nor collide with the installer's hidden temporary files.
fn parse_plugin_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("a plugin name cannot be empty".into());
    }
    if name.starts_with('.') || name.contains('/') || name.contains('\0') {
        return Err(format!(
            "{name:?} is not a plain file name (no '/', no leading '.')"
        ));
    }
    Ok(name.to_string())
}

/// A path, or "" for none (clap's own path parser refuses an empty value).
fn parse_optional_path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let args = Args::try_parse_from(["krafty-installer"]).unwrap();
        assert_eq!(args.source, PathBuf::from("/opt/krafty/bin"));
        assert_eq!(args.target, PathBuf::from("/host/opt/cni/bin"));
        assert_eq!(args.listen, "0.0.0.0:9650".parse().unwrap());
        assert_eq!(
            args.plugins,
            ["krafty-vrf", "krafty-bridge", "krafty-veth", "krafty"]
        );
        assert_eq!(args.state_dir, PathBuf::from("/var/lib/krafty"));
        assert_eq!(args.run_dir, PathBuf::from("/run/krafty"));
        assert_eq!(args.orphan_cleanup, OrphanCleanup::Delete);
        assert!(args.ipam_path.is_empty());
        assert_eq!(
            args.invocation_logs(),
            [PathBuf::from("/var/log/krafty/krafty.log")]
        );
        assert!(!args.once);
        assert_eq!(args.node_name, None);
        assert_eq!(args.address_pools, None);
        assert_eq!(args.address_block_reclaim_grace(), Duration::from_secs(600));
        assert_eq!(args.peers_file, None);
        assert_eq!(args.peers(), Ok(Peers::Cluster));
    }

    #[test]
    fn the_peers_source_takes_the_file_when_one_is_given_and_refuses_contradictions() {
        let peers = |extra: &[&str]| {
            let args = ["krafty-installer"].iter().chain(extra);
            Args::try_parse_from(args).unwrap().peers()
        };
        let file = Ok(Peers::File(PathBuf::from("/p")));
        assert_eq!(peers(&["--peers-file=/p"]), file);
        assert_eq!(peers(&["--peers-file=/p", "--peers-source=file"]), file);
        assert_eq!(peers(&["--peers-source=cluster"]), Ok(Peers::Cluster));
        assert_eq!(peers(&["--peers-source=none"]), Ok(Peers::None));
        for contradiction in [
            &["--peers-source=file"][..],
            &["--peers-source=cluster", "--peers-file=/p"],
            &["--peers-source=none", "--peers-file=/p"],
        ] {
            assert!(peers(contradiction).is_err(), "{contradiction:?}");
        }
    }

    #[test]
    fn orphan_cleanup_and_ipam_path_parse() {
        let args = Args::try_parse_from([
            "krafty-installer",
            "--orphan-cleanup=report",
            "--ipam-path=/host/opt/cni/bin,/opt/cni/bin",
        ])
        .unwrap();
        assert_eq!(args.orphan_cleanup, OrphanCleanup::Report);
        assert_eq!(
            args.ipam_path,
            [
                PathBuf::from("/host/opt/cni/bin"),
                PathBuf::from("/opt/cni/bin")
            ]
        );
        assert!(Args::try_parse_from(["krafty-installer", "--orphan-cleanup=maybe"]).is_err());
        let args = Args::try_parse_from(["krafty-installer", "--peers-file=/etc/krafty/peers"]);
        assert_eq!(
            args.unwrap().peers_file,
            Some(PathBuf::from("/etc/krafty/peers"))
        );
    }

    #[test]
    fn invocation_logs_are_a_list_and_empty_means_none() {
        let args = Args::try_parse_from([
            "krafty-installer",
            "--invocation-log=/var/log/krafty/krafty.log,/var/log/krafty/lab.log,/var/log/krafty/krafty.log",
        ])
        .unwrap();
        assert_eq!(
            args.invocation_logs(),
            [
                PathBuf::from("/var/log/krafty/krafty.log"),
                PathBuf::from("/var/log/krafty/lab.log")
            ]
        );
        let none = Args::try_parse_from(["krafty-installer", "--invocation-log="]).unwrap();
        assert!(none.invocation_logs().is_empty());
    }

    #[test]
    fn plugin_list_is_comma_separated_and_names_are_checked() {
        let args = Args::try_parse_from(["krafty-installer", "--plugins", "a,b"]).unwrap();
        assert_eq!(args.plugins, ["a", "b"]);
        for bad in ["../evil", ".krafty-tmp-x", "a/b", ""] {
            assert!(
                Args::try_parse_from(["krafty-installer", "--plugins", bad]).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
