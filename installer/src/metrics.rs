//! The installer's Prometheus metrics, served as OpenMetrics text on `/metrics`: its own
//! (`krafty_installer_*`) and what the plugins did, read from their invocation log
//! (`krafty_plugin_*`, see [`crate::invocations`]).

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{text, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use krafty_cni::invocation_log::Invocation;
use krafty_cni::naming;

use crate::install::InstalledPlugin;

/// The media type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginInfoLabels {
    plugin: String,
    version: String,
    sha256: String,
}

/// What failed, for `krafty_installer_errors_total{kind}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ErrorKind {
    /// Installing or verifying a plugin.
    Install,
    /// Setting up the file watches.
    Watch,
    /// Applying the node annotation.
    Annotate,
    /// Posting an Event.
    Event,
    /// The pod watch.
    PodWatch,
    /// Cleaning up an orphaned attachment.
    Cleanup,
    /// Reading the plugins' invocation log, or a line in it that is not an entry.
    InvocationLog,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Install,
        ErrorKind::Watch,
        ErrorKind::Annotate,
        ErrorKind::Event,
        ErrorKind::PodWatch,
        ErrorKind::Cleanup,
        ErrorKind::InvocationLog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Install => "install",
            ErrorKind::Watch => "watch",
            ErrorKind::Annotate => "annotate",
            ErrorKind::Event => "event",
            ErrorKind::PodWatch => "pod_watch",
            ErrorKind::Cleanup => "cleanup",
            ErrorKind::InvocationLog => "invocation_log",
        }
    }
}

impl EncodeLabelValue for ErrorKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: ErrorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    plugin: String,
    command: String,
    network: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginErrorLabels {
    plugin: String,
    command: String,
    network: String,
    code: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    plugin: String,
    command: String,
}

/// Bucket bounds of the invocation latency, in seconds: an ADD takes a few milliseconds, a
/// DEL less, one that waits for a lock or a slow IPAM plugin up to seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The `network` label of an entry whose network name is not one (the plugin refused it):
/// such names come from untrusted configs and must not become label values.
const INVALID_NETWORK: &str = "(invalid)";

pub struct Metrics {
    registry: Registry,
    installs: Family<PluginLabels, Counter>,
    restores: Family<PluginLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    reconciled_attachments: Counter,
    last_success: Gauge<f64, AtomicU64>,
    plugin_info: Family<PluginInfoLabels, Gauge>,
    ready: Gauge,
    invocations: Family<InvocationLabels, Counter>,
    plugin_errors: Family<PluginErrorLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// Registers every metric; the per-plugin and per-kind counters start at 0, so a scrape
    /// shows them before anything happened.
    pub fn new(plugins: &[String]) -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("krafty_installer");
        let installs = Family::<PluginLabels, Counter>::default();
        let restores = Family::<PluginLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let reconciled_attachments = Counter::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        let plugin_info = Family::<PluginInfoLabels, Gauge>::default();
        let ready = Gauge::default();
        registry.register(
            "installs",
            "Plugins written into the target because the source had new bytes",
            installs.clone(),
        );
        registry.register(
            "restores",
            "Plugins written into the target because what was installed had been deleted or altered",
            restores.clone(),
        );
        registry.register("errors", "Failures, by kind", errors.clone());
        registry.register(
            "reconciled_attachments",
            "Orphaned attachments cleaned up",
            reconciled_attachments.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "Unix time of the last pass that left every plugin installed and verified",
            Unit::Seconds,
            last_success.clone(),
        );
        registry.register(
            "plugin_info",
            "The installed plugins: 1 per plugin, with its version and sha256",
            plugin_info.clone(),
        );
        registry.register(
            "ready",
            "1 while every plugin is installed and verified",
            ready.clone(),
        );
        let invocations = Family::<InvocationLabels, Counter>::default();
        let plugin_errors = Family::<PluginErrorLabels, Counter>::default();
        let durations =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let plugin_registry = root.sub_registry_with_prefix("krafty_plugin");
        plugin_registry.register(
            "invocations",
            "Plugin invocations read from the invocation log, by plugin, command, network and outcome",
            invocations.clone(),
        );
        plugin_registry.register(
            "errors",
            "Failed plugin invocations, by plugin, command, network and CNI error code",
            plugin_errors.clone(),
        );
        plugin_registry.register_with_unit(
            "invocation_duration",
            "How long plugin invocations took, by plugin and command",
            Unit::Seconds,
            durations.clone(),
        );
        // Creating a series is what makes it show (at 0); the handles are not needed.
        for plugin in plugins {
            let labels = plugin_labels(plugin);
            installs.get_or_create_owned(&labels);
            restores.get_or_create_owned(&labels);
        }
        for kind in ErrorKind::ALL {
            errors.get_or_create_owned(&ErrorLabels { kind });
        }
        Metrics {
            registry: root,
            installs,
            restores,
            errors,
            reconciled_attachments,
            last_success,
            plugin_info,
            ready,
            invocations,
            plugin_errors,
            durations,
        }
    }

    /// Counts one entry of the plugins' invocation log.
    pub fn observe_invocation(&self, invocation: &Invocation) {
        let network = if naming::validate_network_name(&invocation.network).is_ok()
            || invocation.network.is_empty()
        {
            invocation.network.clone()
        } else {
            INVALID_NETWORK.to_string()
        };
        self.invocations
            .get_or_create(&InvocationLabels {
                plugin: invocation.plugin.clone(),
                command: invocation.command.clone(),
                network: network.clone(),
                outcome: invocation.outcome.clone(),
            })
            .inc();
        if let Some(error) = &invocation.error {
            self.plugin_errors
                .get_or_create(&PluginErrorLabels {
                    plugin: invocation.plugin.clone(),
                    command: invocation.command.clone(),
                    network,
                    code: error.code,
                })
                .inc();
        }
        self.durations
            .get_or_create(&DurationLabels {
                plugin: invocation.plugin.clone(),
                command: invocation.command.clone(),
            })
            .observe(invocation.duration_us as f64 / 1e6);
    }

    pub fn count_install(&self, plugin: &str) {
        self.installs.get_or_create(&plugin_labels(plugin)).inc();
    }

    pub fn count_restore(&self, plugin: &str) {
        self.restores.get_or_create(&plugin_labels(plugin)).inc();
    }

    pub fn count_error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    pub fn count_reconciled_attachment(&self) {
        self.reconciled_attachments.inc();
    }

    /// Records a complete pass: the time, readiness, and what is installed now.
    pub fn record_success(&self, installed: &[InstalledPlugin]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        self.last_success.set(now);
        self.set_installed(installed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    fn set_installed(&self, installed: &[InstalledPlugin]) {
        // Old versions must disappear, not linger as stale series.
        self.plugin_info.clear();
        for plugin in installed {
            self.plugin_info
                .get_or_create(&PluginInfoLabels {
                    plugin: plugin.name.clone(),
                    version: plugin.version.clone(),
                    sha256: plugin.sha256.clone(),
                })
                .set(1);
        }
    }

    /// The whole exposition, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode(&mut out, &self.registry);
        out
    }
}

fn plugin_labels(plugin: &str) -> PluginLabels {
    PluginLabels {
        plugin: plugin.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_moves() {
        let metrics = Metrics::new(&["krafty-vrf".to_string()]);
        let before = metrics.encode();
        assert!(
            before.contains("krafty_installer_installs_total{plugin=\"krafty-vrf\"} 0\n"),
            "{before}"
        );
        assert!(before.ends_with("# EOF\n"));
        metrics.count_install("krafty-vrf");
        metrics.count_error(ErrorKind::Install);
        metrics.record_success(&[InstalledPlugin {
            name: "krafty-vrf".into(),
            version: "0.1.0".into(),
            sha256: "ab".into(),
            cni_versions: vec![],
        }]);
        let after = metrics.encode();
        assert!(
            after.contains("krafty_installer_installs_total{plugin=\"krafty-vrf\"} 1\n"),
            "{after}"
        );
        assert!(
            after.contains("krafty_installer_errors_total{kind=\"install\"} 1\n"),
            "{after}"
        );
        assert!(after.contains(
            "krafty_installer_plugin_info{plugin=\"krafty-vrf\",version=\"0.1.0\",sha256=\"ab\"} 1\n"
        ), "{after}");
        assert!(
            after.contains("# UNIT krafty_installer_last_success_timestamp_seconds seconds\n"),
            "{after}"
        );
    }

    #[test]
    fn invocations_are_counted_and_refused_network_names_are_not_labels() {
        let metrics = Metrics::new(&[]);
        let entry = |network: &str, duration_us: u64, error: Option<u32>| Invocation {
            plugin: "krafty-veth".into(),
            command: "ADD".into(),
            network: network.into(),
            duration_us,
            outcome: if error.is_some() { "error" } else { "ok" }.into(),
            error: error.map(|code| krafty_cni::invocation_log::LoggedError {
                code,
                msg: "x".into(),
            }),
        };
        metrics.observe_invocation(&entry("lab", 3_000, None));
        metrics.observe_invocation(&entry("lab", 2_000_000, Some(102)));
        metrics.observe_invocation(&entry("a\"}\nevil", 10, Some(7)));
        let text = metrics.encode();
        for line in [
            "krafty_plugin_invocations_total{plugin=\"krafty-veth\",command=\"ADD\",network=\"lab\",outcome=\"ok\"} 1\n",
            "krafty_plugin_invocations_total{plugin=\"krafty-veth\",command=\"ADD\",network=\"(invalid)\",outcome=\"error\"} 1\n",
            "krafty_plugin_errors_total{plugin=\"krafty-veth\",command=\"ADD\",network=\"lab\",code=\"102\"} 1\n",
            "krafty_plugin_invocation_duration_seconds_bucket{le=\"0.005\",plugin=\"krafty-veth\",command=\"ADD\"} 2\n",
            "krafty_plugin_invocation_duration_seconds_bucket{le=\"2.5\",plugin=\"krafty-veth\",command=\"ADD\"} 3\n",
            "krafty_plugin_invocation_duration_seconds_count{plugin=\"krafty-veth\",command=\"ADD\"} 3\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("evil"), "{text}");
    }
}
