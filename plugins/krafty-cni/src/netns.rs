//! Work inside a container's network namespace.
//!
//! setns(2) changes the namespace of the calling *thread*, so krafty never calls it on a thread
//! that runs anything else: the work is handed to a fresh OS thread that enters the namespace,
//! opens its own netlink socket there (a socket stays bound to the namespace it was opened in),
//! runs on its own single-threaded runtime and ends with the work.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::error::Error;
use crate::netlink::{self, Netlink};

/// An open handle on a network namespace, e.g. the CNI_NETNS of an attachment.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens `path`. A path that does not exist is the runtime's mistake (CNI_NETNS), code 4.
    pub fn open(path: &Path) -> Result<NetNs, Error> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::invalid_env(format!(
                    "CNI_NETNS {}: no such network namespace",
                    path.display()
                ))
            } else {
                Error::Namespace {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
            }
        })?;
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace file, e.g. for IFLA_NET_NS_FD when creating a device straight inside it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `work` with a netlink connection inside this namespace, on a dedicated thread.
    pub fn run<T, F, Fut>(&self, work: F) -> Result<T, Error>
    where
        T: Send,
        F: FnOnce(Netlink) -> Fut + Send,
        Fut: Future<Output = Result<T, Error>>,
    {
        // The thread and its runtime are set up by one non-generic function for every caller
        // (each instance of them weighs kilobytes in a plugin); only `work` is the caller's.
        let mut output = None;
        let slot = &mut output;
        self.run_boxed(Box::new(move |netlink| {
            Box::pin(async move {
                *slot = Some(work(netlink).await?);
                Ok(())
            })
        }))?;
        Ok(output.expect("run_boxed succeeds only after the work did"))
    }

    fn run_boxed(&self, work: netlink::Work<'_>) -> Result<(), Error> {
        let namespace_error = |reason: String| Error::Namespace {
            path: self.path.display().to_string(),
            reason,
        };
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("krafty-netns".into())
                .spawn_scoped(scope, || {
                    setns(&self.file, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| namespace_error(format!("entering it: {e}")))?;
                    netlink::run_here("the namespace runtime", work)
                })
                .map_err(|e| Error::io("starting the namespace thread", e))?;
            worker
                .join()
                .map_err(|_| namespace_error("the namespace thread failed".into()))?
        })
    }
}
