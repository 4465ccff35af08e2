"""Images on an engine: one the plugin needs (pulled only when missing and allowed, with a log
line), whether one exists, listing them while other clients remove some, and removing those no
container uses any more."""
from __future__ import annotations

import contextlib
import logging

import docker
import docker.errors
from docker.models.images import Image
from docker.utils import parse_repository_tag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target.engine.connection import Engine

log = logging.getLogger(__name__)


def ensure_image(engine: Engine, image: str, pull: bool, what: str = "base") -> str:
    """An image's ID; pulled (announced, never silently) only when missing and allowed.

    ``what`` names its use in messages: the serving images' ``base``, the environment build's
    ``strip`` image, or the fronts' ``proxy``.
    """
    try:
        return engine.client.images.get(image).id
    except docker.errors.ImageNotFound:
        pass
    hint = (f"Pull or load it on that engine, or choose another with -C {what}_image=<image> or "
            f"MLFLOW_DOCKERHOST_{what.upper()}_IMAGE (`make base-image` builds one from Debian "
            "packages, with no registry).")
    if not pull:
        raise MlflowException(
            f"The {what} image {image} is not on the Docker engine at {engine.url} and "
            f"pull_base is false. {hint}", INVALID_PARAMETER_VALUE)
    log.info("The %s image %s is not on the engine; pulling it", what, image)
    repository, tag = parse_repository_tag(image)
    try:
        return engine.client.images.pull(repository, tag=tag or "latest").id
    except docker.errors.APIError as exc:
        raise MlflowException(
            f"The {what} image {image} is not on the Docker engine at {engine.url} and could "
            f"not be pulled: {exc.explanation or exc}. {hint}", INVALID_PARAMETER_VALUE) from None


def image_exists(engine: Engine, tag: str) -> bool:
    try:
        engine.client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def remove_images(engine: Engine, images: set[str]) -> None:
    """Remove model images no container uses any more; one still in use is left alone."""
    for image in sorted(images):
        try:
            engine.client.images.remove(image)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            log.info("Keeping image %s: %s", image, exc.explanation or exc)


def list_images(client: docker.DockerClient, label: str, all: bool = False) -> list[Image]:
    """Images with ``label`` (``key`` or ``key=value``); with ``all``, build stages too.

    docker-py lists, then inspects each image; one that another client removed in between is
    left out rather than failing the caller (``containers.list`` has ``ignore_removed`` for
    this, ``images.list`` has nothing).
    """
    found = []
    for summary in client.api.images(all=all, filters={"label": label}):
        with contextlib.suppress(docker.errors.ImageNotFound):
            found.append(client.images.get(summary["Id"]))
    return found
