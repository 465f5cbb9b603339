"""The README's NAD examples are values the chart accepts: each renders, through the real Helm
SDK, the NetworkAttachmentDefinition the text says it does."""

from __future__ import annotations

import ipaddress
import json
import re

import yaml

import chartlib

README = (chartlib.REPO / "README.md").read_text()


def nad_example_blocks() -> list[dict]:
    section = README.split("### NAD examples", 1)[1].split("\n### ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)]


def example_values() -> dict[str, dict]:
    """network name -> the example's values."""
    return {block["networks"][0]["name"]: block for block in nad_example_blocks() if "networks" in block}


def rendered(name: str) -> dict:
    (nad,) = chartlib.network_attachments(example_values()[name])
    assert nad["metadata"]["name"] == name
    return chartlib.conflist(nad)


def plugin(conflist: dict, plugin_type: str) -> dict:
    return next(p for p in conflist["plugins"] if p["type"] == plugin_type)


def test_every_kind_of_example_is_there():
    assert set(example_values()) == {"krafty", "lab", "lab6", "handpicked", "original"}


def test_the_per_pod_example_is_the_charts_default():
    (default_nad,) = chartlib.network_attachments()
    assert rendered("krafty") == chartlib.conflist(default_nad)


def test_the_shared_example_shares_vrf_and_bridge():
    conflist = rendered("lab")
    assert plugin(conflist, "krafty-vrf")["scope"] == plugin(conflist, "krafty-bridge")["scope"] == "network"


def test_the_dual_stack_example_has_both_families():
    conflist = rendered("lab6")
    assert plugin(conflist, "krafty-bridge")["subnet"] == ["172.16.30.0/24", "fd10:16:30::/64"]
    assert len(plugin(conflist, "krafty-veth")["ipam"]["ranges"]) == 2


def test_the_annotation_example_addresses_the_runtime_network():
    veth = plugin(rendered("handpicked"), "krafty-veth")
    assert veth["capabilities"] == {"ips": True, "mac": True}
    (annotations,) = [block["annotations"] for block in nad_example_blocks() if "annotations" in block]
    (selection,) = json.loads(annotations["k8s.v1.cni.cncf.io/networks"])
    assert selection["name"] == "handpicked"
    subnet = ipaddress.ip_network(plugin(rendered("handpicked"), "krafty-bridge")["subnet"])
    assert all(ipaddress.ip_interface(ip).ip in subnet for ip in selection["ips"])


def test_the_original_example_is_the_originals_single_config():
    """`plugin: krafty` renders the config the README's section on the original shows."""
    section = README.split("### From the original krafty", 1)[1].split("\n## ", 1)[0]
    (shown,) = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    assert rendered("original") == shown | {"name": "original"}
