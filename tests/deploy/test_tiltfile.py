"""The Tiltfile, evaluated by starlark-go (Tilt's own Starlark interpreter) against recording
stand-ins for Tilt's built-ins. helm() renders the chart for real, read_file() reads the real
file, so what the Tiltfile hands to k8s_yaml is what Tilt would apply.

starlark-go cannot give Starlark a value with attributes, so Tilt's modules (os.getenv) cannot
be modelled directly: the harness rewrites each module function it models into a plain name
(os.getenv -> os_getenv) and refuses a Tiltfile that uses any other module.
"""

from __future__ import annotations

import os
import re
import shlex
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import starlark_go
import yaml

import chartlib

REPO = chartlib.REPO
TILTFILE = REPO / "Tiltfile"
PLUGINS = ["krafty-vrf", "krafty-bridge", "krafty-veth", "krafty"]
MODULE_FUNCTIONS = {"os.getenv": "os_getenv"}
TILT_MODULES = ("os", "config", "sys", "shlex", "v1alpha1")


class Tilt:
    """Stand-ins for the Tilt built-ins the Tiltfile uses; every call is recorded. local()
    answers kubectl's question for the nodes' architectures with `node_archs`."""

    def __init__(self, context: str, env: dict[str, str], node_archs: str):
        self.context = context
        self.env = env
        self.node_archs = node_archs
        self.calls: dict[str, list[tuple[tuple, dict]]] = defaultdict(list)
        self.files_read: list[str] = []

    def recorder(self, name: str, result=None):
        def call(*args, **kwargs):
            self.calls[name].append((args, kwargs))
            return result(*args, **kwargs) if result else None

        return call

    def read_file(self, path: str) -> str:
        self.files_read.append(path)
        return (REPO / path).read_text()

    def helm(self, chart: str, name: str, namespace: str, values: list[str]) -> str:
        assert (REPO / chart) == chartlib.CHART, chart
        rendered = chartlib.render(chartlib.values_from_files([REPO / v for v in values]))
        # Tilt's helm() runs `helm template` with this release name and namespace; chartlib
        # renders with the ones scripts/cluster-up.sh uses, which must be the same.
        assert (name, namespace) == (chartlib.RELEASE, chartlib.NAMESPACE)
        return "\n---\n".join(
            text for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt")
        )

    def local(self, command: str, quiet: bool = False) -> str:
        argv = shlex.split(command)
        assert argv[:2] == ["kubectl", "--context"] and argv[3:] == [
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.nodeInfo.architecture}",
        ], command
        assert argv[2] == self.context, "local() asks another cluster than the one Tilt deploys to"
        return self.node_archs

    def globals(self) -> dict[str, Any]:
        return {
            "os_getenv": lambda key, default=None: self.env.get(key, default),
            "local": self.recorder("local", self.local),
            "k8s_context": lambda: self.context,
            "allow_k8s_contexts": self.recorder("allow_k8s_contexts"),
            "local_resource": self.recorder("local_resource"),
            "custom_build": self.recorder("custom_build"),
            "docker_build": self.recorder("docker_build"),
            "sync": self.recorder("sync", lambda src, dest: {"sync": [src, dest]}),
            "k8s_yaml": self.recorder("k8s_yaml"),
            "k8s_resource": self.recorder("k8s_resource"),
            "helm": self.recorder("helm", self.helm),
            "blob": self.recorder("blob", lambda text: text),
            "read_file": self.read_file,
            "TRIGGER_MODE_MANUAL": "TRIGGER_MODE_MANUAL",
        }

    def only(self, name: str) -> tuple[tuple, dict]:
        assert len(self.calls[name]) == 1, f"{name} called {len(self.calls[name])} times"
        return self.calls[name][0]

    def resource(self, builtin: str, name: str) -> dict[str, Any]:
        for args, kwargs in self.calls[builtin]:
            if args and args[0] == name:
                return {"args": args, **kwargs}
        raise AssertionError(f"no {builtin}({name!r})")


def tiltfile_source() -> str:
    source = TILTFILE.read_text()
    for module_function, plain in MODULE_FUNCTIONS.items():
        source = source.replace(module_function + "(", plain + "(")
    unmodelled = re.findall(rf"\b(?:{'|'.join(TILT_MODULES)})\.\w+", source)
    assert not unmodelled, f"the Tiltfile uses {unmodelled}, which this harness does not model"
    return source


# Tilt's interpreter allows top-level if/for and reassigning globals; so must this one.
starlark_go.configure_starlark(allow_global_reassign=True, allow_set=True, allow_recursion=True)


def evaluate(
    context: str = "kind-krafty", env: dict[str, str] | None = None, node_archs: str = "amd64 amd64"
) -> Tilt:
    tilt = Tilt(context, env or {}, node_archs)
    # starlark-go holds no reference to the Python callables it is given: the dict must outlive
    # the evaluation, or a stand-in is freed before it is called.
    stand_ins = tilt.globals()
    starlark_go.Starlark(globals=stand_ins).exec(tiltfile_source(), filename="Tiltfile")
    return tilt


@pytest.fixture(scope="module")
def tilt() -> Tilt:
    return evaluate()


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def applied_objects(tilt: Tilt) -> list[dict[str, Any]]:
    return [obj for (args, _) in tilt.calls["k8s_yaml"] for obj in documents(args[0])]


def test_refuses_any_other_kube_context():
    with pytest.raises(starlark_go.EvalError, match="kube context is kind-other, not kind-krafty"):
        evaluate(context="kind-other")
    with pytest.raises(starlark_go.EvalError, match="not kind-krafty"):
        evaluate(context="prod-cluster")


def test_allows_only_the_cluster_named_by_cluster_name():
    assert evaluate().only("allow_k8s_contexts")[0] == ("kind-krafty",)
    custom = evaluate(context="kind-lab", env={"CLUSTER_NAME": "lab"})
    assert custom.only("allow_k8s_contexts")[0] == ("kind-lab",)
    assert "--context kind-lab" in custom.resource("local_resource", "validate")["cmd"]
    with pytest.raises(starlark_go.EvalError, match="not kind-lab"):
        evaluate(context="kind-krafty", env={"CLUSTER_NAME": "lab"})


def dockerfile_stages(path: Path) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    logical = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not logical:
            continue
        logical += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if line.endswith("\\") or not logical:
            continue
        if logical.startswith("FROM "):
            words = logical.split()
            current = stages.setdefault(words[-1] if words[-2].upper() == "AS" else f"#{len(stages)}", [])
        current.append(logical)
        logical = ""
    return stages


def plugin_build(tilt: Tilt) -> dict[str, Any]:
    """The krafty-plugins local_resource's docker build: its platform, stage, output directory."""
    argv = shlex.split(tilt.resource("local_resource", "krafty-plugins")["cmd"])
    assert argv[:2] == ["docker", "build"] and argv[-1] == ".", argv
    output = dict(item.split("=", 1) for item in argv[argv.index("--output") + 1].split(","))
    assert output["type"] == "local"
    return {
        "platform": argv[argv.index("--platform") + 1],
        "stage": argv[argv.index("--target") + 1],
        "dockerfile": argv[argv.index("-f") + 1],
        "dest": output["dest"],
    }


def plugin_outputs(tilt: Tilt) -> list[str]:
    """The binaries the krafty-plugins resource's build writes: the files of the Dockerfile's
    plugins stage, which copies the plugins-build stage's /out, where scripts/build-static.sh
    puts the plugins it builds."""
    build = plugin_build(tilt)
    stages = dockerfile_stages(REPO / build["dockerfile"])
    assert stages[build["stage"]] == ["FROM scratch AS plugins", "COPY --from=plugins-build /out/ /"]
    (run,) = [i for i in stages["plugins-build"] if i.startswith("RUN ")]
    assert run.endswith('scripts/build-static.sh "${TARGETARCH}" /out plugins'), run
    script = (REPO / "scripts" / "build-static.sh").read_text()
    packages = re.search(r"^ *plugins\) binaries=\(([\w -]+)\) ;;$", script, re.M).group(1).split()
    assert sorted(packages) == sorted(PLUGINS)
    return [f"{build['dest']}/{package}" for package in packages]


def test_plugins_are_built_in_a_container_and_watched_at_their_sources(tilt):
    plugins = tilt.resource("local_resource", "krafty-plugins")
    assert plugin_outputs(tilt)
    # Written below target/, which no image's build context and no watched source includes.
    assert plugin_build(tilt)["dest"].startswith("target/")
    patterns = [
        line for line in (REPO / "installer" / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    assert patterns[0] == "*" and not any(p.startswith("!target") for p in patterns)
    for dep in plugins["deps"]:
        assert (REPO / dep).exists(), dep
    assert {f"plugins/{p}" for p in PLUGINS} | {"plugins/krafty-cni", "installer/Dockerfile"} <= set(
        plugins["deps"]
    )


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_everything_is_built_for_the_nodes_architecture(arch):
    """Asked of the cluster (kind's nodes share the Docker host's architecture, arm64 on Apple
    silicon), or set with KRAFTY_NODE_ARCH."""
    for tilt in (evaluate(node_archs=f"{arch} {arch}"), evaluate(env={"KRAFTY_NODE_ARCH": arch}, node_archs="")):
        assert plugin_build(tilt)["platform"] == f"linux/{arch}"
        assert plugin_build(tilt)["dest"] == f"target/tilt/plugins-{arch}"
        installer = shlex.split(tilt.resource("custom_build", "krafty-installer")["args"][1])
        assert installer[installer.index("--platform") + 1] == f"linux/{arch}"
        assert tilt.resource("docker_build", "krafty-nettools")["platform"] == f"linux/{arch}"
        syncs = [step["sync"][0] for step in tilt.resource("custom_build", "krafty-installer")["live_update"]]
        assert syncs == plugin_outputs(tilt)
    # The override is not second-guessed: no kubectl call.
    assert not evaluate(env={"KRAFTY_NODE_ARCH": arch}, node_archs="").calls["local"]


@pytest.mark.parametrize(
    "env,node_archs,message",
    [
        ({}, "amd64 arm64", r"report architectures \[\"amd64\", \"arm64\"\]; set KRAFTY_NODE_ARCH"),
        ({}, "", r"report architectures \[\]"),
        ({}, "s390x", "for amd64 and arm64 nodes, not s390x"),
        ({"KRAFTY_NODE_ARCH": "x86_64"}, "amd64", "not x86_64"),
        ({"KRAFTY_VRF": "maybe"}, "amd64", "KRAFTY_VRF must be yes or no, not maybe"),
    ],
)
def test_refuses_what_it_cannot_build_for(env, node_archs, message):
    with pytest.raises(starlark_go.EvalError, match=message):
        evaluate(env=env, node_archs=node_archs)


def test_every_dockerfile_platform_is_one_the_images_exist_for():
    """The Dockerfiles build for the architectures the Tiltfile accepts, on the build machine's
    platform (cross-compiling: no emulation for Rust)."""
    for dockerfile in ("installer/Dockerfile", "nettools/Dockerfile"):
        text = (REPO / dockerfile).read_text()
        assert re.search(r"^FROM --platform=\$BUILDPLATFORM ", text, re.M), dockerfile
        assert "amd64) " in text and "arm64) " in text, dockerfile


def test_installer_image_live_updates_the_built_plugins(tilt):
    build = tilt.resource("custom_build", "krafty-installer")
    argv = shlex.split(build["args"][1])
    assert argv[:2] == ["docker", "build"]
    assert argv[argv.index("-f") + 1] == "installer/Dockerfile"
    assert (REPO / "installer" / "Dockerfile").is_file(), "installer/Dockerfile does not exist"
    assert "$EXPECTED_REF" in argv
    # live_update copies with tar inside the container: the image must be built on a base that
    # has it (installer/Dockerfile's BASE argument).
    assert "BASE=gcr.io/distroless/static-debian12:debug" in argv
    assert "ARG BASE=" in (REPO / "installer" / "Dockerfile").read_text()
    outputs = plugin_outputs(tilt)
    syncs = [step["sync"] for step in build["live_update"]]
    assert syncs == [[out, f"/opt/krafty/bin/{Path(out).name}"] for out in outputs]
    # The image puts the plugins where the syncs write them.
    final = list(dockerfile_stages(REPO / "installer" / "Dockerfile").values())[-1]
    assert "COPY --from=plugins-build /out/ /opt/krafty/bin/" in final
    # A sync only fires for files the image watches; plugin sources must not be among them, or
    # a source edit would rebuild the image instead of live-updating it.
    assert set(outputs) <= set(build["deps"])
    assert not any(dep.startswith("plugins/") for dep in build["deps"])
    for dep in build["deps"]:
        assert dep in outputs or (REPO / dep).exists(), dep


def test_chart_is_deployed_with_dev_values_and_its_image_is_the_built_one(tilt):
    args, kwargs = tilt.only("helm")
    assert args == ("charts/krafty",)
    assert kwargs["values"] == ["charts/krafty/values-dev.yaml"]
    assert "krafty-vrf" in [p["type"] for p in chartlib.conflist(krafty_nad(tilt))["plugins"]]
    daemonsets = [o for o in applied_objects(tilt) if o["kind"] == "DaemonSet"]
    assert len(daemonsets) == 1
    image = daemonsets[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    # Tilt substitutes its build for every reference to the image's repository.
    assert image.split(":")[0] == tilt.resource("custom_build", "krafty-installer")["args"][0]


def nads(tilt: Tilt) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: chartlib.conflist(o)
        for o in applied_objects(tilt)
        if o["kind"] == "NetworkAttachmentDefinition"
    }


def krafty_nad(tilt: Tilt) -> dict[str, Any]:
    (nad,) = [
        o
        for o in applied_objects(tilt)
        if o["kind"] == "NetworkAttachmentDefinition" and o["metadata"]["name"] == "krafty"
    ]
    return nad


def test_the_dev_networks_include_one_stretched_across_nodes_in_blocks(tilt):
    stretched = nads(tilt)["stretched"]
    bridge = next(p for p in stretched["plugins"] if p["type"] == "krafty-bridge")
    assert bridge["scope"] == "network" and "multiNode" in bridge, bridge
    veth = next(p for p in stretched["plugins"] if p["type"] == "krafty-veth")
    assert veth["ipam"]["type"] == "krafty-blocks", veth
    kinds = {o["kind"] for o in applied_objects(tilt)}
    assert {"CustomResourceDefinition", "ConfigMap"} <= kinds


def test_without_vrf_the_networks_leave_krafty_vrf_out():
    tilt = evaluate(env={"KRAFTY_VRF": "no"})
    assert tilt.only("helm")[1]["values"] == ["charts/krafty/values-dev.yaml", "charts/krafty/values-dev-novrf.yaml"]
    chains = {name: [p["type"] for p in conf["plugins"]] for name, conf in nads(tilt).items()}
    assert chains == {"krafty": ["krafty-bridge", "krafty-veth"], "stretched": ["krafty-bridge", "krafty-veth"]}


def test_nettools_is_built_and_deployed_with_the_built_image(tilt):
    build = tilt.resource("docker_build", "krafty-nettools")
    context = REPO / build["args"][1]
    assert context.is_dir()
    assert (REPO / build["dockerfile"]).is_file()
    assert "deploy/nettools.yaml" in tilt.files_read
    deployments = [o for o in applied_objects(tilt) if o["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == ["nettools"]
    container = deployments[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "krafty-nettools"
    assert (
        deployments[0]["spec"]["template"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
        == "krafty, stretched"
    )


def test_resources_name_real_workloads_and_objects(tilt):
    objects = applied_objects(tilt)
    workloads = {o["metadata"]["name"] for o in objects if o["kind"] in {"DaemonSet", "Deployment"}}
    resources = {args[0]: kwargs for args, kwargs in tilt.calls["k8s_resource"]}
    assert set(resources) == workloads == {"krafty-installer", "nettools"}
    # Object selectors name:kind[:namespace], matched case-insensitively as Tilt does.
    for selector in resources["krafty-installer"]["objects"]:
        name, kind, *namespace = selector.lower().split(":")
        assert any(
            o["metadata"]["name"] == name
            and o["kind"].lower() == kind
            and (not namespace or o["metadata"].get("namespace") == namespace[0])
            for o in objects
        ), selector
    assert resources["krafty-installer"]["resource_deps"] == ["krafty-plugins"]
    assert resources["nettools"]["resource_deps"] == ["krafty-installer"]


def test_validate_runs_the_validation_script(tilt):
    validate = tilt.resource("local_resource", "validate")
    argv = shlex.split(validate["cmd"])
    assert argv == ["scripts/validate.sh", "--context", "kind-krafty"]
    assert os.access(REPO / argv[0], os.X_OK)
    assert validate["resource_deps"] == ["nettools"]
    assert validate["trigger_mode"] == "TRIGGER_MODE_MANUAL"


def test_every_named_file_exists_or_is_built(tilt):
    """Every path the Tiltfile names is in the repository, except the plugin binaries its own
    cargo resource builds."""
    outputs = set(plugin_outputs(tilt))
    named = set(tilt.files_read)
    for builtin in ("local_resource", "custom_build"):
        for _, kwargs in tilt.calls[builtin]:
            named.update(kwargs.get("deps", []))
    for args, kwargs in tilt.calls["docker_build"]:
        named.update([args[1], kwargs["dockerfile"]])
    for args, _ in tilt.calls["helm"]:
        named.add(args[0])
    for _, kwargs in tilt.calls["helm"]:
        named.update(kwargs["values"])
    missing = sorted(path for path in named - outputs if not (REPO / path).exists())
    assert missing == []


def test_harness_refuses_unmodelled_modules(monkeypatch, tmp_path):
    """The rewrite cannot hide a module call the stand-ins do not model."""
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text(TILTFILE.read_text() + "\nx = config.main_dir\n")
    monkeypatch.setattr(__import__(__name__), "TILTFILE", tiltfile)
    with pytest.raises(AssertionError, match="config.main_dir"):
        tiltfile_source()
