//! Hostile configs: whoever may create a NetworkAttachmentDefinition writes the config krafty
//! runs as root. Each attempt is refused with a CNI error, and the node is left exactly as it
//! was: the same devices with the same addresses and routes, no new files anywhere krafty
//! writes, and nothing written outside them. The one write allowed is the refusal's line in the
//! node's default invocation log: the history of what was attempted.

use std::path::Path;

use krafty_cni::naming;
use krafty_tests::{container_id, Node};
use serde_json::{json, Value};

/// Everything a config could have changed on the node.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: String,
    addresses: String,
    routes: String,
    files: Vec<String>,
}

fn snapshot(node: &Node) -> Snapshot {
    let mut files = Vec::new();
    collect(&node.dir, &mut files);
    files.sort();
    Snapshot {
        links: node.ip(&["-d", "link", "show"]),
        addresses: node.ip(&["addr", "show"]),
        routes: node.ip(&["route", "show", "table", "all"]),
        files,
    }
}

fn collect(dir: &Path, files: &mut Vec<String>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect(&path, files);
            } else if !path.to_string_lossy().contains("conflist-")
                && !path.ends_with("log/krafty.log")
            {
                files.push(path.display().to_string());
            }
        }
    }
}

/// Runs `plugin` ADD with `config` and asserts a refusal with `code` that changed nothing.
fn refused(node: &Node, plugin: &str, config: &Value, code: u64, mentions: &str) {
    let pod = node.pod(&format!("h{}", container_id()[..6].to_owned()));
    let id = container_id();
    let before = snapshot(node);
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", id.as_str()),
        ("CNI_NETNS", &pod.netns_path()),
        ("CNI_IFNAME", "net1"),
    ];
    // Logging is off so the node's log does not count as a change.
    let mut config = config.clone();
    if config.get("logFile").is_none() {
        config["logFile"] = json!("");
    }
    node.plugin(plugin, &env, &config.to_string())
        .error(code, mentions);
    assert_eq!(
        snapshot(node),
        before,
        "{plugin} with {config} changed the node"
    );
}

fn bridge(extra: Value) -> Value {
    let mut config = json!({"cniVersion": "1.0.0", "name": "krafty", "type": "krafty-bridge",
                            "subnet": "172.16.10.0/24", "gateway": "172.16.10.1"});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

#[test]
fn odd_and_overlong_names_are_refused() {
    let node = Node::new();
    for name in [
        "../../etc",
        "a/b",
        "white space",
        ".hidden",
        "semi;colon",
        &"n".repeat(101),
        "",
    ] {
        refused(
            &node,
            "krafty-bridge",
            &bridge(json!({"name": name})),
            7,
            "name",
        );
    }
}

#[test]
fn path_tricks_are_refused() {
    let node = Node::new();
    let passwd = std::fs::metadata("/etc/passwd").unwrap();
    for (field, value) in [
        ("logFile", "/etc/passwd"),
        ("logFile", "/var/log/krafty/../../../etc/cron.d/x"),
        ("logFile", "krafty.log"),
        ("stateDir", "/etc"),
        ("stateDir", "/var/lib/krafty/../../../root"),
        ("stateDir", "relative/state"),
    ] {
        refused(
            &node,
            "krafty-bridge",
            &bridge(json!({ field: value })),
            7,
            field,
        );
    }
    let after = std::fs::metadata("/etc/passwd").unwrap();
    assert_eq!(
        (passwd.len(), passwd.modified().unwrap()),
        (after.len(), after.modified().unwrap())
    );
    let refusals = node.log_entries();
    assert!(refusals.iter().any(|e| e["error"]["msg"]
        .as_str()
        .unwrap_or("")
        .contains("/etc/passwd")));
    let veth = |ipam_type: &str| {
        json!({"cniVersion": "1.0.0", "name": "krafty", "type": "krafty-veth",
               "ipam": {"type": ipam_type}})
    };
    for ipam_type in ["/bin/sh", "../../../bin/sh", "..", "x/y"] {
        refused(&node, "krafty-veth", &veth(ipam_type), 7, "ipam.type");
    }
}

#[test]
fn reserved_tables_are_refused() {
    let node = Node::new();
    for table in [0, 253, 254, 255, -3, 1_i64 << 40] {
        let config = json!({"cniVersion": "1.0.0", "name": "krafty", "type": "krafty-vrf",
                            "vrfTable": table, "scope": "network"});
        refused(&node, "krafty-vrf", &config, 7, "vrfTable");
    }
}

#[test]
fn an_interface_krafty_did_not_create_is_never_taken_over() {
    let node = Node::new();
    // Devices with the names krafty would use, but without its mark: an administrator's,
    // or one a tenant hopes krafty will enslave, address or delete.
    let shared = naming::shared_bridge_name("krafty");
    node.ip(&["link", "add", &shared, "type", "bridge"]);
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", &shared]);
    refused(
        &node,
        "krafty-bridge",
        &bridge(json!({"scope": "network"})),
        103,
        "not created by krafty",
    );

    // A device marked for another network is not ours either.
    let other = naming::shared_bridge_name("other");
    node.ip(&["link", "add", &other, "type", "bridge"]);
    node.ip(&["link", "set", &other, "alias", "krafty:somebody-else"]);
    refused(
        &node,
        "krafty-bridge",
        &bridge(json!({"scope": "network", "name": "other"})),
        103,
        "another krafty attachment",
    );
}

#[test]
fn a_prev_result_naming_a_foreign_device_is_refused() {
    let node = Node::new();
    // A config may carry its own prevResult: it must not make krafty-veth plug into, or
    // krafty-bridge enslave to, a device krafty did not make.
    node.ip(&["link", "add", "krbuplink", "type", "bridge"]);
    node.ip(&[
        "link",
        "add",
        "krvuplink",
        "type",
        "veth",
        "peer",
        "name",
        "krvuplinkpeer",
    ]);
    let prev = |name: &str| json!({"cniVersion": "1.0.0", "interfaces": [{"name": name}]});
    let veth = json!({"cniVersion": "1.0.0", "name": "krafty", "type": "krafty-veth",
                      "podIP": "172.16.10.5/24", "prevResult": prev("krbuplink")});
    refused(&node, "krafty-veth", &veth, 103, "krbuplink");
    refused(
        &node,
        "krafty-bridge",
        &bridge(json!({"prevResult": prev("krvuplink")})),
        103,
        "krvuplink",
    );
}

#[test]
fn a_prev_result_naming_a_missing_device_is_refused() {
    let node = Node::new();
    let veth = json!({"cniVersion": "1.0.0", "name": "krafty", "type": "krafty-veth", "podIP": "172.16.10.5/24",
                      "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "krbnothere"}]}});
    refused(&node, "krafty-veth", &veth, 7, "krbnothere");
}
