"""Serving containers on an engine: start one, wait for it, read its logs, stop and remove it.

Shared by the container runtime (replicas behind a front) and ``run-local`` (one container on a
published port). What a container records about its deployment is ``record``'s business.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target import record
from mlflow_docker_target.build.model_fetch import ModelRef
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.runtimes import haproxy as front
from mlflow_docker_target.runtimes.container import gpus
from serving_image.settings import ServerSettings

log = logging.getLogger(__name__)

CONTAINER_PORT = "8080/tcp"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(name: str, what: str = "deployment") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise MlflowException(
            f"Invalid {what} name {name!r}: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit.", INVALID_PARAMETER_VALUE)
    return name


@dataclass(frozen=True)
class Spec:
    """Everything a serving container is started from."""

    deployment: str
    image: str
    model: ModelRef
    config: Mapping[str, str]
    settings: Settings
    plugin_version: str
    local_run: bool = False
    endpoint: str | None = None
    slot: int | None = None  # behind a front

    def labels(self) -> dict[str, str]:
        labels = record.server_labels(self.deployment, self.image, self.model, self.config,
                                      self.plugin_version, self.endpoint)
        if self.local_run:
            labels[record.LOCAL_RUN] = "true"
        if self.slot is not None:
            labels[record.SLOT] = str(self.slot)
        return labels

    def environment(self) -> dict[str, str]:
        server = ServerSettings(
            model_path="/opt/ml/model",
            request_timeout=self.settings.request_timeout,
            max_body_size=self.settings.max_body_size,
            log_level=self.settings.log_level,
            access_log=self.settings.access_log,
            model_name=self.model.name,
            model_version=self.model.version,
            run_id=self.model.run_id,
            image=self.image,
            auth_token=self.settings.auth_token,
            batch_max_size=self.settings.batch_max_size,
            batch_max_wait_ms=self.settings.batch_max_wait_ms,
            deployment=self.deployment,
            endpoint=self.endpoint,
            predict_threads=self.settings.predict_threads,
            queue_size=self.settings.queue_size,
            max_streams=self.settings.max_streams,
            preload=not self.settings.gpus,  # CUDA does not survive a fork: each worker loads
        ).to_env()
        server.pop("SCORING_WORKERS")  # the server counts the CPUs its container may use
        if self.settings.workers:
            server["SCORING_WORKERS"] = str(self.settings.workers)
        elif self.settings.gpus:  # one copy of the model per GPU, not one per CPU
            server["SCORING_WORKERS"] = "1"
        if not self.local_run:  # behind a front: out of its rotation before shutting down
            server["SCORING_DRAIN_SECONDS"] = f"{front.DRAIN_SECONDS:g}"
        return {**self.settings.env, **server}


def restart_policy(value: str) -> dict[str, Any]:
    """Docker's restart policy for ``no``, ``always``, ``unless-stopped``, ``on-failure[:N]``."""
    name, _, count = value.partition(":")
    policy: dict[str, Any] = {"Name": name}
    if count:
        policy["MaximumRetryCount"] = int(count)
    return policy


def start(engine: Engine, spec: Spec, host_port: int | None = None,
          publish: bool = True) -> Container:
    """Create and start a container; published on ``host_port`` (``None``: a free one) unless
    ``publish`` is false (replicas behind a front publish nothing)."""
    name = f"mlflow-{spec.deployment}-{secrets.token_hex(3)}"
    settings = spec.settings
    kwargs: dict[str, Any] = {}
    if settings.cpus:
        kwargs["nano_cpus"] = int(settings.cpus * 1e9)
    if settings.memory:
        kwargs["mem_limit"] = settings.memory
    if settings.gpus:
        kwargs["device_requests"] = gpus.device_requests(settings.gpus)
    if publish:
        # A remote engine's loopback is out of this machine's reach.
        bind = settings.bind_address or ("127.0.0.1" if engine.is_local else "0.0.0.0")
        kwargs["ports"] = {CONTAINER_PORT: (bind, host_port)}
    if spec.local_run:  # the engine removes it when it ends, however the client ends
        kwargs["auto_remove"] = True
    policy = "no" if spec.local_run else settings.restart_policy
    try:
        return engine.client.containers.run(
            spec.image, detach=True, name=name, labels=spec.labels(),
            environment=spec.environment(), init=settings.init,
            restart_policy=restart_policy(policy), stop_signal="SIGTERM", **kwargs,
        )
    except docker.errors.APIError as exc:
        # created but not started (a port already taken, say): leave nothing behind
        with contextlib.suppress(docker.errors.NotFound):
            engine.client.containers.get(name).remove(force=True)
        hint = f" {gpus.HINT}" if settings.gpus and "device driver" in str(exc) else ""
        raise MlflowException(
            f"Could not start a container for {spec.deployment!r} from {spec.image}: "
            f"{exc.explanation or exc}.{hint}") from exc


def _binding(container: Container) -> tuple[str, int] | None:
    """Host address and port the server's port is published on (the IPv4 binding first)."""
    bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(CONTAINER_PORT)
    ordered = sorted(bindings or [], key=lambda b: ":" in b.get("HostIp", ""))
    for binding in ordered:
        return binding.get("HostIp", ""), int(binding["HostPort"])
    return None


def url_for(engine: Engine, bound: str, port: int, host_address: str | None) -> str:
    """The URL clients reach a published port by: ``host_address`` if configured, else the
    address the port is bound to, else (all interfaces, or loopback) the engine's host."""
    host = host_address
    if not host:
        address = ipaddress.ip_address(bound) if bound else None
        specific = address is not None and not (address.is_unspecified or address.is_loopback)
        host = bound if specific else engine.host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def published_url(engine: Engine, container: Container) -> str | None:
    """The URL of a container's own published port (run-local, and deployments made before
    fronts existed)."""
    binding = _binding(container)
    if binding is None:
        return None
    config = record.recorded_config(container.labels, None)
    return url_for(engine, binding[0], binding[1], config.get("host_address"))


def last_logs(container: Container, lines: int = 40) -> str:
    try:
        return container.logs(tail=lines).decode(errors="replace").rstrip()
    except docker.errors.APIError:
        return "(no logs)"


UNREACHABLE_GRACE = 15.0
PING_INTERVAL = 0.05  # wait_ready: how often /ping is asked
STATE_INTERVAL = 0.5  # and the engine about the container


def out_of_memory(container: Container, since: float | None = None) -> bool:
    """Whether the kernel killed a process of the container at its memory limit.

    The engine's ``State.OOMKilled`` says so only until the container restarts, and not when
    the process killed was a worker rather than PID 1; the ``oom`` event the engine keeps
    among its recent events says so in every case, also once the container is gone.
    """
    if (container.attrs.get("State") or {}).get("OOMKilled"):
        return True
    if since is None:
        created = container.attrs.get("Created", "")[:19]
        try:
            since = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=timezone.utc).timestamp()
        except ValueError:
            return False
    try:
        # ``until`` now, to the fraction: the engine holds the answer open until ``until``
        # passes, and this runs for every running replica on every get and readiness poll.
        events = container.client.events(since=int(since), until=time.time(),
                                         filters={"container": container.id, "event": "oom"})
        return any(True for _ in events)
    except docker.errors.APIError:
        return False


def exit_reason(container: Container) -> str | None:
    """Why a container stopped (or restarted), or lost a server process: out of memory, named
    as such with the key that sets the limit, else its exit code; ``None`` while it runs as
    started. The server replaces a worker the kernel killed, so a container may run on after
    an out-of-memory kill; that is reported too, since the request it served was lost."""
    state = container.attrs.get("State") or {}
    restarts = container.attrs.get("RestartCount", 0)
    as_started = state.get("Status") not in ("exited", "dead", "restarting") and not restarts
    limit = (container.attrs.get("HostConfig") or {}).get("Memory") or 0
    if out_of_memory(container):
        where = f"its memory limit of {limit // 1024**2} MiB" if limit else "the host's memory"
        replaced = " and the server replaced it" if as_started else ""
        return f"out of memory: a process was killed at {where}{replaced}; raise -C memory"
    if as_started:
        return None
    if state.get("Status") == "running":
        return f"restarted {restarts} time(s); the last exit had code {state.get('ExitCode')}"
    return f"exited with code {state.get('ExitCode')}"


def raise_if_exited(container: Container) -> None:
    """Fail with the container's last log lines once it has exited or restarted; an
    out-of-memory kill is named as such."""
    why = exit_reason(container)
    if why is not None:
        raise MlflowException(
            f"The server in container {container.name} stopped before it was ready ({why}). "
            f"Its last log lines:\n{last_logs(container)}")


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # the endpoint is the engine's host, never a proxy's
    return session


def wait_ready(engine: Engine, container: Container, deadline_seconds: float) -> str:
    """Block until a container's published server answers ``/ping`` with 200; return its URL.

    Fails early when the container exits or restarts, with its last log lines, and when the
    engine reports the server healthy but this machine cannot reach its port.
    """
    deadline = time.monotonic() + deadline_seconds
    session = _session()
    healthy_since: float | None = None
    failure = ""
    url: str | None = None
    checked = 0.0
    while True:
        # /ping is cheap and polled often (a start is seconds: 0.2 s steps cost 5% of it); the
        # engine is asked about the container, its state and its out-of-memory events, less.
        if time.monotonic() - checked >= STATE_INTERVAL or url is None:
            checked = time.monotonic()
            try:
                container.reload()
            except docker.errors.NotFound:  # run-local's container is removed as it exits
                why = " out of memory (raise -C memory)" if out_of_memory(container) else ""
                raise MlflowException(f"The server in container {container.name} exited{why} "
                                      "before it was ready; its output is above.") from None
            raise_if_exited(container)
            url = published_url(engine, container) if container.status == "running" else None
            if (container.attrs["State"].get("Health") or {}).get("Status") == "healthy":
                healthy_since = healthy_since or time.monotonic()
                if time.monotonic() - healthy_since > min(UNREACHABLE_GRACE, deadline_seconds):
                    raise _unreachable(container.name, url, failure)
        if url:
            try:
                if session.get(f"{url}/ping", timeout=2).status_code == 200:
                    return url
            except requests.RequestException as exc:
                failure = str(exc)
        if time.monotonic() > deadline:
            raise MlflowException(
                f"The server in container {container.name} was not ready after "
                f"{deadline_seconds:g} s (config ready_timeout). Its last log lines:\n"
                f"{last_logs(container)}")
        time.sleep(PING_INTERVAL)


def check_reachable(url: str, server: str, grace: float = UNREACHABLE_GRACE) -> None:
    """``url`` answers ``/ping`` with 200 from this machine within ``grace`` seconds."""
    session = _session()
    deadline = time.monotonic() + grace
    failure = ""
    while time.monotonic() < deadline:
        try:
            answer = session.get(f"{url}/ping", timeout=2)
            if answer.status_code == 200:
                return
            failure = f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            failure = str(exc)
        time.sleep(0.2)
    raise _unreachable(server, url, failure)


def _unreachable(server: str, url: str | None, failure: str) -> MlflowException:
    return MlflowException(
        f"The server in container {server} is ready on the engine, but {url} cannot be reached "
        f"from here ({failure or 'no answer'}). Check that a firewall lets the port through, or "
        "set -C bind_address (the address the port is published on) and -C host_address (the "
        "name clients reach it by).")


def remove(container: Container, stop_timeout: int) -> None:
    """Stop (letting in-flight requests finish) and remove; already gone is fine."""
    try:
        container.stop(timeout=stop_timeout)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        log.warning("Stopping %s failed (%s); removing it by force", container.name, exc)
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        # an auto-removed container (run-local) is being removed by the engine already
        if exc.status_code != 409 or "already in progress" not in str(exc.explanation):
            raise
