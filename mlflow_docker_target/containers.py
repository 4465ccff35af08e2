"""Serving containers: start, wait until ready, describe, remove.

The engine is the only state. Each container carries labels naming its deployment, the model as
given and as resolved, the image, the config and the plugin version; ``list`` and ``get`` read
them back, so any client talking to the same engine sees the same deployments.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target.config import CONNECTION_KEYS, MASK, SECRET_KEYS, Settings, redacted
from mlflow_docker_target.engine import Engine
from mlflow_docker_target.image_build import LABEL
from mlflow_docker_target.model_fetch import PYFUNC, ModelRef
from serving_image.settings import ServerSettings

log = logging.getLogger(__name__)

CONTAINER_PORT = "8080/tcp"
DEPLOYMENT = f"{LABEL}.deployment"
LOCAL_RUN = f"{LABEL}.run-local"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise MlflowException(
            f"Invalid deployment name {name!r}: use 1-63 letters, digits, '_', '.' or '-', "
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

    def labels(self) -> dict[str, str]:
        labels = {
            DEPLOYMENT: self.deployment,
            f"{LABEL}.model-uri": self.model.uri,
            f"{LABEL}.model-resolved-uri": self.model.resolved_uri,
            f"{LABEL}.model-name": self.model.name or "",
            f"{LABEL}.model-version": self.model.version or "",
            f"{LABEL}.run-id": self.model.run_id or "",
            f"{LABEL}.flavor": PYFUNC,
            f"{LABEL}.image": self.image,
            # secrets stay in the container's environment, out of labels; how this client
            # reached the engine is no part of the deployment
            f"{LABEL}.config": json.dumps({k: (MASK if k in SECRET_KEYS else v)
                                           for k, v in self.config.items()
                                           if k not in CONNECTION_KEYS}, sort_keys=True),
            f"{LABEL}.plugin-version": self.plugin_version,
        }
        if self.local_run:
            labels[LOCAL_RUN] = "true"
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
        ).to_env()
        server.pop("SCORING_WORKERS")  # the server counts the CPUs its container may use
        if self.settings.workers:
            server["SCORING_WORKERS"] = str(self.settings.workers)
        return {**self.settings.env, **server}


def _restart_policy(value: str) -> dict[str, Any]:
    name, _, count = value.partition(":")
    policy: dict[str, Any] = {"Name": name}
    if count:
        policy["MaximumRetryCount"] = int(count)
    return policy


def start(engine: Engine, spec: Spec, host_port: int | None) -> Container:
    """Create and start a container; ``host_port=None`` publishes on a free port."""
    name = f"mlflow-{spec.deployment}-{secrets.token_hex(3)}"
    settings = spec.settings
    kwargs: dict[str, Any] = {}
    if settings.cpus:
        kwargs["nano_cpus"] = int(settings.cpus * 1e9)
    if settings.memory:
        kwargs["mem_limit"] = settings.memory
    policy = "no" if spec.local_run else settings.restart_policy
    # A remote engine's loopback is out of this machine's reach.
    bind = settings.bind_address or ("127.0.0.1" if engine.is_local else "0.0.0.0")
    try:
        return engine.client.containers.run(
            spec.image, detach=True, name=name, labels=spec.labels(),
            environment=spec.environment(), init=settings.init,
            ports={CONTAINER_PORT: (bind, host_port)},
            restart_policy=_restart_policy(policy), stop_signal="SIGTERM", **kwargs,
        )
    except docker.errors.APIError as exc:
        # created but not started (a port already taken, say): leave nothing behind
        with contextlib.suppress(docker.errors.NotFound):
            engine.client.containers.get(name).remove(force=True)
        raise MlflowException(
            f"Could not start a container for {spec.deployment!r} from {spec.image}: "
            f"{exc.explanation or exc}") from None


def _binding(container: Container) -> tuple[str, int] | None:
    """Host address and port the server's port is published on (the IPv4 binding first)."""
    bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(CONTAINER_PORT)
    ordered = sorted(bindings or [], key=lambda b: ":" in b.get("HostIp", ""))
    for binding in ordered:
        return binding.get("HostIp", ""), int(binding["HostPort"])
    return None


def host_port(container: Container) -> int | None:
    binding = _binding(container)
    return binding[1] if binding else None


def endpoint_url(engine: Engine, container: Container) -> str | None:
    """The URL clients reach the server by: ``host_address`` if configured, else the address
    the port is bound to, else (all interfaces, or loopback) the engine's host."""
    binding = _binding(container)
    if binding is None:
        return None
    bound, port = binding
    config = json.loads(container.labels.get(f"{LABEL}.config", "{}"))
    host = config.get("host_address")
    if not host:
        address = ipaddress.ip_address(bound) if bound else None
        specific = address is not None and not (address.is_unspecified or address.is_loopback)
        host = bound if specific else engine.host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def last_logs(container: Container, lines: int = 40) -> str:
    try:
        return container.logs(tail=lines).decode(errors="replace").rstrip()
    except docker.errors.APIError:
        return "(no logs)"


UNREACHABLE_GRACE = 15.0


def wait_ready(engine: Engine, container: Container, deadline_seconds: float) -> str:
    """Block until the server answers ``/ping`` with 200; return its endpoint URL.

    Fails early when the container exits or restarts, with its last log lines, and when the
    engine reports the server healthy but this machine cannot reach its port.
    """
    deadline = time.monotonic() + deadline_seconds
    session = requests.Session()
    session.trust_env = False  # the endpoint is the engine's host, never a proxy's
    healthy_since: float | None = None
    failure = ""
    while True:
        container.reload()
        state = container.attrs["State"]
        if state["Status"] in ("exited", "dead", "restarting") or container.attrs.get(
                "RestartCount", 0) > 0:
            raise MlflowException(
                f"The server in container {container.name} exited (code {state.get('ExitCode')}) "
                f"before it was ready. Its last log lines:\n{last_logs(container)}")
        url = endpoint_url(engine, container)
        if url and state["Status"] == "running":
            try:
                if session.get(f"{url}/ping", timeout=2).status_code == 200:
                    return url
            except requests.RequestException as exc:
                failure = str(exc)
        if (state.get("Health") or {}).get("Status") == "healthy":
            healthy_since = healthy_since or time.monotonic()
            if time.monotonic() - healthy_since > min(UNREACHABLE_GRACE, deadline_seconds):
                raise MlflowException(
                    f"The server in container {container.name} is healthy on the engine, but "
                    f"{url} cannot be reached from here ({failure or 'no answer'}). Check that "
                    "a firewall lets the port through, or set -C bind_address (the address the "
                    "port is published on) and -C host_address (the name clients reach it by).")
        if time.monotonic() > deadline:
            raise MlflowException(
                f"The server in container {container.name} was not ready after "
                f"{deadline_seconds:g} s (config ready_timeout). Its last log lines:\n"
                f"{last_logs(container)}")
        time.sleep(0.2)


def remove(container: Container, stop_timeout: int) -> None:
    """Stop (letting in-flight requests finish) and remove; already gone is fine."""
    try:
        container.stop(timeout=stop_timeout)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        log.warning("Stopping %s failed (%s); removing it by force", container.name, exc)
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)


def find(engine: Engine, deployment: str | None = None) -> list[Container]:
    """Managed containers, newest first; local runs are not deployments."""
    label = f"{DEPLOYMENT}={deployment}" if deployment else DEPLOYMENT
    found = engine.client.containers.list(all=True, filters={"label": label})
    found = [c for c in found if c.labels.get(LOCAL_RUN) != "true"]
    return sorted(found, key=lambda c: c.attrs.get("Created", ""), reverse=True)


def describe(engine: Engine, container: Container) -> dict[str, Any]:
    """A deployment as ``get``/``list`` report it, read back from the container's labels."""
    labels = container.labels
    health = (container.attrs.get("State", {}).get("Health") or {}).get("Status")
    return {
        "name": labels[DEPLOYMENT],
        "flavor": labels.get(f"{LABEL}.flavor", PYFUNC),
        "endpoint": endpoint_url(engine, container),
        "status": container.status,
        "health": health,
        "model_uri": labels.get(f"{LABEL}.model-uri"),
        "resolved_model_uri": labels.get(f"{LABEL}.model-resolved-uri"),
        "model_name": labels.get(f"{LABEL}.model-name") or None,
        "model_version": labels.get(f"{LABEL}.model-version") or None,
        "run_id": labels.get(f"{LABEL}.run-id") or None,
        "image": labels.get(f"{LABEL}.image"),
        "container": container.name,
        "config": redacted(recorded_config(container)),
        "created": container.attrs.get("Created"),
        "plugin_version": labels.get(f"{LABEL}.plugin-version"),
    }


def recorded_config(container: Container) -> dict[str, str]:
    """The config a deployment was made with, for ``update`` to build on (secrets included)."""
    config: dict[str, str] = json.loads(container.labels.get(f"{LABEL}.config", "{}"))
    if config.get("auth_token") == MASK:
        config["auth_token"] = auth_token(container) or ""
    return config


def auth_token(container: Container) -> str | None:
    """The bearer token a deployment's server requires, from the container's environment."""
    for entry in container.attrs.get("Config", {}).get("Env") or []:
        name, _, value = entry.partition("=")
        if name == "SCORING_AUTH_TOKEN":
            return value
    return None
