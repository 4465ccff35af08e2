"""Which runtime an engine gets, and the Swarm names of deployments.

An engine that is an active Swarm manager runs deployments as services, any other as plain
containers; ``-C runtime`` overrides that. Deployment names may hold ``_`` and ``.`` and run
to 63 characters; a service name, which is also a DNS name on the overlay (``tasks.<name>``),
may not: names that must change get a short hash of the original so that two deployments
never map to one service, and the original is kept in the service's labels.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

SWARM, CONTAINER = "swarm", "container"
PREFIX = "mlflow-"
MAX_SERVICE_NAME = 63
_NOT_ALLOWED = re.compile(r"[^a-z0-9-]")


def runtime_for(info: Mapping[str, Any], chosen: str | None) -> str:
    """``swarm`` when the engine manages an active swarm (or ``chosen`` says so), else
    ``container``; asking for ``swarm`` on an engine that cannot run services fails."""
    swarm = info.get("Swarm") or {}
    manager = swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))
    if chosen == CONTAINER or (chosen is None and not manager):
        return CONTAINER
    if not manager:
        state = swarm.get("LocalNodeState") or "inactive"
        role = " as a worker" if state == "active" else ""
        raise MlflowException(
            f"-C runtime=swarm needs an engine that manages a swarm; this one's swarm state is "
            f"{state}{role}. Point the target at a manager (docker node ls shows them), or "
            "leave runtime out to run containers on this engine.", INVALID_PARAMETER_VALUE)
    return SWARM


def service_name(deployment: str, role: str = "") -> str:
    """The Swarm service name of a deployment (``role``: ``front`` for its proxy)."""
    stem = _NOT_ALLOWED.sub("-", deployment.lower())
    suffix = f"-{role}" if role else ""
    changed = stem != deployment
    room = MAX_SERVICE_NAME - len(PREFIX) - len(suffix)
    if changed or len(stem) > room:
        digest = hashlib.sha256(deployment.encode()).hexdigest()[:8]
        stem = f"{stem[:room - 9].rstrip('-')}-{digest}"
    return f"{PREFIX}{stem}{suffix}"
