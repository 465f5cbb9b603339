//! Result conversion between CNI versions, compared with libcni's own (`cnidriver convert`,
//! libcni 1.1.2): rich results (dual-stack, routes, DNS, interfaces with mac, mtu, sandbox,
//! socketPath and pciID, unknown fields at every level) given in every version krafty speaks
//! and printed in every version, up and down.
//!
//! libcni 1.1.2 knows results up to 1.0.0. A 1.1.0 result is given to it as 1.0.0: the two
//! versions share every field but the ones 1.1.0 added, and libcni keeps only the fields of the
//! version it decodes. Printing at 1.1.0 is compared with the rich result itself: converting
//! up adds nothing and, at the newest version, krafty loses nothing (unknown fields included).

use std::io::Write;
use std::process::{Command, Stdio};

use krafty_cni::{CniResult, CniVersion};
use krafty_tests::driver_path;
use serde_json::{json, Map, Value};

/// The results, written at 1.1.0 (every field any version defines, and unknown ones).
fn rich_results() -> Vec<(&'static str, Value)> {
    vec![
        (
            "dual-stack pod",
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "krbkrafty-3f2a1", "mac": "02:42:ac:10:0a:01", "mtu": 9000},
                    {"name": "vetha3f2b1c4d5e", "mac": "6a:1f:00:00:00:02", "mtu": 1450},
                    {"name": "net1", "mac": "02:00:00:00:00:03", "mtu": 1450,
                     "sandbox": "/var/run/netns/cni-5b1e"}
                ],
                "ips": [
                    {"address": "172.16.10.10/24", "gateway": "172.16.10.1", "interface": 2},
                    {"address": "fd10:16:10::a/64", "gateway": "fd10:16:10::1", "interface": 2}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "172.16.10.1", "priority": 4096},
                    {"dst": "::/0", "gw": "fd10:16:10::1", "priority": 4096, "table": 100},
                    {"dst": "10.96.0.0/12", "mtu": 1400, "advmss": 1360, "scope": 0},
                    {"dst": "fd00:10:96::/112"}
                ],
                "dns": {
                    "nameservers": ["10.96.0.10", "fd00:10:96::a"],
                    "domain": "cluster.local",
                    "search": ["default.svc.cluster.local", "svc.cluster.local"],
                    "options": ["ndots:5", "edns0"]
                }
            }),
        ),
        (
            "device plugin interfaces",
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "net1", "sandbox": "/proc/4242/ns/net",
                     "socketPath": "/var/run/vhost-user/net1.sock"},
                    {"name": "net2", "mac": "3a:5e:00:11:22:33", "sandbox": "/proc/4242/ns/net",
                     "pciID": "0000:3b:02.1"}
                ],
                "ips": [
                    {"address": "192.168.50.7/26", "interface": 1},
                    {"address": "10.1.2.3/8"}
                ]
            }),
        ),
        (
            "unknown fields everywhere",
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [{"name": "net1", "sandbox": "/run/netns/p", "futureIntf": [1, 2]}],
                "ips": [{"address": "172.16.20.5/24", "gateway": "172.16.20.1", "interface": 0,
                         "futureIp": {"nested": true}}],
                "routes": [{"dst": "172.16.0.0/16", "gw": "172.16.20.1", "futureRoute": "x"}],
                "dns": {"nameservers": ["172.16.20.1"], "futureDns": null},
                "futureTop": {"kept": "at 1.1.0 only"},
                "multus": "annotation"
            }),
        ),
        (
            "an IPAM answer",
            json!({"cniVersion": "1.1.0", "ips": [{"address": "fd10::10/64", "gateway": "fd10::1"}]}),
        ),
        ("empty", json!({"cniVersion": "1.1.0"})),
    ]
}

/// `result` as a plugin of `version` would print it: its `cniVersion`, and a `version` on each
/// IP before 1.0.0. Every other field stays, known to that version or not.
fn written_at(result: &Value, version: CniVersion) -> Value {
    let mut out = result.clone();
    out["cniVersion"] = json!(version.as_str());
    if version.ips_carry_family() {
        let ips = out.get_mut("ips").and_then(Value::as_array_mut);
        for ip in ips.into_iter().flatten() {
            let v4 = ip["address"].as_str().unwrap().contains('.');
            ip["version"] = json!(if v4 { "4" } else { "6" });
        }
    }
    out
}

/// libcni's conversion of `result` to `to`.
fn libcni_convert(result: &Value, to: CniVersion) -> Value {
    let mut child = Command::new(driver_path())
        .args(["convert", "--to", to.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the driver");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(result.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "libcni cannot convert {result} to {to}: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

fn krafty_convert(result: &Value, to: CniVersion) -> Value {
    CniResult::from_value(result.clone(), "prevResult")
        .unwrap_or_else(|e| panic!("krafty refuses {result}: {e}"))
        .to_value(to)
}

/// Removes what the two may legitimately write differently: libcni 1.1.2 always writes `dns`,
/// `{}` when empty; krafty leaves an empty one out.
fn normalised(mut result: Value) -> Value {
    let map: &mut Map<String, Value> = result.as_object_mut().unwrap();
    if map
        .get("dns")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        map.remove("dns");
    }
    result
}

#[test]
fn every_version_converts_like_libcni() {
    let mut compared = 0;
    for (name, rich) in rich_results() {
        for from in CniVersion::ALL {
            let input = written_at(&rich, from);
            // libcni 1.1.2 decodes 1.1.0's fields as 1.0.0 does (see the module's comment).
            let libcni_input = written_at(&rich, from.min(CniVersion::V1_0_0));
            for to in CniVersion::ALL {
                let ours = krafty_convert(&input, to);
                if to == CniVersion::LATEST {
                    assert_eq!(ours, rich, "{name}: {from} -> {to} must lose nothing");
                    continue;
                }
                let reference = libcni_convert(&libcni_input, to);
                assert_eq!(
                    normalised(ours.clone()),
                    normalised(reference.clone()),
                    "{name}: {from} -> {to}\nkrafty: {ours}\nlibcni: {reference}\ninput: {input}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 5 * 5 * 4, "every pair below 1.1.0 was compared");
}

#[test]
fn the_reference_drops_what_its_version_does_not_define() {
    // The comparison above means something only if libcni really drops fields: the rich
    // result converted down by libcni has none of 1.1.0's nor any unknown one.
    let (_, rich) = &rich_results()[0];
    let down = libcni_convert(&written_at(rich, CniVersion::V1_0_0), CniVersion::V0_4_0);
    assert_eq!(down["interfaces"][2].get("mtu"), None, "{down}");
    assert_eq!(down["routes"][0].get("priority"), None, "{down}");
    assert_eq!(down["ips"][1]["version"], "6", "{down}");
    let (_, unknown) = &rich_results()[2];
    let down = libcni_convert(&written_at(unknown, CniVersion::V1_0_0), CniVersion::V1_0_0);
    assert_eq!(down.get("futureTop"), None, "{down}");
    assert_eq!(down["ips"][0].get("futureIp"), None, "{down}");
}
