//! `--once`: install, verify, exit. Real files, real processes.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use common::{run_once, Dirs, Tmpfs, INSTALLER, PLUGINS};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn installs_into_an_empty_dir_executable_and_checksummed() {
    let dirs = Dirs::with_plugins();
    let output = run_once(&dirs, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        dirs.target_listing(),
        ["krafty", "krafty-bridge", "krafty-veth", "krafty-vrf"]
    );
    for name in PLUGINS {
        let metadata = fs::symlink_metadata(dirs.installed(name)).unwrap();
        assert!(metadata.is_file());
        assert_eq!(metadata.mode() & 0o7777, 0o755, "{name}");
        assert_eq!(
            common::sha256_of(&dirs.installed(name)).unwrap(),
            dirs.source_sha(name),
            "{name}"
        );
        assert!(
            stderr(&output).contains(&format!(
                "{name} 0.1.0 installed and verified (sha256 {})",
                dirs.source_sha(name)
            )),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn identical_bytes_are_not_rewritten() {
    let dirs = Dirs::with_plugins();
    assert!(run_once(&dirs, &[]).status.success());
    let before: Vec<_> = PLUGINS
        .iter()
        .map(|name| fs::metadata(dirs.installed(name)).unwrap())
        .collect();
    // Coarse file-system clocks must not hide a rewrite.
    std::thread::sleep(Duration::from_millis(50));
    dirs.write_source("krafty-veth", 1);
    let output = run_once(&dirs, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("krafty-vrf 0.1.0 already installed"),
        "{}",
        stderr(&output)
    );
    for (name, before) in PLUGINS.iter().zip(before) {
        let after = fs::metadata(dirs.installed(name)).unwrap();
        let same = (after.ino(), after.mtime(), after.mtime_nsec())
            == (before.ino(), before.mtime(), before.mtime_nsec());
        // Only the plugin whose source changed is replaced.
        assert_eq!(same, *name != "krafty-veth", "{name}");
    }
    assert!(dirs.all_installed());
}

#[test]
fn a_wrong_mode_is_repaired() {
    let dirs = Dirs::with_plugins();
    assert!(run_once(&dirs, &[]).status.success());
    let path = dirs.installed("krafty-bridge");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(run_once(&dirs, &[]).status.success());
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn stale_temporary_files_are_removed_and_nothing_else() {
    let dirs = Dirs::with_plugins();
    for name in [".krafty-tmp-krafty-vrf.1.2", ".krafty-tmp-whatever"] {
        fs::write(dirs.target.join(name), b"half a binary").unwrap();
    }
    fs::write(dirs.target.join(".krafty-other"), b"").unwrap();
    fs::write(dirs.target.join("bridge"), b"someone else's plugin").unwrap();
    let output = run_once(&dirs, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("removed 2 stale temporary file(s)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        dirs.target_listing(),
        [
            ".krafty-other",
            "bridge",
            "krafty",
            "krafty-bridge",
            "krafty-veth",
            "krafty-vrf"
        ]
    );
}

#[test]
fn a_read_only_target_fails_with_a_clear_message() {
    let dirs = Dirs::with_plugins();
    let mount = Tmpfs::mount(&dirs.target, "1m");
    mount.read_only();
    let output = run_once(&dirs, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "{} of the plugins could not be installed into",
            PLUGINS.len()
        )),
        "{message}"
    );
    for name in PLUGINS {
        assert!(
            message.contains(&format!(
                "cannot write {name} into {}: Read-only file system",
                dirs.target.display()
            )),
            "{message}"
        );
    }
}

#[test]
fn a_full_target_fails_with_a_clear_message_and_leaves_no_temporary_file() {
    let dirs = Dirs::with_plugins();
    let _mount = Tmpfs::mount(&dirs.target, "64k");
    common::fill(&dirs.target);
    let output = run_once(&dirs, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("No space left on device"),
        "{}",
        stderr(&output)
    );
    assert_eq!(dirs.target_listing(), ["filler"]);
}

#[test]
fn a_broken_source_is_not_installed_over_a_working_plugin() {
    let dirs = Dirs::with_plugins();
    assert!(run_once(&dirs, &[]).status.success());
    let working = common::sha256_of(&dirs.installed("krafty-vrf")).unwrap();
    fs::write(dirs.source.join("krafty-vrf"), b"#!/bin/sh\nexit 7\n").unwrap();
    let output = run_once(&dirs, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("not installing krafty-vrf: the new binary is not a working CNI plugin"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        common::sha256_of(&dirs.installed("krafty-vrf")).unwrap(),
        working
    );
    assert!(!dirs
        .target_listing()
        .iter()
        .any(|name| name.starts_with(".krafty-tmp-")));
}

#[test]
fn a_missing_source_plugin_is_named() {
    let dirs = Dirs::with_plugins();
    fs::remove_file(dirs.source.join("krafty-bridge")).unwrap();
    let output = run_once(&dirs, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot read krafty-bridge from the source"),
        "{}",
        stderr(&output)
    );
    // The others are installed all the same.
    assert!(dirs.is_installed("krafty-vrf") && dirs.is_installed("krafty-veth"));
}

#[test]
fn flags_fall_back_to_environment_variables() {
    let dirs = Dirs::with_plugins();
    let output = Command::new(INSTALLER)
        .env_clear()
        .env("KRAFTY_ONCE", "true")
        .env("KRAFTY_SOURCE", &dirs.source)
        .env("KRAFTY_TARGET", &dirs.target)
        .env("KRAFTY_PLUGINS", "krafty-vrf,krafty-veth")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(dirs.target_listing(), ["krafty-veth", "krafty-vrf"]);
}
