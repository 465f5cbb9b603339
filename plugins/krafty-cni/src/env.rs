//! The invocation environment: CNI_COMMAND and friends, and the `K=V;...` pairs of CNI_ARGS.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::Error;
use crate::naming;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Verbs that act on one attachment and therefore name a container and an interface.
    pub fn names_an_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// The pod an attachment belongs to, as Kubernetes runtimes pass it in CNI_ARGS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// CNI_ARGS, parsed. Unknown keys are an error unless `IgnoreUnknown` is true, as in the
/// reference plugins; every pair is kept for the invocation log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pairs: Vec<(String, String)>,
    pub pod: PodRef,
}

const KNOWN_ARGS: [&str; 5] = [
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_UID",
    "K8S_POD_INFRA_CONTAINER_ID",
];

impl CniArgs {
    pub fn parse(text: &str) -> Result<CniArgs, Error> {
        let mut args = CniArgs::default();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(Error::invalid_env(format!(
                    "CNI_ARGS: {pair:?} is not a KEY=VALUE pair"
                )));
            };
            match key {
                "K8S_POD_NAMESPACE" => args.pod.namespace = value.to_string(),
                "K8S_POD_NAME" => args.pod.name = value.to_string(),
                "K8S_POD_UID" => args.pod.uid = value.to_string(),
                _ => {}
            }
            args.pairs.push((key.to_string(), value.to_string()));
        }
        let ignore_unknown = args
            .get("IgnoreUnknown")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if !ignore_unknown {
            if let Some((key, _)) = args
                .pairs
                .iter()
                .find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str()))
            {
                return Err(Error::invalid_env(format!(
                    "CNI_ARGS: unknown key {key:?} (set IgnoreUnknown=1 to ignore it)"
                )));
            }
        }
        Ok(args)
    }

    /// The pairs in CNI_ARGS form again, for delegated plugins.
    pub fn to_cni_args(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything the runtime told the plugin through environment variables.
#[derive(Debug, Clone)]
pub struct Environment {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub cni_path: Vec<PathBuf>,
    pub args: CniArgs,
}

impl Environment {
    /// Reads the CNI variables through `lookup` (the process environment in production).
    pub fn read(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Environment, Error> {
        let text = |name: &str| -> Result<Option<String>, Error> {
            match lookup(name) {
                None => Ok(None),
                Some(value) => value
                    .into_string()
                    .map(|s| Some(s).filter(|s| !s.is_empty()))
                    .map_err(|_| Error::invalid_env(format!("{name} is not valid UTF-8"))),
            }
        };
        let command_text =
            text("CNI_COMMAND")?.ok_or_else(|| Error::invalid_env("CNI_COMMAND is not set"))?;
        let command = Command::parse(&command_text).ok_or_else(|| {
            Error::invalid_env(format!("CNI_COMMAND {command_text:?} is not a CNI verb"))
        })?;
        // VERSION answers from stdin alone: libcni's config validation runs it with CNI_NETNS,
        // CNI_IFNAME and CNI_PATH set to "dummy", and other callers leave them unset or stale.
        if command == Command::Version {
            return Ok(Environment {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                cni_path: Vec::new(),
                args: CniArgs::default(),
            });
        }

        let mut env = Environment {
            command,
            container_id: String::new(),
            netns: text("CNI_NETNS")?.map(PathBuf::from),
            ifname: String::new(),
            cni_path: text("CNI_PATH")?
                .map(|p| {
                    p.split(':')
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
            args: CniArgs::parse(&text("CNI_ARGS")?.unwrap_or_default())?,
        };
        if command.names_an_attachment() {
            env.container_id = text("CNI_CONTAINERID")?
                .ok_or_else(|| Error::invalid_env("CNI_CONTAINERID is required"))?;
            naming::validate_container_id(&env.container_id).map_err(Error::invalid_env)?;
            env.ifname =
                text("CNI_IFNAME")?.ok_or_else(|| Error::invalid_env("CNI_IFNAME is required"))?;
            naming::validate_ifname(&env.ifname)
                .map_err(|reason| Error::invalid_env(format!("CNI_IFNAME: {reason}")))?;
        }
        if matches!(command, Command::Add | Command::Check) && env.netns.is_none() {
            return Err(Error::invalid_env(format!(
                "CNI_NETNS is required for {}",
                command.as_str()
            )));
        }
        if let Some(netns) = &env.netns {
            if !netns.is_absolute() {
                return Err(Error::invalid_env(format!(
                    "CNI_NETNS {} is not an absolute path",
                    netns.display()
                )));
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> Result<Environment, Error> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Environment::read(|name| map.get(name).cloned())
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "a3f2b1c4d5e6f7a8"),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
    ];

    #[test]
    fn reads_a_kubernetes_add() {
        let mut pairs = ADD.to_vec();
        pairs.push((
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nettools-0;K8S_POD_INFRA_CONTAINER_ID=a3f2;K8S_POD_UID=1234-5678",
        ));
        let env = env_of(&pairs).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.ifname, "net1");
        assert_eq!(
            env.cni_path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(env.args.pod.namespace, "default");
        assert_eq!(env.args.pod.name, "nettools-0");
        assert_eq!(env.args.pod.uid, "1234-5678");
        assert_eq!(env.args.pairs.len(), 5);
    }

    #[test]
    fn missing_or_bad_variables_are_code_4() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            ADD.iter().copied().filter(|(k, _)| *k != name).collect()
        };
        for name in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            let err = env_of(&without(name)).unwrap_err();
            assert_eq!(err.code(), 4, "{name}");
            assert!(err.to_string().contains(name), "{err}");
        }
        let with = |name: &'static str, value: &'static str| -> Vec<(&'static str, &'static str)> {
            let mut pairs = without(name);
            pairs.push((name, value));
            pairs
        };
        for (name, value) in [
            ("CNI_COMMAND", "EXPLODE"),
            ("CNI_IFNAME", "averyveryverylongname"),
            ("CNI_IFNAME", "bad/name"),
            ("CNI_CONTAINERID", "../../etc"),
            ("CNI_NETNS", "relative/netns"),
            ("CNI_ARGS", "K8S_POD_NAME"),
            ("CNI_ARGS", "SURPRISE=1"),
        ] {
            let err = env_of(&with(name, value)).unwrap_err();
            assert_eq!(err.code(), 4, "{name}={value}: {err}");
        }
    }

    #[test]
    fn del_does_not_need_a_netns_and_version_needs_nothing() {
        let del: Vec<_> = ADD
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .collect();
        assert!(env_of(&del).unwrap().netns.is_none());
        assert_eq!(
            env_of(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn version_ignores_everything_but_the_command() {
        // What libcni's ValidateNetworkList sends, and worse.
        for noise in [
            [
                ("CNI_NETNS", "dummy"),
                ("CNI_IFNAME", "dummy"),
                ("CNI_PATH", "dummy"),
            ],
            [
                ("CNI_NETNS", "rel/x"),
                ("CNI_IFNAME", "far-too-long-for-linux"),
                ("CNI_ARGS", "NOPE"),
            ],
            [
                ("CNI_CONTAINERID", "../x"),
                ("CNI_IFNAME", ""),
                ("CNI_ARGS", "A=1;B"),
            ],
        ] {
            let mut pairs = vec![("CNI_COMMAND", "VERSION")];
            pairs.extend(noise);
            assert_eq!(
                env_of(&pairs).unwrap().command,
                Command::Version,
                "{noise:?}"
            );
        }
    }

    #[test]
    fn unknown_args_are_accepted_with_ignore_unknown() {
        let args = CniArgs::parse("IgnoreUnknown=true;FOO=bar;K8S_POD_UID=u").unwrap();
        assert_eq!(args.get("FOO"), Some("bar"));
        assert_eq!(args.pod.uid, "u");
        assert!(CniArgs::parse("").unwrap().pairs.is_empty());
    }
}
