//! The history of what krafty did to each network namespace: one JSON line per invocation.
//!
//! The file rotates by size: once it holds `max_bytes`, it is renamed `<file>.1` (`.1` to
//! `.2`, ..., the oldest dropped), keeping `max_files` files in all. Many plugin processes
//! append at once, so every line is one `write` on an O_APPEND descriptor, made while holding
//! a shared flock on the file, and a rotation holds the exclusive one: no line is written
//! into a file while it is being renamed, and a writer that opened the file just before a
//! rotation sees that the path names another file now and opens that one instead.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::lock::still_named_by;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry<'a> {
    pub time: String,
    pub plugin: &'a str,
    pub command: &'a str,
    pub container_id: &'a str,
    pub network: &'a str,
    pub ifname: &'a str,
    pub netns: &'a str,
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    pub args: &'a [(String, String)],
    pub duration_us: u128,
    pub outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<LoggedError>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoggedError {
    pub code: u32,
    pub msg: String,
}

/// What a reader of the log (the node agent's metrics) takes from an [`Entry`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    pub plugin: String,
    pub command: String,
    pub network: String,
    pub duration_us: u64,
    pub outcome: String,
    #[serde(default)]
    pub error: Option<LoggedError>,
}

/// When the log rotates and how much of it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The size at which the file is rotated.
    pub max_bytes: u64,
    /// Files kept in all: the one written to and `max_files - 1` rotated ones.
    pub max_files: u32,
}

impl Default for Rotation {
    /// 4 MiB x 3: about 30 000 invocations, at most 12 MiB on the node.
    fn default() -> Self {
        Rotation {
            max_bytes: 4 << 20,
            max_files: 3,
        }
    }
}

/// `<file>.<n>`: the n-th newest rotated file (`n >= 1`).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The log is a record, not a reason to hold up a pod: lock waits give up after this.
const LOCK_WAIT_LIMIT: Duration = Duration::from_secs(1);
/// Locks are held for microseconds: retry soon, then less and less often.
const FIRST_LOCK_PAUSE: Duration = Duration::from_micros(10);
const MAX_LOCK_PAUSE: Duration = Duration::from_millis(1);
/// Rotations that can come between opening the file and locking it, in a row, before giving up.
const OPEN_ATTEMPTS: usize = 8;

/// Appends `entry` as one line, then rotates the file if it has grown to `rotation.max_bytes`.
/// The final component must not be a symlink.
pub fn append(path: &Path, entry: &Entry<'_>, rotation: Rotation) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
    }
    let mut line = serde_json::to_vec(entry)?;
    line.push(b'\n');
    let mut file = open_locked(path)?;
    file.write_all(&line)?;
    let size = file.metadata()?.len();
    unlock(&file)?;
    if size >= rotation.max_bytes {
        rotate(path, &file, rotation).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("rotating it after the line was written failed: {error}"),
            )
        })?;
    }
    Ok(())
}

/// The file `path` names, opened for appending and holding a shared lock.
fn open_locked(path: &Path) -> std::io::Result<File> {
    for _ in 0..OPEN_ATTEMPTS {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        lock(&file, libc::LOCK_SH)?;
        if still_named_by(&file, path) {
            return Ok(file);
        }
        // Rotated between our open and our lock: this one is no longer the log.
    }
    Err(std::io::Error::other(format!(
        "{} was rotated {OPEN_ATTEMPTS} times while being opened",
        path.display()
    )))
}

/// Renames `path` (still the file `file`, and still full) to `<path>.1`, shifting the older
/// ones; a concurrent rotation that came first makes this one unnecessary.
fn rotate(path: &Path, file: &File, rotation: Rotation) -> std::io::Result<()> {
    lock(file, libc::LOCK_EX)?;
    if !still_named_by(file, path) || file.metadata()?.len() < rotation.max_bytes {
        return Ok(());
    }
    for n in (1..rotation.max_files.saturating_sub(1)).rev() {
        match std::fs::rename(rotated_path(path, n), rotated_path(path, n + 1)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    std::fs::rename(path, rotated_path(path, 1))
}

/// flock with a deadline: a rotation holds the exclusive lock for a few renames, an append
/// the shared one for one write.
fn lock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    let deadline = Instant::now() + LOCK_WAIT_LIMIT;
    let mut pause = FIRST_LOCK_PAUSE;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) || Instant::now() >= deadline {
            return Err(error);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_LOCK_PAUSE);
    }
}

fn unlock(file: &File) -> std::io::Result<()> {
    // SAFETY: as in `lock`.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `2026-11-22T08:30:00.123456Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_336_200_123_456);
        assert_eq!(rfc3339(t), "2026-11-22T08:30:00.123456Z");
        // 2024-02-29 (a leap day) at noon.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_208_000)),
            "2024-02-29T12:00:00.000000Z"
        );
    }

    fn entry(container_id: &str) -> Entry<'_> {
        Entry {
            time: rfc3339(SystemTime::now()),
            plugin: "krafty-vrf",
            command: "ADD",
            container_id,
            network: "krafty",
            ifname: "net1",
            netns: "/run/netns/x",
            pod_namespace: "default",
            pod_name: "p",
            pod_uid: "u",
            args: &[],
            duration_us: 42,
            outcome: "error",
            error: Some(LoggedError {
                code: 7,
                msg: "bad".into(),
            }),
        }
    }

    fn test_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("krafty-log-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Every line of `path` parsed, failing on any line that is not one whole entry.
    fn entries_of(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{}: a cut line",
            path.display()
        );
        text.lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: {e}: {line:?}", path.display()))
            })
            .collect()
    }

    #[test]
    fn appends_whole_lines_and_refuses_symlinks() {
        let dir = test_dir("append");
        let path = dir.join("sub").join("krafty.log");
        append(&path, &entry("abc"), Rotation::default()).unwrap();
        append(&path, &entry("abc"), Rotation::default()).unwrap();
        let lines = entries_of(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["containerId"], "abc");
        assert_eq!(lines[0]["durationUs"], 42);
        assert_eq!(lines[0]["error"]["code"], 7);
        let read: Invocation = serde_json::from_value(lines[0].clone()).unwrap();
        assert_eq!((read.plugin.as_str(), read.duration_us), ("krafty-vrf", 42));
        assert_eq!(read.error.map(|e| e.code), Some(7));

        let link = dir.join("link.log");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(append(&link, &entry("abc"), Rotation::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = test_dir("rotate");
        let path = dir.join("krafty.log");
        let line_len = serde_json::to_vec(&entry("0000")).unwrap().len() as u64 + 1;
        let rotation = Rotation {
            max_bytes: 10 * line_len,
            max_files: 3,
        };
        for n in 0..95 {
            append(&path, &entry(&format!("{n:04}")), rotation).unwrap();
        }
        // 95 lines, 10 to a file: 90 rotated away in 9 files of which 2 are kept, 5 written since.
        let ids = |path: &Path| -> Vec<u64> {
            entries_of(path)
                .iter()
                .map(|e| e["containerId"].as_str().unwrap().parse().unwrap())
                .collect()
        };
        assert_eq!(ids(&path), (90..95).collect::<Vec<_>>());
        assert_eq!(ids(&rotated_path(&path, 1)), (80..90).collect::<Vec<_>>());
        assert_eq!(ids(&rotated_path(&path, 2)), (70..80).collect::<Vec<_>>());
        assert!(!rotated_path(&path, 3).exists());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["krafty.log", "krafty.log.1", "krafty.log.2"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_appends_past_rotations_lose_and_cut_nothing() {
        let dir = test_dir("concurrent");
        let path = dir.join("krafty.log");
        const THREADS: usize = 16;
        const EACH: usize = 500;
        let line_len = serde_json::to_vec(&entry("00-0000")).unwrap().len() as u64 + 1;
        // Room for everything (8000 lines in files of 1000: a count tells a lost line).
        let rotation = Rotation {
            max_bytes: 1000 * line_len,
            max_files: 10,
        };
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let path = &path;
                scope.spawn(move || {
                    for n in 0..EACH {
                        let id = format!("{thread:02}-{n:04}");
                        append(path, &entry(&id), rotation).unwrap();
                    }
                });
            }
        });
        let mut ids = Vec::new();
        let mut files = 0;
        for file in std::iter::once(path.clone()).chain((1..10).map(|n| rotated_path(&path, n))) {
            if file.exists() {
                files += 1;
                let lines = entries_of(&file);
                ids.extend(
                    lines
                        .iter()
                        .map(|e| e["containerId"].as_str().unwrap().to_string()),
                );
            }
        }
        assert!(
            files >= 6,
            "only {files} files: the test did not rotate enough"
        );
        assert!(
            !rotated_path(&path, 10).exists(),
            "more than max_files files"
        );
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((total, ids.len()), (THREADS * EACH, THREADS * EACH));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
