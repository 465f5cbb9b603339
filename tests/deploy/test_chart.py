"""charts/krafty rendered offline by the real Helm SDK: lint, the NetworkAttachmentDefinitions'
conflists against the plugins' contract, the installer DaemonSet, RBAC, labels, NOTES, and every
object decoded into its Kubernetes type."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes.client
import pytest
import yaml

import chartlib

VALUES_FILES = sorted(chartlib.VALUES_DIR.glob("*.yaml"))
DEV_VALUES = chartlib.CHART / "values-dev.yaml"
DEV_NOVRF_VALUES = chartlib.CHART / "values-dev-novrf.yaml"
NOVRF_VALUES = chartlib.CHART / "values-novrf.yaml"

# The original network as the plugins' contract spells it, every optional field set.
CONTRACT_EXAMPLE = {
    "cniVersion": "1.0.0",
    "name": "krafty",
    "plugins": [
        # vrfTable names a network's table, so it goes with scope network (two-networks.yaml).
        {"type": "krafty-vrf", "scope": "pod"},
        {
            "type": "krafty-bridge",
            "scope": "pod",
            "subnet": "172.16.10.0/24",
            "gateway": "172.16.10.1",
            "mtu": 1500,
        },
        {
            "type": "krafty-veth",
            "mtu": 1500,
            "routeMetric": 4096,
            "ipam": {
                "type": "host-local",
                "ranges": [
                    [
                        {
                            "subnet": "172.16.10.0/24",
                            "rangeStart": "172.16.10.10",
                            "rangeEnd": "172.16.10.250",
                            "gateway": "172.16.10.1",
                        }
                    ]
                ],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        },
    ],
}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def default_values() -> dict[str, Any]:
    with helm.Chart.load(chartlib.CHART) as chart:
        return chart.values


def conflists(values: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """namespace/name -> parsed spec.config of every NetworkAttachmentDefinition."""
    return {
        f"{nad['metadata']['namespace']}/{nad['metadata']['name']}": chartlib.conflist(nad)
        for nad in chartlib.network_attachments(values)
    }


def plugin(conf: dict[str, Any], plugin_type: str) -> dict[str, Any]:
    return next(p for p in conf["plugins"] if p["type"] == plugin_type)


# --- lint ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values_file", [None, DEV_VALUES, DEV_NOVRF_VALUES, *VALUES_FILES], ids=lambda p: p.name if p else "defaults"
)
def test_helm_lint_strict_passes(values_file):
    values = chartlib.values_from_files([values_file]) if values_file else None
    report = chartlib.lint(values)
    assert report["total_charts_linted"] == 1
    assert chartlib.lint_problems(report) == []


def test_helm_lint_strict_reports_a_broken_template(tmp_path):
    """The lint check can fail: a copy of the chart with a template error does not pass."""
    broken = tmp_path / "krafty"
    with helm.Chart.load(chartlib.CHART) as chart:
        chart.save_dir(tmp_path)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.nothing.here }}\n")
    assert chartlib.lint_problems(helm.lint(broken, strict=True))


# --- the NetworkAttachmentDefinitions ---------------------------------------------------------


def test_defaults_reproduce_the_original_network():
    nads = chartlib.network_attachments()
    assert [(n["metadata"]["namespace"], n["metadata"]["name"]) for n in nads] == [("default", "krafty")]
    assert nads[0]["apiVersion"] == "k8s.cni.cncf.io/v1"
    expected = CONTRACT_EXAMPLE | {"plugins": [dict(p) for p in CONTRACT_EXAMPLE["plugins"]]}
    # The defaults set no optional field: the plugins' own defaults apply.
    del expected["plugins"][1]["mtu"]
    del expected["plugins"][2]["mtu"]
    del expected["plugins"][2]["routeMetric"]
    assert chartlib.conflist(nads[0]) == expected


def test_every_optional_field_renders_the_contract_example():
    values = default_values()
    values["networks"][0] |= {"mtu": 1500, "routeMetric": 4096}
    assert conflists(values) == {"default/krafty": CONTRACT_EXAMPLE}


def test_log_rotation_reaches_every_plugin_as_integers():
    values = default_values()
    values["networks"][0] |= {"logMaxBytes": 16777216, "logMaxFiles": 5}
    conflist = conflists(values)["default/krafty"]
    for entry in conflist["plugins"]:
        assert (entry["logMaxBytes"], entry["logMaxFiles"]) == (16777216, 5), entry["type"]
        assert isinstance(entry["logMaxBytes"], int)


def test_two_networks():
    confs = conflists(chartlib.values_from_files([chartlib.VALUES_DIR / "two-networks.yaml"]))
    assert sorted(confs) == ["default/krafty", "lab/storage"]
    storage = confs["lab/storage"]
    assert storage["cniVersion"] == "0.4.0"
    assert plugin(storage, "krafty-vrf") == {
        "type": "krafty-vrf",
        "scope": "network",
        "vrfTable": 1234,
        "logFile": "/var/log/krafty/storage.log",
    }
    assert plugin(storage, "krafty-bridge") == {
        "type": "krafty-bridge",
        "scope": "network",
        "subnet": "172.16.30.0/24",
        "gateway": "172.16.30.1",
        "mtu": 9000,
        "hairpinMode": True,
        "promiscMode": False,
        "multicastSnooping": True,
        "logFile": "/var/log/krafty/storage.log",
    }
    assert plugin(storage, "krafty-veth") == {
        "type": "krafty-veth",
        "mtu": 9000,
        "routeMetric": 100,
        "logFile": "/var/log/krafty/storage.log",
        "ipam": {
            "type": "host-local",
            "dataDir": "/var/lib/cni/krafty-storage",
            # No configured range: host-local hands out the whole subnet.
            "ranges": [[{"subnet": "172.16.30.0/24", "gateway": "172.16.30.1"}]],
            "routes": [{"dst": "10.99.0.0/16", "gw": "172.16.30.254"}],
        },
    }
    # Integers stay integers in the JSON (Helm reads YAML numbers as floats).
    assert isinstance(plugin(storage, "krafty-vrf")["vrfTable"], int)


def test_a_multi_node_network_passes_multi_node_to_krafty_bridge_only():
    values = default_values()
    values["networks"][0] |= {
        "scope": "network",
        "multiNode": {"vni": 4242, "port": 4799, "underlay": "ipv6"},
    }
    conf = conflists(values)["default/krafty"]
    bridge = plugin(conf, "krafty-bridge")
    assert bridge["multiNode"] == {"vni": 4242, "port": 4799, "underlay": "ipv6"}
    # Integers stay integers in the JSON (the plugin refuses a VNI of 4242.0).
    assert isinstance(bridge["multiNode"]["vni"], int)
    assert isinstance(bridge["multiNode"]["port"], int)
    assert "multiNode" not in plugin(conf, "krafty-vrf")
    assert "multiNode" not in plugin(conf, "krafty-veth")
    values["networks"][0]["multiNode"] = {}
    assert plugin(conflists(values)["default/krafty"], "krafty-bridge")["multiNode"] == {}


def test_dual_stack_network_gets_lists_and_one_range_set_per_family():
    conf = conflists(chartlib.values_from_files([chartlib.VALUES_DIR / "dual-stack.yaml"]))["default/lab"]
    assert conf["cniVersion"] == "1.1.0"
    assert plugin(conf, "krafty-vrf") == {"type": "krafty-vrf", "scope": "network"}
    bridge = plugin(conf, "krafty-bridge")
    assert bridge["subnet"] == ["172.16.20.0/24", "fd10:16:20::/64"]
    assert bridge["gateway"] == ["172.16.20.1", "fd10:16:20::1"]
    assert plugin(conf, "krafty-veth")["ipam"] == {
        "type": "host-local",
        "ranges": [
            [
                {
                    "subnet": "172.16.20.0/24",
                    "gateway": "172.16.20.1",
                    "rangeStart": "172.16.20.10",
                    "rangeEnd": "172.16.20.250",
                }
            ],
            [
                {
                    "subnet": "fd10:16:20::/64",
                    "gateway": "fd10:16:20::1",
                    "rangeStart": "fd10:16:20::10",
                    "rangeEnd": "fd10:16:20::ffff",
                }
            ],
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
    }


def test_static_network_has_pod_ip_and_routes_instead_of_ipam():
    conf = conflists(chartlib.values_from_files([chartlib.VALUES_DIR / "static.yaml"]))["default/static"]
    assert conf["cniVersion"] == "0.3.1"
    assert plugin(conf, "krafty-veth") == {
        "type": "krafty-veth",
        "podIP": "172.16.40.5/24",
        "routes": [{"dst": "0.0.0.0/0"}],
    }


def test_static_dual_stack_pod_ips_are_a_list():
    values = {
        "networks": [
            {
                "name": "static2",
                "subnets": ["172.16.40.0/24", "fd10:40::/64"],
                "gateways": ["172.16.40.1", "fd10:40::1"],
                "addressing": "static",
                "podIPs": ["172.16.40.5/24", "fd10:40::5/64"],
            }
        ]
    }
    veth = plugin(conflists(values)["kube-system/static2"], "krafty-veth")
    assert veth == {"type": "krafty-veth", "podIP": ["172.16.40.5/24", "fd10:40::5/64"]}


def test_runtime_addressing_declares_the_ips_and_mac_capabilities():
    conf = conflists(chartlib.values_from_files([chartlib.VALUES_DIR / "runtime.yaml"]))["default/handpicked"]
    assert plugin(conf, "krafty-veth") == {"type": "krafty-veth", "capabilities": {"ips": True, "mac": True}}


# The original krafty's single plugin and config (`plugin: krafty`): the seed's network as the
# original's NetworkAttachmentDefinition had it.
ORIGINAL_SEED = {
    "cniVersion": "1.0.0",
    "name": "original",
    "type": "krafty",
    "subnet": "172.16.10.0/24",
    "gateway": "172.16.10.1",
    # The seed's IPAM block is the one the chain's krafty-veth has.
    "ipam": CONTRACT_EXAMPLE["plugins"][2]["ipam"],
}


def test_plugin_krafty_renders_the_originals_single_config():
    confs = conflists(chartlib.values_from_files([chartlib.VALUES_DIR / "original.yaml"]))
    assert confs["default/original"] == ORIGINAL_SEED
    assert confs["default/original-static"] == {
        "cniVersion": "1.0.0",
        "name": "original-static",
        "type": "krafty",
        "subnet": "172.16.11.0/24",
        "gateway": "172.16.11.1",
        "podIP": "172.16.11.5/24",
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    # vrfTable implies the network's scope, as in the original: no "scope" written.
    tabled = confs["default/original-tabled"]
    assert tabled == {
        "cniVersion": "1.1.0",
        "name": "original-tabled",
        "type": "krafty",
        "subnet": "172.16.12.0/24",
        "gateway": "172.16.12.1",
        "vrfTable": 4242,
        "mtu": 1400,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "172.16.12.0/24", "gateway": "172.16.12.1"}]]},
    }
    assert isinstance(tabled["vrfTable"], int)


def test_plugin_krafty_writes_scope_network_only_without_a_vrf_table():
    def original(**fields: Any) -> dict[str, Any]:
        network = {"name": "o", "plugin": "krafty", "subnets": ["10.1.0.0/24"], "gateways": ["10.1.0.1"]}
        return conflists({"networks": [network | fields]})[f"{chartlib.NAMESPACE}/o"]

    assert "scope" not in original()
    assert "scope" not in original(scope="pod")
    assert original(scope="network")["scope"] == "network"
    assert "scope" not in original(scope="network", vrfTable=1234)
    logged = original(logFile="/var/log/krafty/o.log", logMaxBytes=1048576, logMaxFiles=3)
    assert (logged["logFile"], logged["logMaxBytes"], logged["logMaxFiles"]) == ("/var/log/krafty/o.log", 1048576, 3)
    dual = original(
        subnets=["10.1.0.0/24", "fd10:1::/64"], gateways=["10.1.0.1", "fd10:1::1"], addressing="runtime"
    )
    assert (dual["subnet"], dual["gateway"]) == (["10.1.0.0/24", "fd10:1::/64"], ["10.1.0.1", "fd10:1::1"])
    assert dual["capabilities"] == {"ips": True, "mac": True}
    assert "ipam" not in dual


def test_plugin_chain_is_the_default():
    values = default_values()
    values["networks"][0]["plugin"] = "chain"
    assert conflists(values) == conflists(None)


def test_vrf_false_leaves_krafty_vrf_out_of_the_chain():
    conf = conflists(chartlib.values_from_files([chartlib.VALUES_DIR / "no-vrf.yaml"]))["default/flat"]
    assert [p["type"] for p in conf["plugins"]] == ["krafty-bridge", "krafty-veth"]


def test_namespace_defaults_to_the_release_namespace():
    values = {"networks": [{"name": "n", "subnets": ["10.1.0.0/24"], "gateways": ["10.1.0.1"]}]}
    assert list(conflists(values)) == [f"{chartlib.NAMESPACE}/n"]


def test_no_networks_renders_no_attachment():
    assert chartlib.network_attachments({"networks": []}) == []


def test_a_network_listed_twice_is_refused():
    network = {"name": "twice", "namespace": "default", "subnets": ["10.1.0.0/24"], "gateways": ["10.1.0.1"]}
    with pytest.raises(helm.HelmRenderError, match="default/twice is listed twice"):
        chartlib.render({"networks": [network, network]})
    # The same name in two namespaces is two objects.
    other = network | {"namespace": "lab"}
    assert sorted(conflists({"networks": [network, other]})) == ["default/twice", "lab/twice"]


def test_every_conflist_is_a_well_formed_chain():
    """Every config is a chain, or the original's single plugin (`plugin: krafty`)."""
    for values_file in [None, DEV_VALUES, DEV_NOVRF_VALUES, *VALUES_FILES]:
        values = chartlib.values_from_files([values_file]) if values_file else None
        for key, conf in conflists(values).items():
            assert conf["cniVersion"] in {"0.3.1", "0.4.0", "1.0.0", "1.1.0"}, key
            assert conf["name"] == key.split("/")[1]
            if "plugins" in conf:
                types = [p["type"] for p in conf["plugins"]]
                assert types in (
                    ["krafty-vrf", "krafty-bridge", "krafty-veth"],
                    ["krafty-bridge", "krafty-veth"],
                ), key
                addressed = plugin(conf, "krafty-veth")
            else:
                assert conf["type"] == "krafty", key
                addressed = conf
            modes = [m for m in ("ipam", "podIP", "capabilities") if m in addressed]
            assert len(modes) == 1, f"{key}: {modes}"


# --- the commented example in values.yaml -----------------------------------------------------


def commented_example_networks() -> dict[str, dict[str, Any]]:
    """name -> the networks commented out in values.yaml (their YAML lines; prose skipped)."""
    text = (chartlib.CHART / "values.yaml").read_text()
    start = text.index("  # - name: lab")
    # The examples' lines, without the prose that introduces each.
    block = "\n".join(
        line.replace("  # ", "  ", 1)
        for line in text[start:].splitlines()
        if line.startswith(("  # - ", "  #   "))
    )
    return {net["name"]: net for net in yaml.safe_load("networks:\n" + block)["networks"]}


def test_commented_example_networks_in_values_yaml_are_valid():
    examples = commented_example_networks()
    assert set(examples) == {"lab", "stretched"}
    values = default_values()
    values["networks"] += examples.values()
    confs = conflists(values)
    conf = confs["default/lab"]
    assert plugin(conf, "krafty-bridge")["scope"] == "network"
    assert plugin(conf, "krafty-bridge")["subnet"] == ["172.16.20.0/24", "fd10:16:20::/64"]
    assert len(plugin(conf, "krafty-veth")["ipam"]["ranges"]) == 2
    assert plugin(confs["default/stretched"], "krafty-veth")["ipam"] == {"type": "krafty-blocks"}
    stretched = plugin(confs["default/stretched"], "krafty-bridge")
    assert (stretched["scope"], stretched["multiNode"]) == ("network", {})


# --- the installer ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_objects():
    return chartlib.objects()


def installer_container(daemonset: dict[str, Any]) -> dict[str, Any]:
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["installer"]
    return containers[0]


def test_daemonset_runs_everywhere(default_objects):
    pod = only(default_objects, "DaemonSet")["spec"]["template"]["spec"]
    # One toleration with neither key nor effect: every taint, NoExecute ones included.
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    # Orphan cleanup (the default) deletes host veth ends: the node's own network.
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}


def test_daemonset_mounts_the_node_directories(default_objects):
    daemonset = only(default_objects, "DaemonSet")
    volumes = {v["name"]: v["hostPath"]["path"] for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in installer_container(daemonset)["volumeMounts"]}
    mounted = {volumes[name]: path for name, path in mounts.items()}
    assert mounted == {
        "/opt/cni/bin": "/host/opt/cni/bin",
        "/var/lib/krafty": "/var/lib/krafty",
        "/run/krafty": "/run/krafty",
        "/run/netns": "/run/netns",
        "/var/lib/cni": "/var/lib/cni",
        "/var/log/krafty": "/var/log/krafty",
    }
    netns = next(m for m in installer_container(daemonset)["volumeMounts"] if m["name"] == "netns")
    assert netns["readOnly"] is True
    assert netns["mountPropagation"] == "HostToContainer"
    log = next(m for m in installer_container(daemonset)["volumeMounts"] if m["name"] == "log")
    assert log["readOnly"] is True
    writable = [m["mountPath"] for m in installer_container(daemonset)["volumeMounts"] if not m.get("readOnly")]
    assert sorted(writable) == ["/host/opt/cni/bin", "/run/krafty", "/var/lib/cni", "/var/lib/krafty"]


def test_report_only_orphan_cleanup_needs_no_host_network_nor_net_admin():
    daemonset = only(chartlib.objects({"installer": {"orphanCleanup": "report"}}), "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    container = installer_container(daemonset)
    assert not pod.get("hostNetwork", False)
    assert "dnsPolicy" not in pod
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "--orphan-cleanup=report" in container["args"]
    assert not any(arg.startswith("--ipam-path") for arg in container["args"])
    assert "ipam-data" not in {m["name"] for m in container["volumeMounts"]}
    assert "ipam-data" not in {v["name"] for v in pod["volumes"]}


def test_installer_arguments_environment_and_probes(default_objects):
    container = installer_container(only(default_objects, "DaemonSet"))
    assert container["image"] == "ghcr.io/krafty-cni/krafty-installer:0.1.0"
    assert container["args"] == [
        "--source=/opt/krafty/bin",
        "--target=/host/opt/cni/bin",
        "--listen=0.0.0.0:9650",
        "--node-name=$(KRAFTY_NODE_NAME)",
        "--state-dir=/var/lib/krafty",
        "--run-dir=/run/krafty",
        "--invocation-log=/var/log/krafty/krafty.log",
        "--orphan-cleanup=delete",
        "--ipam-path=/host/opt/cni/bin",
        "--shared-device-grace-secs=300",
        "--peers-source=none",
        "--log-level=info",
    ]
    assert container["env"] == [
        {"name": "KRAFTY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 9650, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_installer_security_context_is_minimal(default_objects):
    daemonset = only(default_objects, "DaemonSet")
    context = installer_container(daemonset)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    # NET_ADMIN only, for deleting orphans' devices.
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert daemonset["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }


def test_installer_values_are_wired_through():
    values = {
        "priorityClassName": "",
        "installer": {
            "listenAddress": "::",
            "port": 9700,
            "logLevel": "debug",
            "extraArgs": ["--debounce-ms=10"],
        },
        "hostPaths": {"cniBin": "/home/kubernetes/bin"},
        "image": {"repository": "registry.example/krafty-installer", "tag": "1.2.3", "pullPolicy": "Always"},
    }
    daemonset = only(chartlib.objects(values), "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    container = installer_container(daemonset)
    assert "priorityClassName" not in pod
    assert "--listen=[::]:9700" in container["args"]
    assert "--log-level=debug" in container["args"]
    assert container["args"][-1] == "--debounce-ms=10"
    assert container["ports"][0]["containerPort"] == 9700
    assert container["image"] == "registry.example/krafty-installer:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert {
        "name": "cni-bin",
        "hostPath": {"path": "/home/kubernetes/bin", "type": "DirectoryOrCreate"},
    } in pod["volumes"]


def test_the_installer_follows_every_networks_invocation_log():
    values = {
        "hostPaths": {"log": "/data/krafty-log/"},
        "networks": [
            {"name": "a", "subnets": ["172.16.1.0/24"], "gateways": ["172.16.1.1"]},
            {"name": "b", "subnets": ["172.16.2.0/24"], "gateways": ["172.16.2.1"], "logFile": "/data/krafty-log/b.log"},
            {"name": "c", "subnets": ["172.16.3.0/24"], "gateways": ["172.16.3.1"], "logFile": ""},
            {"name": "d", "subnets": ["172.16.4.0/24"], "gateways": ["172.16.4.1"], "logFile": "/data/krafty-log/b.log"},
        ],
    }
    daemonset = only(chartlib.objects(values), "DaemonSet")
    container = installer_container(daemonset)
    assert "--invocation-log=/data/krafty-log/krafty.log,/data/krafty-log/b.log" in container["args"]
    log = next(m for m in container["volumeMounts"] if m["name"] == "log")
    assert log == {"name": "log", "mountPath": "/data/krafty-log/", "readOnly": True}


def test_dev_values_use_the_local_image_and_a_writable_root():
    # scripts/cluster-up.sh adds --set image.tag=<the build's content tag>.
    values = chartlib.merge_values(chartlib.values_from_files([DEV_VALUES]), {"image": {"tag": "a1b2c3d4e5f6"}})
    daemonset = only(chartlib.objects(values), "DaemonSet")
    container = installer_container(daemonset)
    assert container["image"] == "krafty-installer:a1b2c3d4e5f6"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    # The rest of the security context still applies.
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}


def rbac_rules(role: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(API group, resource) -> the verbs a ClusterRole grants on it, sorted."""
    return {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_rbac_is_minimal_and_bound_to_the_installer(default_objects):
    role = only(default_objects, "ClusterRole")
    rules = rbac_rules(role)
    assert rules == {
        ("", "nodes"): ["get", "patch"],
        ("", "pods"): ["list", "watch"],
        ("events.k8s.io", "events"): ["create", "patch"],
    }
    binding = only(default_objects, "ClusterRoleBinding")
    account = only(default_objects, "ServiceAccount")
    daemonset = only(default_objects, "DaemonSet")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": chartlib.NAMESPACE}
    ]
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_rbac_and_service_account_can_be_left_out():
    kinds = {
        o["kind"]
        for o in chartlib.objects(
            {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "own"}}
        )
    }
    assert kinds == {"DaemonSet", "NetworkAttachmentDefinition"}


def test_every_object_carries_the_standard_labels(default_objects):
    for obj in default_objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "krafty", obj["kind"]
        assert labels["app.kubernetes.io/instance"] == chartlib.RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"] in {"installer", "network"}
    daemonset = only(default_objects, "DaemonSet")
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()


def test_notes_tell_how_to_attach_and_check():
    notes = chartlib.notes()
    assert "k8s.v1.cni.cncf.io/networks: krafty" in notes
    assert "scripts/validate.sh" in notes
    assert "krafty.dev/plugins" in notes
    assert "/var/log/krafty/krafty.log" in notes
    assert "rollout status daemonset/krafty-installer" in notes


# --- decoding into Kubernetes types -------------------------------------------------------------

API = kubernetes.client.ApiClient()


def decode(obj: dict[str, Any]) -> Any:
    """Decodes an object into the Kubernetes client's model of its kind and checks that nothing
    was lost: the models drop fields they do not know, so a misspelt field shows as a
    difference on the way back."""
    group_version = obj["apiVersion"].split("/")
    version = group_version[-1].capitalize()
    model = API._ApiClient__deserialize(obj, f"{version}{obj['kind']}")
    assert API.sanitize_for_serialization(model) == obj, f"{obj['kind']} lost fields when decoded"
    return model


def test_decoding_catches_an_unknown_field(default_objects):
    daemonset = only(default_objects, "DaemonSet")
    misspelt = {**daemonset, "spec": {**daemonset["spec"], "updateStrategyy": {}}}
    with pytest.raises(AssertionError, match="lost fields"):
        decode(misspelt)


@pytest.mark.parametrize(
    "values_file", [None, DEV_VALUES, DEV_NOVRF_VALUES, *VALUES_FILES], ids=lambda p: p.name if p else "defaults"
)
def test_every_object_decodes_into_its_kubernetes_type(values_file):
    values = chartlib.values_from_files([values_file]) if values_file else None
    rendered = chartlib.objects(values)
    assert {o["kind"] for o in rendered} >= {
        "DaemonSet",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    for obj in rendered:
        if obj["kind"] == "NetworkAttachmentDefinition":
            # A CRD, which the client has no model of: its own schema is apiVersion, kind,
            # metadata and spec.config, a JSON string.
            assert obj["apiVersion"] == "k8s.cni.cncf.io/v1"
            assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
            assert set(obj["spec"]) == {"config"}
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
            config = chartlib.conflist(obj)
            # A conflist, or the original krafty's single plugin config (`plugin: krafty`).
            assert isinstance(config["plugins"], list) if "plugins" in config else config["type"] == "krafty"
        else:
            decode(obj)


# --- multi-node networks: per-node address blocks ----------------------------------------------

MULTI_NODE = chartlib.VALUES_DIR / "multi-node.yaml"
FIXTURES = chartlib.REPO / "installer" / "tests" / "fixtures"


@pytest.fixture(scope="module")
def multi_node_objects():
    return chartlib.objects(chartlib.values_from_files([MULTI_NODE]))


def test_a_blocks_network_takes_its_addresses_from_the_node_agent():
    conf = conflists(chartlib.values_from_files([MULTI_NODE]))["default/stretched"]
    veth = plugin(conf, "krafty-veth")
    # krafty-blocks takes nothing but its type; the routes go to krafty-veth itself.
    assert veth["ipam"] == {"type": "krafty-blocks"}
    assert veth["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert plugin(conf, "krafty-bridge")["scope"] == "network"
    assert plugin(conf, "krafty-bridge")["gateway"] == ["172.16.48.1", "fd10:16:40::1"]


def test_the_address_pools_reach_the_installer(multi_node_objects):
    config_map = only(multi_node_objects, "ConfigMap")
    pools = json.loads(config_map["data"]["pools.json"])
    # The installer's own unit test parses this same file (blocks::pool).
    assert pools == json.loads((FIXTURES / "address-pools.json").read_text())
    daemonset = only(multi_node_objects, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    container = installer_container(daemonset)
    assert "--address-pools=/etc/krafty/address-pools/pools.json" in container["args"]
    assert "--address-block-reclaim-grace-secs=600" in container["args"]
    assert {"name": "address-pools", "mountPath": "/etc/krafty/address-pools", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "address-pools", "configMap": {"name": config_map["metadata"]["name"]}} in pod["volumes"]
    # The installer reads the pools once: a change of pools rolls the DaemonSet.
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["krafty.dev/address-pools-sha256"] == hashlib.sha256(
        config_map["data"]["pools.json"].rstrip("\n").encode()
    ).hexdigest()


def test_the_block_crd_accepts_the_installers_claims_and_nothing_else(multi_node_objects):
    crd = only(multi_node_objects, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "kraftyblocks.krafty.io"
    assert crd["spec"]["group"] == "krafty.io"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "KraftyBlock"
    assert crd["spec"]["names"]["plural"] == "kraftyblocks"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    schema = version["schema"]["openAPIV3Schema"]
    # The object the installer creates (its unit test serialises a claim to this same file).
    claim = json.loads((FIXTURES / "kraftyblock.json").read_text())
    jsonschema.validate(claim, schema)
    assert claim["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", claim["metadata"]["name"])
    for field, bad in [("cidr", "a block"), ("network", "Lab"), ("node", "")]:
        broken = {**claim, "spec": {**claim["spec"], field: bad}}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
    without_node = {**claim, "spec": {k: v for k, v in claim["spec"].items() if k != "node"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(without_node, schema)


def test_rbac_grows_by_what_block_claims_need(multi_node_objects):
    rules = rbac_rules(only(multi_node_objects, "ClusterRole"))
    assert rules == {
        ("", "nodes"): ["get", "list", "patch"],
        ("", "pods"): ["list", "watch"],
        ("events.k8s.io", "events"): ["create", "patch"],
        ("krafty.io", "kraftyblocks"): ["create", "delete", "get", "list"],
    }
    # The installer's block tests run against a fake API server that refuses whatever this
    # file does not grant: the chart must grant all of it.
    needed = json.loads((FIXTURES / "rbac-address-blocks.json").read_text())
    for group, resources in needed.items():
        for resource, verbs in resources.items():
            assert set(verbs) <= set(rules[(group, resource)]), (group, resource)


# --- multi-node networks: the tunnels' peers from the cluster's Nodes -----------------------


@pytest.mark.parametrize("multi_node", [{}, {"vni": 4242, "underlay": "ipv6"}])
def test_a_multi_node_network_has_the_installer_watch_the_nodes(multi_node):
    values = default_values()
    values["networks"][0] |= {"scope": "network", "multiNode": multi_node}
    objects = chartlib.objects(values)
    rules = rbac_rules(only(objects, "ClusterRole"))
    assert rules[("", "nodes")] == ["get", "list", "patch", "watch"]
    # The installer's Node watch test runs against a fake API server that refuses whatever
    # this file does not grant: the chart must grant all of it.
    needed = json.loads((FIXTURES / "rbac-node-peers.json").read_text())
    for group, resources in needed.items():
        for resource, verbs in resources.items():
            assert set(verbs) <= set(rules[(group, resource)]), (group, resource)
    # --peers-source stays auto: the Nodes, as the installer has --node-name and credentials;
    # no peers file, no volume for one.
    daemonset = only(objects, "DaemonSet")
    args = installer_container(daemonset)["args"]
    assert not [a for a in args if a.startswith("--peers-")]
    assert "--node-name=$(KRAFTY_NODE_NAME)" in args
    assert not [v for v in daemonset["spec"]["template"]["spec"]["volumes"] if "configMap" in v]


def test_without_a_multi_node_network_the_installer_keeps_no_peers(default_objects):
    args = installer_container(only(default_objects, "DaemonSet"))["args"]
    assert "--peers-source=none" in args
    assert "watch" not in rbac_rules(only(default_objects, "ClusterRole"))[("", "nodes")]


def test_without_a_blocks_network_there_is_no_crd_pool_or_extra_flag(default_objects):
    kinds = {o["kind"] for o in default_objects}
    assert not kinds & {"CustomResourceDefinition", "ConfigMap"}
    args = installer_container(only(default_objects, "DaemonSet"))["args"]
    assert not [a for a in args if a.startswith("--address-")]


@pytest.mark.parametrize(
    "prefixes, message",
    [
        ([19, 120], "blockPrefixes[0] 19 must lie between 172.16.48.0/20's prefix length and 30"),
        ([31, 120], "blockPrefixes[0] 31 must lie between"),
        ([26, 110], "blockPrefixes[1] 110 must lie between"),
    ],
)
def test_block_sizes_that_do_not_fit_their_subnet_fail_the_render(prefixes, message):
    values = chartlib.values_from_files([MULTI_NODE])
    values["networks"][1]["blockPrefixes"] = prefixes
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chartlib.render(values)


def test_a_subnet_of_more_than_65536_blocks_fails_the_render():
    values = chartlib.values_from_files([MULTI_NODE])
    values["networks"][1]["subnets"][1] = "fd10:16:40::/64"
    with pytest.raises(helm.HelmRenderError, match="more than 65536 blocks"):
        chartlib.render(values)


def test_the_no_vrf_values_are_their_counterparts_networks_without_vrf():
    """values-novrf.yaml is values.yaml's networks, values-dev-novrf.yaml values-dev.yaml's,
    each entry with `vrf: false` (Helm replaces the list whole)."""
    for base, without in ((chartlib.CHART / "values.yaml", NOVRF_VALUES), (DEV_VALUES, DEV_NOVRF_VALUES)):
        networks = chartlib.values_from_files([base])["networks"]
        assert chartlib.values_from_files([without]) == {
            "networks": [{**n, "vrf": False} for n in networks]
        }, without.name


def test_the_dev_cluster_has_a_network_across_its_nodes_in_address_blocks():
    """`make up` and Tilt install a multiNode network with addressing blocks, with and without
    VRF: its NAD, the KraftyBlock CRD, the address pools and the RBAC to claim blocks."""
    for files in ([DEV_VALUES], [DEV_VALUES, DEV_NOVRF_VALUES]):
        values = chartlib.values_from_files(files)
        (stretched,) = [n for n in values["networks"] if "multiNode" in n]
        assert stretched["scope"] == "network" and stretched["addressing"] == "blocks"
        rendered = chartlib.objects(values)
        kinds = {o["kind"] for o in rendered}
        assert {"CustomResourceDefinition", "ConfigMap", "NetworkAttachmentDefinition"} <= kinds
        (nad,) = [
            o
            for o in rendered
            if o["kind"] == "NetworkAttachmentDefinition" and o["metadata"]["name"] == stretched["name"]
        ]
        conf = chartlib.conflist(nad)
        types = [p["type"] for p in conf["plugins"]]
        assert types[-2:] == ["krafty-bridge", "krafty-veth"]
        assert ("krafty-vrf" in types) == (len(files) == 1)
        veth = next(p for p in conf["plugins"] if p["type"] == "krafty-veth")
        assert veth["ipam"]["type"] == "krafty-blocks"
