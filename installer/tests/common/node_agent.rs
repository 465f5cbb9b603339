//! The node agent's attachment work (orphan cleanup, shared-device removal) run inside a test
//! node's network namespace, on a thread of its own: setns never touches a thread that other
//! work shares.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use krafty_cni::netlink::Netlink;
use krafty_installer::attachments::shared::SharedDeviceSweeper;
use krafty_installer::attachments::{NodeCleaner, PodsOnNode, ReconcileSummary, Reconciler};
use krafty_installer::cluster::events::{Notice, Notifier};
use krafty_installer::metrics::Metrics;
use krafty_tests::Node;
use nix::sched::{setns, CloneFlags};

/// Runs `work` inside `node`'s network namespace with a runtime and a netlink connection there.
pub fn in_node<T: Send + 'static>(
    node: &Node,
    work: impl FnOnce(&Netlink, &tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    let netns = File::open(node.netns_path()).expect("the node namespace");
    std::thread::spawn(move || {
        setns(&netns, CloneFlags::CLONE_NEWNET).expect("entering the node namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let netlink = runtime
            .block_on(async { Netlink::connect() })
            .expect("netlink");
        work(&netlink, &runtime)
    })
    .join()
    .expect("the node thread")
}

/// The cleaner the agent uses, for `node`.
pub fn cleaner(node: &Node) -> NodeCleaner {
    NodeCleaner {
        state_dir: node.state_dir(),
        run_dir: node.run_dir(),
        ipam_path: Vec::new(),
    }
}

/// One orphan scan of `node` against `pods`: its summary and the Events it sent.
pub fn reconcile(node: &Node, pods: PodsOnNode) -> (ReconcileSummary, Vec<Notice>) {
    let (state_dir, cleaner) = (node.state_dir(), cleaner(node));
    in_node(node, move |_, runtime| {
        runtime.block_on(async move {
            let metrics = Arc::new(Metrics::new(&["krafty-veth".to_string()]));
            let (notifier, mut notices) = Notifier::channel();
            let reconciler = Reconciler::new(state_dir, cleaner, metrics, notifier);
            let summary = reconciler.reconcile(&pods).await;
            drop(reconciler);
            let mut sent = Vec::new();
            while let Some(notice) = notices.recv().await {
                sent.push(notice);
            }
            (summary, sent)
        })
    })
}

/// A sweeper of `node`'s shared devices with grace period `grace`.
pub fn sweeper(node: &Node, grace: Duration) -> SharedDeviceSweeper {
    SharedDeviceSweeper::new(node.state_dir(), node.run_dir(), grace)
}

/// One sweep of `node` by a sweeper with no grace period: the devices it removed.
pub fn sweep_now(node: &Node) -> Vec<String> {
    let mut sweeper = sweeper(node, Duration::ZERO);
    in_node(node, move |netlink, runtime| {
        runtime.block_on(sweeper.sweep(netlink, Instant::now()))
    })
}
