"""Where deployments run: the runtime interface, and the table of runtimes that implement it.

``interface`` is the seam: the client calls only what it declares. Beside it, what every runtime
shares: ``lease`` (one writer per name), ``haproxy`` (the front's configuration), ``fronts``
(what a front routes to, and the errors of making one), ``server_spec`` (what a serving
container or task is started from) and ``reach`` (the URL clients use, and whether it answers).
Each runtime is a package: ``container`` (containers on one engine) and ``swarm`` (services on
the swarm an engine manages). A new runtime is a new package and one entry in :data:`RUNTIMES`.

Several runtimes can hold deployments on one engine (a swarm manager also runs containers), so
commands on what exists ask every runtime the engine offers, and labels say which holds what.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.runtimes import container, swarm
from mlflow_docker_target.runtimes.interface import Runtime, RuntimeEntry

# In order of preference: a new deployment goes to the first one the engine offers.
RUNTIMES: dict[str, RuntimeEntry] = {entry.name: entry for entry in (swarm.ENTRY,
                                                                      container.ENTRY)}


def entry(name: str) -> RuntimeEntry:
    """The runtime ``-C runtime`` names."""
    found = RUNTIMES.get(name)
    if found is None:
        raise MlflowException(
            f"Invalid value {name!r} for config key 'runtime': expected "
            f"{' or '.join(RUNTIMES)} (default: the first the engine offers).",
            INVALID_PARAMETER_VALUE)
    return found


def runtime_for(info: Mapping[str, Any], wanted: str | None) -> RuntimeEntry:
    """The runtime for new deployments on an engine (its ``docker info``): ``wanted``, else
    the first the engine offers; one the engine cannot offer fails, saying why."""
    if wanted is None:
        return next(e for e in RUNTIMES.values() if e.unavailable(info) is None)
    found = entry(wanted)
    why = found.unavailable(info)
    if why is not None:
        raise MlflowException(f"-C runtime={found.name} {why}", INVALID_PARAMETER_VALUE)
    return found


def chosen(engine: Engine, settings: Settings) -> Runtime:
    """The runtime that makes new deployments and endpoints (``-C runtime``, or the default)."""
    info = engine.client.info()
    return runtime_for(info, settings.runtime).make(engine, info)


def every(engine: Engine) -> list[Runtime]:
    """Every runtime that may hold deployments on the engine, in the table's order."""
    info = engine.client.info()
    return [e.make(engine, info) for e in RUNTIMES.values() if e.unavailable(info) is None]
