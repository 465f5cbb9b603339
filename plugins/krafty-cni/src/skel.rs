//! The plugin skeleton: reads the invocation, dispatches the verb, prints the result or the
//! error, logs the invocation. A plugin implements [`Plugin`] and calls [`main`].
//!
//! stdout carries the protocol and nothing else; diagnostics go to stderr through `tracing`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::attachment::Attachment;
use crate::config::{self, NetConf, ValidAttachment};
use crate::env::{Command, Environment};
use crate::error::Error;
use crate::invocation_log::{self, Entry, LoggedError};
use crate::naming;
use crate::result::CniResult;
use crate::state::{AttachmentRecord, Records};
use crate::stderr_log;
use crate::version::CniVersion;

/// A config larger than this is not a network config.
const MAX_STDIN_BYTES: u64 = 1 << 20;

/// One verb's worth of input, parsed and checked.
#[derive(Debug)]
pub struct Request<C> {
    pub version: CniVersion,
    pub network: String,
    pub config: C,
    pub prev_result: Option<CniResult>,
    pub runtime_config: Map<String, Value>,
    /// The config's `args` (`args.cni.ips`, `args.cni.mac`, ...).
    pub args: Option<Value>,
    /// GC: the attachments of this network still in use (`cni.dev/valid-attachments`).
    pub valid_attachments: Vec<ValidAttachment>,
    pub env: Environment,
    /// Where attachment records are kept (`stateDir`, below the node's state root).
    pub state_dir: PathBuf,
    /// Where per-network locks live.
    pub run_dir: PathBuf,
    /// The config exactly as received, for delegated plugins (IPAM).
    pub stdin: Vec<u8>,
    /// ADD, DEL and CHECK: the attachment the request is about.
    attachment: Option<Attachment>,
}

impl<C> Request<C> {
    /// The result this plugin builds on: the previous one, or an empty one at the chain's head.
    pub fn result_to_extend(&self) -> CniResult {
        self.prev_result.clone().unwrap_or_default()
    }

    /// The attachment an ADD, DEL or CHECK is about (network, CNI_CONTAINERID, CNI_IFNAME).
    pub fn attachment(&self) -> Result<&Attachment, Error> {
        self.attachment.as_ref().ok_or_else(|| {
            Error::invalid_env(format!(
                "{} names no attachment (CNI_CONTAINERID and CNI_IFNAME)",
                self.env.command.as_str()
            ))
        })
    }

    /// The attachment records of the node.
    pub fn records(&self) -> Records {
        Records::new(&self.state_dir)
    }

    /// ADD: records that the attachment's ADD has begun, unless an earlier plugin of the chain
    /// did; called right before a plugin creates a device, so that a refused ADD leaves no
    /// record and an interrupted one leaves a record of what to undo (see [`crate::state`]).
    pub fn begin(&self) -> Result<(), Error> {
        let attachment = self.attachment()?;
        let records = self.records();
        if records.exists(attachment) {
            return Ok(());
        }
        records.write(&AttachmentRecord::begun(attachment, &self.env))
    }

    /// GC: whether the runtime still uses `attachment`.
    pub fn is_valid(&self, attachment: &Attachment) -> bool {
        attachment.is_listed_in(&self.valid_attachments)
    }
}

/// What each krafty plugin implements. Every verb receives a checked request.
#[allow(async_fn_in_trait)] // the skeleton drives these on its own single-threaded runtime
pub trait Plugin {
    /// The binary's name, e.g. `krafty-vrf`.
    const NAME: &'static str;
    /// The plugin's own config fields (see [`crate::config`]).
    type Config: DeserializeOwned;

    async fn add(&self, request: &Request<Self::Config>) -> Result<CniResult, Error>;
    async fn del(&self, request: &Request<Self::Config>) -> Result<(), Error>;
    async fn check(&self, request: &Request<Self::Config>) -> Result<(), Error>;
    /// STATUS: `Ok` when the plugin can serve ADD, `Error::NotAvailable` (50) when not.
    async fn status(&self, request: &Request<Self::Config>) -> Result<(), Error>;
    /// GC: removes what this plugin made for attachments of this network that are not in
    /// `request.valid_attachments`, keeping going past errors.
    async fn gc(&self, request: &Request<Self::Config>) -> Result<(), Error>;
}

/// Runs the plugin as a process: `--version` for humans, the CNI protocol otherwise.
pub fn main<P: Plugin>(plugin: P) -> ! {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("{} {}", P::NAME, env!("CARGO_PKG_VERSION"));
        std::process::exit(0);
    }
    init_tracing();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let status = run(
        &plugin,
        |name| std::env::var_os(name),
        &mut stdin.lock(),
        &mut stdout.lock(),
    );
    std::process::exit(status)
}

fn init_tracing() {
    let level = std::env::var("KRAFTY_LOG_LEVEL")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    stderr_log::init(level);
}

/// The outcome of one invocation before it is printed.
struct Outcome {
    version: CniVersion,
    output: Result<Option<Value>, Error>,
}

/// Runs one invocation with explicit inputs and returns the exit status.
pub fn run<P: Plugin>(
    plugin: &P,
    lookup: impl Fn(&str) -> Option<OsString>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    let started = Instant::now();
    let mut facts = LogFacts::default();
    let outcome = invoke(plugin, &lookup, stdin, &mut facts);
    let printed = match &outcome.output {
        Ok(Some(value)) => serde_json::to_writer(&mut *stdout, value).map_err(std::io::Error::from),
        Ok(None) => Ok(()),
        Err(error) => serde_json::to_writer(&mut *stdout, &error.to_wire(outcome.version))
            .map_err(std::io::Error::from),
    }
    .and_then(|()| stdout.flush());
    if let Err(error) = &printed {
        tracing::error!("cannot write to stdout: {error}");
    }
    if facts.command != Some(Command::Version) {
        facts.write_log(P::NAME, &lookup, started, &outcome.output);
    }
    if outcome.output.is_ok() && printed.is_ok() {
        0
    } else {
        1
    }
}

/// What the invocation log records, gathered as far as the invocation got.
#[derive(Default)]
struct LogFacts {
    command: Option<Command>,
    env: Option<Environment>,
    network: String,
    log_file: Option<Option<String>>,
    log_rotation: invocation_log::Rotation,
}

impl LogFacts {
    fn write_log(
        &self,
        plugin: &str,
        lookup: &impl Fn(&str) -> Option<OsString>,
        started: Instant,
        output: &Result<Option<Value>, Error>,
    ) {
        let log_root = lookup(config::LOG_ROOT_ENV).map(PathBuf::from);
        let requested = self.log_file.as_ref().and_then(|f| f.as_deref());
        // A refused logFile is already the invocation's error; the entry goes to the default.
        let path = match config::log_file(requested, log_root.as_deref()) {
            Ok(path) => path,
            Err(_) => config::log_file(None, log_root.as_deref()).ok().flatten(),
        };
        let Some(path) = path else { return };
        let env = self.env.as_ref();
        let netns = env
            .and_then(|e| e.netns.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let entry = Entry {
            time: invocation_log::rfc3339(SystemTime::now()),
            plugin,
            command: self.command.map_or("", Command::as_str),
            container_id: env.map_or("", |e| &e.container_id),
            network: &self.network,
            ifname: env.map_or("", |e| &e.ifname),
            netns: &netns,
            pod_namespace: env.map_or("", |e| &e.args.pod.namespace),
            pod_name: env.map_or("", |e| &e.args.pod.name),
            pod_uid: env.map_or("", |e| &e.args.pod.uid),
            args: env.map_or(&[], |e| &e.args.pairs),
            duration_us: started.elapsed().as_micros(),
            outcome: if output.is_ok() { "ok" } else { "error" },
            error: output.as_ref().err().map(|e| LoggedError {
                code: e.code(),
                msg: e.to_string(),
            }),
        };
        if let Err(error) = invocation_log::append(&path, &entry, self.log_rotation) {
            tracing::warn!(
                "cannot append to the invocation log {}: {error}",
                path.display()
            );
        }
    }
}

fn invoke<P: Plugin>(
    plugin: &P,
    lookup: &impl Fn(&str) -> Option<OsString>,
    stdin: &mut dyn Read,
    facts: &mut LogFacts,
) -> Outcome {
    let mut version = CniVersion::LATEST;
    let output = (|| {
        let env = Environment::read(lookup)?;
        facts.command = Some(env.command);
        facts.env = Some(env.clone());

        let mut input = Vec::new();
        stdin
            .take(MAX_STDIN_BYTES + 1)
            .read_to_end(&mut input)
            .map_err(|e| Error::io("reading the config from stdin", e))?;
        if input.len() as u64 > MAX_STDIN_BYTES {
            return Err(Error::Decode {
                what: "the config".into(),
                reason: format!("it is larger than {MAX_STDIN_BYTES} bytes"),
            });
        }
        if env.command == Command::Version {
            return Ok(Some(version_info(&input)));
        }
        let raw: Value = serde_json::from_slice(&input).map_err(|e| Error::Decode {
            what: "the config".into(),
            reason: e.to_string(),
        })?;
        facts.network = raw
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        facts.log_file = Some(raw.get("logFile").and_then(Value::as_str).map(String::from));
        version = config_version(&raw)?;

        let conf: NetConf<P::Config> = serde_json::from_value(raw).map_err(|e| Error::Decode {
            what: "the config".into(),
            reason: e.to_string(),
        })?;
        naming::validate_network_name(&conf.name).map_err(Error::invalid_config)?;
        let node_path = |name: &str| lookup(name).map(PathBuf::from);
        config::log_file(
            conf.log_file.as_deref(),
            node_path(config::LOG_ROOT_ENV).as_deref(),
        )?;
        facts.log_rotation = config::log_rotation(conf.log_max_bytes, conf.log_max_files)?;
        let state_dir = config::state_dir(
            conf.state_dir.as_deref(),
            node_path(config::STATE_ROOT_ENV).as_deref(),
        )?;
        let run_dir =
            node_path(config::RUN_DIR_ENV).unwrap_or_else(|| config::DEFAULT_RUN_DIR.into());
        if env.command == Command::Gc && conf.disable_gc {
            return Ok(None);
        }
        let prev_result = conf
            .prev_result
            .map(|value| CniResult::from_value(value, "prevResult"))
            .transpose()?;
        let attachment = env
            .command
            .names_an_attachment()
            .then(|| Attachment::new(&conf.name, &env.container_id, &env.ifname))
            .transpose()?;
        let request = Request {
            version,
            network: conf.name,
            config: conf.plugin,
            prev_result,
            runtime_config: conf.runtime_config.unwrap_or_default(),
            args: conf.args,
            valid_attachments: conf.valid_attachments.unwrap_or_default(),
            env,
            state_dir,
            run_dir,
            stdin: input,
            attachment,
        };
        dispatch(plugin, &request)
    })();
    Outcome { version, output }
}

/// The config's `cniVersion`, which must be one krafty speaks.
fn config_version(raw: &Value) -> Result<CniVersion, Error> {
    let text = raw
        .get("cniVersion")
        .ok_or_else(|| Error::invalid_config("cniVersion is required"))?
        .as_str()
        .ok_or_else(|| Error::invalid_config("cniVersion must be a string"))?;
    CniVersion::parse(text).ok_or_else(|| Error::incompatible_version(text))
}

/// VERSION answers in the version it was asked in, when krafty speaks it.
fn version_info(input: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(input)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .and_then(CniVersion::parse)
        })
        .unwrap_or(CniVersion::LATEST);
    serde_json::json!({
        "cniVersion": asked.as_str(),
        "supportedVersions": CniVersion::ALL.map(CniVersion::as_str),
    })
}

fn dispatch<P: Plugin>(plugin: &P, request: &Request<P::Config>) -> Result<Option<Value>, Error> {
    let command = request.env.command;
    if command == Command::Check && !request.version.supports_check() {
        return Err(Error::IncompatibleVersion {
            requested: request.version.to_string(),
            supported: "0.4.0 and later for CHECK".into(),
        });
    }
    if matches!(command, Command::Status | Command::Gc) && !request.version.supports_status_and_gc()
    {
        return Err(Error::IncompatibleVersion {
            requested: request.version.to_string(),
            supported: format!("1.1.0 and later for {}", command.as_str()),
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    runtime.block_on(async {
        match command {
            Command::Add => {
                let result = plugin.add(request).await?;
                Ok(Some(result.to_value(request.version)))
            }
            Command::Del => plugin.del(request).await.map(|()| None),
            Command::Check => plugin.check(request).await.map(|()| None),
            Command::Status => plugin.status(request).await.map(|()| None),
            Command::Gc => plugin.gc(request).await.map(|()| None),
            Command::Version => Ok(None),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Interface;
    use serde::Deserialize;
    use std::collections::HashMap;

    /// A plugin that records nothing and reports one interface, to exercise the skeleton.
    struct Probe;

    #[derive(Deserialize)]
    struct ProbeConfig {
        #[serde(default)]
        fail: bool,
    }

    impl Plugin for Probe {
        const NAME: &'static str = "krafty-probe";
        type Config = ProbeConfig;

        async fn add(&self, request: &Request<ProbeConfig>) -> Result<CniResult, Error> {
            if request.config.fail {
                return Err(Error::invalid_config("asked to fail"));
            }
            let mut result = request.result_to_extend();
            result.push_interface(Interface {
                name: "probe0".into(),
                ..Interface::default()
            });
            Ok(result)
        }
        async fn del(&self, _: &Request<ProbeConfig>) -> Result<(), Error> {
            Ok(())
        }
        async fn check(&self, _: &Request<ProbeConfig>) -> Result<(), Error> {
            Ok(())
        }
        async fn status(&self, _: &Request<ProbeConfig>) -> Result<(), Error> {
            Ok(())
        }
        async fn gc(&self, request: &Request<ProbeConfig>) -> Result<(), Error> {
            let keep = Attachment::new(&request.network, "keep", "net1")?;
            if request.is_valid(&keep) {
                Ok(())
            } else {
                Err(Error::invalid_config("gc ran without the valid list"))
            }
        }
    }

    fn invoke_probe(command: &str, stdin: &str) -> (i32, Value) {
        let log_root = std::env::temp_dir().join(format!("krafty-skel-{}", std::process::id()));
        let env: HashMap<&str, String> = HashMap::from([
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", "abc123".into()),
            ("CNI_NETNS", "/run/netns/x".into()),
            ("CNI_IFNAME", "net1".into()),
            (config::LOG_ROOT_ENV, log_root.display().to_string()),
        ]);
        let mut out = Vec::new();
        let status = run(
            &Probe,
            |name| env.get(name).map(OsString::from),
            &mut stdin.as_bytes(),
            &mut out,
        );
        let value = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).expect("stdout holds exactly one JSON document")
        };
        (status, value)
    }

    #[test]
    fn add_prints_the_result_in_the_configs_version_and_keeps_prev_result() {
        let config = r#"{"cniVersion":"0.4.0","name":"n","type":"krafty-probe",
            "prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
            "ips":[{"version":"4","address":"10.0.0.2/24","interface":0}],"custom":1}}"#;
        let (status, out) = invoke_probe("ADD", config);
        assert_eq!(status, 0, "{out}");
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["interfaces"][1]["name"], "probe0");
        assert_eq!(out["ips"][0]["version"], "4");
        assert_eq!(out.get("custom"), None, "0.4.0 defines no such field");
    }

    #[test]
    fn errors_are_the_specification_object_with_a_non_zero_exit() {
        let (status, out) = invoke_probe("ADD", r#"{"cniVersion":"1.0.0","name":"n","fail":true}"#);
        assert_eq!(status, 1);
        assert_eq!(out["code"], 7);
        assert_eq!(out["cniVersion"], "1.0.0");
        assert!(out["msg"].as_str().unwrap().contains("asked to fail"));

        let (status, out) = invoke_probe("ADD", r#"{"cniVersion":"0.1.0","name":"n"}"#);
        assert_eq!((status, out["code"].as_u64()), (1, Some(1)));
        assert_eq!(
            out["cniVersion"], "1.1.0",
            "an unsupported version is answered in the newest"
        );

        let (_, out) = invoke_probe("ADD", r#"{"name":"n"}"#);
        assert_eq!(out["code"], 7);
        let (_, out) = invoke_probe("ADD", r#"{"cniVersion":"1.0.0","name":"bad/name"}"#);
        assert_eq!(out["code"], 7);
        let (_, out) = invoke_probe("ADD", "{");
        assert_eq!(out["code"], 6);
        let (_, out) = invoke_probe(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}"#,
        );
        assert_eq!(out["code"], 6);
    }

    #[test]
    fn del_and_check_print_nothing_and_check_needs_0_4_0() {
        let (status, out) = invoke_probe("DEL", r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((status, out), (0, Value::Null));
        let (status, out) = invoke_probe("CHECK", r#"{"cniVersion":"0.4.0","name":"n"}"#);
        assert_eq!((status, out), (0, Value::Null));
        let (status, out) = invoke_probe("CHECK", r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!((status, out["code"].as_u64()), (1, Some(1)));
    }

    #[test]
    fn status_and_gc_need_1_1_0_and_gc_honours_disable_gc() {
        let (status, out) = invoke_probe("STATUS", r#"{"cniVersion":"1.1.0","name":"n"}"#);
        assert_eq!((status, out), (0, Value::Null));
        let (status, out) = invoke_probe("STATUS", r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((status, out["code"].as_u64()), (1, Some(1)));
        let gc = r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"net1"}]}"#;
        assert_eq!(invoke_probe("GC", gc).0, 0);
        let (status, _) = invoke_probe("GC", r#"{"cniVersion":"1.1.0","name":"n"}"#);
        assert_eq!(status, 1, "the probe's GC saw no valid list");
        let disabled = r#"{"cniVersion":"1.1.0","name":"n","disableGC":true}"#;
        assert_eq!(invoke_probe("GC", disabled), (0, Value::Null));
    }

    #[test]
    fn version_lists_every_supported_version() {
        let (status, out) = invoke_probe("VERSION", r#"{"cniVersion":"0.3.1"}"#);
        assert_eq!(status, 0);
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(
            out["supportedVersions"].as_array().unwrap().len(),
            CniVersion::ALL.len()
        );
    }

    #[test]
    fn oversized_input_is_refused() {
        let huge = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","pad":"{}"}}"#,
            "x".repeat(2 << 20)
        );
        let (status, out) = invoke_probe("ADD", &huge);
        assert_eq!((status, out["code"].as_u64()), (1, Some(6)));
    }
}
