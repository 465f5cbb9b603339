//! The `krafty` plugin (the original krafty's single-plugin config) through libcni, on this
//! machine's kernel: as a `.conf` and as a one-plugin conflist. The kernel is asked whether it
//! can make VRFs, and each test expects what krafty must do on such a kernel: without VRF, a
//! clear error (code 50 on STATUS and ADD) and nothing left; with it, the attachment. The VRF
//! tests proper, devices compared with the chain's, run in the VM (tests/vrf/original.rs).

use std::process::Command;

use krafty_cni::naming;
use krafty_tests::{
    container_id, driver_path, interface_names, one_plugin_conflist, original_config,
    original_with, plugin_path, Node, Outcome, NETWORK,
};
use serde_json::{json, Value};

/// What STATUS and ADD say on a kernel without VRF.
const NO_VRF: &str = "this kernel cannot create VRF devices";

/// ADD of `config` for a fresh pod, then what the kernel allows: the pod behind its devices
/// (checked), or code 50 naming VRF with nothing made; then DEL and GC (which removes a
/// network's shared devices), and nothing left.
fn add_as_this_kernel_allows(node: &Node, config: &Value) -> Outcome {
    let pod = node.pod("a");
    let list = node.conflist(config.clone());
    let id = container_id();
    let added = node.cni("add", &list, &id, &pod.netns_path());
    if node.can_make_vrfs() {
        let result = added.ok();
        let names = interface_names(&result);
        assert_eq!(names.len(), 4, "VRF, bridge, host veth, net1: {result}");
        assert_eq!(names[2], naming::host_veth_name(&id, "net1"));
        assert!(pod.ping("172.16.10.1"), "the pod reaches its gateway");
        node.cni("check", &list, &id, &pod.netns_path()).ok();
    } else {
        added.error(50, NO_VRF);
        // Refused before anything is made: no device, record, lease or lock, even before DEL.
        node.assert_clean();
        assert!(!pod.exec(&["ip", "link", "show", "net1"]).success);
    }
    node.cni("del", &list, &id, &pod.netns_path()).ok();
    node.gc(config, &[]).ok();
    node.assert_clean();
    added
}

#[test]
fn the_seed_example_as_a_conf_and_as_a_one_plugin_conflist() {
    let node = Node::new();
    for config in [
        original_config("1.0.0"),
        one_plugin_conflist(&original_config("1.0.0")),
    ] {
        add_as_this_kernel_allows(&node, &config);
    }
}

#[test]
fn a_static_pod_ip_and_a_vrf_table() {
    let node = Node::new();
    let static_ip = original_with(json!({
        "ipam": null, "podIP": "172.16.10.5/24", "routes": [{"dst": "0.0.0.0/0"}]
    }));
    let tabled = original_with(json!({"vrfTable": 4242}));
    for config in [static_ip, tabled] {
        add_as_this_kernel_allows(&node, &config);
        add_as_this_kernel_allows(&node, &one_plugin_conflist(&config));
    }
}

#[test]
fn status_says_whether_this_kernel_can_make_vrfs() {
    let node = Node::new();
    for config in [
        original_config("1.1.0"),
        one_plugin_conflist(&original_config("1.1.0")),
    ] {
        let status = node.status(&config);
        if node.can_make_vrfs() {
            status.ok();
        } else {
            let error = status.error(50, NO_VRF);
            assert!(
                error["msg"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("vrf module"),
                "the message says what is missing: {error}"
            );
        }
    }
    node.assert_clean();
}

#[test]
fn version_through_libcni_and_directly() {
    let node = Node::new();
    let path = node.cni_path();
    let driven = Command::new(driver_path())
        .args(["version", "--plugin", "krafty", "--cni-path", &path])
        .output()
        .expect("the driver runs");
    assert!(driven.status.success(), "{driven:?}");
    let info: Value = serde_json::from_slice(&driven.stdout).expect("VERSION is JSON");
    assert_eq!(
        info["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let direct = node.plugin(
        "krafty",
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"0.4.0"}"#,
    );
    assert_eq!(direct.ok()["cniVersion"], "0.4.0");
    let human = Command::new(plugin_path("krafty"))
        .arg("--version")
        .output()
        .expect("krafty runs");
    assert!(String::from_utf8_lossy(&human.stdout).starts_with("krafty "));
}

#[test]
fn bad_configs_are_refused_before_anything_is_made() {
    let node = Node::new();
    let pod = node.pod("a");
    for (fields, mentions) in [
        (json!({"subnet": null}), "subnet is required"),
        (json!({"gateway": null}), "gateway is required"),
        (json!({"gateway": "172.16.11.1"}), "outside subnet"),
        (json!({"podIP": "172.16.10.5/24"}), "not both"),
        (json!({"vrfTable": 254}), "reserved"),
        (
            json!({"vrfTable": 4242, "scope": "pod"}),
            "names the network's routing table",
        ),
        (json!({"scope": "cluster"}), "scope"),
        (json!({"ipam": {"type": "../host-local"}}), "ipam.type"),
    ] {
        let list = node.conflist(original_with(fields.clone()));
        let id = container_id();
        node.cni("add", &list, &id, &pod.netns_path())
            .error(7, mentions);
        node.assert_clean();
        node.cni("del", &list, &id, &pod.netns_path())
            .error(7, mentions);
    }
    let wrong_type = node.conflist(original_with(json!({"vrfTable": "ten"})));
    node.cni("add", &wrong_type, &container_id(), &pod.netns_path())
        .error(6, "decode");
    node.assert_clean();
}

#[test]
fn del_and_gc_of_nothing_succeed() {
    let node = Node::new();
    let pod = node.pod("a");
    let config = original_config("1.1.0");
    let list = node.conflist(config.clone());
    node.cni("del", &list, &container_id(), &pod.netns_path())
        .ok();
    node.gc(&config, &[]).ok();
    node.gc(&original_with(json!({"vrfTable": 4242})), &[]).ok();
    node.assert_clean();
    // Every invocation was logged as the original's plugin.
    assert!(node
        .log_entries()
        .iter()
        .all(|entry| entry["plugin"] == "krafty" && entry["network"] == NETWORK));
}
