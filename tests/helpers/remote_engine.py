"""A second Docker engine on this machine that looks remote: its own network namespace and address.

The engine listens on tcp with mutual TLS (a CA and certificates made here with openssl), and an
sshd in the same namespace lets ssh://root@<address>:2222 run `docker system dial-stdio` against
it. Everything started is stopped by process id, and the namespace, veth pair and files are
removed, even when setting up fails half-way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

SSH_PORT = 2222
TLS_PORT = 2376


def run(*command: str | Path, netns: str | None = None) -> str:
    args = [str(c) for c in command]
    if netns:
        args = ["ip", "netns", "exec", netns, *args]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def cannot_make_namespaces() -> str | None:
    """Why this machine cannot host the remote engine, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    for tool in ("ip", "nsenter", "dockerd", "openssl", "ssh-keygen", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/sbin/sshd").exists():
        return "sshd (openssh-server) is not installed"
    probe = f"dhprobe{os.getpid()}"
    try:
        run("ip", "netns", "add", probe)
    except RuntimeError as exc:
        return f"this machine cannot make a network namespace: {exc}"
    run("ip", "netns", "delete", probe)
    return None


def free_subnet(prefix: str, what: str) -> int:
    """An ``x`` whose ``<prefix>.x.0/24`` no interface of this machine uses."""
    used = run("ip", "-4", "-o", "addr")
    for octet in range(100 + os.getpid() % 100, 255):
        if f"{prefix}.{octet}." not in used:
            return octet
    raise RuntimeError(f"no free {prefix}.x.0/24 subnet for {what}")


def load_images(client: docker.DockerClient, images: list[str]) -> None:
    """Copy images built on this machine's engine into another engine."""
    local = docker.from_env(timeout=300)
    for image in images:
        client.images.load(local.images.get(image).save(named=True))


def stop_process(process: subprocess.Popen | None) -> None:
    """Stop a process started in a session of its own, with everything it started."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def remove_tree(root: Path) -> None:
    """Remove an engine's files; dockerd leaves its overlay mounts' directories behind (they
    hold nothing mounted once it has stopped)."""
    with contextlib.suppress(RuntimeError):
        run("sh", "-c", f"grep -o '{root}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l")
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class RemoteEngine:
    """The namespaced engine, what a client needs to reach it, and what to clean up."""

    root: Path
    namespace: str
    address: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    veth: str = ""

    @property
    def tcp_url(self) -> str:
        return f"tcp://{self.address}:{TLS_PORT}"

    @property
    def ssh_url(self) -> str:
        return f"ssh://root@{self.address}:{SSH_PORT}"

    @property
    def socket(self) -> str:
        return f"unix://{self.root}/docker.sock"

    @property
    def certs(self) -> Path:
        """A DOCKER_CERT_PATH: ca.pem, cert.pem, key.pem for the client."""
        return self.root / "client"

    @property
    def ssh_home(self) -> Path:
        """A HOME whose ~/.ssh holds the client key and the engine's host key."""
        return self.root / "home"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.socket, timeout=120)

    # -----------------------------------------------------------------------------------------

    def start(self, images: list[str]) -> None:
        octet = free_subnet("10.231", "the test engine")
        self.address = f"10.231.{octet}.2"
        self._network(octet)
        self._certificates()
        self._dockerd()
        self._sshd()
        load_images(self.client(), images)

    def _network(self, octet: int) -> None:
        self.veth = f"dh{os.getpid() % 100000}"
        run("ip", "netns", "add", self.namespace)
        run("ip", "link", "add", f"{self.veth}h", "type", "veth", "peer", "name", f"{self.veth}n")
        run("ip", "link", "set", f"{self.veth}n", "netns", self.namespace)
        run("ip", "addr", "add", f"10.231.{octet}.1/24", "dev", f"{self.veth}h")
        run("ip", "link", "set", f"{self.veth}h", "up")
        run("ip", "addr", "add", f"{self.address}/24", "dev", f"{self.veth}n",
            netns=self.namespace)
        run("ip", "link", "set", f"{self.veth}n", "up", netns=self.namespace)
        run("ip", "link", "set", "lo", "up", netns=self.namespace)

    def _certificates(self) -> None:
        """A CA, a server certificate for the engine's address, a client certificate."""
        pki = self.root / "pki"
        pki.mkdir()
        self.certs.mkdir()
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run("openssl", "req", "-x509", *key, "-days", "2", "-subj", "/CN=test engine CA",
            "-keyout", pki / "ca-key.pem", "-out", pki / "ca.pem")
        for name, usage, san in (("server", "serverAuth", f"IP:{self.address}"),
                                 ("client", "clientAuth", None)):
            run("openssl", "req", *key, "-subj", f"/CN={name}", "-keyout",
                pki / f"{name}-key.pem", "-out", pki / f"{name}.csr")
            extensions = pki / f"{name}.ext"
            extensions.write_text(f"extendedKeyUsage={usage}\n"
                                  + (f"subjectAltName={san}\n" if san else ""))
            run("openssl", "x509", "-req", "-in", pki / f"{name}.csr", "-CA", pki / "ca.pem",
                "-CAkey", pki / "ca-key.pem", "-CAcreateserial", "-days", "2", "-extfile",
                extensions, "-out", pki / f"{name}.pem")
        shutil.copy(pki / "ca.pem", self.certs / "ca.pem")
        shutil.copy(pki / "client.pem", self.certs / "cert.pem")
        shutil.copy(pki / "client-key.pem", self.certs / "key.pem")

    def _spawn(self, name: str, command: list[str | Path]) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{self.namespace}", *map(str, command)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _dockerd(self) -> None:
        # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup mounts.
        pki = self.root / "pki"
        self._spawn("dockerd", [
            "dockerd", "--data-root", self.root / "data", "--exec-root", self.root / "exec",
            "--pidfile", self.root / "dockerd.pid", "--cgroup-parent", f"/{self.namespace}",
            "-H", self.socket, "-H", self.tcp_url, "--tlsverify", "--tlscacert", pki / "ca.pem",
            "--tlscert", pki / "server.pem", "--tlskey", pki / "server-key.pem",
        ])
        for _ in range(120):
            with contextlib.suppress(docker.errors.DockerException):
                self.client().ping()
                return
            if self.processes["dockerd"].poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError("the test engine did not start:\n"
                           + (self.root / "dockerd.log").read_text()[-3000:])

    def restart_dockerd(self) -> None:
        """Stop the engine (its containers stop with it) and start it again, as a reboot would."""
        process = self.processes.pop("dockerd")
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        self._dockerd()

    def _sshd(self) -> None:
        ssh = self.ssh_home / ".ssh"
        ssh.mkdir(parents=True, mode=0o700)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.root / "host_key")
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ssh / "id_ed25519")
        shutil.copy(ssh / "id_ed25519.pub", self.root / "authorized_keys")
        host_key = (self.root / "host_key.pub").read_text().split()[:2]
        (ssh / "known_hosts").write_text(f"[{self.address}]:{SSH_PORT} {' '.join(host_key)}\n")
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"Port {SSH_PORT}", f"ListenAddress {self.address}",
            f"HostKey {self.root}/host_key", f"AuthorizedKeysFile {self.root}/authorized_keys",
            f"PidFile {self.root}/sshd.pid", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "StrictModes no", f"SetEnv DOCKER_HOST={self.socket}", "",
        ]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self._spawn("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", config])
        for _ in range(50):
            with contextlib.suppress(RuntimeError):
                run("python3", "-c", "import socket; socket.create_connection("
                    f"('{self.address}', {SSH_PORT}), timeout=1).close()")
                return
            time.sleep(0.1)
        raise RuntimeError("sshd did not start:\n" + (self.root / "sshd.log").read_text())

    def stop(self) -> None:
        """Stop every container and process started here, and remove what was made."""
        if "dockerd" in self.processes:
            with contextlib.suppress(docker.errors.DockerException):
                for container in self.client().containers.list(all=True):
                    container.remove(force=True)
        for process in reversed(list(self.processes.values())):
            stop_process(process)
        with contextlib.suppress(RuntimeError):
            run("ip", "link", "delete", f"{self.veth}h")
        with contextlib.suppress(RuntimeError):
            run("ip", "netns", "delete", self.namespace)
        remove_tree(self.root)


@contextlib.contextmanager
def remote_engine(images: list[str]):
    """A started :class:`RemoteEngine`, stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="dh-", dir="/tmp"))  # short: unix socket paths
    engine = RemoteEngine(root=root, namespace=f"dhtest{os.getpid()}", address="")
    try:
        engine.start(images)
        yield engine
    finally:
        engine.stop()
