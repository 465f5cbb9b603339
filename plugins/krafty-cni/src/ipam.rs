//! Delegation to an IPAM plugin (host-local, static, dhcp, ...), as the reference plugins do it:
//! the plugin named by `ipam.type` is looked up on CNI_PATH and run with the same stdin and
//! environment, CNI_COMMAND set to the verb at hand. host-local's ADD and DEL are served in
//! process instead whenever [`HostLocal`] understands the config (see [`crate::host_local`]),
//! and `krafty-blocks` (see [`crate::blocks`]) is only ever served in process: it has no binary.
//!
//! `state_dir` is the node's state directory (the config's `stateDir`): `krafty-blocks` keeps
//! its blocks and leases below it.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde::Deserialize;
use serde_json::Value;

use crate::blocks::{self, NetworkBlocks};
use crate::env::{Command, Environment};
use crate::error::Error;
use crate::host_local::{self, HostLocal};
use crate::result::CniResult;

/// The IPAM plugin a config delegates to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    pub plugin: String,
}

#[derive(Deserialize)]
struct WireError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

impl Ipam {
    /// Reads `ipam.type`; it becomes a file name, so it must be a plain name.
    pub fn from_config(ipam: &Value) -> Result<Ipam, Error> {
        let plugin = ipam
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_config("ipam.type is required"))?;
        let plain = !plugin.is_empty()
            && !plugin.starts_with('.')
            && plugin
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(Error::invalid_config(format!(
                "ipam.type {plugin:?} must be a plugin name, not a path"
            )));
        }
        if plugin == blocks::PLUGIN {
            blocks::validate_config(ipam)?;
        }
        Ok(Ipam {
            plugin: plugin.to_string(),
        })
    }

    fn find(&self, env: &Environment) -> Result<PathBuf, Error> {
        if env.cni_path.is_empty() {
            return Err(Error::invalid_env(format!(
                "CNI_PATH is required to find the IPAM plugin {:?}",
                self.plugin
            )));
        }
        env.cni_path
            .iter()
            .map(|dir| dir.join(&self.plugin))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| Error::Ipam {
                plugin: self.plugin.clone(),
                reason: format!(
                    "not found on CNI_PATH ({})",
                    env.cni_path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            })
    }

    /// host-local's own work done in this process, when the config is one it can serve.
    fn in_process(&self, env: &Environment, stdin: &[u8]) -> Option<HostLocal> {
        (self.plugin == host_local::PLUGIN)
            .then(|| HostLocal::from_invocation(stdin, env))
            .flatten()
    }

    /// `krafty-blocks`' store of this config's network, when that is the plugin.
    fn blocks(&self, stdin: &[u8], state_dir: &Path) -> Result<Option<NetworkBlocks>, Error> {
        if self.plugin != blocks::PLUGIN {
            return Ok(None);
        }
        let network = blocks::network_of(stdin)?;
        Ok(Some(NetworkBlocks::new(state_dir, &network)))
    }

    /// ADD: the addresses, routes and DNS the IPAM plugin hands out.
    pub fn add(
        &self,
        env: &Environment,
        stdin: &[u8],
        state_dir: &Path,
    ) -> Result<CniResult, Error> {
        if let Some(blocks) = self.blocks(stdin, state_dir)? {
            return blocks.add(env);
        }
        if let Some(host_local) = self.in_process(env, stdin) {
            return host_local.add(env);
        }
        let stdout = self.exec(Command::Add, env, stdin)?;
        let value: Value = serde_json::from_slice(&stdout).map_err(|e| Error::Ipam {
            plugin: self.plugin.clone(),
            reason: format!("its ADD result is not JSON: {e}"),
        })?;
        CniResult::from_value(
            value,
            &format!("the result of IPAM plugin {:?}", self.plugin),
        )
    }

    /// DEL. `known`: the addresses the attachment is recorded to hold, which lets host-local
    /// in process release them without reading every lease (see [`HostLocal::del`]).
    pub fn del(
        &self,
        env: &Environment,
        stdin: &[u8],
        state_dir: &Path,
        known: &[IpAddr],
    ) -> Result<(), Error> {
        if let Some(blocks) = self.blocks(stdin, state_dir)? {
            return blocks.del(env, known);
        }
        if let Some(host_local) = self.in_process(env, stdin) {
            return host_local.del(env, known);
        }
        self.exec(Command::Del, env, stdin).map(drop)
    }

    pub fn check(&self, env: &Environment, stdin: &[u8], state_dir: &Path) -> Result<(), Error> {
        if let Some(blocks) = self.blocks(stdin, state_dir)? {
            return blocks.check(env);
        }
        self.exec(Command::Check, env, stdin).map(drop)
    }

    /// STATUS and GC exist from CNI 1.1.0 on; an IPAM plugin that does not speak 1.1.0 (such as
    /// host-local before 1.2) has nothing to say to them, so they are only forwarded to one
    /// that does.
    pub fn forward_if_supported(
        &self,
        command: Command,
        env: &Environment,
        stdin: &[u8],
        state_dir: &Path,
    ) -> Result<(), Error> {
        if let Some(blocks) = self.blocks(stdin, state_dir)? {
            return match command {
                Command::Status => blocks.status(),
                Command::Gc => blocks.gc(&blocks::valid_attachments_of(stdin)?),
                _ => Ok(()),
            };
        }
        let answer = self.exec(Command::Version, env, br#"{"cniVersion":"1.1.0"}"#)?;
        let speaks_1_1 = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v.get("supportedVersions").cloned())
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|versions| versions.iter().any(|v| v == "1.1.0"));
        if !speaks_1_1 {
            tracing::debug!(
                "{} does not speak CNI 1.1.0; {} not forwarded",
                self.plugin,
                command.as_str()
            );
            return Ok(());
        }
        self.exec(command, env, stdin).map(drop)
    }

    fn exec(&self, command: Command, env: &Environment, stdin: &[u8]) -> Result<Vec<u8>, Error> {
        let path = self.find(env)?;
        let failed = |reason: String| Error::Ipam {
            plugin: self.plugin.clone(),
            reason,
        };
        let mut process = Process::new(&path);
        process
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", &env.container_id)
            .env("CNI_IFNAME", &env.ifname)
            .env(
                "CNI_PATH",
                std::env::join_paths(&env.cni_path).unwrap_or_default(),
            )
            .env("CNI_ARGS", env.args.to_cni_args());
        match &env.netns {
            Some(netns) => process.env("CNI_NETNS", netns),
            None => process.env_remove("CNI_NETNS"),
        };
        let mut child = process
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", path.display())))?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin that exits before reading its stdin is judged by its exit status below.
            let _ = input.write_all(stdin);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| failed(format!("waiting for it: {e}")))?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        match serde_json::from_slice::<WireError>(&output.stdout) {
            Ok(error) => Err(Error::IpamReported {
                plugin: self.plugin.clone(),
                code: error.code,
                msg: error.msg,
                details: error.details,
            }),
            Err(_) => Err(failed(format!(
                "{} failed ({}): {}",
                command.as_str(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_plugin_name_cannot_be_a_path() {
        assert_eq!(
            Ipam::from_config(&json!({"type": "host-local"}))
                .unwrap()
                .plugin,
            "host-local"
        );
        for bad in [
            json!({}),
            json!({"type": ""}),
            json!({"type": "../../bin/sh"}),
            json!({"type": "/bin/sh"}),
            json!({"type": ".hidden"}),
            json!({"type": 7}),
        ] {
            let err = Ipam::from_config(&bad).unwrap_err();
            assert_eq!(err.code(), 7, "{bad}");
        }
    }
}
