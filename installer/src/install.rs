//! Copying the plugins from the image into the node's CNI bin directory.
//!
//! A runtime may exec a plugin at any moment, so the target never holds a partial file: the
//! bytes go to a temporary file in the same directory, which is made durable and executable,
//! is run once to prove it is a working plugin, and only then renamed over the old binary. A
//! running process keeps the old inode; the next exec gets the new one. Nothing is ever
//! written in place.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::probe::{self, PluginVersions, ProbeError};

/// Every temporary file the installer creates starts with this, so leftovers of a crashed
/// run are recognisable (and hidden from `ls`).
pub const TEMP_PREFIX: &str = ".krafty-tmp-";

/// rwxr-xr-x: what a CNI runtime needs, and nothing writable by others.
pub const INSTALLED_MODE: u32 = 0o755;

/// A plugin as it is installed and verified in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstalledPlugin {
    #[serde(skip)]
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub cni_versions: Vec<String>,
}

/// What one pass did to one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The target already held these bytes.
    Unchanged,
    /// New bytes from the source (first install or a changed source).
    Installed,
    /// Bytes this installer had put there before were gone or altered, and are back.
    Restored,
}

#[derive(Debug, Clone)]
pub struct PluginOutcome {
    pub plugin: InstalledPlugin,
    pub change: Change,
}

/// The result of one pass over every plugin: each plugin succeeds or fails on its own.
#[derive(Debug, Default)]
pub struct PassReport {
    pub outcomes: Vec<PluginOutcome>,
    pub failures: Vec<InstallError>,
}

impl PassReport {
    /// True when every plugin is installed and verified.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }
}

#[derive(Debug, Error)]
pub enum InstallError {
    #[error("cannot read {plugin} from the source {path}: {source}")]
    ReadSource {
        plugin: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the installed {path}: {source}")]
    ReadTarget { path: PathBuf, source: io::Error },
    #[error("cannot write {plugin} into {dir}: {source}")]
    Write {
        plugin: String,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("cannot list {dir}: {source}")]
    ListTarget { dir: PathBuf, source: io::Error },
    #[error("cannot remove the stale temporary file {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("not installing {plugin}: the new binary is not a working CNI plugin: {source}")]
    Rejected { plugin: String, source: ProbeError },
    #[error("the installed {plugin} is not a working CNI plugin: {source}")]
    InstalledBroken { plugin: String, source: ProbeError },
    #[error("{path} does not hold what was installed (sha256 {found}, mode {mode:o}; expected sha256 {expected}, mode 755)")]
    Verify {
        path: PathBuf,
        expected: String,
        found: String,
        mode: u32,
    },
    #[error("file work was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

impl InstallError {
    /// The plugin an error is about, when it is about one.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            InstallError::ReadSource { plugin, .. }
            | InstallError::Write { plugin, .. }
            | InstallError::Rejected { plugin, .. }
            | InstallError::InstalledBroken { plugin, .. } => Some(plugin),
            InstallError::ReadTarget { path, .. } | InstallError::Verify { path, .. } => {
                path.file_name().and_then(|name| name.to_str())
            }
            InstallError::ListTarget { .. }
            | InstallError::RemoveStale { .. }
            | InstallError::Interrupted(_) => None,
        }
    }
}

/// Installs a fixed set of plugins from `source` into `target`, remembering what it installed.
pub struct Installer {
    source: PathBuf,
    target: PathBuf,
    plugins: Vec<String>,
    /// Probe results by sha256: the same bytes need running only once.
    versions_by_sha: HashMap<String, PluginVersions>,
    /// The sha256 this installer last installed or found installed, by plugin: a later
    /// mismatch with the same source is a restore, not an install.
    last_installed: HashMap<String, String>,
}

impl Installer {
    pub fn new(source: PathBuf, target: PathBuf, plugins: Vec<String>) -> Self {
        Installer {
            source,
            target,
            plugins,
            versions_by_sha: HashMap::new(),
            last_installed: HashMap::new(),
        }
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn plugins(&self) -> &[String] {
        &self.plugins
    }

    /// Deletes temporary files an earlier run left in the target. Returns how many.
    pub async fn remove_stale_temporaries(&self) -> Result<usize, InstallError> {
        let dir = self.target.clone();
        tokio::task::spawn_blocking(move || remove_stale_temporaries(&dir)).await?
    }

    /// One pass: every plugin ends up identical to its source and verified, or has a failure.
    pub async fn install_all(&mut self) -> PassReport {
        match self.remove_stale_temporaries().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                "removed {removed} stale temporary file(s) from {}",
                self.target.display()
            ),
            // The write below meets the same cause and reports it with the plugin's name.
            Err(error) => tracing::debug!("{error}"),
        }
        let mut report = PassReport::default();
        for name in self.plugins.clone() {
            match self.install_one(&name).await {
                Ok(outcome) => report.outcomes.push(outcome),
                Err(error) => report.failures.push(error),
            }
        }
        let current: HashSet<&String> = self.last_installed.values().collect();
        self.versions_by_sha.retain(|sha, _| current.contains(sha));
        report
    }

    async fn install_one(&mut self, name: &str) -> Result<PluginOutcome, InstallError> {
        let source = self.source.join(name);
        let dest = self.target.join(name);
        let staged = {
            let (source, dest, name) = (source.clone(), dest.clone(), name.to_string());
            tokio::task::spawn_blocking(move || stage(&source, &dest, &name)).await??
        };
        let (change, sha256, versions) = match staged {
            Staged::AlreadyInstalled { sha256 } => {
                let versions = self.versions_of(&dest, &sha256).await.map_err(|source| {
                    InstallError::InstalledBroken {
                        plugin: name.to_string(),
                        source,
                    }
                })?;
                (Change::Unchanged, sha256, versions)
            }
            Staged::Temporary { path, sha256 } => {
                let versions = match self.versions_of(&path, &sha256).await {
                    Ok(versions) => versions,
                    Err(source) => {
                        discard(&path);
                        return Err(InstallError::Rejected {
                            plugin: name.to_string(),
                            source,
                        });
                    }
                };
                {
                    let (dest, sha256, name) = (dest.clone(), sha256.clone(), name.to_string());
                    tokio::task::spawn_blocking(move || commit(&path, &dest, &sha256, &name))
                        .await??;
                }
                let change = if self.last_installed.get(name) == Some(&sha256) {
                    Change::Restored
                } else {
                    Change::Installed
                };
                (change, sha256, versions)
            }
        };
        self.last_installed.insert(name.to_string(), sha256.clone());
        Ok(PluginOutcome {
            plugin: InstalledPlugin {
                name: name.to_string(),
                version: versions.version,
                sha256,
                cni_versions: versions.cni_versions,
            },
            change,
        })
    }

    async fn versions_of(
        &mut self,
        path: &Path,
        sha256: &str,
    ) -> Result<PluginVersions, ProbeError> {
        if let Some(known) = self.versions_by_sha.get(sha256) {
            return Ok(known.clone());
        }
        let versions = probe::probe(path).await?;
        self.versions_by_sha
            .insert(sha256.to_string(), versions.clone());
        Ok(versions)
    }
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

enum Staged {
    /// The target already holds the source's bytes with the right mode.
    AlreadyInstalled { sha256: String },
    /// The source's bytes are in a durable, executable temporary file next to the target.
    Temporary { path: PathBuf, sha256: String },
}

/// Reads the source once (so the bytes checked are the bytes installed, even if the source
/// changes meanwhile) and either finds them installed or writes them to a temporary file.
fn stage(source: &Path, dest: &Path, name: &str) -> Result<Staged, InstallError> {
    let bytes = fs::read(source).map_err(|error| InstallError::ReadSource {
        plugin: name.to_string(),
        path: source.to_path_buf(),
        source: error,
    })?;
    let sha256 = sha256_hex(&bytes);
    if holds(dest, &bytes)? {
        return Ok(Staged::AlreadyInstalled { sha256 });
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    let path = write_temporary(dir, name, &bytes).map_err(|error| InstallError::Write {
        plugin: name.to_string(),
        dir: dir.to_path_buf(),
        source: error,
    })?;
    Ok(Staged::Temporary { path, sha256 })
}

/// Whether `path` is a regular file with exactly `bytes` and the installed mode.
fn holds(path: &Path, bytes: &[u8]) -> Result<bool, InstallError> {
    let read_error = |error| InstallError::ReadTarget {
        path: path.to_path_buf(),
        source: error,
    };
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(read_error(error)),
    };
    let shaped_right = metadata.file_type().is_file()
        && metadata.permissions().mode() & 0o7777 == INSTALLED_MODE
        && metadata.len() == bytes.len() as u64;
    if !shaped_right {
        return Ok(false);
    }
    match fs::read(path) {
        Ok(existing) => Ok(existing == bytes),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(read_error(error)),
    }
}

fn write_temporary(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let path = dir.join(format!(
        "{TEMP_PREFIX}{name}.{}.{nanos}",
        std::process::id()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&path)?;
        file.write_all(bytes)?;
        // Explicitly, so the process umask cannot take bits away.
        file.set_permissions(Permissions::from_mode(INSTALLED_MODE))?;
        file.sync_all()
    })();
    match written {
        Ok(()) => Ok(path),
        Err(error) => {
            discard(&path);
            Err(error)
        }
    }
}

/// Renames the verified temporary file over the target, makes the rename durable and checks
/// what the target now holds.
fn commit(temp: &Path, dest: &Path, sha256: &str, name: &str) -> Result<(), InstallError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let write_error = |error| InstallError::Write {
        plugin: name.to_string(),
        dir: dir.to_path_buf(),
        source: error,
    };
    if let Err(error) = fs::rename(temp, dest) {
        discard(temp);
        return Err(write_error(error));
    }
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(write_error)?;
    verify(dest, sha256)
}

fn verify(path: &Path, expected: &str) -> Result<(), InstallError> {
    let read_error = |error| InstallError::ReadTarget {
        path: path.to_path_buf(),
        source: error,
    };
    let mode = fs::symlink_metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode()
        & 0o7777;
    let found = sha256_hex(&fs::read(path).map_err(read_error)?);
    if found == expected && mode == INSTALLED_MODE {
        Ok(())
    } else {
        Err(InstallError::Verify {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
            mode,
        })
    }
}

/// Best effort: a temporary file that cannot be removed now is removed as stale later.
fn discard(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {error}", path.display());
        }
    }
}

fn remove_stale_temporaries(dir: &Path) -> Result<usize, InstallError> {
    let entries = fs::read_dir(dir).map_err(|error| InstallError::ListTarget {
        dir: dir.to_path_buf(),
        source: error,
    })?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|error| InstallError::ListTarget {
            dir: dir.to_path_buf(),
            source: error,
        })?;
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(InstallError::RemoveStale {
                    path,
                    source: error,
                })
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn holds_wants_same_bytes_regular_file_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        assert!(!holds(&path, b"x").unwrap(), "missing file");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert!(!holds(&path, b"x").unwrap(), "wrong mode");
        fs::set_permissions(&path, Permissions::from_mode(0o755)).unwrap();
        assert!(holds(&path, b"x").unwrap());
        assert!(!holds(&path, b"y").unwrap(), "different bytes");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            !holds(&link, b"x").unwrap(),
            "a symlink is not an installed plugin"
        );
    }

    #[test]
    fn only_prefixed_files_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}a.1.2")), b"").unwrap();
        fs::write(dir.path().join(".keep"), b"").unwrap();
        fs::write(dir.path().join("bridge"), b"").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".keep", "bridge"]);
    }

    #[test]
    fn error_names_the_plugin() {
        let error = InstallError::Write {
            plugin: "krafty-vrf".into(),
            dir: "/t".into(),
            source: io::Error::from_raw_os_error(30),
        };
        assert_eq!(error.plugin(), Some("krafty-vrf"));
        assert!(
            error.to_string().contains("Read-only file system"),
            "{error}"
        );
    }
}
