"""Environment images as a bounded cache: kept for warm creates, but not without end.

An environment is in use while a model image built on it exists (a deployment's, or one kept
with ``-C remove_image=false``). Image labels cannot change, so each use re-tags the environment
image, and the engine records when (``Metadata.LastTagTime``). Once more than
``MLFLOW_DOCKERHOST_KEEP_ENVIRONMENTS`` (default 5) environments are unused, the ones used
longest ago go; the caller (``trim``'s ``busy``) says whether a client is at work, which may be
about to build on one, and then none goes.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone

import docker.errors
from docker.models.images import Image

from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.images import list_images
from mlflow_docker_target.record import ENVIRONMENT, KIND

log = logging.getLogger(__name__)

KEEP_ENV = "MLFLOW_DOCKERHOST_KEEP_ENVIRONMENTS"
DEFAULT_KEEP = 5


def touch(engine: Engine, tag: str) -> None:
    """Record a use of the environment image ``tag`` (the engine stamps the re-tag's time)."""
    repository, _, name = tag.rpartition(":")
    engine.client.api.tag(tag, repository, name)


def last_use(image: Image) -> float:
    """When the image was last tagged (used), else made: seconds since the epoch."""
    stamp = (image.attrs.get("Metadata") or {}).get("LastTagTime") or ""
    if not stamp or stamp.startswith("0001-"):  # the engine's zero time: never re-tagged
        stamp = image.attrs["Created"]
    moment = datetime.fromisoformat(stamp[:26].rstrip("Z").split("+")[0])
    return moment.replace(tzinfo=timezone.utc).timestamp()


def unused(engine: Engine) -> list[Image]:
    """Environment images no model image is built on, the one used longest ago first."""
    built_on = {image.labels.get(ENVIRONMENT) for image in list_images(
        engine.client, f"{KIND}=model")}
    found = [image for image in list_images(
        engine.client, f"{KIND}=environment") if not set(image.tags) & built_on]
    return sorted(found, key=last_use)


def keep() -> int:
    raw = os.environ.get(KEEP_ENV, "").strip()
    return int(raw) if raw.isdigit() else DEFAULT_KEEP


def trim(engine: Engine, busy: bool) -> None:
    """Remove the unused environments beyond :func:`keep`, oldest use first, unless ``busy``:
    a client at work (holding a lease) may be about to build on any of them."""
    if busy:
        return
    idle, limit = unused(engine), keep()
    for image in idle[:max(0, len(idle) - limit)]:
        try:
            engine.client.images.remove(image.id)
            log.info("Removed the unused environment image %s (%.1f GB; more than %d unused; "
                     "%s keeps more)", ", ".join(image.tags) or image.short_id,
                     image.attrs.get("Size", 0) / 1e9, limit, KEEP_ENV)
        except docker.errors.APIError as exc:  # in use after all, or gone already
            log.info("Keeping environment image %s: %s", image.short_id,
                     exc.explanation or exc)
