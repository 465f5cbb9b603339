//! Measurements, not run by default (they take over a minute):
//!
//! ```sh
//! cargo test --release -p krafty-installer --test measure -- --ignored --nocapture
//! ```
//!
//! Restore latency after a deletion (median of 20), idle RSS, and CPU over a quiet minute, of
//! the daemon with its default settings. The bounds are loose: they catch a busy loop or a
//! polling fallback, not a few milliseconds.

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, Dirs};

const RESTORES: usize = 20;
const QUIET: Duration = Duration::from_secs(60);

#[test]
#[ignore = "a measurement: over a minute; run with --ignored --nocapture"]
fn restore_latency_idle_rss_and_idle_cpu() {
    let dirs = Dirs::with_plugins();
    let daemon = Daemon::start(&dirs, &[]);
    daemon.wait_for("ready", || daemon.is_ready());

    let mut latencies = Vec::with_capacity(RESTORES);
    for _ in 0..RESTORES {
        let started = Instant::now();
        fs::remove_file(dirs.installed("krafty-vrf")).unwrap();
        while !dirs.is_installed("krafty-vrf") {
            assert!(
                started.elapsed() < common::PATIENCE,
                "no restore; {}",
                daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    latencies.sort();
    let median = latencies[RESTORES / 2];

    std::thread::sleep(Duration::from_secs(2));
    let rss_kib = daemon.rss_kib();
    let ticks_before = daemon.cpu_ticks();
    std::thread::sleep(QUIET);
    let ticks = daemon.cpu_ticks() - ticks_before;
    let ms_per_tick = 1000.0 / clock_ticks_per_second();

    println!(
        "restore latency after deletion: median {median:?}, min {:?}, max {:?} ({RESTORES} runs)",
        latencies[0],
        latencies[RESTORES - 1]
    );
    println!("idle RSS: {rss_kib} KiB");
    println!(
        "CPU over a quiet {QUIET:?}: {ticks} ticks = {:.0} ms",
        ticks as f64 * ms_per_tick
    );
    assert!(median < Duration::from_secs(1), "median restore {median:?}");
    assert!(rss_kib < 64 * 1024, "idle RSS {rss_kib} KiB");
    assert!(
        ticks as f64 * ms_per_tick <= 100.0,
        "{ticks} ticks while idle"
    );
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}
