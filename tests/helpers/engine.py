"""What the tests read off a real engine: a deployment's containers, its front, the packages
in an image; and removing what a test left behind."""

from __future__ import annotations

from typing import Any

import docker

from mlflow_docker_target.record import DEPLOYMENT as LABEL
from mlflow_docker_target.record import ENDPOINT, FRONT_OF, ROLE

__all__ = ["ENDPOINT", "FRONT_OF", "LABEL", "ROLE", "front_of", "installed_in", "remove_leftovers",
           "servers"]


def servers(client: docker.DockerClient, name: str) -> list:
    """A deployment's serving containers."""
    found = client.containers.list(all=True, filters={"label": f"{LABEL}={name}"})
    return [c for c in found if c.labels.get(ROLE) == "server"]


def front_of(client: docker.DockerClient, name: str) -> Any:
    """A deployment's own front container, or ``None``."""
    found = client.containers.list(all=True, filters={"label": f"{FRONT_OF}={name}"})
    return found[0] if found else None


def installed_in(client: docker.DockerClient, image: str) -> set[str]:
    """Distribution names installed in an image's virtualenv."""
    out = client.containers.run(image, ["python3", "-c", (
        "import importlib.metadata as m; "
        "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))")],
        entrypoint=[], remove=True, network_disabled=True)
    return set(out.decode().split())


def remove_leftovers(client: docker.DockerClient, label: str) -> None:
    """Containers, networks, volumes and images a test left behind under ``label``
    (key=value)."""
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": label}):
        network.remove()
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    name = label.split("=", 1)[1]
    for image in client.images.list(f"mlflow-dockerhost/{name}"):
        client.images.remove(image.id, force=True)
