"""The controller as a Swarm service, on an engine that manages a swarm.

One replica, held on the manager whose client started it (a placement constraint on its node
ID): its image was built there and is in no registry, its volume (the ledger) is that node's,
and the client reads the ledger and runs its reach check in the task's container there. Swarm
restarts the task with the engine, or when it dies; it does not move it to another manager
(a manager that is lost takes the controller with it until it is back; serving is not
touched, as the controller only starts updates). It talks to that manager's engine, which
drives the swarm's deployments as a client's ``update`` does, and to a deployment on that
engine that runs as containers alike. It runs on the swarm's control network
(``runtimes.swarm.control_network``), not the host's, so that it reaches every replica's
metrics on any node; the registry and the tracking server it reaches through the overlay's
gateway, as any task reaches them.
"""

from __future__ import annotations

import contextlib
import time

import docker.errors
from docker.models.containers import Container
from docker.types import (
    ContainerSpec,
    Mount,
    Placement,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from mlflow_docker_target import record
from mlflow_docker_target.controller.home import Found, Start, environment_of
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.containers import list_containers
from mlflow_docker_target.runtimes.swarm import control_network
from mlflow_docker_target.runtimes.swarm.services import NS, tasks_of

SERVICE_ID = "com.docker.swarm.service.id"  # the label Swarm puts on a task's container
GONE_WAIT = 30  # seconds, after the stop wait, for a removed service's container to go


def _service(engine: Engine) -> dict | None:
    found = engine.client.api.services(
        filters={"label": f"{record.ROLE}={record.CONTROLLER}"})
    return found[0] if found else None


def _containers(engine: Engine, service_id: str, running: bool) -> list[Container]:
    """The service's task containers on this engine (only running ones if ``running``),
    newest first."""
    found = [c for c in list_containers(engine.client, f"{SERVICE_ID}={service_id}")
             if not running or c.status == "running"]
    return sorted(found, key=lambda c: c.attrs.get("Created", ""), reverse=True)


def find(engine: Engine) -> Found | None:
    service = _service(engine)
    if service is None:
        return None
    spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
    tasks = tasks_of(engine.client, service, running=False)  # newest first
    status = tasks[0]["Status"]["State"] if tasks else "pending"
    container = next(iter(_containers(engine, service["ID"], running=False)), None)
    return Found([spec["Image"].split("@")[0]], status, container,
                 environment_of(spec.get("Env")))


def start(engine: Engine, start: Start) -> None:
    node = engine.client.info()["Swarm"]["NodeID"]
    locked = lockdown.service_options()
    mounts = [*locked.pop("mounts", []),
              Mount(start.socket[1], start.socket[0], type="bind"),
              Mount(start.volume[1], start.volume[0], type="volume",
                    labels={record.ROLE: record.CONTROLLER})]
    spec = ContainerSpec(start.image, user="0:0", env=start.environment, mounts=mounts,
                         stop_grace_period=start.stop_wait * NS, **locked)
    template = TaskTemplate(
        spec, resources=lockdown.with_pids_limit({}, lockdown.HELPER_PIDS),
        restart_policy=RestartPolicy("any", delay=NS),
        placement=Placement(constraints=[f"node.id=={node}"]),
        networks=[control_network.NAME])
    control_network.ensure(engine.client)
    engine.client.api.create_service(template, name=start.name, labels=start.labels,
                                     mode=ServiceMode("replicated", replicas=1))


def remove(engine: Engine, stop_wait: int) -> None:
    service = _service(engine)
    if service is None:
        return
    with contextlib.suppress(docker.errors.NotFound):
        engine.client.api.remove_service(service["ID"])
    # Swarm stops the task after the service is gone: wait, so that a new controller never
    # acts beside the one still finishing a rollout
    deadline = time.monotonic() + stop_wait + GONE_WAIT
    while _containers(engine, service["ID"], running=True) and time.monotonic() < deadline:
        time.sleep(0.5)
    for container in _containers(engine, service["ID"], running=False):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
    control_network.remove_if_unused(engine.client)
