//! The CNI result: what ADD prints and what the next plugin of the chain gets as `prevResult`.
//!
//! One shape serves every version: results are held in the 1.x form and converted on the way
//! out (0.3.x and 0.4.0 carry a `version` on each IP). Every field krafty does not know is kept
//! in `extra`. Printed at 1.1.0 (the newest) it appears again unchanged, so a chain can carry
//! fields of newer plugins; a result printed in an older version carries exactly the fields
//! that version defines, the 1.1.0 ones and unknown ones dropped, as libcni's conversion does.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::version::CniVersion;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The interface address with its prefix length, e.g. `172.16.10.10/24`.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
            && self.extra.is_empty()
    }
}

/// Keys that every version writes and that krafty regenerates itself on output.
const VERSION_KEY: &str = "version";
const CNI_VERSION_KEY: &str = "cniVersion";

/// The fields of each object of a result, as one specification version defines them.
struct Fields {
    result: &'static [&'static str],
    interface: &'static [&'static str],
    ip: &'static [&'static str],
    route: &'static [&'static str],
    dns: &'static [&'static str],
}

/// What 0.3.0 to 1.0.0 define (0.3.x and 0.4.0 add `ips[].version`, written on output). 1.1.0
/// adds interface `mtu`, `socketPath`, `pciID` and route `mtu`, `advmss`, `priority`,
/// `table`, `scope`.
const FIELDS_BEFORE_1_1: Fields = Fields {
    result: &[CNI_VERSION_KEY, "interfaces", "ips", "routes", "dns"],
    interface: &["name", "mac", "sandbox"],
    ip: &["address", "gateway", "interface"],
    route: &["dst", "gw"],
    dns: &["nameservers", "domain", "search", "options"],
};

impl CniResult {
    /// Reads a result of any supported version (a `prevResult` or an IPAM plugin's answer).
    pub fn from_value(value: Value, what: &str) -> Result<CniResult, Error> {
        let mut result: CniResult = serde_json::from_value(value).map_err(|e| Error::Decode {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        result.extra.remove(CNI_VERSION_KEY);
        for ip in &mut result.ips {
            // The per-IP family of 0.3.x/0.4.0 is derived again from the address on output.
            ip.extra.remove(VERSION_KEY);
        }
        for (index, ip) in result.ips.iter().enumerate() {
            if let Some(interface) = ip.interface {
                if interface >= result.interfaces.len() {
                    return Err(Error::Decode {
                        what: what.to_string(),
                        reason: format!(
                            "ips[{index}].interface is {interface} but there are only {} interfaces",
                            result.interfaces.len()
                        ),
                    });
                }
            }
        }
        Ok(result)
    }

    /// The result as printed for a config of `version`: every field at 1.1.0, only the
    /// version's own fields before.
    pub fn to_value(&self, version: CniVersion) -> Value {
        let mut value = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // A struct of strings, numbers and maps always serialises to an object.
            _ => Map::new(),
        };
        if version < CniVersion::V1_1_0 {
            keep_only(&mut value, &FIELDS_BEFORE_1_1);
        }
        if version.ips_carry_family() {
            if let Some(Value::Array(ips)) = value.get_mut("ips") {
                for (ip, config) in ips.iter_mut().zip(&self.ips) {
                    if let Value::Object(ip) = ip {
                        let family = if config.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        };
                        ip.insert(VERSION_KEY.to_string(), Value::from(family));
                    }
                }
            }
        }
        let mut ordered = Map::new();
        ordered.insert(CNI_VERSION_KEY.to_string(), Value::from(version.as_str()));
        ordered.extend(value);
        Value::Object(ordered)
    }

    /// Appends an interface and returns its index, for `ips[].interface`.
    pub fn push_interface(&mut self, interface: Interface) -> usize {
        self.interfaces.push(interface);
        self.interfaces.len() - 1
    }

    /// The index of the interface named `name` that lives in `sandbox` ("" for the node).
    pub fn interface_index(&self, name: &str, sandbox: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox == sandbox)
    }
}

/// Drops every field of `result` and of its objects that `fields` does not name.
fn keep_only(result: &mut Map<String, Value>, fields: &Fields) {
    result.retain(|key, _| fields.result.contains(&key.as_str()));
    for (list, allowed) in [
        ("interfaces", fields.interface),
        ("ips", fields.ip),
        ("routes", fields.route),
    ] {
        if let Some(Value::Array(objects)) = result.get_mut(list) {
            for object in objects.iter_mut().filter_map(Value::as_object_mut) {
                object.retain(|key, _| allowed.contains(&key.as_str()));
            }
        }
    }
    if let Some(Value::Object(dns)) = result.get_mut("dns") {
        dns.retain(|key, _| fields.dns.contains(&key.as_str()));
        if dns.is_empty() {
            result.remove("dns");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample_v1() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "krb0123456789a", "mac": "02:00:00:00:00:01"},
                {"name": "net1", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p", "pciID": "0000:00:01.0"}
            ],
            "ips": [{"address": "172.16.10.10/24", "gateway": "172.16.10.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "172.16.10.1", "priority": 4096}],
            "dns": {"nameservers": ["10.0.0.10"]},
            "futureField": {"kept": true}
        })
    }

    #[test]
    fn unknown_fields_pass_through_unchanged_at_the_newest_version() {
        let result = CniResult::from_value(sample_v1(), "prevResult").unwrap();
        let mut expected = sample_v1();
        expected["cniVersion"] = json!("1.1.0");
        assert_eq!(result.to_value(CniVersion::V1_1_0), expected);
    }

    #[test]
    fn older_versions_keep_only_their_own_fields() {
        let mut input = sample_v1();
        input["interfaces"][1]["mtu"] = json!(1400);
        input["interfaces"][1]["socketPath"] = json!("/run/vhost.sock");
        input["routes"][0]["table"] = json!(100);
        input["dns"] = json!({"domain": "lab", "futureDns": 1});
        input["ips"][0]["futureIp"] = json!(true);
        let result = CniResult::from_value(input, "prevResult").unwrap();
        for version in [
            CniVersion::V0_3_0,
            CniVersion::V0_3_1,
            CniVersion::V0_4_0,
            CniVersion::V1_0_0,
        ] {
            let out = result.to_value(version);
            let mut ip =
                json!({"address": "172.16.10.10/24", "gateway": "172.16.10.1", "interface": 1});
            if version.ips_carry_family() {
                ip["version"] = json!("4");
            }
            assert_eq!(
                out,
                json!({
                    "cniVersion": version.as_str(),
                    "interfaces": [
                        {"name": "krb0123456789a", "mac": "02:00:00:00:00:01"},
                        {"name": "net1", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"}
                    ],
                    "ips": [ip],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "172.16.10.1"}],
                    "dns": {"domain": "lab"}
                }),
                "{version}"
            );
        }
        let dns_of_unknown_fields_only =
            CniResult::from_value(json!({"dns": {"futureDns": 1}}), "prevResult").unwrap();
        assert_eq!(
            dns_of_unknown_fields_only.to_value(CniVersion::V1_0_0),
            json!({"cniVersion": "1.0.0"})
        );
    }

    #[test]
    fn older_versions_carry_the_ip_family() {
        let mut input = sample_v1();
        input["ips"]
            .as_array_mut()
            .unwrap()
            .push(json!({"address": "fd10::10/64", "interface": 1}));
        let result = CniResult::from_value(input, "prevResult").unwrap();
        for version in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let out = result.to_value(version);
            assert_eq!(out["cniVersion"], version.as_str());
            assert_eq!(out["ips"][0]["version"], "4");
            assert_eq!(out["ips"][1]["version"], "6");
        }
        for version in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let out = result.to_value(version);
            assert!(out["ips"][0].get("version").is_none());
        }
    }

    #[test]
    fn old_results_convert_up_without_their_version_keys() {
        let old = json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "net1", "sandbox": "/run/netns/p"}],
            "ips": [{"version": "4", "address": "10.1.0.5/16", "interface": 0}]
        });
        let result = CniResult::from_value(old, "prevResult").unwrap();
        assert!(result.ips[0].extra.is_empty());
        let out = result.to_value(CniVersion::V1_0_0);
        assert_eq!(out["cniVersion"], "1.0.0");
        assert!(out["ips"][0].get("version").is_none());
        assert!(out.get("dns").is_none(), "empty dns is omitted");
    }

    #[test]
    fn bad_results_are_decode_errors() {
        for bad in [
            json!({"ips": [{"address": "not-an-ip"}]}),
            json!({"ips": [{"address": "10.0.0.1/24", "interface": 3}], "interfaces": []}),
            json!({"interfaces": [{"mac": "no name"}]}),
            json!([1, 2]),
        ] {
            let err = CniResult::from_value(bad.clone(), "prevResult").unwrap_err();
            assert_eq!(err.code(), 6, "{bad}: {err}");
        }
    }

    #[test]
    fn interface_lookup_distinguishes_node_and_sandbox() {
        let result = CniResult::from_value(sample_v1(), "prevResult").unwrap();
        assert_eq!(result.interface_index("net1", "/run/netns/p"), Some(1));
        assert_eq!(result.interface_index("net1", ""), None);
        assert_eq!(result.interface_index("krb0123456789a", ""), Some(0));
    }
}
