//! `KraftyBlock` (group `krafty.io`, cluster-scoped): one address block of a multi-node
//! network, held by one node. Its name is derived from the network and the block, so the API
//! server's name uniqueness is the lock: whoever creates the object holds the block. It is
//! owned by its Node (an ownerReference), so deleting the Node frees it. The chart installs
//! the CustomResourceDefinition (charts/krafty/templates/crd-kraftyblocks.yaml).

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ClusterResourceScope;
use kube::Resource;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "krafty.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "KraftyBlock";
pub const PLURAL: &str = "kraftyblocks";
/// Labels that let an agent list one network's blocks, and kubectl one node's.
pub const NETWORK_LABEL: &str = "krafty.io/network";
pub const NODE_LABEL: &str = "krafty.io/node";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KraftyBlock {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: KraftyBlockSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KraftyBlockSpec {
    pub network: String,
    pub cidr: IpNet,
    /// The node that holds the block (also its owner).
    pub node: String,
}

/// The object name of `network`'s `block`: `<network>.<address>-<prefix>`, with an IPv6
/// address's colons as dashes (`lab.10.1.0.64-26`, `lab.fd00--40-122`). Canonical address
/// text makes the name unique per block.
pub fn block_name(network: &str, block: IpNet) -> String {
    let address = match block.addr() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    };
    format!("{network}.{address}-{}", block.prefix_len())
}

impl KraftyBlock {
    /// The object that claims `block` of `network` for `node` (whose uid is `node_uid`).
    pub fn claim(network: &str, block: IpNet, node: &str, node_uid: &str) -> KraftyBlock {
        KraftyBlock {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: Some(block_name(network, block)),
                labels: Some(
                    [
                        (NETWORK_LABEL.to_string(), network.to_string()),
                        (NODE_LABEL.to_string(), node.to_string()),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.into(),
                    uid: node_uid.into(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: KraftyBlockSpec {
                network: network.into(),
                cidr: block,
                node: node.into(),
            },
        }
    }

    /// The uid of the Node that owns the block, if it names one.
    pub fn owner_uid(&self) -> Option<&str> {
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.kind == "Node" && owner.name == self.spec.node)
            .map(|owner| owner.uid.as_str())
    }
}

impl Resource for KraftyBlock {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_block_and_valid_object_names() {
        assert_eq!(
            block_name("lab", "10.1.0.64/26".parse().unwrap()),
            "lab.10.1.0.64-26"
        );
        assert_eq!(
            block_name("lab", "fd00::40/122".parse().unwrap()),
            "lab.fd00--40-122"
        );
        let path = KraftyBlock::url_path(&(), None);
        assert_eq!(path, "/apis/krafty.io/v1alpha1/kraftyblocks");
    }

    /// The object a claim creates is the fixture that tests/deploy validates against the
    /// chart's CustomResourceDefinition.
    #[test]
    fn a_claim_is_the_object_the_chart_s_crd_accepts() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/kraftyblock.json")).unwrap();
        let claim = KraftyBlock::claim(
            "lab",
            "fd00::40/122".parse().unwrap(),
            "node-a",
            "6f1e2d4c-0000-4000-8000-000000000001",
        );
        assert_eq!(serde_json::to_value(&claim).unwrap(), fixture);
        assert_eq!(
            claim.owner_uid(),
            Some("6f1e2d4c-0000-4000-8000-000000000001")
        );
    }
}
