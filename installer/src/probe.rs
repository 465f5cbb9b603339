//! Running a plugin binary the way a runtime would, to learn whether it works and which
//! versions it reports.
//!
//! `CNI_COMMAND=VERSION` with `{}` on stdin is the CNI protocol's own liveness question: a
//! binary that answers it with `supportedVersions` is a CNI plugin that can at least start.
//! krafty's plugins also answer `--version` with `krafty-<name> <semver>`; its last word is
//! the plugin's own version.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A plugin that takes longer than this to answer VERSION is treated as broken.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The version string when `--version` gives nothing usable.
pub const UNKNOWN_VERSION: &str = "unknown";

/// What a working plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersions {
    /// The last word of `--version`, or [`UNKNOWN_VERSION`].
    pub version: String,
    /// The CNI specification versions from the VERSION answer.
    pub cni_versions: Vec<String>,
}

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("cannot execute {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} did not answer CNI VERSION within {timeout:?}")]
    TimedOut { path: PathBuf, timeout: Duration },
    #[error("{path} failed CNI VERSION ({status}): {stderr}")]
    Failed {
        path: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{path} answered CNI VERSION with something that is not a version list: {output:?}")]
    BadAnswer { path: PathBuf, output: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionAnswer {
    supported_versions: Vec<String>,
}

/// Asks the binary at `path` for its versions. Fails unless it answers CNI VERSION.
pub async fn probe(path: &Path) -> Result<PluginVersions, ProbeError> {
    let cni_versions = cni_versions(path).await?;
    let version = own_version(path).await;
    Ok(PluginVersions {
        version,
        cni_versions,
    })
}

async fn cni_versions(path: &Path) -> Result<Vec<String>, ProbeError> {
    let mut command = Command::new(path);
    command.env("CNI_COMMAND", "VERSION");
    let output = run(path, &mut command, b"{}").await?;
    if !output.status.success() {
        return Err(ProbeError::Failed {
            path: path.to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    match serde_json::from_slice::<VersionAnswer>(&output.stdout) {
        Ok(answer) if !answer.supported_versions.is_empty() => Ok(answer.supported_versions),
        _ => Err(ProbeError::BadAnswer {
            path: path.to_path_buf(),
            output: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        }),
    }
}

/// `--version` is krafty's own convention, so any failure here means "unknown", not "broken".
async fn own_version(path: &Path) -> String {
    let mut command = Command::new(path);
    command.arg("--version").env_remove("CNI_COMMAND");
    match run(path, &mut command, b"").await {
        Ok(output) if output.status.success() => last_word(&output.stdout),
        Ok(output) => {
            tracing::debug!("{} --version failed ({})", path.display(), output.status);
            UNKNOWN_VERSION.to_string()
        }
        Err(error) => {
            tracing::debug!("{} --version: {error}", path.display());
            UNKNOWN_VERSION.to_string()
        }
    }
}

fn last_word(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .split_whitespace()
        .last()
        .map_or_else(|| UNKNOWN_VERSION.to_string(), str::to_string)
}

async fn run(
    path: &Path,
    command: &mut Command,
    stdin: &[u8],
) -> Result<std::process::Output, ProbeError> {
    let spawn_error = |source| ProbeError::Spawn {
        path: path.to_path_buf(),
        source,
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading stdin; a broken pipe then is not its failure.
        if let Err(error) = input.write_all(stdin).await {
            tracing::debug!("{}: writing stdin: {error}", path.display());
        }
    }
    match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
        Ok(result) => result.map_err(spawn_error),
        Err(_) => Err(ProbeError::TimedOut {
            path: path.to_path_buf(),
            timeout: PROBE_TIMEOUT,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A file being written cannot be executed (ETXTBSY), and a child forked by a parallel test
    /// holds a copy of the writer's descriptor until it execs; so writing and running scripts
    /// take turns.
    static EXEC_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("plugin");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn reads_cni_versions_and_the_last_word_of_version() {
        let _turn = EXEC_TURN.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            r#"if [ "$1" = --version ]; then echo "krafty-x 1.2.3"; exit 0; fi
[ "$CNI_COMMAND" = VERSION ] || exit 3
printf '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'"#,
        );
        let versions = probe(&path).await.unwrap();
        assert_eq!(versions.version, "1.2.3");
        assert_eq!(versions.cni_versions, ["1.0.0", "1.1.0"]);
    }

    #[tokio::test]
    async fn version_is_unknown_when_the_flag_is_not_understood() {
        let _turn = EXEC_TURN.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            r#"[ "$CNI_COMMAND" = VERSION ] || exit 1
echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'"#,
        );
        assert_eq!(probe(&path).await.unwrap().version, UNKNOWN_VERSION);
    }

    #[tokio::test]
    async fn a_binary_that_does_not_answer_version_is_rejected() {
        let _turn = EXEC_TURN.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let failing = script(dir.path(), "echo nope >&2; exit 2");
        assert!(matches!(
            probe(&failing).await,
            Err(ProbeError::Failed { ref stderr, .. }) if stderr == "nope"
        ));
        let chatty = script(dir.path(), "echo '{\"cniVersion\":\"1.0.0\"}'");
        assert!(matches!(
            probe(&chatty).await,
            Err(ProbeError::BadAnswer { .. })
        ));
        let missing = dir.path().join("absent");
        assert!(matches!(
            probe(&missing).await,
            Err(ProbeError::Spawn { .. })
        ));
    }
}
