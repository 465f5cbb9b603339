//! A whole invocation through `skel::run` with a probe plugin that never touches the kernel.
//!
//! Input: when it starts with `CNI_`, the lines up to the first empty line are the `CNI_*`
//! variables (`NAME=VALUE`, raw bytes) and the rest is stdin; otherwise the whole input is the
//! stdin of an ADD with valid variables. The invocation log goes below a directory of
//! `$TMPDIR` (KRAFTY_LOG_ROOT), emptied after every run.
//!
//! Checks: exit status 0 or 1; stdout empty or exactly one JSON document; on 1 the error object
//! (`cniVersion`, `code`, `msg`); on 0 what the verb prints.
#![no_main]

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use krafty_cni::config;
use krafty_cni::env::Command;
use krafty_cni::result::Interface;
use krafty_cni::{naming, CniResult, CniVersion, Error, Plugin, Request};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

struct Probe;

#[derive(Deserialize)]
struct ProbeConfig {
    #[serde(default)]
    fail: bool,
}

/// What the skeleton promises every plugin about the request it hands over.
fn check_request(request: &Request<ProbeConfig>) {
    let roots = roots();
    naming::validate_network_name(&request.network).expect("the network name was validated");
    assert!(
        request.state_dir.starts_with(&roots.state),
        "stateDir {:?} escapes the state root",
        request.state_dir
    );
    let env = &request.env;
    if matches!(env.command, Command::Add | Command::Del | Command::Check) {
        naming::validate_container_id(&env.container_id).expect("the container ID was validated");
        naming::validate_ifname(&env.ifname).expect("the ifname was validated");
    }
    if let Some(prev) = &request.prev_result {
        for ip in &prev.ips {
            if let Some(index) = ip.interface {
                assert!(index < prev.interfaces.len(), "prevResult ips[].interface out of range");
            }
        }
    }
}

impl Plugin for Probe {
    const NAME: &'static str = "krafty-fuzz-probe";
    type Config = ProbeConfig;

    async fn add(&self, request: &Request<ProbeConfig>) -> Result<CniResult, Error> {
        check_request(request);
        if request.config.fail {
            return Err(Error::invalid_config("asked to fail"));
        }
        let mut result = request.result_to_extend();
        let sandbox = request
            .env
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        result.push_interface(Interface {
            name: request.env.ifname.clone(),
            sandbox,
            ..Interface::default()
        });
        Ok(result)
    }
    async fn del(&self, request: &Request<ProbeConfig>) -> Result<(), Error> {
        check_request(request);
        Ok(())
    }
    async fn check(&self, request: &Request<ProbeConfig>) -> Result<(), Error> {
        check_request(request);
        Ok(())
    }
    async fn status(&self, request: &Request<ProbeConfig>) -> Result<(), Error> {
        check_request(request);
        Ok(())
    }
    async fn gc(&self, request: &Request<ProbeConfig>) -> Result<(), Error> {
        check_request(request);
        Ok(())
    }
}

struct Roots {
    base: PathBuf,
    log: PathBuf,
    state: PathBuf,
    run: PathBuf,
}

fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("krafty-fuzz-skel-{}", std::process::id()));
        Roots {
            log: base.join("log"),
            state: base.join("state"),
            run: base.join("run"),
            base,
        }
    })
}

const DEFAULT_ENV: [(&str, &str); 4] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "a3f2b1c4d5e6f7a8"),
    ("CNI_NETNS", "/run/netns/fuzz"),
    ("CNI_IFNAME", "net1"),
];

fuzz_target!(|data: &[u8]| {
    let mut vars: HashMap<String, OsString> = HashMap::new();
    let stdin: &[u8] = if data.starts_with(b"CNI_") {
        let (header, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&data[..at], &data[at + 2..]),
            None => (data, &data[data.len()..]),
        };
        for line in header.split(|b| *b == b'\n') {
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                let name = String::from_utf8_lossy(&line[..eq]).into_owned();
                // Only the CNI variables come from the input; the roots stay ours.
                if name.starts_with("CNI_") {
                    vars.insert(name, OsString::from_vec(line[eq + 1..].to_vec()));
                }
            }
        }
        body
    } else {
        for (name, value) in DEFAULT_ENV {
            vars.insert(name.into(), value.into());
        }
        data
    };
    let roots = roots();
    vars.insert(config::LOG_ROOT_ENV.into(), roots.log.clone().into());
    vars.insert(config::STATE_ROOT_ENV.into(), roots.state.clone().into());
    vars.insert(config::RUN_DIR_ENV.into(), roots.run.clone().into());

    let mut stdout = Vec::new();
    let status = krafty_cni::skel::run(
        &Probe,
        |name| vars.get(name).cloned(),
        &mut &stdin[..],
        &mut stdout,
    );
    // Keep the disk clean: the fuzzer may choose any logFile below the root.
    let _ = std::fs::remove_dir_all(&roots.base);

    assert!(status == 0 || status == 1, "exit status {status}");
    let out: Option<Value> = if stdout.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not exactly one JSON document ({e}): {:?}",
                String::from_utf8_lossy(&stdout)
            )
        }))
    };
    let command = vars
        .get("CNI_COMMAND")
        .and_then(|c| c.to_str())
        .and_then(Command::parse);
    if status == 1 {
        let out = out.expect("a failure prints the error object");
        let code = out.get("code").and_then(Value::as_u64);
        assert!(code.is_some_and(|c| c != 0), "no error code: {out}");
        assert!(out.get("msg").is_some_and(Value::is_string), "no msg: {out}");
        let version = out.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        assert!(CniVersion::parse(version).is_some(), "error in version {version:?}: {out}");
        return;
    }
    let command = command.expect("a successful invocation had a valid CNI_COMMAND");
    match command {
        Command::Add => {
            let out = out.expect("ADD prints its result");
            let config: Value = serde_json::from_slice(stdin).expect("ADD succeeded on JSON");
            assert_eq!(out["cniVersion"], config["cniVersion"], "{out}");
            let result = CniResult::from_value(out.clone(), "ADD's result")
                .unwrap_or_else(|e| panic!("ADD printed a result it cannot read: {e}: {out}"));
            let last = result.interfaces.last().expect("the probe's interface");
            assert_eq!(Some(last.name.as_str()), vars["CNI_IFNAME"].to_str());
        }
        Command::Version => {
            let out = out.expect("VERSION prints the versions");
            let listed = out["supportedVersions"].as_array().expect("supportedVersions");
            assert_eq!(listed.len(), CniVersion::ALL.len(), "{out}");
        }
        Command::Del | Command::Check | Command::Status | Command::Gc => {
            assert!(out.is_none(), "{command:?} printed {out:?}");
        }
    }
});
