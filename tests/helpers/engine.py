"""What the tests read off a real engine: a deployment's containers, its front, the packages
in an image, a model's environment image; and removing what a test left behind."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import docker

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import connect
from mlflow_docker_target.image_build import model_fetch
from mlflow_docker_target.image_build.environment import ensure_environment
from mlflow_docker_target.record import DEPLOYMENT as LABEL
from mlflow_docker_target.record import ENDPOINT, FRONT_OF, ROLE
from mlflow_docker_target.runtimes import lease

__all__ = ["ENDPOINT", "FRONT_OF", "LABEL", "ROLE", "environment_image", "front_of", "installed_in",
           "remove_leftovers", "servers"]


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


def environment_image(model_uri: str) -> str:
    """The tag of the environment image that serves ``model_uri`` on the local engine, built
    by the plugin when missing: the image another engine can be given instead of a build."""
    engine = connect(None)
    with tempfile.TemporaryDirectory(prefix="mlflow-dockerhost-test-") as tmp:
        model = model_fetch.fetch(model_fetch.resolve(model_uri), Path(tmp))
        return ensure_environment(engine, model, Settings(), lease.builds(engine))
