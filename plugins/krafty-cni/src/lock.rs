//! Node-local locks: serialise what concurrent invocations must not interleave. One per
//! network (creating or removing its shared bridge and VRF, GC), and one for choosing VRF
//! tables (two ADDs must not both take the same free table).
//!
//! An flock on `<run dir>/locks/<name>.lock`. The file is unlinked when the lock is released
//! so nothing is left behind; to stay correct with unlinking, a waiter that wins the lock checks
//! that the path still names the file it locked, and starts over if it does not.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;

/// How long an invocation waits for another one on the same network before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
const RETRY_PAUSE: Duration = Duration::from_millis(2);

/// Held while alive; released (and the file removed) on drop.
#[derive(Debug)]
pub struct NodeLock {
    /// Holds the flock; closing it releases the lock.
    _held: File,
    path: PathBuf,
}

/// Network names cannot start with a dot, so this lock name cannot collide with one.
const VRF_TABLES: &str = ".vrf-tables";

impl NodeLock {
    /// The lock of one network.
    pub fn network(run_dir: &Path, network: &str) -> Result<NodeLock, Error> {
        NodeLock::acquire(run_dir, network)
    }

    /// The lock of the node's VRF table choices.
    pub fn vrf_tables(run_dir: &Path) -> Result<NodeLock, Error> {
        NodeLock::acquire(run_dir, VRF_TABLES)
    }

    /// Removes the lock files nobody holds: those of invocations killed while holding them
    /// (a lock is released with its holder, its file is not). Each is taken without waiting and
    /// released at once, which removes it; a held one is left to its holder.
    pub fn clear_stale(run_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(run_dir.join("locks")) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            if let Ok(Some(lock)) = NodeLock::try_acquire(run_dir, name, None) {
                drop(lock);
            }
        }
    }

    fn acquire(run_dir: &Path, network: &str) -> Result<NodeLock, Error> {
        let deadline = Instant::now() + WAIT_LIMIT;
        NodeLock::try_acquire(run_dir, network, Some(deadline))?.ok_or_else(|| {
            Error::TryAgainLater(format!(
                "lock {network:?} stayed held by another invocation for {}s",
                WAIT_LIMIT.as_secs()
            ))
        })
    }

    /// The lock, waiting for it until `deadline`, or not at all without one: `None` when it
    /// stayed held.
    fn try_acquire(
        run_dir: &Path,
        network: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<NodeLock>, Error> {
        let dir = run_dir.join("locks");
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(format!("{network}.lock"));
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let locked =
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if locked {
                if still_named_by(&file, &path) {
                    return Ok(Some(NodeLock { _held: file, path }));
                }
                // The holder before us removed the file: lock the one the path names now.
                continue;
            }
            if deadline.is_none_or(|deadline| Instant::now() >= deadline) {
                return Ok(None);
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}

/// Whether `path` still names the file `file` (it was not renamed or unlinked meanwhile).
pub(crate) fn still_named_by(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so no waiter can lock this file and believe it
        // holds the network; closing the descriptor then releases the lock.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn stale_lock_files_are_cleared_and_held_ones_kept() {
        let dir = std::env::temp_dir().join(format!("krafty-lock-stale-{}", std::process::id()));
        let held = NodeLock::network(&dir, "held").unwrap();
        // What a holder killed with its lock leaves: the file, and no lock on it.
        std::fs::write(dir.join("locks").join("killed.lock"), b"").unwrap();
        NodeLock::clear_stale(&dir);
        let mut left: Vec<_> = std::fs::read_dir(dir.join("locks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["held.lock"]);
        drop(held);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn excludes_concurrent_holders_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("krafty-lock-test-{}", std::process::id()));
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (dir, inside) = (dir.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let _lock = NodeLock::network(&dir, "net").unwrap();
                        assert_eq!(
                            inside.fetch_add(1, Ordering::SeqCst),
                            0,
                            "two holders at once"
                        );
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(dir.join("locks")).unwrap().collect();
        assert!(left.is_empty(), "lock files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
