//! The installer's Prometheus metrics, served as OpenMetrics text on `/metrics`.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{text, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

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
    /// Claiming, reclaiming or writing address blocks.
    AddressBlocks,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Install,
        ErrorKind::Watch,
        ErrorKind::Annotate,
        ErrorKind::Event,
        ErrorKind::PodWatch,
        ErrorKind::Cleanup,
        ErrorKind::AddressBlocks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Install => "install",
            ErrorKind::Watch => "watch",
            ErrorKind::Annotate => "annotate",
            ErrorKind::Event => "event",
            ErrorKind::PodWatch => "pod_watch",
            ErrorKind::Cleanup => "cleanup",
            ErrorKind::AddressBlocks => "address_blocks",
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

/// One subnet of a multi-node network, for the address block gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubnetLabels {
    network: String,
    subnet: String,
}

/// What the node holds of one subnet of a multi-node network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetBlocks {
    pub blocks: usize,
    pub free_addresses: u128,
    /// Every block of the subnet is held (by some node) while this node runs short.
    pub exhausted: bool,
}

pub struct Metrics {
    registry: Registry,
    installs: Family<PluginLabels, Counter>,
    restores: Family<PluginLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    reconciled_attachments: Counter,
    last_success: Gauge<f64, AtomicU64>,
    plugin_info: Family<PluginInfoLabels, Gauge>,
    ready: Gauge,
    address_blocks: Family<SubnetLabels, Gauge>,
    address_blocks_free: Family<SubnetLabels, Gauge>,
    address_subnet_exhausted: Family<SubnetLabels, Gauge>,
}

impl Metrics {
    /// Registers every metric; the per-plugin and per-kind counters start at 0, so a scrape
    /// shows them before anything happened.
    pub fn new(plugins: &[String]) -> Self {
        let mut registry = Registry::with_prefix("krafty_installer");
        let installs = Family::<PluginLabels, Counter>::default();
        let restores = Family::<PluginLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let reconciled_attachments = Counter::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        let plugin_info = Family::<PluginInfoLabels, Gauge>::default();
        let ready = Gauge::default();
        let address_blocks = Family::<SubnetLabels, Gauge>::default();
        let address_blocks_free = Family::<SubnetLabels, Gauge>::default();
        let address_subnet_exhausted = Family::<SubnetLabels, Gauge>::default();
        registry.register(
            "address_blocks",
            "Address blocks of a multi-node network's subnet this node holds",
            address_blocks.clone(),
        );
        registry.register(
            "address_blocks_free_addresses",
            "Addresses of this node's blocks of a subnet that no pod holds",
            address_blocks_free.clone(),
        );
        registry.register(
            "address_subnet_exhausted",
            "1 while every block of the subnet is held and this node runs short: ADD answers code 11 once its blocks are full",
            address_subnet_exhausted.clone(),
        );
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
            registry,
            installs,
            restores,
            errors,
            reconciled_attachments,
            last_success,
            plugin_info,
            ready,
            address_blocks,
            address_blocks_free,
            address_subnet_exhausted,
        }
    }

    /// Records what the node holds of `network`'s `subnet`.
    pub fn set_subnet_blocks(&self, network: &str, subnet: &str, held: SubnetBlocks) {
        let labels = SubnetLabels {
            network: network.to_string(),
            subnet: subnet.to_string(),
        };
        let saturating = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
        self.address_blocks
            .get_or_create(&labels)
            .set(saturating(held.blocks as u128));
        self.address_blocks_free
            .get_or_create(&labels)
            .set(saturating(held.free_addresses));
        self.address_subnet_exhausted
            .get_or_create(&labels)
            .set(i64::from(held.exhausted));
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
}
