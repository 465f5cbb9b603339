//! The `krafty.dev/plugins` node annotation: what this node runs, for kubectl and validate.sh.
//!
//! Its value is a JSON object keyed by plugin name, for example
//! `{"krafty-bridge":{"version":"0.1.0","sha256":"…","cniVersions":["1.0.0","1.1.0"]}}`.
//! It is applied with server-side apply under the field manager [`FIELD_MANAGER`], which then
//! owns that one annotation and nothing else on the Node.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{next_delay, FIELD_MANAGER, FIRST_RETRY_DELAY};
use crate::install::InstalledPlugin;
use crate::metrics::{ErrorKind, Metrics};

pub const ANNOTATION: &str = "krafty.dev/plugins";

/// The annotation's value: plugins sorted by name, so equal sets give equal strings.
pub fn annotation_value(plugins: &[InstalledPlugin]) -> String {
    let by_name: BTreeMap<&str, &InstalledPlugin> = plugins
        .iter()
        .map(|plugin| (plugin.name.as_str(), plugin))
        .collect();
    // Serialising string maps and strings cannot fail.
    serde_json::to_string(&by_name).unwrap_or_default()
}

/// The apply-patch body: only the fields this manager owns.
pub fn apply_body(node: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "annotations": { ANNOTATION: value },
        },
    })
}

/// Applies the annotation. `force` takes the annotation over from whoever set it by hand.
pub async fn apply(api: &Api<Node>, node: &str, value: &str) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(node, &params, &Patch::Apply(apply_body(node, value)))
        .await
        .map(drop)
}

/// Keeps the annotation equal to the latest installed set: applies each change, retries
/// failures with backoff, and never applies the same value twice in a row.
pub async fn run_annotator(
    api: Api<Node>,
    node: String,
    mut installed: watch::Receiver<Vec<InstalledPlugin>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut applied: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = installed.changed() => if changed.is_err() { return },
        }
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let value = annotation_value(&installed.borrow_and_update());
            if applied.as_ref() == Some(&value) {
                break;
            }
            match apply(&api, &node, &value).await {
                Ok(()) => {
                    tracing::info!("node {node}: {ANNOTATION}={value}");
                    applied = Some(value);
                    break;
                }
                Err(error) => {
                    tracing::warn!("cannot annotate node {node} (retrying in {delay:?}): {error}");
                    metrics.count_error(ErrorKind::Annotate);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {},
                    }
                    delay = next_delay(delay);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str, sha: &str) -> InstalledPlugin {
        InstalledPlugin {
            name: name.into(),
            version: "0.1.0".into(),
            sha256: sha.into(),
            cni_versions: vec!["1.1.0".into()],
        }
    }

    #[test]
    fn value_is_a_json_object_by_plugin_name_in_stable_order() {
        let value = annotation_value(&[plugin("krafty-vrf", "b"), plugin("krafty-bridge", "a")]);
        assert_eq!(
            value,
            r#"{"krafty-bridge":{"version":"0.1.0","sha256":"a","cniVersions":["1.1.0"]},"krafty-vrf":{"version":"0.1.0","sha256":"b","cniVersions":["1.1.0"]}}"#
        );
    }
}
