//! A runtime may exec a plugin at any moment: replacing it must never make an exec fail.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Daemon, Dirs};

const CHANGES: u32 = 100;

#[test]
fn executing_the_plugin_never_fails_while_the_source_changes_100_times() {
    let dirs = Dirs::with_plugins();
    let daemon = Daemon::start(&dirs, &["--debounce-ms", "5"]);
    daemon.wait_for("ready", || daemon.is_ready());

    let stop = Arc::new(AtomicBool::new(false));
    let plugin = dirs.installed("krafty-vrf");
    let executor = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let (mut runs, mut failures) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                runs += 1;
                let output = Command::new(&plugin)
                    .env_clear()
                    .env("CNI_COMMAND", "VERSION")
                    .stdin(Stdio::null())
                    .output();
                match output {
                    Ok(output)
                        if output.status.success()
                            && String::from_utf8_lossy(&output.stdout)
                                .contains("\"supportedVersions\"") => {}
                    Ok(output) => failures.push(format!(
                        "run {runs}: {} stdout {:?} stderr {:?}",
                        output.status,
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    )),
                    // ETXTBSY, ENOEXEC, ENOENT and friends.
                    Err(error) => failures.push(format!("run {runs}: {error}")),
                }
            }
            (runs, failures)
        })
    };

    for generation in 1..=CHANGES {
        dirs.write_source("krafty-vrf", generation);
        // Long enough for most changes to be installed one by one, not merged by the debounce.
        thread::sleep(Duration::from_millis(40));
    }
    daemon.wait_for("the last generation", || dirs.is_installed("krafty-vrf"));
    stop.store(true, Ordering::Relaxed);
    let (runs, failures) = executor.join().unwrap();

    let installs = daemon.metric(
        "krafty_installer_installs_total",
        &[("plugin", "krafty-vrf")],
    );
    println!("{runs} execs during {installs} installs of krafty-vrf");
    assert!(
        failures.is_empty(),
        "{} of {runs} execs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        runs >= 1000,
        "only {runs} execs: the test did not race the installs"
    );
    assert!(
        installs >= 50.0,
        "only {installs} installs: the test did not replace the plugin often"
    );
}
