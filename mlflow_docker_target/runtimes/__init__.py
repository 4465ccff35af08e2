"""Which runtime holds a deployment or an endpoint: containers on the engine, or Swarm services.

An engine that manages an active swarm runs new deployments and endpoints as services, any
other as plain containers; ``-C runtime`` overrides that. Both can live on one manager (made
before ``docker swarm init``, or with ``-C runtime=container``), so commands on what exists ask
every runtime, and the labels say which holds what: no config is needed to find them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.runtimes.container import ContainerRuntime
from mlflow_docker_target.runtimes.interface import Runtime
from mlflow_docker_target.runtimes.swarm import SWARM, SwarmRuntime

CONTAINER = "container"


def _manager(info: Mapping[str, Any]) -> bool:
    swarm = info.get("Swarm") or {}
    return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))


def runtime_for(info: Mapping[str, Any], chosen: str | None) -> str:
    """``swarm`` when the engine manages an active swarm (or ``chosen`` says so), else
    ``container``; asking for ``swarm`` on an engine that cannot run services fails."""
    if chosen == CONTAINER or (chosen is None and not _manager(info)):
        return CONTAINER
    if not _manager(info):
        swarm = info.get("Swarm") or {}
        state = swarm.get("LocalNodeState") or "inactive"
        role = " as a worker" if state == "active" else ""
        raise MlflowException(
            f"-C runtime=swarm needs an engine that manages a swarm; this one's swarm state is "
            f"{state}{role}. Point the target at a manager (docker node ls shows them), or "
            "leave runtime out to run containers on this engine.", INVALID_PARAMETER_VALUE)
    return SWARM


def chosen(engine: Engine, settings: Settings) -> Runtime:
    """The runtime that makes new deployments and endpoints."""
    info = engine.client.info()
    if runtime_for(info, settings.runtime) == SWARM:
        return SwarmRuntime(engine, info)
    return ContainerRuntime(engine)


def every(engine: Engine) -> list[Runtime]:
    """Every runtime that may hold deployments on the engine: services first on a manager."""
    info = engine.client.info()
    found: list[Runtime] = [SwarmRuntime(engine, info)] if _manager(info) else []
    return [*found, ContainerRuntime(engine)]
