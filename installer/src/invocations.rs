//! The plugins' invocation log, followed as it grows: every entry becomes a count and a
//! latency observation in the metrics (`krafty_plugin_*`).
//!
//! - **Where it starts.** At the end of the file: the counters count what the plugins did since
//!   the agent started, which is what Prometheus expects of a counter (a restart is a reset;
//!   counting the old lines again would show them as a burst at the restart). A file that
//!   appears later is read from its beginning.
//! - **Rotation** (`krafty.log` renamed `krafty.log.1`, see `krafty_cni::invocation_log`): the
//!   renamed file is read to its end (it is final: a rotation waits for every write in
//!   progress), then any newer rotated file that came and went between two polls, then the
//!   new file from its beginning. A file emptied in place starts over at its beginning.
//! - **Whole lines only.** A line is taken once its newline is there; a reader can see the first
//!   part of a line whose write is still being copied in.
//! - **Woken by inotify** on the logs' directories (a write, a rename, a creation of a log
//!   file), then reading after a short gathering time, so a busy node costs a few reads a
//!   second and an idle one nothing; a slow poll catches what a lost event would hide.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use krafty_cni::config::LOG_MAX_FILES_RANGE;
use krafty_cni::invocation_log::{rotated_path, Invocation};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ErrorKind as MetricsErrorKind, Metrics};
use crate::watch::DirWatcher;

/// After a wake-up, how long lines are gathered before they are read.
const GATHER_TIME: Duration = Duration::from_millis(200);
/// How often the logs are read without a wake-up: while their directories are watched, and
/// while they cannot be (not there yet).
const SAFETY_POLL: Duration = Duration::from_secs(10);
const UNWATCHED_POLL: Duration = Duration::from_millis(500);

/// Rotations followed in one poll; more are left to the next one.
const ROTATIONS_PER_POLL: usize = 4;

/// One log file, followed across rotations.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    /// The file being read, kept through errors so that nothing is read twice.
    current: Option<Followed>,
    lines: Lines,
}

#[derive(Debug)]
struct Followed {
    file: File,
    id: FileId,
}

/// Device and inode: what a path names, whatever its name.
type FileId = (u64, u64);

/// Bytes read, cut into lines.
#[derive(Debug, Default)]
struct Lines {
    /// The start of a line whose end is not there yet.
    partial: Vec<u8>,
    /// The follower started in the middle of a line: its rest is not a line.
    skip_to_next_line: bool,
}

impl LogFollower {
    /// Follows `path` from its current end (or from the beginning of a file that appears later).
    pub fn from_end(path: PathBuf) -> std::io::Result<LogFollower> {
        let mut follower = LogFollower {
            path,
            current: None,
            lines: Lines::default(),
        };
        match open(&follower.path) {
            Ok(mut file) => {
                let end = file.seek(SeekFrom::End(0))?;
                let mut last = [0u8];
                if end > 0 {
                    file.read_exact_at(&mut last, end - 1)?;
                    follower.lines.skip_to_next_line = last[0] != b'\n';
                }
                let id = id_of(&file.metadata()?);
                follower.current = Some(Followed { file, id });
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        Ok(follower)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands every whole line appended since the last poll to `on_line` (without its newline),
    /// oldest first. A fragment left at the end of a rotated file (a writer killed mid-line)
    /// is handed over too, and is not a valid entry.
    pub fn poll(&mut self, on_line: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
        for _ in 0..ROTATIONS_PER_POLL {
            let Some(current) = self.current.as_mut() else {
                match open(&self.path) {
                    Ok(file) => {
                        let id = id_of(&file.metadata()?);
                        self.current = Some(Followed { file, id });
                        continue;
                    }
                    Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
                    Err(error) => return Err(error),
                }
            };
            self.lines.read_to_end(&mut current.file, on_line)?;
            if named_id(&self.path)? == Some(current.id) {
                if current.file.metadata()?.len() >= current.file.stream_position()? {
                    return Ok(());
                }
                // Emptied in place: what is there now is new.
                current.file.seek(SeekFrom::Start(0))?;
                self.lines = Lines::default();
                continue;
            }
            // Renamed away (or removed): final now, so read what came since, to its end.
            self.lines.read_to_end(&mut current.file, on_line)?;
            self.lines.end_of_file(on_line);
            let finished = current.id;
            self.current = None;
            self.read_missed_rotations(finished, on_line)?;
        }
        Ok(())
    }

    /// The rotated files newer than the one just finished, which came and went between two
    /// polls, oldest first.
    fn read_missed_rotations(
        &mut self,
        finished: FileId,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<()> {
        let most = *LOG_MAX_FILES_RANGE.end() as u32;
        let mut position = None;
        for n in 1..most {
            if named_id(&rotated_path(&self.path, n))? == Some(finished) {
                position = Some(n);
                break;
            }
        }
        for n in (1..position.unwrap_or(1)).rev() {
            let mut file = match open(&rotated_path(&self.path, n)) {
                Ok(file) => file,
                Err(error) if error.kind() == ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            self.lines.read_to_end(&mut file, on_line)?;
            self.lines.end_of_file(on_line);
        }
        Ok(())
    }
}

impl Lines {
    fn read_to_end(
        &mut self,
        file: &mut File,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<()> {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let read = match file.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => read,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let mut rest = &buffer[..read];
            while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
                let (head, tail) = (&rest[..newline], &rest[newline + 1..]);
                if self.skip_to_next_line {
                    self.skip_to_next_line = false;
                } else if self.partial.is_empty() {
                    on_line(head);
                } else {
                    self.partial.extend_from_slice(head);
                    on_line(&self.partial);
                    self.partial.clear();
                }
                rest = tail;
            }
            if !self.skip_to_next_line {
                self.partial.extend_from_slice(rest);
            }
        }
    }

    /// A file ended for good: a line without its newline is all there will ever be of it.
    fn end_of_file(&mut self, on_line: &mut dyn FnMut(&[u8])) {
        if !self.partial.is_empty() {
            on_line(&self.partial);
        }
        *self = Lines::default();
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn id_of(metadata: &std::fs::Metadata) -> FileId {
    (metadata.dev(), metadata.ino())
}

/// What `path` names now, `None` when nothing.
fn named_id(path: &Path) -> std::io::Result<Option<FileId>> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(id_of(&metadata))),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Follows every log in `paths` until `shutdown`, counting each entry into `metrics`.
pub async fn follow(paths: Vec<PathBuf>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let wake = Arc::new(Notify::new());
    let mut watcher = log_watcher(&paths, &wake);
    let mut followers = Vec::new();
    for path in paths {
        match LogFollower::from_end(path.clone()) {
            Ok(follower) => followers.push(follower),
            Err(error) => {
                tracing::warn!(
                    "cannot follow the invocation log {}: {error}",
                    path.display()
                );
                metrics.count_error(MetricsErrorKind::InvocationLog);
            }
        }
    }
    let mut last_failures: Vec<Option<String>> = vec![None; followers.len()];
    let mut last_watch_failure = None;
    loop {
        let watching = match watcher.as_mut().map(DirWatcher::ensure_watching) {
            Some(Ok(())) => true,
            Some(Err(error)) => {
                let message = error.to_string();
                if last_watch_failure.as_ref() != Some(&message) {
                    tracing::info!(
                        "{message}; reading the invocation logs every {UNWATCHED_POLL:?}"
                    );
                }
                last_watch_failure = Some(message);
                false
            }
            None => false,
        };
        if watching {
            last_watch_failure = None;
        }
        // What was appended since the last read: small enough for the runtime's thread.
        for (follower, last_failure) in followers.iter_mut().zip(&mut last_failures) {
            match follower.poll(&mut |line| count(line, &metrics)) {
                Ok(()) => *last_failure = None,
                Err(error) => {
                    metrics.count_error(MetricsErrorKind::InvocationLog);
                    let message = error.to_string();
                    if last_failure.as_deref() != Some(message.as_str()) {
                        tracing::warn!(
                            "cannot read the invocation log {}: {message}",
                            follower.path().display()
                        );
                    }
                    *last_failure = Some(message);
                }
            }
        }
        let unwoken = if watching {
            SAFETY_POLL
        } else {
            UNWATCHED_POLL
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(unwoken) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(GATHER_TIME) => {}
        }
    }
}

/// inotify on the directories of `paths`, for the events on their file names.
fn log_watcher(paths: &[PathBuf], wake: &Arc<Notify>) -> Option<DirWatcher> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut names: HashSet<OsString> = HashSet::new();
    for path in paths {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            if !dirs.iter().any(|known| known == dir) {
                dirs.push(dir.to_path_buf());
            }
            names.insert(name.to_owned());
        }
    }
    match DirWatcher::new(dirs, names, Arc::clone(wake)) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!("{error}; reading the invocation logs every {UNWATCHED_POLL:?}");
            None
        }
    }
}

/// One line of the log, counted; a line that is not an entry counts as an error.
fn count(line: &[u8], metrics: &Metrics) {
    match serde_json::from_slice::<Invocation>(line) {
        Ok(invocation) => metrics.observe_invocation(&invocation),
        Err(error) => {
            tracing::debug!(
                "not an invocation log entry ({error}): {}",
                String::from_utf8_lossy(line)
            );
            metrics.count_error(MetricsErrorKind::InvocationLog);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn polled(follower: &mut LogFollower) -> Vec<String> {
        let mut lines = Vec::new();
        follower
            .poll(&mut |line| lines.push(String::from_utf8(line.to_vec()).unwrap()))
            .unwrap();
        lines
    }

    #[test]
    fn starts_at_the_end_and_takes_whole_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("krafty.log");
        append(&path, "old 1\nold 2\nhalf of old");
        let mut follower = LogFollower::from_end(path.clone()).unwrap();
        assert!(polled(&mut follower).is_empty());
        append(&path, " 3\nnew 1\nnew");
        assert_eq!(
            polled(&mut follower),
            ["new 1"],
            "the cut old line is skipped"
        );
        append(&path, " 2\n");
        assert_eq!(polled(&mut follower), ["new 2"]);
        assert!(polled(&mut follower).is_empty());
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_beginning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("krafty.log");
        let mut follower = LogFollower::from_end(path.clone()).unwrap();
        assert!(polled(&mut follower).is_empty());
        append(&path, "first\nsecond\n");
        assert_eq!(polled(&mut follower), ["first", "second"]);
    }

    #[test]
    fn follows_rotations_even_several_between_two_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("krafty.log");
        let rotate = || {
            for n in (1..3).rev() {
                let _ = std::fs::rename(rotated_path(&path, n), rotated_path(&path, n + 1));
            }
            std::fs::rename(&path, rotated_path(&path, 1)).unwrap();
        };
        append(&path, "before\n");
        let mut follower = LogFollower::from_end(path.clone()).unwrap();
        append(&path, "a1\na2\n");
        assert_eq!(polled(&mut follower), ["a1", "a2"]);
        append(&path, "a3\n");
        rotate();
        append(&path, "b1\n");
        assert_eq!(polled(&mut follower), ["a3", "b1"]);
        // Two rotations between polls: the file in between is read too, in order.
        append(&path, "b2\n");
        rotate();
        append(&path, "c1\n");
        rotate();
        append(&path, "d1\n");
        assert_eq!(polled(&mut follower), ["b2", "c1", "d1"]);
        // A writer killed mid-line leaves a fragment that is handed over once its file is done.
        append(&path, "d2\ncut");
        assert_eq!(polled(&mut follower), ["d2"]);
        rotate();
        append(&path, "e1\n");
        assert_eq!(polled(&mut follower), ["cut", "e1"]);
    }

    #[test]
    fn a_file_emptied_in_place_is_read_again_from_its_beginning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("krafty.log");
        append(&path, "old\n");
        let mut follower = LogFollower::from_end(path.clone()).unwrap();
        append(&path, "x\n");
        assert_eq!(polled(&mut follower), ["x"]);
        std::fs::File::create(&path).unwrap();
        append(&path, "y\n");
        assert_eq!(polled(&mut follower), ["y"]);
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        append(&target, "secret\n");
        let path = dir.path().join("krafty.log");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(LogFollower::from_end(path.clone()).is_err());
        let mut follower = LogFollower {
            path,
            current: None,
            lines: Lines::default(),
        };
        assert!(follower
            .poll(&mut |_| panic!("read through a symlink"))
            .is_err());
    }
}
