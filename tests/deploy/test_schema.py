"""values.schema.json: bad values fail at install time (Helm validates before rendering) with a
message naming the field; the good ones pass."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

import chartlib

GOOD_NETWORK = {"name": "n1", "subnets": ["172.16.10.0/24"], "gateways": ["172.16.10.1"]}
DUAL = {"subnets": ["172.16.20.0/24", "fd10:16:20::/64"], "gateways": ["172.16.20.1", "fd10:16:20::1"]}


def network(**fields: Any) -> dict[str, Any]:
    return {"networks": [{**GOOD_NETWORK, **fields}]}


def without(field: str) -> dict[str, Any]:
    entry = dict(GOOD_NETWORK)
    del entry[field]
    return {"networks": [entry]}


# (values, what the message must contain: the field's JSON pointer, and the rule where useful)
BAD_VALUES = {
    "subnet-prefix-too-long": (network(subnets=["172.16.10.0/33"]), "/networks/0/subnets/0"),
    "subnet-without-prefix": (network(subnets=["172.16.10.0"]), "/networks/0/subnets/0"),
    "subnet-not-an-address": (network(subnets=["lab-net/24"]), "/networks/0/subnets/0"),
    "gateway-not-an-address": (network(gateways=["172.16.10.256"]), "/networks/0/gateways/0"),
    "unknown-scope": (network(scope="cluster"), "/networks/0/scope': value must be one of 'pod', 'network'"),
    "vrf-table-0": (network(scope="network", vrfTable=0), "/networks/0/vrfTable"),
    "vrf-table-253": (network(scope="network", vrfTable=253), "/networks/0/vrfTable"),
    "vrf-table-254-main": (network(scope="network", vrfTable=254), "/networks/0/vrfTable"),
    "vrf-table-255-local": (network(scope="network", vrfTable=255), "/networks/0/vrfTable"),
    "vrf-table-not-a-number": (network(scope="network", vrfTable="main"), "/networks/0/vrfTable"),
    # vrfTable is the network's table: one VRF per network.
    "vrf-table-in-pod-scope": (network(scope="pod", vrfTable=1234), "/networks/0/scope"),
    "vrf-table-default-scope": (network(vrfTable=1234), "/networks/0"),
    "vrf-table-without-vrf": (network(scope="network", vrf=False, vrfTable=1234), "/networks/0/vrf"),
    # A network stretched across nodes has one shared bridge per node.
    "multi-node-in-pod-scope": (network(scope="pod", multiNode={}), "/networks/0/scope"),
    "multi-node-default-scope": (network(multiNode={}), "/networks/0"),
    "multi-node-vni-0": (network(scope="network", multiNode={"vni": 0}), "/networks/0/multiNode/vni"),
    "multi-node-vni-25-bits": (
        network(scope="network", multiNode={"vni": 16777216}),
        "/networks/0/multiNode/vni",
    ),
    "multi-node-port-0": (network(scope="network", multiNode={"port": 0}), "/networks/0/multiNode/port"),
    "multi-node-port-too-big": (
        network(scope="network", multiNode={"port": 65536}),
        "/networks/0/multiNode/port",
    ),
    "multi-node-underlay": (
        network(scope="network", multiNode={"underlay": "ipx"}),
        "/networks/0/multiNode/underlay",
    ),
    "multi-node-unknown-field": (network(scope="network", multiNode={"vnid": 5}), "/networks/0/multiNode"),
    "unknown-plugin": (network(plugin="krafty-vrf"), "/networks/0/plugin': value must be one of 'chain', 'krafty'"),
    # The original's plugin always makes a VRF, whose table is the network's.
    "original-without-vrf": (network(plugin="krafty", vrf=False), "/networks/0/vrf"),
    "original-vrf-table-in-pod-scope": (network(plugin="krafty", scope="pod", vrfTable=1234), "/networks/0/scope"),
    "two-subnets-one-gateway": (
        network(subnets=DUAL["subnets"]),
        "/networks/0/gateways': minItems: got 1, want 2",
    ),
    "one-subnet-two-gateways": (
        network(gateways=DUAL["gateways"]),
        "/networks/0/gateways': maxItems: got 2, want 1",
    ),
    "two-ranges-one-subnet": (
        network(ipam={"ranges": [{"rangeStart": "172.16.10.10"}, {"rangeStart": "172.16.10.20"}]}),
        "/networks/0/ipam/ranges",
    ),
    "two-ipv4-subnets": (
        network(subnets=["172.16.10.0/24", "172.16.11.0/24"], gateways=["172.16.10.1", "172.16.11.1"]),
        "/networks/0/subnets/1",
    ),
    "gateway-of-the-other-family": (network(gateways=["fd10::1"]), "/networks/0/gateways/0"),
    "dual-stack-gateways-swapped": (
        network(subnets=DUAL["subnets"], gateways=list(reversed(DUAL["gateways"]))),
        "/networks/0/gateways/0",
    ),
    "three-subnets": (
        network(
            subnets=["10.0.0.0/24", "fd00::/64", "10.0.1.0/24"], gateways=["10.0.0.1", "fd00::1", "10.0.1.1"]
        ),
        "/networks/0/subnets': maxItems",
    ),
    "missing-subnets": (without("subnets"), "missing property 'subnets'"),
    "missing-gateways": (without("gateways"), "missing property 'gateways'"),
    "missing-name": (without("name"), "missing property 'name'"),
    "name-not-a-dns-label": (network(name="Lab_Net"), "/networks/0/name"),
    "namespace-not-a-dns-label": (network(namespace="Lab"), "/networks/0/namespace"),
    "unknown-cni-version": (network(cniVersion="0.2.0"), "/networks/0/cniVersion"),
    "cni-version-as-number": (network(cniVersion=1.0), "/networks/0/cniVersion"),
    "unknown-addressing": (network(addressing="dhcp"), "/networks/0/addressing"),
    "static-without-pod-ips": (network(addressing="static"), "missing property 'podIPs'"),
    "pod-ips-without-static": (network(podIPs=["172.16.10.5/24"]), "/networks/0/podIPs"),
    "pod-ip-without-prefix": (network(addressing="static", podIPs=["172.16.10.5"]), "/networks/0/podIPs/0"),
    "ipam-with-static": (
        network(addressing="static", podIPs=["172.16.10.5/24"], ipam={"ranges": []}),
        "/networks/0/ipam",
    ),
    "ipam-with-runtime": (network(addressing="runtime", ipam={"ranges": []}), "/networks/0/ipam"),
    "unknown-ipam-type": (network(ipam={"type": "dhcp"}), "/networks/0/ipam/type"),
    "range-start-not-an-address": (
        network(ipam={"ranges": [{"rangeStart": "ten"}]}),
        "/networks/0/ipam/ranges/0/rangeStart",
    ),
    "unknown-range-field": (
        network(ipam={"ranges": [{"start": "172.16.10.10"}]}),
        "additional properties 'start'",
    ),
    "route-without-dst": (network(routes=[{"gw": "172.16.10.1"}]), "missing property 'dst'"),
    "route-dst-not-a-cidr": (network(routes=[{"dst": "default"}]), "/networks/0/routes/0/dst"),
    "mtu-too-small": (network(mtu=50), "/networks/0/mtu"),
    "mtu-too-large": (network(mtu=70000), "/networks/0/mtu"),
    "negative-route-metric": (network(routeMetric=-1), "/networks/0/routeMetric"),
    "relative-log-file": (network(logFile="krafty.log"), "/networks/0/logFile"),
    "log-file-escaping-upwards": (network(logFile="/var/log/krafty/../../etc/passwd"), "/networks/0/logFile"),
    "log-rotated-every-few-lines": (network(logMaxBytes=1024), "/networks/0/logMaxBytes"),
    "log-filling-the-disk": (network(logMaxBytes=1 << 30), "/networks/0/logMaxBytes"),
    "log-of-one-file": (network(logMaxFiles=1), "/networks/0/logMaxFiles"),
    "log-of-many-files": (network(logMaxFiles=11), "/networks/0/logMaxFiles"),
    "misspelt-network-field": (network(subent=["x"]), "additional properties 'subent' not allowed"),
    "misspelt-top-level-key": ({"network": []}, "additional properties 'network' not allowed"),
    "unknown-pull-policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "unknown-log-level": ({"installer": {"logLevel": "verbose"}}, "/installer/logLevel"),
    "port-out-of-range": ({"installer": {"port": 70000}}, "/installer/port"),
    "listen-address-not-an-address": ({"installer": {"listenAddress": "all"}}, "/installer/listenAddress"),
    "extra-arg-not-a-flag": ({"installer": {"extraArgs": ["once"]}}, "/installer/extraArgs/0"),
    "relative-host-path": ({"hostPaths": {"cniBin": "opt/cni/bin"}}, "/hostPaths/cniBin"),
    "unknown-orphan-cleanup": ({"installer": {"orphanCleanup": "ignore"}}, "/installer/orphanCleanup"),
    "relative-ipam-data": ({"hostPaths": {"ipamData": "var/lib/cni"}}, "/hostPaths/ipamData"),
    # addressing blocks: the network's shared bridge on every node, a block size per subnet.
    "blocks-in-pod-scope": (
        network(addressing="blocks", scope="pod", blockPrefixes=[28]),
        "/networks/0/scope': value must be 'network'",
    ),
    "blocks-without-scope": (network(addressing="blocks", blockPrefixes=[28]), "missing property 'scope'"),
    "blocks-without-prefixes": (
        network(addressing="blocks", scope="network"),
        "missing property 'blockPrefixes'",
    ),
    "blocks-with-ipam": (
        network(addressing="blocks", scope="network", blockPrefixes=[28], ipam={"ranges": []}),
        "/networks/0/ipam",
    ),
    "block-prefixes-without-blocks": (network(blockPrefixes=[28]), "/networks/0/blockPrefixes"),
    "one-block-prefix-for-two-subnets": (
        network(addressing="blocks", scope="network", blockPrefixes=[28], **DUAL),
        "/networks/0/blockPrefixes': minItems: got 1, want 2",
    ),
    "block-prefix-not-a-number": (
        network(addressing="blocks", scope="network", blockPrefixes=["/28"]),
        "/networks/0/blockPrefixes/0",
    ),
    "block-prefix-too-long": (
        network(addressing="blocks", scope="network", blockPrefixes=[127]),
        "/networks/0/blockPrefixes/0",
    ),
    "negative-reclaim-grace": (
        {"installer": {"addressBlockReclaimGraceSeconds": -1}},
        "/installer/addressBlockReclaimGraceSeconds",
    ),
}


@pytest.mark.parametrize("values,message", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_rejected_naming_the_field(values, message):
    with pytest.raises(helm.HelmValuesError) as rejected:
        chartlib.render(values)
    assert message in str(rejected.value)


GOOD_VALUES = {
    "vrf-table-252": network(scope="network", vrfTable=252),
    "vrf-table-256": network(scope="network", vrfTable=256),
    "vrf-table-max": network(scope="network", vrfTable=4294967295),
    "original-vrf-table-implies-network-scope": network(plugin="krafty", vrfTable=1234),
    "original-shared-without-vrf-table": network(plugin="krafty", scope="network"),
    "original-static": network(plugin="krafty", addressing="static", podIPs=["172.16.10.5/24"]),
    "dual-stack": network(**DUAL),
    "ipv6-first-dual-stack": network(
        subnets=list(reversed(DUAL["subnets"])), gateways=list(reversed(DUAL["gateways"]))
    ),
    "ipv6-only": network(subnets=["fd10:16:20::/64"], gateways=["fd10:16:20::1"]),
    "runtime": network(addressing="runtime", routes=[{"dst": "0.0.0.0/0"}]),
    "no-log": network(logFile=""),
    "log-rotation-bounds": network(logMaxBytes=65536, logMaxFiles=10),
    "multi-node-defaults": network(scope="network", multiNode={}),
    "multi-node-every-field": network(
        scope="network", vrf=False, multiNode={"vni": 16777215, "port": 4799, "underlay": "ipv6"}
    ),
    "ipv6-listen": {"installer": {"listenAddress": "::"}},
    "blocks": network(addressing="blocks", scope="network", blockPrefixes=[28]),
    "blocks-dual-stack": network(addressing="blocks", scope="network", blockPrefixes=[28, 80], **DUAL),
}


@pytest.mark.parametrize("values", GOOD_VALUES.values(), ids=GOOD_VALUES.keys())
def test_good_values_pass(values):
    assert chartlib.objects(values)
