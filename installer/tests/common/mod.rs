//! Shared test harness: plugin fixtures, source and target directories, the installer as a
//! real process, its HTTP endpoints, a strict OpenMetrics parser and read-only mounts.
//!
//! Plugin binaries come from [`plugin_bytes`]: a small `/bin/sh` fake by default. To run the
//! same tests against the real plugins, set `KRAFTY_TEST_PLUGIN_DIR` to a directory holding
//! `krafty-vrf`, `krafty-bridge`, `krafty-veth` and `krafty` (e.g. `target/debug`); each
//! generation is then the real binary with a trailer appended, which changes its sha256 but not
//! how it runs.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod fake_api;
pub mod node_agent;
pub mod openmetrics;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const PLUGINS: [&str; 4] = ["krafty-vrf", "krafty-bridge", "krafty-veth", "krafty"];

pub const INSTALLER: &str = env!("CARGO_BIN_EXE_krafty-installer");

/// How long any "eventually" in these tests may take before it is a failure.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The bytes of plugin `name`, version `generation`: different generations differ in sha256,
/// every generation answers `--version` and CNI VERSION.
pub fn plugin_bytes(name: &str, generation: u32) -> Vec<u8> {
    let mut bytes = match std::env::var_os("KRAFTY_TEST_PLUGIN_DIR") {
        Some(dir) => fs::read(Path::new(&dir).join(name))
            .unwrap_or_else(|e| panic!("KRAFTY_TEST_PLUGIN_DIR has no {name}: {e}")),
        None => fake_plugin(name).into_bytes(),
    };
    bytes.extend_from_slice(format!("\n# krafty test generation {generation}\n").as_bytes());
    bytes
}

fn fake_plugin(name: &str) -> String {
    format!(
        r#"#!/bin/sh
# A stand-in for a krafty plugin: answers --version and CNI VERSION like the real ones.
if [ "$1" = "--version" ]; then
    echo "{name} 0.1.0"
    exit 0
fi
if [ "$CNI_COMMAND" = "VERSION" ]; then
    echo '{{"cniVersion":"1.1.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]}}'
    exit 0
fi
echo '{{"code":4,"msg":"this fake only answers VERSION"}}'
exit 1
"#
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

pub fn sha256_of(path: &Path) -> Option<String> {
    fs::read(path).ok().map(|bytes| sha256_hex(&bytes))
}

/// A source and a target directory (and a state and a log directory) under one temporary root.
pub struct Dirs {
    pub root: tempfile::TempDir,
    pub source: PathBuf,
    pub target: PathBuf,
    pub state: PathBuf,
    /// The plugins' log root; the daemon follows `krafty.log` in it.
    pub log: PathBuf,
}

impl Dirs {
    pub fn new() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("source");
        let target = root.path().join("target");
        let state = root.path().join("state");
        let log = root.path().join("log");
        for dir in [&source, &target, &state, &log] {
            fs::create_dir(dir).unwrap();
        }
        Dirs {
            root,
            source,
            target,
            state,
            log,
        }
    }

    /// Dirs with every plugin's generation 0 in the source.
    pub fn with_plugins() -> Dirs {
        let dirs = Dirs::new();
        for name in PLUGINS {
            dirs.write_source(name, 0);
        }
        dirs
    }

    /// Writes the source in place (not atomically), the way a sync tool may.
    pub fn write_source(&self, name: &str, generation: u32) {
        let path = self.source.join(name);
        fs::write(&path, plugin_bytes(name, generation)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn source_sha(&self, name: &str) -> String {
        sha256_of(&self.source.join(name)).unwrap()
    }

    pub fn installed(&self, name: &str) -> PathBuf {
        self.target.join(name)
    }

    /// True when the target holds exactly the source's bytes with mode 0755.
    pub fn is_installed(&self, name: &str) -> bool {
        let path = self.installed(name);
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            return false;
        };
        metadata.is_file()
            && metadata.mode() & 0o7777 == 0o755
            && sha256_of(&path).as_deref() == Some(self.source_sha(name).as_str())
    }

    pub fn all_installed(&self) -> bool {
        PLUGINS.iter().all(|name| self.is_installed(name))
    }

    /// Names in the target, sorted.
    pub fn target_listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.target)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

/// Polls `condition` until it holds or `PATIENCE` runs out.
pub fn eventually(condition: impl FnMut() -> bool) -> bool {
    eventually_within(PATIENCE, condition)
}

pub fn eventually_within(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `krafty-installer --once` against `dirs`, with `extra` arguments.
pub fn run_once(dirs: &Dirs, extra: &[&str]) -> Output {
    Command::new(INSTALLER)
        .arg("--once")
        .arg("--source")
        .arg(&dirs.source)
        .arg("--target")
        .arg(&dirs.target)
        .args(extra)
        .env_clear()
        .output()
        .unwrap()
}

/// The installer running as a daemon, with its stderr collected.
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    pub port: u16,
}

impl Daemon {
    /// Starts it on `dirs` with an ephemeral port, and waits until it serves HTTP.
    pub fn start(dirs: &Dirs, extra: &[&str]) -> Daemon {
        Daemon::spawn(Daemon::command(dirs, extra))
    }

    /// The daemon's command line on `dirs`, with an ephemeral port and `extra` arguments.
    pub fn command(dirs: &Dirs, extra: &[&str]) -> Command {
        let mut command = Command::new(INSTALLER);
        command
            .arg("--source")
            .arg(&dirs.source)
            .arg("--target")
            .arg(&dirs.target)
            .arg("--state-dir")
            .arg(&dirs.state)
            .arg("--invocation-log")
            .arg(dirs.log.join("krafty.log"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            // No kubeconfig, no in-cluster variables: file-only, whatever the host has.
            .env_clear()
            .env("HOME", dirs.root.path());
        command
    }

    pub fn spawn(mut command: Command) -> Daemon {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (port_sender, port_receiver) = std::sync::mpsc::channel();
        {
            let pipe = child.stderr.take().unwrap();
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(port) = line
                        .split("http://127.0.0.1:")
                        .nth(1)
                        .and_then(|rest| rest.trim().parse::<u16>().ok())
                    {
                        let _ = port_sender.send(port);
                    }
                    if std::env::var_os("KRAFTY_TEST_SHOW_LOGS").is_some() {
                        eprintln!("[installer] {line}");
                    }
                    let mut collected = stderr.lock().unwrap();
                    collected.push_str(&line);
                    collected.push('\n');
                }
            });
        }
        let port = match port_receiver.recv_timeout(PATIENCE) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the installer never said where it listens; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        Daemon {
            child,
            stderr,
            port,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }

    pub fn is_ready(&self) -> bool {
        self.get("/readyz").0 == 200
    }

    pub fn metrics(&self) -> openmetrics::Exposition {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        openmetrics::parse(&body).unwrap_or_else(|e| panic!("bad exposition: {e}\n{body}"))
    }

    /// One metric sample's value, e.g. `("krafty_installer_installs_total", &[("plugin", "x")])`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics()
            .value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// Waits for `condition`, failing the test with the installer's log if it never holds.
    pub fn wait_for(&self, what: &str, condition: impl FnMut() -> bool) {
        assert!(
            eventually(condition),
            "timed out waiting for {what}; installer stderr:\n{}",
            self.stderr()
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// CPU time (user + system) the process used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET, enough for the installer's three endpoints.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    // axum answers these small bodies with a Content-Length, never chunked.
    assert!(
        !headers.contains_key("transfer-encoding"),
        "unexpected chunked response: {head}"
    );
    (status, body.to_string())
}

/// A tmpfs mounted over a directory, unmounted on drop. Root ignores permission bits, so a
/// read-only or full target has to be a real read-only or full file system.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    pub fn read_only(&self) {
        run("mount", &["-o", "remount,ro", self.path.to_str().unwrap()]);
    }

    pub fn read_write(&self) {
        run("mount", &["-o", "remount,rw", self.path.to_str().unwrap()]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed (these tests need root and mount rights): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Fills the file system holding `dir` until a write fails with ENOSPC.
pub fn fill(dir: &Path) {
    let mut file = fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => panic!("filling {}: {error}", dir.display()),
        }
    }
    let _ = file.sync_all();
}
