//! The process: `--once`, or the daemon that installs, watches and serves until SIGTERM.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::attachments::shared::{self, SharedDeviceSweeper};
use crate::attachments::{AttachmentCleaner, NodeCleaner, Reconciler, ReportOnlyCleaner};
use crate::blocks::{self, AddressPool, BlockAgent, PoolError};
use crate::cli::{Args, OrphanCleanup, Peers, PeersSource};
use crate::cluster::events::{Notice, Notifier};
use crate::cluster::{self, annotation, events, nodes, pods};
use crate::endpoints::{self, Readiness};
use crate::install::{Change, InstallError, InstalledPlugin, Installer, PassReport};
use crate::invocations;
use crate::metrics::{ErrorKind, Metrics};
use crate::peers::{self, PeerKeeper};
use crate::watch::{debounced, DirWatcher, WatchError};

/// A failed pass is retried after this, doubling up to [`MAX_RETRY_DELAY`], unless a file
/// event comes first.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// How long pod deletions are gathered before an orphan scan.
const POD_DELETIONS_SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("{0}")]
    Incomplete(Failures),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the file watcher: {0}")]
    Watch(#[from] WatchError),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("the health and metrics server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Pools(#[from] PoolError),
    #[error("{0}")]
    Peers(String),
}

/// The plugins a `--once` run could not install, one line each.
#[derive(Debug)]
pub struct Failures {
    target: PathBuf,
    failures: Vec<InstallError>,
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of the plugins could not be installed into {}:",
            self.failures.len(),
            self.target.display()
        )?;
        for failure in &self.failures {
            write!(f, "\n  - {failure}")?;
        }
        Ok(())
    }
}

pub async fn run(args: Args) -> Result<(), AgentError> {
    if args.once {
        run_once(&args).await
    } else {
        run_daemon(&args).await
    }
}

async fn run_once(args: &Args) -> Result<(), AgentError> {
    let mut installer = installer(args);
    let report = installer.install_all().await;
    for outcome in &report.outcomes {
        let plugin = &outcome.plugin;
        let what = match outcome.change {
            Change::Unchanged => "already installed",
            Change::Installed | Change::Restored => "installed",
        };
        tracing::info!(
            "{} {} {what} and verified (sha256 {})",
            plugin.name,
            plugin.version,
            plugin.sha256
        );
    }
    if report.is_complete() {
        Ok(())
    } else {
        Err(AgentError::Incomplete(Failures {
            target: installer.target().to_path_buf(),
            failures: report.failures,
        }))
    }
}

fn installer(args: &Args) -> Installer {
    Installer::new(
        args.source.clone(),
        args.target.clone(),
        args.plugins.clone(),
    )
}

async fn run_daemon(args: &Args) -> Result<(), AgentError> {
    // A broken pools file stops the agent: running on would leave ADD answering code 11.
    let pools = match &args.address_pools {
        Some(path) => blocks::read_pools(path)?,
        None => Vec::new(),
    };
    let peers = args.peers().map_err(AgentError::Peers)?;
    let metrics = Arc::new(Metrics::new(&args.plugins));
    let readiness = Arc::new(Readiness::default());
    let shutdown = CancellationToken::new();

    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!("{name}: stopping, leaving the plugins installed");
        on_signal.cancel();
    });

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: args.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(AgentError::Serve)?;
    tracing::info!("serving /healthz, /readyz and /metrics on http://{local}");
    let server = tokio::spawn(endpoints::serve(
        listener,
        Arc::clone(&readiness),
        Arc::clone(&metrics),
        shutdown.clone(),
    ));

    let logs = args.invocation_logs();
    if !logs.is_empty() {
        let shown: Vec<String> = logs.iter().map(|p| p.display().to_string()).collect();
        tracing::info!(
            "exporting the plugins' invocations from {}",
            shown.join(", ")
        );
        tokio::spawn(invocations::follow(
            logs,
            Arc::clone(&metrics),
            shutdown.clone(),
        ));
    }

    let (installed_sender, installed) = watch::channel(Vec::new());
    let notifier = start_cluster(args, pools, &peers, installed, &metrics, &shutdown).await;
    if args.orphan_cleanup == OrphanCleanup::Delete {
        let sweeper = SharedDeviceSweeper::new(
            args.state_dir.clone(),
            args.run_dir.clone(),
            args.shared_device_grace(),
        );
        tokio::spawn(shared::run(
            sweeper,
            args.shared_device_sweep_interval(),
            shutdown.clone(),
        ));
    }

    if let Peers::File(peers_file) = peers {
        let keeper = PeerKeeper {
            peers_file,
            state_root: args.state_dir.clone(),
        };
        tokio::spawn(peers::run(keeper, shutdown.clone()));
    }

    let wake = Arc::new(Notify::new());
    let names: HashSet<OsString> = args.plugins.iter().map(OsString::from).collect();
    let mut watcher = DirWatcher::new(
        vec![args.source.clone(), args.target.clone()],
        names,
        Arc::clone(&wake),
    )?;
    let mut installer = installer(args);
    tracing::info!(
        "installing {} from {} into {}",
        args.plugins.join(", "),
        args.source.display(),
        args.target.display()
    );

    let mut loop_state = LoopState {
        metrics: &metrics,
        readiness: &readiness,
        notifier: &notifier,
        installed: &installed_sender,
        reported_failures: HashSet::new(),
    };
    let mut retry_delay = FIRST_RETRY_DELAY;
    loop {
        let watching = watcher.ensure_watching();
        if let Err(error) = &watching {
            tracing::warn!("{error}; retrying with the next pass");
            metrics.count_error(ErrorKind::Watch);
        }
        let report = tokio::select! {
            () = shutdown.cancelled() => break,
            report = installer.install_all() => report,
        };
        let retry = !report.is_complete() || watching.is_err();
        loop_state.apply(report);
        if retry {
            tracing::info!("retrying in {retry_delay:?} or on the next file event");
        }
        let next_event = async {
            if retry {
                // A failing pass can itself cause file events (a rename that then fails to
                // verify): events must not turn the backoff into a busy loop.
                tokio::time::sleep(FIRST_RETRY_DELAY).await;
            }
            debounced(&wake, args.debounce()).await;
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = next_event => {},
            () = tokio::time::sleep(retry_delay), if retry => {},
        }
        retry_delay = if retry {
            (retry_delay * 2).min(MAX_RETRY_DELAY)
        } else {
            FIRST_RETRY_DELAY
        };
    }

    match server.await {
        Ok(result) => result.map_err(AgentError::Serve),
        Err(error) => Err(AgentError::Serve(std::io::Error::other(error))),
    }
}

/// What the install loop updates after each pass.
struct LoopState<'a> {
    metrics: &'a Metrics,
    readiness: &'a Readiness,
    notifier: &'a Notifier,
    installed: &'a watch::Sender<Vec<InstalledPlugin>>,
    /// Failure messages already posted as Events: a failure repeated by every retry is
    /// posted once, again only after it went away and came back.
    reported_failures: HashSet<String>,
}

impl LoopState<'_> {
    fn apply(&mut self, report: PassReport) {
        for outcome in &report.outcomes {
            let plugin = &outcome.plugin;
            match outcome.change {
                Change::Unchanged => {}
                Change::Installed => {
                    tracing::info!(
                        "installed {} {} (sha256 {})",
                        plugin.name,
                        plugin.version,
                        plugin.sha256
                    );
                    self.metrics.count_install(&plugin.name);
                    self.notifier.send(Notice::PluginInstalled(plugin.clone()));
                }
                Change::Restored => {
                    tracing::warn!(
                        "{} was deleted or altered in the target; restored {} (sha256 {})",
                        plugin.name,
                        plugin.version,
                        plugin.sha256
                    );
                    self.metrics.count_restore(&plugin.name);
                    self.notifier.send(Notice::PluginRestored(plugin.clone()));
                }
            }
        }
        let mut failures = HashSet::new();
        for failure in &report.failures {
            let message = failure.to_string();
            tracing::error!("{message}");
            self.metrics.count_error(ErrorKind::Install);
            if !self.reported_failures.contains(&message) {
                self.notifier.send(Notice::InstallFailed(message.clone()));
            }
            failures.insert(message);
        }
        self.reported_failures = failures;

        let ready = report.failures.is_empty();
        let was_ready = self.readiness.get();
        self.readiness.set(ready);
        self.metrics.set_ready(ready);
        if !ready {
            return;
        }
        // Only a complete pass is reported (metrics, annotation): what they show is always a
        // whole, verified set.
        let installed: Vec<InstalledPlugin> = report
            .outcomes
            .into_iter()
            .map(|outcome| outcome.plugin)
            .collect();
        self.metrics.record_success(&installed);
        if !was_ready {
            tracing::info!("ready: every plugin is installed and verified");
        }
        self.installed.send_if_modified(|current| {
            let changed = *current != installed;
            if changed {
                *current = installed;
            }
            changed
        });
    }
}

/// Starts the Kubernetes side when it can, and says once why it does not.
async fn start_cluster(
    args: &Args,
    pools: Vec<AddressPool>,
    peers: &Peers,
    installed: watch::Receiver<Vec<InstalledPlugin>>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Notifier {
    let no_blocks = |why: &str| {
        if !pools.is_empty() {
            tracing::warn!(
                "{why}: no address blocks are claimed, ADD on multi-node networks answers code 11"
            );
        }
    };
    let no_peers = |why: &str| {
        if args.peers_source == PeersSource::Cluster {
            tracing::warn!("{why}: the tunnels of multi-node networks keep no peers");
        }
    };
    let Some(node) = args.node_name.clone() else {
        no_blocks("no --node-name");
        no_peers("no --node-name");
        tracing::info!(
            "no --node-name: running file-only (no node annotation, Events or orphan cleanup)"
        );
        return Notifier::disabled();
    };
    let client = match cluster::connect().await {
        Ok(client) => client,
        Err(error) => {
            no_blocks("no Kubernetes client");
            no_peers("no Kubernetes client");
            tracing::warn!(
                "{error}: running file-only (no node annotation, Events or orphan cleanup)"
            );
            return Notifier::disabled();
        }
    };
    tracing::info!(
        "node {node}: annotating {}, posting Events, reconciling attachments under {}",
        annotation::ANNOTATION,
        args.state_dir.display()
    );
    let (notifier, notices) = Notifier::channel();
    tokio::spawn(annotation::run_annotator(
        Api::<Node>::all(client.clone()),
        node.clone(),
        installed,
        Arc::clone(metrics),
        shutdown.clone(),
    ));
    tokio::spawn(events::run_publisher(
        client.clone(),
        node.clone(),
        notices,
        Arc::clone(metrics),
        shutdown.clone(),
    ));
    if !pools.is_empty() {
        let networks: Vec<&str> = pools.iter().map(|p| p.network.as_str()).collect();
        tracing::info!(
            "claiming address blocks of {} for node {node}",
            networks.join(", ")
        );
        let agent = BlockAgent::new(
            client.clone(),
            node.clone(),
            pools,
            args.state_dir.clone(),
            args.address_block_reclaim_grace(),
            Arc::clone(metrics),
        );
        tokio::spawn(blocks::run(agent, shutdown.clone()));
    }
    if *peers == Peers::Cluster {
        tokio::spawn(nodes::run_peer_watch(
            Api::<Node>::all(client.clone()),
            Api::<Pod>::all(client.clone()),
            node.clone(),
            args.state_dir.clone(),
            shutdown.clone(),
        ));
    }
    let pods = Api::<Pod>::all(client);
    match args.orphan_cleanup {
        OrphanCleanup::Delete => {
            let cleaner = NodeCleaner {
                state_dir: args.state_dir.clone(),
                run_dir: args.run_dir.clone(),
                ipam_path: args.ipam_path.clone(),
            };
            spawn_orphan_reconciler(args, pods, node, cleaner, metrics, &notifier, shutdown);
        }
        OrphanCleanup::Report => {
            let cleaner = ReportOnlyCleaner;
            spawn_orphan_reconciler(args, pods, node, cleaner, metrics, &notifier, shutdown);
        }
    }
    notifier
}

fn spawn_orphan_reconciler<C: AttachmentCleaner + 'static>(
    args: &Args,
    pods: Api<Pod>,
    node: String,
    cleaner: C,
    metrics: &Arc<Metrics>,
    notifier: &Notifier,
    shutdown: &CancellationToken,
) {
    let reconciler = Reconciler::new(
        args.state_dir.clone(),
        cleaner,
        Arc::clone(metrics),
        notifier.clone(),
    );
    tokio::spawn(pods::run_orphan_reconciler(
        pods,
        node,
        reconciler,
        args.reconcile_interval(),
        POD_DELETIONS_SETTLE,
        Arc::clone(metrics),
        shutdown.clone(),
    ));
}
