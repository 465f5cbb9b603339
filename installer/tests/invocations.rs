//! The plugins' invocation log: real plugin processes appending at once past many rotations
//! (no line lost or cut), and the daemon exporting exactly what the log holds as
//! `krafty_plugin_*` metrics. Real files, real plugins (`cargo build` puts them in
//! target/debug), the real installer.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Daemon, Dirs};
use krafty_cni::invocation_log::rotated_path;
use krafty_tests::plugin_path;
use serde_json::{json, Value};

/// logMaxBytes at its minimum, and room for every line the test writes in 10 files.
const MAX_BYTES: u64 = 65536;
const MAX_FILES: u32 = 10;

/// One plugin invocation that touches nothing outside `dirs` (the verbs and configs below
/// stop before the kernel or the state directory is changed).
struct Invocation {
    plugin: &'static str,
    command: &'static str,
    config: Value,
}

fn invocations() -> Vec<Invocation> {
    let log = json!({"logMaxBytes": MAX_BYTES, "logMaxFiles": MAX_FILES});
    let with_log = |mut config: Value| {
        config
            .as_object_mut()
            .unwrap()
            .extend(log.as_object().unwrap().clone());
        config
    };
    vec![
        // STATUS of a static address: served without the kernel.
        Invocation {
            plugin: "krafty-veth",
            command: "STATUS",
            config: with_log(json!({"cniVersion": "1.1.0", "name": "alpha",
                "type": "krafty-veth", "podIP": "172.16.1.5/24"})),
        },
        // CHECK does not exist in 0.3.1: code 1, before anything is looked at.
        Invocation {
            plugin: "krafty-veth",
            command: "CHECK",
            config: with_log(json!({"cniVersion": "0.3.1", "name": "alpha",
                "type": "krafty-veth", "podIP": "172.16.1.5/24"})),
        },
        // GC with disableGC does nothing, successfully.
        Invocation {
            plugin: "krafty-bridge",
            command: "GC",
            config: with_log(
                json!({"cniVersion": "1.1.0", "name": "beta", "type": "krafty-bridge",
                "subnet": "172.16.2.0/24", "gateway": "172.16.2.1", "disableGC": true}),
            ),
        },
        // A network name that is not one: code 7; it must not become a label value.
        Invocation {
            plugin: "krafty-vrf",
            command: "DEL",
            config: with_log(
                json!({"cniVersion": "1.0.0", "name": "not a name!", "type": "krafty-vrf"}),
            ),
        },
    ]
}

fn run_plugin(dirs: &Dirs, invocation: &Invocation, container: usize) {
    let mut child = Command::new(plugin_path(invocation.plugin))
        .env_clear()
        .env("CNI_COMMAND", invocation.command)
        .env("CNI_CONTAINERID", format!("c{container:05}"))
        .env("CNI_IFNAME", "net1")
        .env("CNI_NETNS", "/run/netns/krafty-log-test")
        .env("CNI_PATH", "/nonexistent")
        .env("KRAFTY_LOG_ROOT", &dirs.log)
        .env("KRAFTY_STATE_ROOT", &dirs.state)
        .env("KRAFTY_RUN_DIR", dirs.root.path().join("run"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let written = child
        .stdin
        .take()
        .unwrap()
        .write_all(invocation.config.to_string().as_bytes());
    // A plugin may answer before reading its config (as a runtime does, ignore the broken
    // pipe): what it did is in the log, which the test checks.
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    child.wait().unwrap();
}

/// Every file of the log, oldest first.
fn log_files(log: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..MAX_FILES)
        .rev()
        .map(|n| rotated_path(log, n))
        .filter(|path| path.exists())
        .collect();
    files.push(log.to_path_buf());
    files
}

/// Every entry in `files`; a line that is not one whole JSON object fails the test.
fn entries(files: &[PathBuf]) -> Vec<Value> {
    let mut entries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.ends_with('\n'),
            "{}: ends in a cut line",
            file.display()
        );
        for line in text.lines() {
            let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}: not a whole entry ({e}): {line:?}", file.display())
            });
            assert!(entry.is_object(), "{line}");
            entries.push(entry);
        }
    }
    entries
}

#[test]
fn concurrent_plugins_rotate_the_log_and_the_agent_counts_every_entry() {
    let dirs = Dirs::with_plugins();
    let log = dirs.log.join("krafty.log");
    // Lines from before the agent started are history, not counted.
    let kinds = invocations();
    run_plugin(&dirs, &kinds[0], 0);
    let daemon = Daemon::start(&dirs, &[]);
    daemon.wait_for("the first install", || daemon.is_ready());

    const PROCESSES: usize = 8;
    const EACH: usize = 100;
    std::thread::scope(|scope| {
        for worker in 0..PROCESSES {
            let (dirs, kinds) = (&dirs, &kinds);
            scope.spawn(move || {
                for n in 0..EACH {
                    let container = worker * EACH + n;
                    run_plugin(dirs, &kinds[container % kinds.len()], container);
                }
            });
        }
    });

    let files = log_files(&log);
    assert!(
        files.len() >= 4,
        "{} files: the test did not rotate the log enough",
        files.len()
    );
    for file in &files {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(
            size < 2 * MAX_BYTES,
            "{} holds {size} bytes",
            file.display()
        );
    }
    let all = entries(&files);
    assert_eq!(all.len(), 1 + PROCESSES * EACH, "lines lost or repeated");
    let counted = &all[1..];

    // What the metrics must say, worked out from the log itself.
    let mut by_labels: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    let mut by_plugin_command: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for entry in counted {
        let text = |key: &str| entry[key].as_str().unwrap().to_string();
        let network = match text("network").as_str() {
            "not a name!" => "(invalid)".to_string(),
            name => name.to_string(),
        };
        *by_labels
            .entry(vec![
                text("plugin"),
                text("command"),
                network,
                text("outcome"),
            ])
            .or_default() += 1.0;
        let (count, sum) = by_plugin_command
            .entry((text("plugin"), text("command")))
            .or_default();
        *count += 1.0;
        *sum += entry["durationUs"].as_f64().unwrap() / 1e6;
    }
    assert_eq!(by_labels.len(), kinds.len(), "{by_labels:?}");

    daemon.wait_for("every entry to be counted", || {
        let metrics = daemon.metrics();
        let total: f64 = metrics
            .samples_named("krafty_plugin_invocations_total")
            .map(|s| s.value)
            .sum();
        total == counted.len() as f64
    });
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.families["krafty_plugin_invocations"].kind,
        "counter"
    );
    assert_eq!(
        metrics.families["krafty_plugin_invocation_duration_seconds"].kind,
        "histogram"
    );
    for (labels, expected) in &by_labels {
        let [plugin, command, network, outcome] = &labels[..] else {
            unreachable!()
        };
        let got = metrics.value(
            "krafty_plugin_invocations_total",
            &[
                ("plugin", plugin),
                ("command", command),
                ("network", network),
                ("outcome", outcome),
            ],
        );
        assert_eq!(got, Some(*expected), "{labels:?}");
    }
    for ((plugin, command), (count, sum)) in &by_plugin_command {
        let labels = [("plugin", plugin.as_str()), ("command", command.as_str())];
        assert_eq!(
            metrics.value("krafty_plugin_invocation_duration_seconds_count", &labels),
            Some(*count)
        );
        let got = metrics
            .value("krafty_plugin_invocation_duration_seconds_sum", &labels)
            .unwrap();
        assert!(
            (got - sum).abs() < 1e-6 * count,
            "{plugin} {command}: {got} vs {sum}"
        );
        let mut infinite = labels.to_vec();
        infinite.push(("le", "+Inf"));
        assert_eq!(
            metrics.value(
                "krafty_plugin_invocation_duration_seconds_bucket",
                &infinite
            ),
            Some(*count)
        );
    }
    // The failures by code: CHECK at 0.3.1 is 1, the bad name 7.
    let per_kind = (PROCESSES * EACH / kinds.len()) as f64;
    assert_eq!(
        metrics.value(
            "krafty_plugin_errors_total",
            &[
                ("plugin", "krafty-veth"),
                ("command", "CHECK"),
                ("network", "alpha"),
                ("code", "1")
            ]
        ),
        Some(per_kind)
    );
    assert_eq!(
        metrics.value(
            "krafty_plugin_errors_total",
            &[
                ("plugin", "krafty-vrf"),
                ("command", "DEL"),
                ("network", "(invalid)"),
                ("code", "7")
            ]
        ),
        Some(per_kind)
    );
    assert_eq!(
        metrics.value(
            "krafty_installer_errors_total",
            &[("kind", "invocation_log")]
        ),
        Some(0.0)
    );
}

/// The count of `invocations()[0]`.
fn successful_statuses(daemon: &Daemon) -> Option<f64> {
    daemon.metrics().value(
        "krafty_plugin_invocations_total",
        &[
            ("plugin", "krafty-veth"),
            ("command", "STATUS"),
            ("network", "alpha"),
            ("outcome", "ok"),
        ],
    )
}

#[test]
fn a_line_that_is_not_an_entry_is_counted_as_an_error_and_skipped() {
    let dirs = Dirs::with_plugins();
    let daemon = Daemon::start(&dirs, &[]);
    daemon.wait_for("ready", || daemon.is_ready());
    let log = dirs.log.join("krafty.log");
    std::fs::write(&log, "not json\n{\"plugin\":\"krafty-vrf\"}\n").unwrap();
    run_plugin(&dirs, &invocations()[0], 1);
    daemon.wait_for("the entry after the bad lines", || {
        successful_statuses(&daemon) == Some(1.0)
    });
    assert_eq!(
        daemon.metric(
            "krafty_installer_errors_total",
            &[("kind", "invocation_log")]
        ),
        2.0
    );
}

#[test]
fn a_log_directory_made_after_the_start_is_followed() {
    let dirs = Dirs::with_plugins();
    std::fs::remove_dir(&dirs.log).unwrap();
    let daemon = Daemon::start(&dirs, &[]);
    daemon.wait_for("ready", || daemon.is_ready());
    // The plugin makes the directory and the file; the agent reads the file from its start.
    for container in 0..3 {
        run_plugin(&dirs, &invocations()[0], container);
    }
    daemon.wait_for("the three entries", || {
        successful_statuses(&daemon) == Some(3.0)
    });
}
