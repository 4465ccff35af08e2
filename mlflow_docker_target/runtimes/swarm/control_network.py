"""The overlay network through which the controller reads a swarm's replicas.

A canary is judged by what each version's replicas served, read from their own ``/metrics``
(``controller.replica_metrics``). On one engine the controller reaches them on the default
bridge; on a swarm they run on other nodes, reachable only through an overlay. Every
deployment's service is attached to this one network besides its front's, from its first
task (attaching it when a canary starts would restart the current version's tasks), and the
controller's service is attached to it alone. Nothing on it listens but the replicas' servers,
which every front already reaches through the published ports; the controller listens on
nothing. It stays while any deployment's service or the controller uses it.
"""

from __future__ import annotations

import contextlib
import time

import docker
import docker.errors

from mlflow_docker_target import record
from mlflow_docker_target.runtimes.swarm import services

NAME = "mlflow-dockerhost-control"
LET_GO_WAIT = 20  # seconds Swarm is given to let go of the network after its last task


def ensure(client: docker.DockerClient) -> None:
    """Make the network unless the swarm has it (two clients at once make it once)."""
    if _found(client):
        return
    try:
        client.networks.create(NAME, driver="overlay", check_duplicate=True,
                               labels={record.ROLE: record.CONTROLLER})
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: made meanwhile
            raise


def remove_if_unused(client: docker.DockerClient) -> None:
    """Remove the network once no service names it. Swarm lets go of it a moment after the
    last task on it has left, so it is asked again until then, for a while; one still held
    after that (or named again meanwhile) stays until the next removal."""
    deadline = time.monotonic() + LET_GO_WAIT
    while time.monotonic() < deadline:
        found = _found(client)
        ids = {NAME, *(n.id for n in found)}  # a service names a network by its ID
        if not found or any(attached.get("Target") in ids for service in client.api.services()
                            for attached in service["Spec"]["TaskTemplate"].get("Networks")
                            or []):
            return
        for network in found:
            with contextlib.suppress(docker.errors.APIError):  # NotFound: gone meanwhile
                network.remove()
        time.sleep(services.POLL)


def _found(client: docker.DockerClient) -> list[docker.models.networks.Network]:
    """The network by its exact name (the engine's filter matches a part of it)."""
    return [n for n in client.networks.list(names=[NAME]) if n.name == NAME]
