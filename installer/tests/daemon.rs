//! The daemon: watching, restoring, readiness, metrics, SIGTERM. Real files, real inotify,
//! real processes.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{openmetrics, Daemon, Dirs, Tmpfs, PLUGINS};

fn counter(daemon: &Daemon, name: &str, plugin: &str) -> f64 {
    daemon.metric(name, &[("plugin", plugin)])
}

#[test]
fn deleted_truncated_overwritten_and_chmodded_plugins_are_restored() {
    let dirs = Dirs::with_plugins();
    let daemon = Daemon::start(&dirs, &[]);
    daemon.wait_for("the first install", || {
        daemon.is_ready() && dirs.all_installed()
    });

    let path = dirs.installed("krafty-vrf");
    let damages: [(&str, &dyn Fn()); 4] = [
        ("deleted", &|| fs::remove_file(&path).unwrap()),
        ("truncated", &|| {
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(0)
                .unwrap()
        }),
        ("overwritten", &|| {
            fs::write(&path, b"#!/bin/sh\necho pwned\n").unwrap()
        }),
        ("made non-executable", &|| {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap()
        }),
    ];
    for (count, (what, damage)) in damages.iter().enumerate() {
        damage();
        daemon.wait_for(&format!("krafty-vrf {what} to be restored"), || {
            dirs.is_installed("krafty-vrf")
        });
        daemon.wait_for("the restore to be counted", || {
            counter(&daemon, "krafty_installer_restores_total", "krafty-vrf") == (count + 1) as f64
        });
    }
    assert_eq!(
        counter(&daemon, "krafty_installer_installs_total", "krafty-vrf"),
        1.0
    );
    assert!(daemon
        .stderr()
        .contains("krafty-vrf was deleted or altered in the target; restored 0.1.0"));
}

#[test]
fn a_changed_source_is_installed() {
    let dirs = Dirs::with_plugins();
    let daemon = Daemon::start(&dirs, &[]);
    daemon.wait_for("the first install", || daemon.is_ready());
    for generation in 1..=3 {
        dirs.write_source("krafty-bridge", generation);
        daemon.wait_for(&format!("generation {generation} to be installed"), || {
            dirs.is_installed("krafty-bridge")
        });
    }
    daemon.wait_for("the installs to be counted", || {
        counter(&daemon, "krafty_installer_installs_total", "krafty-bridge") == 4.0
    });
    assert_eq!(
        counter(&daemon, "krafty_installer_restores_total", "krafty-bridge"),
        0.0
    );
    // A changed source is also re-verified and re-reported.
    let sha = dirs.source_sha("krafty-bridge");
    daemon.wait_for("plugin_info to show the new sha256", || {
        daemon.metrics().value(
            "krafty_installer_plugin_info",
            &[
                ("plugin", "krafty-bridge"),
                ("version", "0.1.0"),
                ("sha256", &sha),
            ],
        ) == Some(1.0)
    });
}

#[test]
fn readyz_follows_installation_and_metrics_parse_and_move() {
    let dirs = Dirs::with_plugins();
    fs::remove_file(dirs.source.join("krafty-veth")).unwrap();
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(daemon.get("/healthz").0, 200);
    daemon.wait_for("the two available plugins", || {
        dirs.is_installed("krafty-vrf") && dirs.is_installed("krafty-bridge")
    });
    daemon.wait_for("the missing plugin's error to be counted", || {
        daemon.metric("krafty_installer_errors_total", &[("kind", "install")]) >= 1.0
    });
    let (status, body) = daemon.get("/readyz");
    assert_eq!(status, 503, "{body}");
    let before = daemon.metrics();
    assert_eq!(before.value("krafty_installer_ready", &[]), Some(0.0));
    assert_eq!(
        before.value("krafty_installer_last_success_timestamp_seconds", &[]),
        Some(0.0)
    );
    assert_eq!(
        before.value(
            "krafty_installer_installs_total",
            &[("plugin", "krafty-veth")]
        ),
        Some(0.0)
    );

    dirs.write_source("krafty-veth", 0);
    daemon.wait_for("ready", || daemon.is_ready());
    assert!(dirs.all_installed());

    let after = daemon.metrics();
    let families = [
        ("krafty_installer_installs", "counter"),
        ("krafty_installer_restores", "counter"),
        ("krafty_installer_errors", "counter"),
        ("krafty_installer_reconciled_attachments", "counter"),
        ("krafty_installer_last_success_timestamp_seconds", "gauge"),
        ("krafty_installer_plugin_info", "gauge"),
        ("krafty_installer_ready", "gauge"),
    ];
    for (family, kind) in families {
        assert_eq!(after.families[family].kind, kind, "{family}");
    }
    assert_eq!(after.value("krafty_installer_ready", &[]), Some(1.0));
    assert_eq!(
        after.value(
            "krafty_installer_installs_total",
            &[("plugin", "krafty-veth")]
        ),
        Some(1.0)
    );
    assert_eq!(
        after.value("krafty_installer_reconciled_attachments_total", &[]),
        Some(0.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_success = after
        .value("krafty_installer_last_success_timestamp_seconds", &[])
        .unwrap();
    assert!((now - last_success).abs() < 60.0, "{last_success} vs {now}");
    let info: Vec<_> = after
        .samples_named("krafty_installer_plugin_info")
        .collect();
    assert_eq!(info.len(), PLUGINS.len());
    for sample in info {
        let plugin = &sample.labels["plugin"];
        assert_eq!(sample.labels["sha256"], dirs.source_sha(plugin), "{plugin}");
        assert_eq!(sample.labels["version"], "0.1.0");
    }
}

#[test]
fn sigterm_exits_zero_and_leaves_the_plugins() {
    let dirs = Dirs::with_plugins();
    let daemon = Daemon::start(&dirs, &[]);
    daemon.wait_for("ready", || daemon.is_ready());
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(dirs.all_installed());
    assert_eq!(
        dirs.target_listing(),
        ["krafty", "krafty-bridge", "krafty-veth", "krafty-vrf"]
    );
}

#[test]
fn a_read_only_target_is_not_ready_retries_and_recovers() {
    let dirs = Dirs::with_plugins();
    let mount = Tmpfs::mount(&dirs.target, "1m");
    mount.read_only();
    let mut daemon = Daemon::start(&dirs, &[]);
    daemon.wait_for("two failed passes (a retry)", || {
        daemon.metric("krafty_installer_errors_total", &[("kind", "install")])
            >= 2.0 * PLUGINS.len() as f64
    });
    assert!(!daemon.is_ready());
    assert!(
        daemon.is_running(),
        "it must not crash: {}",
        daemon.stderr()
    );
    assert!(
        daemon.stderr().contains(&format!(
            "cannot write krafty-vrf into {}: Read-only file system",
            dirs.target.display()
        )),
        "{}",
        daemon.stderr()
    );
    assert!(daemon.stderr().contains("retrying in"));

    // Nothing changes in the watched directories: only the backoff can notice this.
    mount.read_write();
    daemon.wait_for("recovery after the remount", || daemon.is_ready());
    assert!(dirs.all_installed());
}

#[test]
fn idle_means_no_cpu_and_no_loop_on_its_own_renames() {
    let dirs = Dirs::with_plugins();
    let daemon = Daemon::start(&dirs, &["--log-level", "debug"]);
    daemon.wait_for("ready", || daemon.is_ready());
    // A restore makes the installer rename into the watched target: one more pass, then quiet.
    fs::remove_file(dirs.installed("krafty-veth")).unwrap();
    daemon.wait_for("the restore", || dirs.is_installed("krafty-veth"));
    std::thread::sleep(Duration::from_millis(500));
    let events_before = daemon.stderr().matches("file event").count();
    let ticks_before = daemon.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let ticks = daemon.cpu_ticks() - ticks_before;
    assert_eq!(
        daemon.stderr().matches("file event").count(),
        events_before,
        "{}",
        daemon.stderr()
    );
    // Clock ticks are 10 ms; a loop would burn hundreds in 3 s.
    assert!(ticks <= 2, "{ticks} ticks of CPU in 3 idle seconds");
}

#[test]
fn with_a_node_name_but_no_credentials_it_runs_file_only_and_says_so_once() {
    let dirs = Dirs::with_plugins();
    let daemon = Daemon::start(&dirs, &["--node-name", "node-a"]);
    daemon.wait_for("ready", || daemon.is_ready());
    fs::remove_file(dirs.installed("krafty-vrf")).unwrap();
    daemon.wait_for("a restore", || dirs.is_installed("krafty-vrf"));
    let log = daemon.stderr();
    assert_eq!(log.matches("running file-only").count(), 1, "{log}");
    assert!(log.contains("no Kubernetes credentials found"), "{log}");
}

#[test]
fn the_metrics_parser_is_strict() {
    let good = "# TYPE a counter\na_total{x=\"1\\\"\",y=\"\"} 1\n# EOF\n";
    let parsed = openmetrics::parse(good).unwrap();
    assert_eq!(
        parsed.value("a_total", &[("x", "1\""), ("y", "")]),
        Some(1.0)
    );
    for bad in [
        "# TYPE a counter\na_total 1\n",                           // no EOF
        "# TYPE a counter\na 1\n# EOF\n",                          // counter sample without _total
        "# TYPE a counter\na_total -1\n# EOF\n",                   // negative counter
        "# TYPE a gauge\na{x=\"1} 1\n# EOF\n",                     // unterminated label value
        "# TYPE a gauge\na{x=\"1\"y=\"2\"} 1\n# EOF\n",            // missing comma
        "# TYPE a gauge\na 1\na 2\n# EOF\n",                       // duplicate series
        "# TYPE a gauge\nb 1\n# EOF\n",                            // sample of another family
        "# TYPE a gauge\na x\n# EOF\n",                            // bad value
        "# TYPE a gauge\n\na 1\n# EOF\n",                          // blank line
        "# TYPE a_s gauge\n# UNIT a_s bytes\n# EOF\n",             // unit not in the name
        "# TYPE a gauge\n# TYPE b gauge\n# TYPE a gauge\n# EOF\n", // family split
    ] {
        assert!(openmetrics::parse(bad).is_err(), "accepted {bad:?}");
    }
}
