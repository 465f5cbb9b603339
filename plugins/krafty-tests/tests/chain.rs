//! The bridge + veth chain through the real libcni and the real host-local, on this machine's
//! kernel (no VRF needed). Each test has its own node namespace.

use krafty_cni::naming;
use krafty_tests::{bridge_veth_conflist, container_id, interface_names, Node, NETWORK};
use serde_json::{json, Value};

fn pod_interface(result: &Value) -> &Value {
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sandbox"].is_string())
        .expect("the result reports the pod's interface with its sandbox")
}

#[test]
fn add_gives_the_pod_an_address_and_del_removes_everything() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(bridge_veth_conflist("1.0.0"));
    let id = container_id();

    let result = node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    assert_eq!(result["cniVersion"], "1.0.0");
    let names = interface_names(&result);
    assert_eq!(
        names,
        vec![
            format!("krb{}", &id[..12]),
            format!("veth{}", &id[..11]),
            "net1".into()
        ]
    );
    assert_eq!(pod_interface(&result)["sandbox"], pod.netns_path());
    assert_eq!(result["ips"][0]["address"], "172.16.10.10/24");
    assert_eq!(result["ips"][0]["gateway"], "172.16.10.1");
    assert_eq!(result["ips"][0]["interface"], 2);
    assert!(
        result["ips"][0].get("version").is_none(),
        "1.0.0 IPs carry no version"
    );

    // The kernel agrees with the result.
    assert_eq!(pod.addresses("net1")[0], "172.16.10.10/24");
    let bridge = node
        .link(&format!("krb{}", &id[..12]))
        .expect("bridge exists");
    assert_eq!(bridge["linkinfo"]["info_kind"], "bridge");
    assert_eq!(bridge["ifalias"], format!("krafty:{NETWORK}/{id}/net1"));
    assert_eq!(bridge["linkinfo"]["info_data"]["mcast_snooping"], 0);
    let veth = node
        .link(&format!("veth{}", &id[..11]))
        .expect("host veth exists");
    assert_eq!(veth["master"], bridge["ifname"]);
    assert!(veth["flags"].as_array().unwrap().contains(&"UP".into()));
    // A bridge port: no IPv6 link-local address of its own to grow the node's tables.
    assert_eq!(veth["inet6_addr_gen_mode"], "none", "{veth}");
    let veth_name = veth["ifname"].as_str().unwrap();
    assert_eq!(node.ip(&["-6", "addr", "show", "dev", veth_name]), "");
    assert!(pod.ping("172.16.10.1"), "the pod reaches its gateway");
    assert_eq!(node.leases(NETWORK), vec!["172.16.10.10"]);

    // The secondary default route does not take over from a primary one.
    let routes = pod.exec(&["ip", "-j", "route", "show", "default"]).ok();
    assert_eq!(routes[0]["dev"], "net1");
    assert_eq!(routes[0]["metric"], 4096);

    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
    assert!(pod.addresses("net1").is_empty());

    // The invocation log tells what was done to this namespace, with the pod's identity.
    let log = node.log_entries();
    let add_lines: Vec<&Value> = log.iter().filter(|e| e["command"] == "ADD").collect();
    assert_eq!(add_lines.len(), 2, "one ADD line per plugin: {log:?}");
    for line in &log {
        assert_eq!(line["containerId"], id.as_str());
        assert_eq!(line["network"], NETWORK);
        assert_eq!(line["podNamespace"], "default");
        assert_eq!(line["podName"], format!("pod-{id}"));
        assert_eq!(line["outcome"], "ok");
        assert!(line["durationUs"].as_u64().unwrap() > 0);
    }
    assert_eq!(log.iter().filter(|e| e["command"] == "DEL").count(), 2);
}

#[test]
fn check_passes_after_add_and_names_a_deleted_host_veth() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(bridge_veth_conflist("1.0.0"));
    let id = container_id();
    node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    node.cni("check", &conflist, &id, &pod.netns_path()).ok();

    let host_veth = format!("veth{}", &id[..11]);
    node.ip(&["link", "del", &host_veth]);
    node.cni("check", &conflist, &id, &pod.netns_path())
        .error(104, &host_veth);

    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn check_names_a_missing_pod_address() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(bridge_veth_conflist("1.0.0"));
    let id = container_id();
    node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    pod.exec(&["ip", "addr", "del", "172.16.10.10/24", "dev", "net1"])
        .ok();
    node.cni("check", &conflist, &id, &pod.netns_path())
        .error(104, "172.16.10.10/24");
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn del_twice_succeeds() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(bridge_veth_conflist("1.0.0"));
    let id = container_id();
    node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn del_without_add_succeeds() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(bridge_veth_conflist("1.0.0"));
    node.cni("del", &conflist, &container_id(), &pod.netns_path())
        .ok();
    node.assert_clean();
}

#[test]
fn del_after_the_netns_is_gone_releases_everything() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(bridge_veth_conflist("1.0.0"));
    let id = container_id();
    node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    let netns = pod.netns_path();
    drop(pod);
    assert!(!std::path::Path::new(&netns).exists());
    node.cni("del", &conflist, &id, &netns).ok();
    node.assert_clean();
}

#[test]
fn two_pods_get_two_addresses() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    // Two pods of a network on one node share its bridge (scope network) or have VRFs.
    let mut shared = bridge_veth_conflist("1.0.0");
    shared["plugins"][0]["scope"] = json!("network");
    let conflist = node.conflist(shared.clone());
    let (id_a, result_a) = node.attach(&conflist, &a);
    let (id_b, result_b) = node.attach(&conflist, &b);
    assert_eq!(result_a["ips"][0]["address"], "172.16.10.10/24");
    assert_eq!(result_b["ips"][0]["address"], "172.16.10.11/24");
    let mut leases = node.leases(NETWORK);
    leases.sort();
    assert_eq!(leases, vec!["172.16.10.10", "172.16.10.11"]);
    node.cni("del", &conflist, &id_a, &a.netns_path()).ok();
    node.cni("del", &conflist, &id_b, &b.netns_path()).ok();
    node.gc(&shared, &[]).ok();
    node.assert_clean();
}

#[test]
fn a_second_pod_of_a_pod_scope_network_without_vrf_is_refused_and_the_first_kept() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    let conflist = node.conflist(bridge_veth_conflist("1.0.0"));
    let (id_a, _) = node.attach(&conflist, &a);
    let id_b = container_id();
    let links = node.link_names();
    node.cni("add", &conflist, &id_b, &b.netns_path())
        .error(7, "gateway 172.16.10.1/24 is already on bridge");
    assert_eq!(node.link_names(), links, "nothing was made for b");
    assert_eq!(node.leases(NETWORK).len(), 1);
    assert!(a.ping("172.16.10.1"), "a keeps working");
    node.cni("del", &conflist, &id_b, &b.netns_path()).ok();
    node.cni("del", &conflist, &id_a, &a.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn a_chain_ending_in_the_reference_tuning_plugin_passes_results_through() {
    let node = Node::new();
    let pod = node.pod("a");
    let mut conflist = bridge_veth_conflist("1.0.0");
    conflist["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "type": "tuning", "mtu": 1400, "sysctl": { "net.ipv4.conf.net1.arp_notify": "1" } }));
    let conflist = node.conflist(conflist);
    let id = container_id();
    let result = node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    assert_eq!(result["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(result["ips"][0]["address"], "172.16.10.10/24");
    let link = pod.exec(&["ip", "-j", "link", "show", "net1"]).ok();
    assert_eq!(link[0]["mtu"], 1400, "tuning found krafty's pod interface");
    node.cni("check", &conflist, &id, &pod.netns_path()).ok();
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn results_are_printed_in_the_configs_version() {
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let node = Node::new();
        let pod = node.pod("a");
        let conflist = node.conflist(bridge_veth_conflist(version));
        let id = container_id();
        let result = node.cni("add", &conflist, &id, &pod.netns_path()).ok();
        assert_eq!(result["cniVersion"], version);
        let ip = &result["ips"][0];
        assert_eq!(ip["address"], "172.16.10.10/24");
        if version == "1.0.0" {
            assert!(ip.get("version").is_none(), "{version}: {ip}");
        } else {
            assert_eq!(ip["version"], "4", "{version}: {ip}");
        }
        if version != "0.3.1" {
            node.cni("check", &conflist, &id, &pod.netns_path()).ok();
        }
        node.cni("del", &conflist, &id, &pod.netns_path()).ok();
        node.assert_clean();
    }
}

#[test]
fn a_static_pod_ip_needs_no_ipam() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(json!({
        "cniVersion": "1.0.0", "name": NETWORK, "plugins": [
            { "type": "krafty-bridge", "subnet": "172.16.10.0/24", "gateway": "172.16.10.1" },
            { "type": "krafty-veth", "podIP": "172.16.10.77/24", "routes": [{ "dst": "10.99.0.0/16" }] }
        ]
    }));
    let id = container_id();
    let result = node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    assert_eq!(result["ips"][0]["address"], "172.16.10.77/24");
    assert_eq!(
        result["ips"][0]["gateway"], "172.16.10.1",
        "the bridge's address is the gateway"
    );
    assert_eq!(
        result["routes"][0],
        json!({ "dst": "10.99.0.0/16", "gw": "172.16.10.1" })
    );
    assert!(pod.ping("172.16.10.1"));
    node.cni("check", &conflist, &id, &pod.netns_path()).ok();
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn a_second_add_of_a_live_attachment_is_refused_and_harms_nothing() {
    let node = Node::new();
    let pod = node.pod("a");
    let conflist = node.conflist(bridge_veth_conflist("1.0.0"));
    let id = container_id();
    node.cni("add", &conflist, &id, &pod.netns_path()).ok();
    // A second ADD of a live attachment is refused before IPAM runs, and the pod keeps working.
    node.cni("add", &conflist, &id, &pod.netns_path())
        .error(103, &format!("veth{}", &id[..11]));
    assert!(pod.ping("172.16.10.1"));
    assert_eq!(node.leases(NETWORK), vec!["172.16.10.10"]);
    node.cni("del", &conflist, &id, &pod.netns_path()).ok();
    node.assert_clean();
}

#[test]
fn multicast_snooping_is_on_when_the_config_asks_for_it() {
    let node = Node::new();
    let pod = node.pod("a");
    let mut conflist = bridge_veth_conflist("1.0.0");
    conflist["plugins"][0]["multicastSnooping"] = true.into();
    let list = node.conflist(conflist);
    let id = container_id();
    node.cni("add", &list, &id, &pod.netns_path()).ok();
    let bridge = node
        .link(&naming::bridge_name(&id, "net1"))
        .expect("bridge exists");
    assert_eq!(bridge["linkinfo"]["info_data"]["mcast_snooping"], 1);
    node.cni("del", &list, &id, &pod.netns_path()).ok();
    node.assert_clean();
}
