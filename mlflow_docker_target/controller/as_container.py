"""The controller as a container of one engine (an engine that is not a swarm manager).

A fixed name, so that two clients cannot start two. It restarts with the engine
(``unless-stopped``: a ``docker stop`` by hand is left alone until the next ``create`` or
``update`` that needs it).
"""

from __future__ import annotations

import contextlib

import docker.errors
from docker.models.containers import Container

from mlflow_docker_target import record
from mlflow_docker_target.controller.home import Found, Start, environment_of
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.containers import list_containers


def _container(engine: Engine) -> Container | None:
    found = list_containers(engine.client, f"{record.ROLE}={record.CONTROLLER}")
    return found[0] if found else None


def find(engine: Engine) -> Found | None:
    found = _container(engine)
    if found is None:
        return None
    return Found(found.image.tags, found.status, found,
                 environment_of(found.attrs["Config"].get("Env")))


def start(engine: Engine, start: Start) -> None:
    volume = engine.client.volumes.create(start.volume[0],
                                          labels={record.ROLE: record.CONTROLLER})
    engine.client.containers.run(
        start.image, name=start.name, detach=True, user="0:0", labels=start.labels,
        environment=start.environment, restart_policy={"Name": "unless-stopped"},
        network_mode="host",
        volumes={start.socket[0]: {"bind": start.socket[1], "mode": "rw"},
                 volume.name: {"bind": start.volume[1], "mode": "rw"}},
        **lockdown.container_options())


def remove(engine: Engine, stop_wait: int) -> None:
    found = _container(engine)
    if found is None:
        return
    with contextlib.suppress(docker.errors.NotFound):
        found.stop(timeout=stop_wait)
        found.remove(force=True)
