"""Serving containers on one engine: start one, wait for it, say why it stopped, remove it.

Shared by the container runtime (replicas behind a front) and ``run-local`` (one container on a
published port). What a container records about its deployment is ``record``'s business.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from mlflow.exceptions import MlflowException

from mlflow_docker_target import record
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.containers import list_containers
from mlflow_docker_target.engine.times import engine_time
from mlflow_docker_target.runtimes import payload_log, reach
from mlflow_docker_target.runtimes.container import gpus
from mlflow_docker_target.runtimes.server_spec import Spec
from serving_image.contract import HEALTHCHECK, HEALTHCHECK_BEHIND_FRONT, SERVER_PORT

log = logging.getLogger(__name__)

CONTAINER_PORT = f"{SERVER_PORT}/tcp"
PROBE_INTERVAL = 0.25


def servers(client: docker.DockerClient, deployment: str | None = None,
            endpoint: str | None = None) -> list[Container]:
    """A deployment's serving containers (or a shared endpoint's, or every deployment's),
    newest first; local runs and containers of other roles left out."""
    if endpoint is not None:
        label = f"{record.ENDPOINT}={endpoint}"
    else:
        label = f"{record.DEPLOYMENT}={deployment}" if deployment else record.DEPLOYMENT
    found = list_containers(client, label)
    found = [c for c in found if c.labels.get(record.LOCAL_RUN) != "true"
             and c.labels.get(record.ROLE) == record.SERVER]
    return sorted(found, key=lambda c: c.attrs.get("Created", ""), reverse=True)


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
        kwargs["ports"] = {CONTAINER_PORT: (reach.bind_address(engine, settings), host_port)}
    if spec.local_run:  # the engine removes it when it ends, however the client ends
        kwargs["auto_remove"] = True
    policy = "no" if spec.local_run else settings.restart_policy
    kwargs.update(lockdown.container_options(settings.hardened, settings.pids_limit))
    try:
        return engine.client.containers.run(
            spec.image, detach=True, name=name, labels=spec.labels(),
            environment=spec.environment(replica=name), mounts=spec.mounts(),
            init=settings.init,
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


def published_url(engine: Engine, container: Container) -> str | None:
    """The URL of a container's own published port (run-local's)."""
    binding = _binding(container)
    if binding is None:
        return None
    config = record.recorded_config(container.labels, None)
    return reach.url_for(engine, binding[0], binding[1], config.get("host_address"))


STARTUP_LOGS = timedelta(minutes=2)  # what a server says at start: where sink warnings are


def sink_warning(container: Container, config: Mapping[str, str]) -> str | None:
    """The server's warning that its inference log's HTTP sink was unreachable at start (read
    from the first minutes of its log; ``None`` when it has no such sink)."""
    if not payload_log.posts(config):
        return None
    since = engine_time((container.attrs.get("State") or {}).get("StartedAt", ""))
    if since is None:
        return None
    try:
        logs = container.logs(since=since, until=since + STARTUP_LOGS)
    except docker.errors.APIError:
        return None
    return payload_log.sink_warning(logs.decode(errors="replace"))


def last_logs(container: Container, lines: int = 40) -> str:
    try:
        return container.logs(tail=lines).decode(errors="replace").rstrip()
    except docker.errors.APIError:
        return "(no logs)"


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
        created = engine_time(container.attrs.get("Created", ""))
        if created is None:
            return False
        since = created.timestamp()
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


def wait_ready(engine: Engine, container: Container, deadline_seconds: float) -> str:
    """Block until a container's published server answers ``/ping`` with 200; return its URL.

    Fails early when the container exits or restarts, with its last log lines, and when the
    engine reports the server healthy but this machine cannot reach its port.
    """
    deadline = time.monotonic() + deadline_seconds
    session = reach.new_session()
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
                grace = min(reach.UNREACHABLE_GRACE, deadline_seconds)
                if time.monotonic() - healthy_since > grace:
                    raise reach.unreachable(container.name, url, failure)
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


def wait_probe(container: Container, deadline: float, behind_front: bool) -> None:
    """Until the server says it is ready (and, ``behind_front``, a front has seen it so), asked
    inside the container: a replica publishes no port."""
    command = HEALTHCHECK_BEHIND_FRONT if behind_front else HEALTHCHECK
    while True:
        container.reload()
        raise_if_exited(container)
        if container.status == "running":
            with contextlib.suppress(docker.errors.APIError):
                if container.exec_run(command).exit_code == 0:
                    return
        if time.monotonic() > deadline:
            what = "seen by the endpoint's front" if behind_front else "ready"
            raise MlflowException(
                f"The server in container {container.name} was not {what} in time (config "
                f"ready_timeout). Its last log lines:\n{last_logs(container)}")
        time.sleep(PROBE_INTERVAL)


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
