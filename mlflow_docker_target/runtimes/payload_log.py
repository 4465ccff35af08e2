"""The plugin's side of the inference log (``-C payload_log``): the volume sink's volume, and
the server's warning that its sink could not be reached, as ``get`` shows them.

The volume is one per deployment, shared by its replicas, mounted at ``PAYLOAD_LOG_DIR``.

The mount creates it, labelled, where a replica first starts: on one engine, once; on a swarm,
on each node that runs a replica (each node's volume holds the records of the replicas it ran).
It is data, so deleting the deployment keeps it unless ``-C remove_payload_log=true``; and
``mlflow-dockerhost prune --volumes`` removes those of deployments that are gone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import docker.errors
from docker.models.volumes import Volume
from docker.types import Mount
from mlflow.exceptions import MlflowException

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from serving_image.contract import PAYLOAD_LOG_DIR, PAYLOAD_LOG_VOLUME, PAYLOAD_SINK_UNREACHABLE


def volume_name(deployment: str) -> str:
    return f"mlflow-dockerhost-payload-log-{deployment}"


def labels(deployment: str) -> dict[str, str]:
    return {record.DEPLOYMENT: deployment, record.ROLE: record.PAYLOAD_LOG}


def mounts(deployment: str, settings: Settings) -> list[Mount]:
    """The replicas' mount of the volume, when the log goes to one."""
    if settings.payload_log != PAYLOAD_LOG_VOLUME:
        return []
    return [Mount(PAYLOAD_LOG_DIR, volume_name(deployment), type="volume",
                  labels=labels(deployment))]


IN_USE_WAIT = 10.0  # seconds a volume may stay in use by replicas that are going


def remove_volume(engine: Engine, deployment: str) -> None:
    """Remove the deployment's volume on this engine (on a swarm: this node's), if it has one."""
    deadline = time.monotonic() + IN_USE_WAIT
    while True:
        try:
            engine.client.volumes.get(volume_name(deployment)).remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or time.monotonic() > deadline:
                raise MlflowException(
                    f"Could not remove the inference log volume {volume_name(deployment)}: "
                    f"{exc.explanation or exc}. Remove it with `docker volume rm` once "
                    "nothing uses it.") from exc
            time.sleep(0.5)


def volumes(engine: Engine) -> list[Volume]:
    """Every inference log volume on this engine."""
    return engine.client.volumes.list(filters={"label": f"{record.ROLE}={record.PAYLOAD_LOG}"})


def deployment_of(volume: Volume) -> str:
    return (volume.attrs.get("Labels") or {}).get(record.DEPLOYMENT, "")


def posts(config: Mapping[str, str]) -> bool:
    """Whether the deployment's inference log goes to an HTTP sink: the one kind whose
    server warns at start that it cannot reach it."""
    return (config.get("payload_log") or "").startswith(("http://", "https://"))


def sink_warning(logs: str) -> str | None:
    """The server's warning that its sink could not be reached at start, from its log."""
    for line in logs.splitlines():
        if PAYLOAD_SINK_UNREACHABLE in line:
            return line[line.index(PAYLOAD_SINK_UNREACHABLE):].strip()
    return None


def describe(deployment: str, config: Mapping[str, str],
             warning: str | None) -> dict[str, Any]:
    """What ``get`` shows of a deployment's inference log: where it goes, and any warning."""
    sink = config.get("payload_log")
    if not sink:
        return {}
    shown: dict[str, Any] = {"sink": sink}
    if sink == PAYLOAD_LOG_VOLUME:
        shown["volume"] = volume_name(deployment)
    if warning:
        shown["warning"] = warning
    return {"payload_log": shown}
