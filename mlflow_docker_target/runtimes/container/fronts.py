"""An endpoint's front as a container: HAProxy on a network of its own, owning the host port.

The port is chosen once (``-C port``, or a free one the engine picks for a trial front) and bound
explicitly, so it survives updates and engine restarts. The front is locked down (``lockdown``):
its root filesystem is read-only, and the engine copies files only into a volume of such a
container, so the configuration and the traffic record are files in a small volume of the
front's own. A reload is hitless (HAProxy's master starts new workers and the old ones finish
what they hold).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import secrets
import tarfile
import time
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.containers import list_containers
from mlflow_docker_target.engine.times import engine_time
from mlflow_docker_target.runtimes import fronts, haproxy, reach
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.container import containers
from mlflow_docker_target.runtimes.haproxy import Limits

log = logging.getLogger(__name__)

FRONT_PORT = f"{haproxy.FRONT_PORT}/tcp"
RELOAD_TIMEOUT = 15  # HAProxy's master re-reads its configuration in milliseconds
PORT_ATTEMPTS = 3


def find(client: docker.DockerClient, deployment: str | None = None,
         endpoint: str | None = None) -> Container | None:
    """The front a deployment is served through: its shared ``endpoint``'s, else its own."""
    found = list_containers(client, fronts.selector(deployment, endpoint))
    return next((c for c in found if c.labels.get(record.ROLE) == record.FRONT), None)


def start(engine: Engine, settings: Settings, image: str, endpoint: str | None = None,
          deployment: str | None = None, backends: tuple[haproxy.Backend, ...] = (),
          tls: Certificate | None = None) -> Container:
    """A front on a new network of its own, on ``settings.port`` or a port picked once, with
    the limits ``settings`` ask for; with ``tls``, serving HTTPS only."""
    stem = f"mlflow-endpoint-{endpoint}" if endpoint else f"mlflow-{deployment}-front"
    labels = fronts.labels(settings, endpoint, deployment, https=tls is not None)
    bind = reach.bind_address(engine, settings)
    network = engine.client.networks.create(stem, labels=labels, check_duplicate=True)
    volume = engine.client.volumes.create(_volume_name(stem), labels=labels)
    try:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = settings.port or _pick_port(engine, image, bind, stem, labels, network)
            container = _create(engine, image, stem, {**labels, record.PORT: str(port)},
                                network, bind, port, settings.restart_policy)
            try:
                configure(container, endpoint or str(deployment), backends,
                          fronts.State(None, fronts.limits_of(settings)), tls)
                container.start()
                break
            except docker.errors.APIError as exc:
                container.remove(force=True)
                # a port picked here, taken by another client between the trial and the start
                if (settings.port or attempt == PORT_ATTEMPTS
                        or "already allocated" not in str(exc.explanation or exc)):
                    raise
                log.info("Port %d was taken meanwhile; picking another", port)
            except BaseException:
                container.remove(force=True)
                raise
    except docker.errors.APIError as exc:
        network.remove()
        volume.remove(force=True)
        raise fronts.start_failed(str(endpoint or deployment), settings.port or "any",
                                  exc) from None
    except BaseException:
        network.remove()
        volume.remove(force=True)
        raise
    return container


def _create(engine: Engine, image: str, name: str, labels: dict[str, str], network: Network,
            bind: str, port: int | None, restart_policy: str) -> Container:
    """A front, its configuration volume (the network's name, ``-config``) mounted, and its
    metrics port published if its labels name one. It runs as :data:`haproxy.FRONT_USER`, the
    one user that may read an HTTPS key."""
    ports: dict[str, tuple[str, int | None]] = {FRONT_PORT: (bind, port)}
    if labels.get(record.METRICS_PORT):
        ports[f"{haproxy.METRICS_PORT}/tcp"] = (bind, int(labels[record.METRICS_PORT]))
    return engine.client.containers.create(
        image, entrypoint=[], command=haproxy.COMMAND, name=name, labels=labels,
        network=network.name, ports=ports, init=True, user=haproxy.FRONT_USER,
        restart_policy=containers.restart_policy(restart_policy), stop_signal="SIGUSR1",
        volumes={_volume_name(network.name): {"bind": haproxy.CONFIG_DIR, "mode": "rw"}},
        **lockdown.container_options())


def _volume_name(network: str) -> str:
    return f"{network}-config"


def _pick_port(engine: Engine, image: str, bind: str, stem: str, labels: dict[str, str],
               network: Network) -> int:
    """A free host port, as the engine picks one: a trial front gets a random port, which the
    real front then binds explicitly (a random binding would change on every start)."""
    trial = _create(engine, image, f"{stem}-{secrets.token_hex(3)}",
                    {k: v for k, v in labels.items()
                     if k not in (record.METRICS_PORT, record.HTTPS)}, network, bind, None, "no")
    try:
        configure(trial, "trial", (), fronts.State())
        trial.start()
        trial.reload()
        return int(trial.attrs["NetworkSettings"]["Ports"][FRONT_PORT][0]["HostPort"])
    finally:
        trial.remove(force=True)


def configure(container: Container, name: str, backends: tuple[haproxy.Backend, ...],
              state: fronts.State, tls: Certificate | None = None) -> fronts.State:
    """Write the front's configuration, and its record of itself (``state``), into it; with
    ``tls``, its new certificate and key too; reload it if running. Returns the record written.

    HAProxy's master process re-reads the file (and the certificate) on SIGUSR2 and starts new
    workers, while the old ones finish the requests they hold: nothing in flight is lost. The
    configuration read at the reload names the replicas' current addresses; once the new worker
    runs, it is rewritten without them, so a cold start after an engine restart (new addresses)
    asks Docker's DNS instead of trusting stale ones. The key file belongs to the front's user,
    who alone may read it.
    """
    https = record.HTTPS in container.labels
    if tls is not None:
        state = dataclasses.replace(state, certificate=tls.chain.decode())

    def write(config: tuple[haproxy.Backend, ...], key: bytes | None = None) -> None:
        files: dict[str, tuple[bytes, int, str | None]] = {
            _in_config_dir(haproxy.CONFIG_PATH): (haproxy.render(
                name, config, state.limits, record.METRICS_PORT in container.labels,
                haproxy.TLS_PATH if https else None).encode(), 0o644, None),
            _in_config_dir(haproxy.STATE_PATH): (json.dumps(
                {"traffic": state.traffic, "limits": state.limits.as_record(),
                 "certificate": state.certificate,
                 "canaries": {name: dataclasses.asdict(canary)
                              for name, canary in state.canaries.items()}}).encode(),
                0o644, None)}
        if key is not None:
            files[_in_config_dir(haproxy.TLS_PATH)] = (key, 0o600, haproxy.FRONT_USER)
        container.put_archive(haproxy.CONFIG_DIR, as_tar(files))

    key = tls.pem() if tls is not None and https else None
    container.reload()
    if container.status == "running":
        write(backends, key)
        reload(container)
        key = None
    write(tuple(dataclasses.replace(b, servers=tuple(haproxy.Server(s.slot) for s in b.servers))
                for b in backends), key)
    return state


def reload(container: Container) -> None:
    """Reload HAProxy in ``container`` and wait for its master to report the outcome (its log
    says "Loading success" or "Loading failure" after every reload).

    The log is polled (no follow stream: over ssh each open stream holds one of the server's few
    sessions), keeping only lines stamped after the last one before the signal.
    """
    last = container.logs(tail=1, timestamps=True).splitlines()
    mark = stamp(last[-1]) if last else None
    marked = engine_time(mark[0]) if mark else None
    since = int(marked.timestamp()) if marked else None
    # Not `docker kill -s USR2`: the engine then counts the front as stopped by hand, and an
    # unless-stopped front would stay down after an engine restart. The init process (PID 1)
    # passes the signal on to HAProxy's master.
    signalled = container.exec_run(["sh", "-c", "kill -USR2 1"])
    if signalled.exit_code != 0:
        raise MlflowException(f"Could not signal the front {container.name} to reload: "
                              f"{signalled.output.decode(errors='replace').strip()}",
                              INVALID_STATE)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while True:
        fresh = [line.split(b" ", 1)[-1].decode(errors="replace")
                 for line in container.logs(timestamps=True, since=since).splitlines()
                 if mark is None or stamp(line) > mark]
        if any("Loading success" in line for line in fresh):
            return
        if any("Loading failure" in line for line in fresh) or time.monotonic() > deadline:
            text = "\n".join(fresh[-20:]) or "(nothing logged)"
            raise MlflowException(
                f"The endpoint's front {container.name} did not take its new configuration; it "
                f"goes on serving the previous one. Its log:\n{text}", INVALID_STATE)
        time.sleep(0.05)


def stamp(line: bytes) -> tuple[str, str]:
    """The engine's timestamp of a log line, comparable: RFC 3339 drops trailing zeros of the
    nanoseconds, so the fraction is padded back to nine digits."""
    text = line.split(b" ", 1)[0].decode(errors="replace").rstrip("Z")
    seconds, _, fraction = text.partition(".")
    return seconds, fraction.ljust(9, "0")


def recorded(container: Container) -> fronts.State:
    """The front's record of itself, read out of it (running or not)."""
    try:
        stream, _ = container.get_archive(haproxy.STATE_PATH)
    except docker.errors.NotFound:
        return fronts.State()
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        data: dict[str, Any] = json.loads(member.read()) if member else {}
    return fronts.State(data.get("traffic"), Limits.from_record(data.get("limits")),
                        data.get("certificate"),
                        {name: fronts.RecordedCanary(**canary)
                         for name, canary in (data.get("canaries") or {}).items()})


def url(engine: Engine, container: Container) -> str | None:
    """The endpoint's URL: the front's published port on the engine's host."""
    bindings = (container.attrs.get("HostConfig", {}).get("PortBindings") or {})
    binding = (bindings.get(FRONT_PORT) or [None])[0]
    if not binding or not binding.get("HostPort"):
        return None
    return reach.url_for(engine, binding.get("HostIp", ""), int(binding["HostPort"]),
                         container.labels.get(record.HOST_ADDRESS) or None,
                         https=record.HTTPS in container.labels)


def network_of(container: Container) -> str:
    return next(iter(container.attrs["NetworkSettings"]["Networks"]))


def remove(engine: Engine, container: Container) -> None:
    """Stop and remove the front, then its network and its configuration volume."""
    networks = list(container.attrs.get("NetworkSettings", {}).get("Networks") or {})
    containers.remove(container, stop_timeout=5)
    for name in networks:
        with contextlib.suppress(docker.errors.NotFound):
            engine.client.networks.get(name).remove()
        with contextlib.suppress(docker.errors.NotFound):
            engine.client.volumes.get(_volume_name(name)).remove(force=True)


def _in_config_dir(path: str) -> str:
    return path.removeprefix(haproxy.CONFIG_DIR + "/")


def as_tar(files: Mapping[str, tuple[bytes, int, str | None]]) -> bytes:
    """A tar of ``files`` (path relative to where it is put: data, mode, and ``uid:gid`` or
    ``None`` for root), with their directories."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directories = sorted({path.lstrip("/").rsplit("/", 1)[0] for path in files
                              if "/" in path.lstrip("/")})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, (data, mode, owner) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), mode
            if owner:
                info.uid, info.gid = (int(n) for n in owner.split(":"))
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
