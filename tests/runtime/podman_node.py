"""A node for podman: Debian's podman 4 with its CNI backend (libcni, as CRI-O uses it) running
krafty, inside a network namespace of its own so that nothing touches this machine's network.

Everything podman and the plugins keep lives in one temporary directory: podman's
configuration (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF), storage (vfs) and run files, the CNI
config dir, a copy of the plugins, krafty's state, log and locks (KRAFTY_STATE_ROOT,
KRAFTY_LOG_ROOT, KRAFTY_RUN_DIR) and host-local's leases (`dataDir`). The only things podman
writes elsewhere are per container and removed with it: libcni's result cache
(/var/lib/cni/results, not configurable in podman 4), runc's state (/run/runc) and the
container's network namespace (/run/netns).

The plugins see krafty's variables twice over: libcni passes podman's own environment to
every plugin, and podman's conmon, which runs `podman container cleanup` (and with it the DEL)
when a container ends by itself, gets them from `conmon_env_vars`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = ("krafty-vrf", "krafty-bridge", "krafty-veth", "krafty")
# busybox applets the containers use.
APPLETS = ("sh", "ip", "ping", "sleep", "cat")
LIBCNI_CACHE = Path("/var/lib/cni/results")
PODMAN_TIMEOUT = int(os.environ.get("KRAFTY_PODMAN_TIMEOUT", "600"))


@dataclass(frozen=True)
class Network:
    name: str
    scope: str  # "pod" or "network"
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @property
    def range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return self.subnet.network_address + 10, self.subnet.network_address + 250

    def conflist(self, vrf: bool, ipam_dir: Path) -> dict:
        first, last = self.range
        plugins = [
            {"type": "krafty-bridge", "scope": self.scope, "subnet": str(self.subnet), "gateway": str(self.gateway)},
            {
                "type": "krafty-veth",
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [
                        [
                            {
                                "subnet": str(self.subnet),
                                "rangeStart": str(first),
                                "rangeEnd": str(last),
                                "gateway": str(self.gateway),
                            }
                        ]
                    ],
                },
            },
        ]
        if vrf:
            plugins.insert(0, {"type": "krafty-vrf", "scope": self.scope})
        return {"cniVersion": "1.0.0", "name": self.name, "plugins": plugins}


class PodmanNode:
    def __init__(self, networks: list[Network], bin_dir: Path, vrf: bool):
        self.networks = {n.name: n for n in networks}
        self.vrf = vrf
        self.root = Path(tempfile.mkdtemp(prefix="krafty-podman-"))
        self.netns = f"krafty-podman-{secrets.token_hex(3)}"
        self.state = self.root / "state"
        self.log = self.root / "log" / "krafty.log"
        self.ipam = self.root / "ipam"
        self.rootfs = self.root / "rootfs"
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
            "KRAFTY_STATE_ROOT": str(self.state),
            "KRAFTY_LOG_ROOT": str(self.log.parent),
            "KRAFTY_RUN_DIR": str(self.root / "run"),
        }
        try:
            self._build(bin_dir)
        except BaseException:
            self.remove()
            raise

    def _build(self, bin_dir: Path) -> None:
        plugin_dir = self.root / "bin"
        plugin_dir.mkdir()
        for plugin in PLUGINS:
            # A copy: a concurrent rebuild cannot change them mid-test, and in the VM they stay
            # in the page cache instead of being read again over 9p at every exec.
            shutil.copy2(bin_dir / plugin, plugin_dir / plugin)
        self._build_rootfs()
        config_dir = self.root / "cni"
        config_dir.mkdir()
        for network in self.networks.values():
            self.add_conflist(network.conflist(self.vrf, self.ipam))
        krafty_env = [f"{key}={self.env[key]}" for key in ("KRAFTY_STATE_ROOT", "KRAFTY_LOG_ROOT", "KRAFTY_RUN_DIR")]
        conmon_env = [f"PATH={os.environ['PATH']}", *krafty_env]
        (self.root / "containers.conf").write_text(
            f"""[containers]
# Podman's default rlimits can exceed a machine's hard limits (they do on the development machine).
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = {json.dumps([str(plugin_dir), "/usr/lib/cni"])}
network_config_dir = "{config_dir}"

[engine]
# crun fails on a hybrid cgroup layout; runc works on every layout.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{self.root / 'engine'}"
conmon_env_vars = {json.dumps(conmon_env)}
"""
        )
        (self.root / "storage.conf").write_text(
            f"""[storage]
driver = "vfs"
graphroot = "{self.root / 'storage'}"
runroot = "{self.root / 'storage-run'}"
"""
        )
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)

    def add_conflist(self, conflist: dict) -> None:
        """A network in podman's CNI config dir (podman reads it at every command)."""
        (self.root / "cni" / f"{conflist['name']}.conflist").write_text(json.dumps(conflist, indent=2))

    def _build_rootfs(self) -> None:
        busybox = shutil.which("busybox")
        if busybox is None:
            raise RuntimeError("busybox not found (apt-get install busybox-static)")
        bin_dir = self.rootfs / "bin"
        bin_dir.mkdir(parents=True)
        shutil.copy2(busybox, bin_dir / "busybox")
        for applet in APPLETS:
            (bin_dir / applet).symlink_to("busybox")

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """podman in the node's network namespace. nsenter, not `ip netns exec`, which
        remounts /sys and so hides the cgroup mounts podman needs."""
        result = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", "podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=PODMAN_TIMEOUT,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def network_args(self, *networks: str) -> list[str]:
        """--network for each network, as net1, net2, ... (the names Multus gives)."""
        return [f"--network={name}:interface_name=net{i}" for i, name in enumerate(networks, 1)]

    def start(self, name: str, *networks: str) -> str:
        """A container that keeps running, attached to the networks; returns its ID."""
        argv = ["run", "--detach", "--name", name, *self.network_args(*networks), "--rootfs", str(self.rootfs)]
        return self.podman(*argv, "sleep", "1000").stdout.strip()

    def run_once(self, name: str, *networks: str, command: str) -> tuple[str, str]:
        """A container that runs COMMAND and is removed (`podman run --rm`); returns its ID,
        found in the krafty log by the name podman passes as K8S_POD_NAME, and its output."""
        argv = ["run", "--rm", "--name", name, *self.network_args(*networks), "--rootfs", str(self.rootfs)]
        output = self.podman(*argv, "sh", "-c", command).stdout
        ids = {e["containerId"] for e in self.log_entries() if e.get("podName") == name}
        assert len(ids) == 1, f"the krafty log names {len(ids)} containers {name}"
        return ids.pop(), output

    def exec(self, name: str, command: str) -> str:
        return self.podman("exec", name, "sh", "-c", command).stdout

    def node_links(self) -> list[dict]:
        return links("-n", self.netns)

    def leftovers(self, container_id: str) -> list[str]:
        """What the node still holds of a container: devices carrying its krafty mark, its
        leases, its attachment records, libcni's cached results."""
        found = [
            f"device {link['ifname']} ({link['ifalias']})"
            # The machine's own namespace too: nothing may have gone there.
            for link in self.node_links() + links()
            if container_id in link.get("ifalias", "")
        ]
        found += [f"lease {lease}" for lease in self._lease_files(container_id)]
        found += [f"record {p}" for p in self.state.rglob(f"*{container_id}*")]
        found += [f"libcni cache {p}" for p in LIBCNI_CACHE.glob(f"*-{container_id}-*")]
        return found

    def leases(self, container_id: str) -> list[ipaddress.IPv4Address]:
        """The addresses host-local leased to a container (a file per address, holding the ID)."""
        return [ipaddress.IPv4Address(lease.name) for lease in self._lease_files(container_id)]

    def _lease_files(self, container_id: str) -> list[Path]:
        if not self.ipam.exists():
            return []
        return [
            lease
            for lease in self.ipam.glob("*/*")
            if lease.name != "lock"
            and not lease.name.startswith("last_reserved_ip")
            and lease.read_text().startswith(container_id)
        ]

    def log_entries(self) -> list[dict]:
        """Every line of the krafty log, parsed."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def logged(self, container_id: str, command: str) -> dict[tuple[str, str], str]:
        """(network, plugin) -> outcome of the krafty log's COMMAND lines about a container."""
        return {
            (e["network"], e["plugin"]): e["outcome"]
            for e in self.log_entries()
            if e.get("containerId") == container_id and e["command"] == command
        }

    def remove(self) -> None:
        if (self.root / "containers.conf").exists():
            self.podman("rm", "--all", "--force", "--time", "0", check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        # Whatever a failed test left in libcni's cache, of every container krafty saw.
        for container_id in {e["containerId"] for e in self.log_entries() if e.get("containerId")}:
            for cached in LIBCNI_CACHE.glob(f"*-{container_id}-*"):
                cached.unlink()
        shutil.rmtree(self.root, ignore_errors=True)


def kernel_has_vrf() -> bool:
    """Whether this kernel makes VRF devices (tried in a scratch namespace)."""
    scratch = f"krafty-vrf-probe-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", scratch], check=True)
    try:
        made = subprocess.run(
            ["ip", "-n", scratch, "link", "add", "probe", "type", "vrf", "table", "4242"], capture_output=True
        )
        return made.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", scratch], check=True)


def links(*ip_args: str) -> list[dict]:
    listing = subprocess.run(["ip", *ip_args, "-j", "-d", "link", "show"], capture_output=True, text=True, check=True)
    return json.loads(listing.stdout)


def addresses(ip_output: str, ifname: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses of an interface in `ip -4 -o addr` output."""
    found = []
    for line in ip_output.splitlines():
        words = line.split()
        if len(words) > 3 and words[1] == ifname and words[2] == "inet":
            found.append(ipaddress.IPv4Interface(words[3]))
    return found
