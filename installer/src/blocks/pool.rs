//! The address pools the agent claims blocks from (`--address-pools FILE`): for each multi-node
//! network, its subnets (one per address family), gateways and block size. The file is JSON,
//! for example:
//!
//! ```json
//! [{"network": "lab", "subnets": [
//!     {"subnet": "172.16.0.0/16", "gateway": "172.16.0.1", "blockPrefix": 26},
//!     {"subnet": "fd00:16::/64", "gateway": "fd00:16::1", "blockPrefix": 120}]}]
//! ```

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;

/// A subnet carved into more blocks than this is refused: each block can become an API object,
/// and a pass may walk them all.
pub const MAX_BLOCKS_PER_SUBNET: u32 = 1 << 16;

/// Network names become the first label of block object names (DNS-1123).
const MAX_NETWORK_NAME_LEN: usize = 63;

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("cannot read the address pools {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the address pools {path} are not valid JSON of pools: {reason}")]
    Decode { path: String, reason: String },
    #[error("address pool of network {network:?}: {reason}")]
    Invalid { network: String, reason: String },
}

/// One multi-node network's pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressPool {
    pub network: String,
    pub subnets: Vec<SubnetPool>,
}

/// One address family of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubnetPool {
    /// The network's whole subnet, the same on every node.
    pub subnet: IpNet,
    /// The network's gateway, the same on every node (never handed out).
    pub gateway: IpAddr,
    /// The prefix length of a block, e.g. 26 for 64 IPv4 addresses.
    pub block_prefix: u8,
}

impl SubnetPool {
    /// Addresses in one block.
    pub fn block_size(&self) -> u128 {
        1u128 << (u32::from(self.subnet.max_prefix_len()) - u32::from(self.block_prefix))
    }

    /// How many blocks the subnet holds.
    pub fn block_count(&self) -> u32 {
        1u32 << (self.block_prefix - self.subnet.prefix_len())
    }

    /// Every block of the subnet, starting at block `first` and wrapping around: agents start
    /// at different blocks (see `claim`), so that they seldom race for the same one.
    pub fn blocks_from(&self, first: u32) -> impl Iterator<Item = IpNet> + '_ {
        let all = || {
            self.subnet
                .subnets(self.block_prefix)
                .expect("block_prefix was validated against the subnet")
        };
        let first = (first % self.block_count()) as usize;
        all().skip(first).chain(all().take(first))
    }

    /// When the free addresses of a node's blocks fall to this many, the agent claims the next
    /// block: a quarter of a block, so that pods keep starting while the claim is under way.
    pub fn claim_threshold(&self) -> u128 {
        (self.block_size() / 4).max(1)
    }

    fn validate(&self) -> Result<(), String> {
        let subnet = self.subnet;
        if subnet.trunc() != subnet {
            return Err(format!("{subnet} is not a subnet (host bits set)"));
        }
        if !subnet.contains(&self.gateway) {
            return Err(format!("gateway {} is outside {subnet}", self.gateway));
        }
        // A block smaller than 4 addresses leaves next to nothing for pods.
        let smallest = subnet.max_prefix_len() - 2;
        if self.block_prefix < subnet.prefix_len() || self.block_prefix > smallest {
            return Err(format!(
                "blockPrefix {} must lie between {subnet}'s prefix length and {smallest}",
                self.block_prefix
            ));
        }
        if u32::from(self.block_prefix - subnet.prefix_len()) > MAX_BLOCKS_PER_SUBNET.ilog2() {
            return Err(format!(
                "blockPrefix {} carves {subnet} into more than {MAX_BLOCKS_PER_SUBNET} blocks; \
                 use larger blocks",
                self.block_prefix
            ));
        }
        Ok(())
    }
}

impl AddressPool {
    fn validate(&self) -> Result<(), String> {
        validate_dns_label(&self.network)?;
        match self.subnets.as_slice() {
            [_] => {}
            [a, b] if a.subnet.addr().is_ipv4() != b.subnet.addr().is_ipv4() => {}
            [_, _] => return Err("its two subnets are of one address family".into()),
            _ => return Err("it must have one or two subnets".into()),
        }
        self.subnets.iter().try_for_each(SubnetPool::validate)
    }
}

/// Block objects are named `<network>.<block>`: the network must be a DNS-1123 label.
fn validate_dns_label(name: &str) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let valid_ends = !name.starts_with('-') && !name.ends_with('-');
    if name.is_empty() || name.len() > MAX_NETWORK_NAME_LEN || !valid_chars || !valid_ends {
        return Err(format!(
            "a multi-node network's name must be a DNS label (at most {MAX_NETWORK_NAME_LEN} \
             lowercase letters, digits and '-', starting and ending with a letter or digit): \
             it names the network's block objects"
        ));
    }
    Ok(())
}

/// Parses and validates pools; networks must be distinct.
pub fn parse_pools(path: &str, text: &str) -> Result<Vec<AddressPool>, PoolError> {
    let pools: Vec<AddressPool> =
        serde_json::from_str(text).map_err(|error| PoolError::Decode {
            path: path.into(),
            reason: error.to_string(),
        })?;
    for (index, pool) in pools.iter().enumerate() {
        let invalid = |reason: String| PoolError::Invalid {
            network: pool.network.clone(),
            reason,
        };
        pool.validate().map_err(invalid)?;
        if pools[..index].iter().any(|p| p.network == pool.network) {
            return Err(invalid("the network has two pools".into()));
        }
    }
    Ok(pools)
}

/// Reads `--address-pools`.
pub fn read_pools(path: &Path) -> Result<Vec<AddressPool>, PoolError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PoolError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_pools(&shown, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str, gateway: &str, block_prefix: u8) -> SubnetPool {
        SubnetPool {
            subnet: subnet.parse().unwrap(),
            gateway: gateway.parse().unwrap(),
            block_prefix,
        }
    }

    #[test]
    fn blocks_wrap_around_from_the_first() {
        let pool = pool("10.1.0.0/24", "10.1.0.1", 26);
        assert_eq!(pool.block_count(), 4);
        assert_eq!(pool.block_size(), 64);
        assert_eq!(pool.claim_threshold(), 16);
        let blocks: Vec<String> = pool.blocks_from(6).map(|b| b.to_string()).collect();
        assert_eq!(
            blocks,
            [
                "10.1.0.128/26",
                "10.1.0.192/26",
                "10.1.0.0/26",
                "10.1.0.64/26"
            ]
        );
    }

    /// What the chart renders for tests/deploy/values/multi-node.yaml (tests/deploy checks
    /// the rendering against the same file).
    #[test]
    fn the_charts_pools_parse() {
        let text = include_str!("../../tests/fixtures/address-pools.json");
        let pools = parse_pools("fixture", text).unwrap();
        assert_eq!(pools[0].network, "stretched");
        assert_eq!(pools[0].subnets[0].block_count(), 64);
        assert_eq!(pools[0].subnets[1].block_count(), 256);
    }

    #[test]
    fn pools_are_validated() {
        let good = r#"[{"network": "lab", "subnets": [
            {"subnet": "10.1.0.0/16", "gateway": "10.1.0.1", "blockPrefix": 26},
            {"subnet": "fd00::/112", "gateway": "fd00::1", "blockPrefix": 120}]}]"#;
        let pools = parse_pools("p", good).unwrap();
        assert_eq!(pools[0].subnets[1].block_count(), 256);
        let bad = [
            (r#"[{"network": "Lab", "subnets": []}]"#, "DNS label"),
            (r#"[{"network": "lab", "subnets": []}]"#, "one or two"),
            (
                r#"[{"network": "lab", "subnets": [{"subnet": "10.1.0.0/16", "gateway": "10.2.0.1", "blockPrefix": 26}]}]"#,
                "outside",
            ),
            (
                r#"[{"network": "lab", "subnets": [{"subnet": "10.1.0.0/16", "gateway": "10.1.0.1", "blockPrefix": 31}]}]"#,
                "between",
            ),
            (
                r#"[{"network": "lab", "subnets": [{"subnet": "fd00::/64", "gateway": "fd00::1", "blockPrefix": 120}]}]"#,
                "more than 65536",
            ),
            (
                r#"[{"network": "lab", "subnets": [{"subnet": "10.1.0.1/16", "gateway": "10.1.0.1", "blockPrefix": 26}]}]"#,
                "host bits",
            ),
            (
                r#"[{"network": "a", "subnets": [{"subnet": "10.1.0.0/16", "gateway": "10.1.0.1", "blockPrefix": 26}]},
                    {"network": "a", "subnets": [{"subnet": "10.2.0.0/16", "gateway": "10.2.0.1", "blockPrefix": 26}]}]"#,
                "two pools",
            ),
            (r#"{"network": "lab"}"#, "not valid JSON of pools"),
        ];
        for (text, mentions) in bad {
            let error = parse_pools("p", text).unwrap_err().to_string();
            assert!(error.contains(mentions), "{text}: {error}");
        }
    }
}
