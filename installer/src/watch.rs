//! inotify wake-ups for the install loop.
//!
//! The source and target directories are watched (not the files: files get replaced). Only
//! events that can change what a plugin path holds wake the loop; reads and execs (inotify
//! OPEN / CLOSE_NOWRITE, which the installer's own hashing and the runtime's execs cause) and
//! the installer's temporary files are ignored. The installer's own rename into the target
//! does wake it once more; that pass finds everything identical, writes nothing, and so
//! causes no further event.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;
use tokio::sync::Notify;

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("cannot start the file watcher: {0}")]
    Start(#[source] notify::Error),
    #[error("cannot watch {path}: {source}")]
    Add {
        path: PathBuf,
        source: notify::Error,
    },
}

/// Watches directories for changes to the named files and wakes a [`Notify`].
pub struct DirWatcher {
    watcher: RecommendedWatcher,
    dirs: Vec<PathBuf>,
    /// Directories currently watched; the event handler forgets a directory that is removed
    /// or moved away so [`DirWatcher::ensure_watching`] adds it again once it is back.
    watching: Arc<Mutex<HashSet<PathBuf>>>,
}

impl DirWatcher {
    pub fn new(
        dirs: Vec<PathBuf>,
        names: HashSet<OsString>,
        wake: Arc<Notify>,
    ) -> Result<Self, WatchError> {
        // notify reports absolute paths (relative ones joined to the working directory).
        let dirs: Vec<PathBuf> = dirs
            .into_iter()
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir))
            .collect();
        let watching: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let filter = Relevance {
            names,
            dirs: dirs.clone(),
        };
        let forget = Arc::clone(&watching);
        let watcher = notify::recommended_watcher(move |result: notify::Result<Event>| {
            match result {
                Ok(event) => {
                    if let Some(dir) = filter.lost_dir(&event) {
                        tracing::warn!(
                            "{} went away; watching it again when it is back",
                            dir.display()
                        );
                        lock(&forget).remove(dir);
                    }
                    if filter.is_relevant(&event) {
                        tracing::debug!("file event: {:?} {:?}", event.kind, event.paths);
                        wake.notify_one();
                    }
                }
                Err(error) => {
                    // A lost or overflowed watch means events were missed: check everything.
                    tracing::warn!("file watch error: {error}");
                    wake.notify_one();
                }
            }
        })
        .map_err(WatchError::Start)?;
        Ok(DirWatcher {
            watcher,
            dirs,
            watching,
        })
    }

    /// Adds a watch for every directory not yet watched. Call before each pass, so a watch
    /// that could not be set (the directory did not exist yet) is retried with the pass.
    pub fn ensure_watching(&mut self) -> Result<(), WatchError> {
        for dir in &self.dirs {
            if lock(&self.watching).contains(dir) {
                continue;
            }
            self.watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Add {
                    path: dir.clone(),
                    source,
                })?;
            lock(&self.watching).insert(dir.clone());
        }
        Ok(())
    }
}

fn lock(set: &Mutex<HashSet<PathBuf>>) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
    // The set stays consistent whatever panicked while holding it.
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Decides which events matter.
struct Relevance {
    names: HashSet<OsString>,
    dirs: Vec<PathBuf>,
}

impl Relevance {
    fn is_relevant(&self, event: &Event) -> bool {
        if event.need_rescan() {
            return true;
        }
        let changes_content = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        changes_content
            && event
                .paths
                .iter()
                .any(|path| self.is_plugin_path(path) || self.dirs.iter().any(|dir| dir == path))
    }

    fn is_plugin_path(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|name| self.names.contains(name))
            && path
                .parent()
                .is_some_and(|parent| self.dirs.iter().any(|dir| dir == parent))
    }

    /// The watched directory an event says was removed or moved away, if any.
    fn lost_dir(&self, event: &Event) -> Option<&PathBuf> {
        if !matches!(
            event.kind,
            EventKind::Remove(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
        ) {
            return None;
        }
        self.dirs
            .iter()
            .find(|dir| event.paths.iter().any(|path| path == *dir))
    }
}

/// Waits for a wake-up, then until `quiet` has passed without another: a burst of events
/// (a copy in many writes, a rename and its chmod) becomes one pass.
pub async fn debounced(wake: &Notify, quiet: Duration) {
    wake.notified().await;
    while tokio::time::timeout(quiet, wake.notified()).await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};

    fn relevance() -> Relevance {
        Relevance {
            names: ["krafty-vrf".into()].into_iter().collect(),
            dirs: vec!["/src".into(), "/dst".into()],
        }
    }

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(path.into())
    }

    #[test]
    fn plugin_changes_in_either_dir_matter() {
        let r = relevance();
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert!(r.is_relevant(&event(kind, "/dst/krafty-vrf")), "{kind:?}");
            assert!(r.is_relevant(&event(kind, "/src/krafty-vrf")), "{kind:?}");
        }
    }

    #[test]
    fn reads_temporaries_and_strangers_do_not() {
        let r = relevance();
        let modify = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(!r.is_relevant(&event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "/dst/krafty-vrf"
        )));
        assert!(!r.is_relevant(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            "/dst/krafty-vrf"
        )));
        assert!(!r.is_relevant(&event(modify, "/dst/.krafty-tmp-krafty-vrf.1.2")));
        assert!(!r.is_relevant(&event(modify, "/dst/bridge")));
        assert!(!r.is_relevant(&event(modify, "/elsewhere/krafty-vrf")));
    }

    #[test]
    fn a_removed_watched_dir_is_lost_and_relevant() {
        let r = relevance();
        let gone = event(EventKind::Remove(RemoveKind::Folder), "/dst");
        assert_eq!(r.lost_dir(&gone), Some(&PathBuf::from("/dst")));
        assert!(r.is_relevant(&gone));
        let other = event(EventKind::Remove(RemoveKind::File), "/dst/krafty-vrf");
        assert_eq!(r.lost_dir(&other), None);
    }

    #[tokio::test]
    async fn debounce_waits_for_quiet() {
        let wake = Arc::new(Notify::new());
        wake.notify_one();
        let pinger = {
            let wake = Arc::clone(&wake);
            tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    wake.notify_one();
                }
            })
        };
        let started = std::time::Instant::now();
        debounced(&wake, Duration::from_millis(60)).await;
        // Five pings 20 ms apart keep it waiting past 100 ms, then 60 ms of quiet.
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        pinger.await.unwrap();
    }
}
