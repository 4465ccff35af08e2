"""A Docker Swarm of three engines on this machine, and a registry they all pull from.

Each engine runs in its own network and UTS namespace (so node names differ), with its veth on
one host bridge; Debian's ``docker-registry`` listens on the bridge's address, and every engine
trusts it over plain HTTP (``--insecure-registry``). The first engine initialises the swarm and
the others join it as workers. Everything started is stopped by process id, and the namespaces,
links, firewall rule and files are removed, even when setting up fails half-way.

The kernel here has no IPVS: the routing mesh and service VIPs do not work, overlay networks
(VXLAN) and ``endpoint_mode=dnsrr`` services do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker

from tests.helpers.remote_engine import free_subnet, load_images, remove_tree, run, stop_process

# The local images builds need, loaded into the test engines (the names are in the environment)
IMAGES = ("MLFLOW_DOCKERHOST_BASE_IMAGE", "MLFLOW_DOCKERHOST_PROXY_IMAGE",
          "MLFLOW_DOCKERHOST_STRIP_IMAGE")

REGISTRY_PORT = 5000
NODES = 3


def cannot_make_a_swarm() -> str | None:
    """Why this machine cannot host the test swarm, or ``None`` when it can."""
    from tests.helpers.remote_engine import cannot_make_namespaces

    reason = cannot_make_namespaces()
    if reason:
        return reason
    for tool in ("unshare", "iptables", "docker-registry"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (docker-registry: apt-get install docker-registry)"
    return None


@dataclass
class Node:
    """One engine of the swarm: its namespace, address and process."""

    name: str
    address: str
    root: Path
    process: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.socket, timeout=120)


@dataclass
class Swarm:
    """Three engines in a swarm (the first the manager) and a registry, on one bridge."""

    root: Path
    tag: str
    subnet: int = 0
    nodes: list[Node] = field(default_factory=list)
    registry_process: subprocess.Popen | None = None
    bridge: str = ""

    @property
    def gateway(self) -> str:
        return f"10.232.{self.subnet}.1"

    @property
    def registry(self) -> str:
        """``host:port`` of the registry, as the engines reach it."""
        return f"{self.gateway}:{REGISTRY_PORT}"

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    # -----------------------------------------------------------------------------------------

    def start(self, images: list[str]) -> None:
        self.subnet = free_subnet("10.232", "the test swarm")
        self._bridge()
        self._registry()
        for index in range(NODES):
            self._node(index)
        self._form()
        load_images(self.manager.client(), images)  # the swarm's builds run on the manager

    def _bridge(self) -> None:
        self.bridge = f"dhsw{self.tag}"
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        # The host engine sets FORWARD's policy to DROP, and with br_netfilter loaded that
        # applies to traffic between the ports of any bridge: let the nodes talk.
        run("iptables", "-I", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")

    def _registry(self) -> None:
        config = self.root / "registry.yml"
        config.write_text("\n".join([
            "version: 0.1", "storage:", "  filesystem:",
            f"    rootdirectory: {self.root / 'registry'}", "http:",
            f"  addr: {self.registry}", "",
        ]))
        self.registry_process = self._spawn("registry", ["docker-registry", "serve", config])
        self._wait_for(lambda: run("python3", "-c", "import socket; socket.create_connection("
                                   f"('{self.gateway}', {REGISTRY_PORT}), timeout=1).close()"),
                       "the registry", self.root / "registry.log")

    def _node(self, index: int) -> None:
        name = f"dhsw{self.tag}n{index + 1}"
        node = Node(name=name, address=f"10.232.{self.subnet}.{index + 2}",
                    root=self.root / f"n{index + 1}")
        node.root.mkdir()
        self.nodes.append(node)
        veth = f"{name}h"
        run("ip", "netns", "add", name)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{name}n")
        run("ip", "link", "set", f"{name}n", "netns", name)
        run("ip", "link", "set", veth, "master", self.bridge)
        run("ip", "link", "set", veth, "up")
        run("ip", "addr", "add", f"{node.address}/24", "dev", f"{name}n", netns=name)
        run("ip", "link", "set", f"{name}n", "up", netns=name)
        run("ip", "link", "set", "lo", "up", netns=name)
        run("ip", "route", "add", "default", "via", self.gateway, netns=name)
        self._start_engine(node)

    def _start_engine(self, node: Node) -> None:
        # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup mounts; a UTS
        # namespace of its own gives each engine its own host name, hence its own node name.
        command = [
            "dockerd", "--data-root", node.root / "data", "--exec-root", node.root / "exec",
            "--pidfile", node.root / "dockerd.pid", "--cgroup-parent", f"/{node.name}",
            "-H", node.socket, "--insecure-registry", self.registry,
        ]
        script = f"hostname {node.name} && exec " + " ".join(map(str, command))
        node.process = self._spawn(node.name, ["nsenter", f"--net=/var/run/netns/{node.name}",
                                               "unshare", "--uts", "sh", "-c", script])
        self._wait_for(lambda: node.client().ping(), f"engine {node.name}",
                       self.root / f"{node.name}.log")

    def _form(self) -> None:
        manager = self.manager.client()
        manager.swarm.init(advertise_addr=self.manager.address, listen_addr=self.manager.address)
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.nodes[1:]:
            node.client().swarm.join(remote_addrs=[self.manager.address], join_token=token,
                                     listen_addr=node.address, advertise_addr=node.address)
        self._wait_for(lambda: self._all_ready(manager), "the swarm's nodes",
                       self.root / f"{self.manager.name}.log", attempts=120)

    @staticmethod
    def _all_ready(manager: docker.DockerClient) -> None:
        states = [n.attrs["Status"]["State"] for n in manager.nodes.list()]
        if len(states) != NODES or set(states) != {"ready"}:
            raise RuntimeError(f"nodes: {states}")

    def lose(self, node: Node) -> None:
        """Lose a node as a machine is lost: its engine killed outright and its link cut, so
        neither the swarm nor a client reaches it or the containers left running on it."""
        assert node.process is not None
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait()
        run("ip", "link", "set", f"{node.name}h", "down")

    # -----------------------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str | Path]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("wb")
        return subprocess.Popen([str(c) for c in command], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    @staticmethod
    def _wait_for(check, what: str, log: Path, attempts: int = 60) -> None:
        error: Exception | None = None
        for _ in range(attempts):
            try:
                check()
                return
            except Exception as exc:
                error = exc
            time.sleep(0.5)
        text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"{what} did not start ({error}):\n{text}")

    def stop(self) -> None:
        """Stop every process started here, and remove what was made."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(docker.errors.DockerException):
                    client = node.client()
                    for service in client.services.list() if node is self.manager else ():
                        service.remove()
                    for container in client.containers.list(all=True):
                        container.remove(force=True)
        for process in [n.process for n in self.nodes] + [self.registry_process]:
            stop_process(process)
        for node in self.nodes:
            _end_containers_of(node)
            with contextlib.suppress(RuntimeError):
                run("ip", "link", "delete", f"{node.name}h")
            with contextlib.suppress(RuntimeError):
                run("ip", "netns", "delete", node.name)
        if self.bridge:
            with contextlib.suppress(RuntimeError):
                run("iptables", "-D", "FORWARD", "-i", self.bridge, "-o", self.bridge,
                    "-j", "ACCEPT")
            with contextlib.suppress(RuntimeError):
                run("ip", "link", "delete", self.bridge)
        remove_tree(self.root)


def _end_containers_of(node: Node) -> None:
    """Kill what still runs of a node's containers: a lost node's outlive its killed engine.
    Its engine puts them under the cgroup ``/<node>`` (``--cgroup-parent``), and their shims
    name its containerd's socket, under the node's directory."""
    cgroup, root = f":/{node.name}/".encode(), f"{node.root}/".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                if (cgroup in (entry / "cgroup").read_bytes()
                        or root in (entry / "cmdline").read_bytes()):
                    os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def swarm_cluster(images: list[str]) -> Iterator[Swarm]:
    """A started :class:`Swarm`, stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="dhsw-", dir="/tmp"))  # short: unix socket paths
    swarm = Swarm(root=root, tag=str(os.getpid() % 10000))
    try:
        swarm.start(images)
        yield swarm
    finally:
        swarm.stop()
