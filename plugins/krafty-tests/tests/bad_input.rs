//! Bad input: every case gets the right CNI error code, a message naming the problem, a
//! non-zero exit, nothing but the error on stdout, no panic, and a node left as it was.

use krafty_tests::{container_id, host_local_ipam, Node, Outcome, NETWORK};
use serde_json::{json, Value};

const BRIDGE: &str = r#"{"cniVersion":"1.0.0","name":"krafty","type":"krafty-bridge","subnet":"172.16.10.0/24","gateway":"172.16.10.1"}"#;

struct Attachment {
    id: String,
    netns: String,
}

impl Attachment {
    fn env<'a>(&'a self, command: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &self.id),
            ("CNI_NETNS", &self.netns),
            ("CNI_IFNAME", "net1"),
        ]
    }
}

/// Asserts the error contract and that the node kept nothing.
fn refused(node: &Node, outcome: Outcome, code: u64, mentions: &str) {
    let error = outcome.error(code, mentions);
    assert_eq!(
        error["cniVersion"].as_str().map(str::len),
        Some(5),
        "{error}"
    );
    assert!(!outcome.stderr.contains("panicked"), "{}", outcome.stderr);
    node.assert_clean();
}

fn setup() -> (Node, krafty_tests::Pod, Attachment) {
    let node = Node::new();
    let pod = node.pod("a");
    let attachment = Attachment {
        id: container_id(),
        netns: pod.netns_path(),
    };
    (node, pod, attachment)
}

fn bridge_with(fields: Value) -> String {
    let mut config: Value = serde_json::from_str(BRIDGE).unwrap();
    for (key, value) in fields.as_object().unwrap() {
        if value.is_null() {
            config.as_object_mut().unwrap().remove(key);
        } else {
            config[key] = value.clone();
        }
    }
    config.to_string()
}

#[test]
fn malformed_json_is_code_6_for_every_plugin() {
    let (node, _pod, at) = setup();
    for plugin in ["krafty-vrf", "krafty-bridge", "krafty-veth", "krafty"] {
        for garbage in [
            "{",
            "not json",
            "",
            "[1,2",
            r#"{"cniVersion":"1.0.0","name":7}"#,
        ] {
            refused(
                &node,
                node.plugin(plugin, &at.env("ADD"), garbage),
                6,
                "decode",
            );
        }
    }
    // Valid JSON of the wrong shape for one plugin's own fields.
    let wrong_type = r#"{"cniVersion":"1.0.0","name":"krafty","subnet":5,"gateway":"172.16.10.1"}"#;
    refused(
        &node,
        node.plugin("krafty-bridge", &at.env("ADD"), wrong_type),
        6,
        "decode",
    );
}

#[test]
fn bridge_config_errors_are_code_7() {
    let (node, _pod, at) = setup();
    let cases = [
        (json!({"subnet": null}), "subnet is required"),
        (json!({"gateway": null}), "gateway is required"),
        (json!({"subnet": "172.16.10.0"}), "CIDR"),
        (json!({"subnet": "300.16.10.0/24"}), "subnet"),
        (json!({"gateway": "172.16.11.1"}), "outside subnet"),
        (json!({"gateway": "banana"}), "gateway"),
        (json!({"mtu": 20}), "mtu"),
    ];
    for (fields, mentions) in cases {
        let config = bridge_with(fields);
        refused(
            &node,
            node.plugin("krafty-bridge", &at.env("ADD"), &config),
            7,
            mentions,
        );
    }
}

#[test]
fn unknown_cni_version_is_code_1() {
    let (node, _pod, at) = setup();
    for version in ["0.2.0", "9.9.9", "banana"] {
        let config = bridge_with(json!({"cniVersion": version}));
        refused(
            &node,
            node.plugin("krafty-bridge", &at.env("ADD"), &config),
            1,
            version,
        );
    }
}

#[test]
fn missing_or_bad_environment_is_code_4() {
    let (node, _pod, at) = setup();
    for missing in ["CNI_NETNS", "CNI_IFNAME", "CNI_CONTAINERID", "CNI_COMMAND"] {
        let env: Vec<_> = at
            .env("ADD")
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        for plugin in ["krafty-vrf", "krafty-bridge", "krafty-veth", "krafty"] {
            refused(&node, node.plugin(plugin, &env, BRIDGE), 4, missing);
        }
    }
    let mut long_ifname = at.env("ADD");
    long_ifname[3] = ("CNI_IFNAME", "a-much-too-long-name");
    refused(
        &node,
        node.plugin("krafty-bridge", &long_ifname, BRIDGE),
        4,
        "CNI_IFNAME",
    );
    let mut no_such_netns = at.env("ADD");
    no_such_netns[2] = ("CNI_NETNS", "/run/netns/krafty-no-such-namespace");
    let veth = json!({
        "cniVersion": "1.0.0", "name": NETWORK, "type": "krafty-veth", "podIP": "172.16.10.5/24"
    });
    refused(
        &node,
        node.plugin("krafty-veth", &no_such_netns, &veth.to_string()),
        4,
        "no such network namespace",
    );
}

#[test]
fn a_reserved_vrf_table_is_code_7_before_the_kernel_is_asked() {
    let (node, _pod, at) = setup();
    for table in [0, 253, 254, 255] {
        let config = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "krafty-vrf",
                            "vrfTable": table, "scope": "network"});
        refused(
            &node,
            node.plugin("krafty-vrf", &at.env("ADD"), &config.to_string()),
            7,
            "reserved",
        );
    }
}

#[test]
fn a_vrf_table_for_every_pod_of_the_node_is_code_7() {
    let (node, _pod, at) = setup();
    let config = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "krafty-vrf",
                        "vrfTable": 1234, "scope": "pod"});
    let outcome = node.plugin("krafty-vrf", &at.env("ADD"), &config.to_string());
    let error = outcome.error(7, "vrfTable 1234");
    assert!(
        error["msg"].as_str().unwrap().contains("scope \"network\""),
        "{error}"
    );
    node.assert_clean();
}

#[test]
fn veth_without_a_bridge_in_prev_result_is_code_7() {
    let (node, _pod, at) = setup();
    for prev in [
        None,
        Some(json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}]})),
    ] {
        let mut config = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "krafty-veth", "ipam": host_local_ipam()});
        if let Some(prev) = prev {
            config["prevResult"] = prev;
        }
        refused(
            &node,
            node.plugin("krafty-veth", &at.env("ADD"), &config.to_string()),
            7,
            "krafty-bridge",
        );
    }
}

/// Runs krafty-bridge ADD and returns a krafty-veth config chained on its result.
fn veth_after_bridge(node: &Node, at: &Attachment, veth_fields: Value) -> Value {
    veth_after(node, at, BRIDGE, veth_fields)
}

/// A shared bridge (scope network), for two pods of one network on a node without VRFs.
const SHARED_BRIDGE: &str = r#"{"cniVersion":"1.1.0","name":"krafty","type":"krafty-bridge","scope":"network","subnet":"172.16.10.0/24","gateway":"172.16.10.1"}"#;

/// krafty-bridge's ADD with `bridge` for `at`, then a krafty-veth config with `veth_fields`
/// that follows it in the chain.
fn veth_after(node: &Node, at: &Attachment, bridge: &str, veth_fields: Value) -> Value {
    let bridge_result = node.plugin("krafty-bridge", &at.env("ADD"), bridge).ok();
    let mut config = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "krafty-veth", "prevResult": bridge_result});
    for (key, value) in veth_fields.as_object().unwrap() {
        config[key] = value.clone();
    }
    config
}

/// Removes the bridge of `veth_after_bridge`, then asserts the node is clean.
fn undo_bridge_and_expect_clean(node: &Node, at: &Attachment) {
    node.plugin("krafty-bridge", &at.env("DEL"), BRIDGE).ok();
    node.assert_clean();
}

#[test]
fn pod_ip_outside_the_subnet_is_code_7_and_leaves_no_veth() {
    let (node, _pod, at) = setup();
    let config = veth_after_bridge(&node, &at, json!({"podIP": "10.9.9.9/24"}));
    let outcome = node.plugin("krafty-veth", &at.env("ADD"), &config.to_string());
    outcome.error(7, "outside the bridge's subnets");
    undo_bridge_and_expect_clean(&node, &at);
}

#[test]
fn an_ipam_address_outside_the_subnet_is_released_again() {
    let (node, _pod, at) = setup();
    let mut ipam = json!({"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24"}]]});
    ipam["dataDir"] = json!(node.ipam_dir());
    let config = veth_after_bridge(&node, &at, json!({"ipam": ipam}));
    node.plugin("krafty-veth", &at.env("ADD"), &config.to_string())
        .error(7, "outside the bridge's subnets");
    assert_eq!(
        node.leases(NETWORK),
        Vec::<String>::new(),
        "the lease was released"
    );
    undo_bridge_and_expect_clean(&node, &at);
}

#[test]
fn a_missing_ipam_plugin_is_code_102() {
    let (node, _pod, at) = setup();
    let config = veth_after_bridge(&node, &at, json!({"ipam": {"type": "no-such-ipam"}}));
    node.plugin("krafty-veth", &at.env("ADD"), &config.to_string())
        .error(102, "not found on CNI_PATH");
    undo_bridge_and_expect_clean(&node, &at);
}

#[test]
fn host_local_is_served_in_process_and_only_what_it_leaves_needs_the_binary() {
    let (node, _pod, at) = setup();
    let mut ipam = json!({"type": "host-local", "ranges": [[{"subnet": "172.16.10.0/24"}]]});
    ipam["dataDir"] = json!(node.ipam_dir());
    let mut env = at.env("ADD");
    env.push(("CNI_PATH", "/nonexistent"));
    // No host-local on CNI_PATH: the plain config is served by krafty itself...
    let config = veth_after_bridge(&node, &at, json!({"ipam": ipam.clone()}));
    let result = node.plugin("krafty-veth", &env, &config.to_string()).ok();
    assert_eq!(result["ips"][0]["address"], "172.16.10.2/24", "{result}");
    assert_eq!(node.leases(NETWORK), vec!["172.16.10.2"]);
    let mut del = at.env("DEL");
    del.push(("CNI_PATH", "/nonexistent"));
    node.plugin("krafty-veth", &del, &config.to_string()).ok();
    assert_eq!(node.leases(NETWORK), Vec::<String>::new());
    // ...while one it leaves to host-local (resolvConf) needs the binary.
    ipam["resolvConf"] = json!("/etc/resolv.conf");
    let config = veth_after_bridge(&node, &at, json!({"ipam": ipam}));
    node.plugin("krafty-veth", &env, &config.to_string())
        .error(102, "not found on CNI_PATH");
    undo_bridge_and_expect_clean(&node, &at);
}

#[test]
fn a_failing_ipam_plugin_keeps_its_code_and_leaves_nothing() {
    let (node, _pod, at) = setup();
    // host-local refuses a range whose start lies outside its subnet.
    let mut ipam = json!({"type": "host-local", "ranges": [[{"subnet": "172.16.10.0/24", "rangeStart": "10.0.0.1"}]]});
    ipam["dataDir"] = json!(node.ipam_dir());
    let config = veth_after_bridge(&node, &at, json!({"ipam": ipam}));
    let outcome = node.plugin("krafty-veth", &at.env("ADD"), &config.to_string());
    assert!(!outcome.success);
    let error = outcome.json();
    assert!(
        error["msg"].as_str().unwrap().contains("host-local"),
        "{error}"
    );
    assert_ne!(error["code"], 0);
    undo_bridge_and_expect_clean(&node, &at);
}

#[test]
fn an_exhausted_range_fails_the_second_pod_and_spares_the_first() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    let first = Attachment {
        id: container_id(),
        netns: a.netns_path(),
    };
    let second = Attachment {
        id: container_id(),
        netns: b.netns_path(),
    };
    let mut ipam = json!({"type": "host-local", "ranges": [[{"subnet": "172.16.10.0/24", "rangeStart": "172.16.10.10", "rangeEnd": "172.16.10.10"}]]});
    ipam["dataDir"] = json!(node.ipam_dir());
    let config_a = veth_after(&node, &first, SHARED_BRIDGE, json!({"ipam": ipam.clone()}));
    node.plugin("krafty-veth", &first.env("ADD"), &config_a.to_string())
        .ok();
    let config_b = veth_after(&node, &second, SHARED_BRIDGE, json!({"ipam": ipam}));
    let outcome = node.plugin("krafty-veth", &second.env("ADD"), &config_b.to_string());
    assert!(!outcome.success);
    assert!(outcome.json()["msg"]
        .as_str()
        .unwrap()
        .contains("host-local"));
    assert!(node.link(&format!("veth{}", &second.id[..11])).is_none());
    assert_eq!(
        node.leases(NETWORK),
        vec!["172.16.10.10"],
        "the first pod keeps its address"
    );
    assert!(a.ping("172.16.10.1"));

    node.plugin("krafty-veth", &first.env("DEL"), &config_a.to_string())
        .ok();
    node.plugin("krafty-bridge", &second.env("DEL"), SHARED_BRIDGE)
        .ok();
    // The network's last pod is gone: GC takes the shared bridge.
    node.plugin("krafty-bridge", &[("CNI_COMMAND", "GC")], SHARED_BRIDGE)
        .ok();
    node.assert_clean();
}

#[test]
fn a_device_krafty_did_not_create_is_never_touched() {
    let (node, _pod, at) = setup();
    let squatter = format!("krb{}", &at.id[..12]);
    node.ip(&[
        "link",
        "add",
        &squatter,
        "type",
        "veth",
        "peer",
        "name",
        "squatpeer",
    ]);
    node.plugin("krafty-bridge", &at.env("ADD"), BRIDGE)
        .error(103, "not created by krafty");
    node.plugin("krafty-bridge", &at.env("DEL"), BRIDGE).ok();
    assert!(
        node.link(&squatter).is_some(),
        "DEL left the foreign device alone"
    );
    node.ip(&["link", "del", &squatter]);
    node.assert_clean();
}

#[test]
fn a_hostile_log_file_is_refused() {
    let (node, _pod, at) = setup();
    let config = bridge_with(json!({"logFile": "/etc/krafty-should-not-exist.log"}));
    refused(
        &node,
        node.plugin("krafty-bridge", &at.env("ADD"), &config),
        7,
        "logFile",
    );
    assert!(!std::path::Path::new("/etc/krafty-should-not-exist.log").exists());
}

#[test]
fn version_needs_no_attachment_and_answers_in_the_asked_version() {
    let node = Node::new();
    for plugin in ["krafty-vrf", "krafty-bridge", "krafty-veth", "krafty"] {
        let answer = node
            .plugin(
                plugin,
                &[("CNI_COMMAND", "VERSION")],
                r#"{"cniVersion":"0.4.0"}"#,
            )
            .ok();
        assert_eq!(answer["cniVersion"], "0.4.0");
        assert_eq!(
            answer["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let empty = node.plugin(plugin, &[("CNI_COMMAND", "VERSION")], "").ok();
        assert_eq!(empty["cniVersion"], "1.1.0");
    }
}

#[test]
fn krafty_vrf_after_krafty_bridge_is_code_7() {
    let (node, pod, at) = setup();
    let chain = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [
        {"type": "krafty-bridge", "subnet": "172.16.10.0/24", "gateway": "172.16.10.1"},
        {"type": "krafty-vrf"},
        {"type": "krafty-veth", "podIP": "172.16.10.5/24"}]});
    let list = node.conflist(chain);
    node.cni("add", &list, &at.id, &pod.netns_path())
        .error(7, "krafty-vrf comes after krafty-bridge");
    node.cni("del", &list, &at.id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn del_carries_on_past_a_failing_ipam_and_reports_it() {
    let (node, pod, at) = setup();
    // An IPAM plugin that hands out an address and fails its DEL until it is mended.
    let dir = node.dir.join("flaky-ipam");
    std::fs::create_dir_all(&dir).unwrap();
    let mended = dir.join("mended");
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\ncase \"$CNI_COMMAND\" in\n\
         ADD) printf '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"172.16.10.77/24\"}}]}}' ;;\n\
         DEL) [ -e {} ] && exit 0; printf '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"flaky DEL\"}}'; exit 1 ;;\n\
         *) printf '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}}' ;;\nesac\n",
        mended.display()
    );
    std::fs::write(dir.join("flaky"), script).unwrap();
    std::process::Command::new("chmod")
        .args(["755"])
        .arg(dir.join("flaky"))
        .status()
        .unwrap();
    let chain = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [
        {"type": "krafty-bridge", "subnet": "172.16.10.0/24", "gateway": "172.16.10.1"},
        {"type": "krafty-veth", "ipam": {"type": "flaky"}}]});
    let list = node.conflist(chain);
    let cni_path = format!("{}:{}", dir.display(), node.cni_path());
    let flags = ["--cni-path", cni_path.as_str()];
    node.cni_with("add", &list, &at.id, &pod.netns_path(), &flags)
        .ok();

    // The devices go although the address cannot be given back; the error says why, and the
    // record stays to say what is still to undo.
    node.cni_with("del", &list, &at.id, &pod.netns_path(), &flags)
        .error(11, "flaky DEL");
    assert_eq!(node.link_names(), ["lo"], "every device went");
    assert_eq!(
        node.records().len(),
        1,
        "the record says what is left to undo"
    );

    std::fs::write(&mended, b"").unwrap();
    node.cni_with("del", &list, &at.id, &pod.netns_path(), &flags)
        .ok();
    node.assert_clean();
}
