//! Long-running work (a node agent's loop) inside a test node's network namespace, on a thread
//! of its own with a runtime of its own, until dropped: setns never touches a shared thread.

use std::fs::File;
use std::future::Future;
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};
use tokio_util::sync::CancellationToken;

use crate::Node;

/// The running work; dropping it cancels the token the work was given and waits for it.
pub struct NodeTask {
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl NodeTask {
    /// Runs `work(token)` in `node`'s network namespace until the task is dropped.
    pub fn spawn<F: Future<Output = ()>>(
        node: &Node,
        work: impl FnOnce(CancellationToken) -> F + Send + 'static,
    ) -> NodeTask {
        let netns = File::open(node.netns_path()).expect("the node namespace");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            setns(&netns, CloneFlags::CLONE_NEWNET).expect("entering the node namespace");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(work(stop));
        });
        NodeTask {
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for NodeTask {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
