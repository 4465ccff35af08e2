"""Which Docker engine a target URI means, and a client connected to it.

Precedence follows Docker's own: the engine named in the target URI (an engine URL such as
``unix:///var/run/docker.sock`` or ``tcp://host:2376``, or a Docker context name), then
``DOCKER_HOST`` / ``DOCKER_CONTEXT``, then the current Docker context, then the local socket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

import docker
import docker.errors
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

TARGET_NAME = "dockerhost"
_ENGINE_SCHEMES = ("unix", "tcp", "ssh", "npipe", "http", "https")


def engine_from_target(target_uri: str) -> str | None:
    """The engine part of ``dockerhost``, ``dockerhost:/`` or ``dockerhost:/<engine>``.

    Returns ``None`` when the target names no engine, so the environment decides.
    """
    parsed = urlparse(target_uri)
    if not parsed.scheme:
        if target_uri.strip() != TARGET_NAME:
            raise _bad_target(target_uri)
        return None
    if parsed.scheme != TARGET_NAME:
        raise _bad_target(target_uri)
    suffix = target_uri.split(":", 1)[1].lstrip("/")
    if not suffix:
        return None
    if "://" in suffix:
        scheme = suffix.split("://", 1)[0].lower()
        if scheme not in _ENGINE_SCHEMES:
            raise _bad_target(target_uri)
    return suffix


def _bad_target(target_uri: str) -> MlflowException:
    return MlflowException(
        f"Not a dockerhost target: {target_uri!r}. Use 'dockerhost' (DOCKER_HOST or the current "
        "Docker context), 'dockerhost:/unix:///var/run/docker.sock', "
        "'dockerhost:/tcp://host:2376', 'dockerhost:/ssh://user@host' or "
        "'dockerhost:/<docker context name>'.",
        INVALID_PARAMETER_VALUE,
    )


@dataclass(frozen=True)
class Engine:
    """A connected engine and what the plugin needs to know about where it runs."""

    client: docker.DockerClient
    url: str

    @property
    def is_local(self) -> bool:
        """A unix socket or named pipe means the engine runs on this machine."""
        return self.url.startswith(("unix://", "npipe://"))

    @property
    def host(self) -> str:
        """Host name clients use to reach ports the engine publishes."""
        if self.is_local:
            return "127.0.0.1"
        return urlparse(self.url).hostname or "127.0.0.1"


def engine_url(engine: str | None) -> str:
    """The URL an engine reference stands for, resolved the way the Docker CLI does."""
    if engine and "://" in engine:
        return engine
    if engine is None and os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    try:
        context = docker.ContextAPI.get_context(engine or os.environ.get("DOCKER_CONTEXT"))
    except docker.errors.DockerException:
        context = None
    if context is None and engine is not None:
        raise MlflowException(
            f"No Docker context named {engine!r}; `docker context ls` lists the ones there are.",
            INVALID_PARAMETER_VALUE,
        )
    return (context.Host if context else None) or "unix:///var/run/docker.sock"


def connect(engine: str | None, timeout: float = 60.0) -> Engine:
    """Connect to ``engine`` (URL or context name) or, when ``None``, to the environment's.

    The client asks the engine for its version on construction, so an engine that is down
    fails here, within ``timeout``, with a message that names it.
    """
    url = engine_url(engine)
    try:
        if engine is None:
            client = docker.DockerClient.from_env(timeout=int(timeout))
        elif "://" in engine:
            client = docker.DockerClient(base_url=engine, timeout=int(timeout))
        else:
            client = docker.DockerClient.from_context(engine, timeout=int(timeout))
    except docker.errors.DockerException as exc:
        raise MlflowException(
            f"Cannot reach the Docker engine at {url}: {exc}. Check that the engine is "
            "running and that this user may use it (on this project's machines `make engine` "
            "starts one), or point DOCKER_HOST or the target URI at another engine."
        ) from None
    return Engine(client=client, url=url)
