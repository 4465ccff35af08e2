"""What the plugin built on an engine and nothing uses any more, and reclaiming it.

Inference log volumes of deployments that are gone are listed too (``orphaned_volumes``); they
are data, so the command removes them only when asked (``--volumes``).

Only images the plugin built are candidates (labelled ``kind``: model, environment, system,
controller, or a build's ``stage``); base, proxy and strip images, and the lease image, never
are. An image that a container (running or not) or a Swarm service uses stays. While a client
holds a lease (a create, an update or a build at work), the images such a client may be about
to use stay too: that deployment's model images, and every environment, system and build-stage
image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from docker.models.images import Image
from docker.models.volumes import Volume

from mlflow_docker_target import record
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.containers import list_containers
from mlflow_docker_target.engine.images import list_images
from mlflow_docker_target.image_build.model_image import image_repository
from mlflow_docker_target.runtimes import lease, payload_log
from mlflow_docker_target.runtimes.swarm import manages_swarm


@dataclass(frozen=True)
class Unused:
    image: Image
    why: str  # what it is, for the listing

    @property
    def name(self) -> str:
        return ", ".join(self.image.tags) or self.image.short_id

    @property
    def size(self) -> int:
        return int(self.image.attrs.get("Size") or 0)


def _in_use(engine: Engine) -> tuple[set[str], set[str]]:
    """Image IDs and names that containers and (on a manager) services use."""
    client = engine.client
    ids = {c.attrs.get("Image", "") for c in list_containers(client)}
    names: set[str] = set()
    if manages_swarm(engine.client.info()):  # its services count too
        for service in client.api.services():
            labels = service["Spec"].get("Labels") or {}
            names.add(labels.get(record.IMAGE, ""))
            names.add(service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0])
    return ids, names - {""}


def unused(engine: Engine, leases: set[str]) -> Iterator[Unused]:
    """What can go, in the order it can: model images, then the environments no model image
    is left on, then the system images no environment is left on, then build stages.
    ``leases``: those held now (``lease.held``)."""
    client = engine.client
    ids, names = _in_use(engine)

    def used(image: Image) -> bool:
        return image.id in ids or bool(set(image.tags) & names)

    models = list_images(client, f"{record.KIND}=model")
    busy = {image_repository(name) for name in lease.leased(leases, "deployment")}
    going = []
    for image in models:
        held = any(tag.rpartition(":")[0] in busy for tag in image.tags)
        if not used(image) and not held:
            going.append(image)
            yield Unused(image, "model image no deployment uses")
    if lease.at_work(leases):
        return  # a client at work may be about to use any of what follows
    kept = {image.labels.get(record.ENVIRONMENT) for image in models if image not in going}
    environments = list_images(client, f"{record.KIND}=environment")
    left = []
    for image in environments:
        if set(image.tags) & kept or used(image):
            left.append(image)
        else:
            yield Unused(image, "environment no model image is built on")
    bases = {image.labels.get(record.BASE_IMAGE) for image in left}
    for image in list_images(client, f"{record.KIND}=system"):
        if not set(image.tags) & bases and not used(image):
            yield Unused(image, "base with system packages no environment is built on")
    for image in list_images(client, f"{record.STAGE}=build"):
        yield Unused(image, "stage of a build that ended")
    for image in list_images(client, f"{record.KIND}=controller"):
        if not used(image):
            yield Unused(image, "controller image no controller runs")


def _deployments(engine: Engine) -> set[str]:
    """Names of the deployments on this engine: its containers' and (on a manager) services'."""
    client = engine.client
    names = {c.labels.get(record.DEPLOYMENT, "") for c in list_containers(
        client, record.DEPLOYMENT)}
    if manages_swarm(engine.client.info()):  # its services count too
        names |= {(s["Spec"].get("Labels") or {}).get(record.DEPLOYMENT, "")
                  for s in client.api.services(filters={"label": record.DEPLOYMENT})}
    return names - {""}


def orphaned_volumes(engine: Engine, leases: set[str]) -> list[Volume]:
    """Inference log volumes whose deployment is gone (and is not being made right now)."""
    alive = _deployments(engine) | set(lease.leased(leases, "deployment"))
    return [v for v in payload_log.volumes(engine) if payload_log.deployment_of(v) not in alive]
