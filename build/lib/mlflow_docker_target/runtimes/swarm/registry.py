"""Images on every node of a swarm: pushed from the manager, where they are built, to
``-C registry``, for the nodes to pull; and removed from the manager under both names.
"""

from __future__ import annotations

import logging
import time

import docker
import docker.errors
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)


def publish(client: docker.DockerClient, image: str, registry: str | None,
            always: bool = True) -> str:
    """The reference the nodes pull ``image`` by: pushed to ``registry`` (a proxy image only
    when it is a local one, one no registry knows), else as it is."""
    if not registry:
        return image
    local = client.images.get(image)
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    known = {digest.split("@")[0] for digest in local.attrs.get("RepoDigests") or []}
    if not always and repository in known:  # pulled under this name: nodes pull it too
        return image
    target = f"{registry}/{image}"
    local.tag(target)
    log.info("Pushing %s", target)
    done: set[str] = set()
    last = time.monotonic()
    try:
        for chunk in client.api.push(target, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("error") or chunk["errorDetail"].get("message")
                raise MlflowException(push_error(target, str(detail)))
            status, layer = chunk.get("status", ""), chunk.get("id", "")
            if status in ("Pushed", "Layer already exists", "Mounted from") and layer:
                done.add(layer)
                log.info("  %s: %s (%d layers done)", layer, status, len(done))
            elif "progressDetail" in chunk and time.monotonic() - last > 5:
                last = time.monotonic()
                log.info("  %s: %s", layer, chunk.get("progress", status))
    except docker.errors.APIError as exc:
        raise MlflowException(push_error(target, str(exc.explanation or exc))) from exc
    return target


def names_on_manager(client: docker.DockerClient, images: set[str]) -> set[str]:
    """The images' local and pushed names on the manager; the registry keeps what was pushed
    (its garbage collection is its own)."""
    names: set[str] = set()
    for image in images:
        try:
            tags = client.images.get(image).tags
        except docker.errors.ImageNotFound:
            continue
        names |= {t for t in tags if t == image or t.endswith(f"/{image}")
                  or image.endswith(f"/{t}")}
    return names


def local_name(image: str, pushed_to: str) -> str:
    """The name an image was built under on the manager, from the one the nodes pull."""
    image = image.split("@")[0]
    return image[len(pushed_to):] if pushed_to and image.startswith(pushed_to) else image



def push_error(target: str, detail: str) -> str:
    hint = ""
    if "HTTP response to HTTPS client" in detail:
        hint = (" The registry speaks plain HTTP: add it to the engine's insecure-registries "
                "(daemon.json), on the manager and every node, or serve it with TLS.")
    elif "denied" in detail or "unauthorized" in detail:
        hint = " Log in to the registry on this machine first (docker login)."
    return f"Pushing {target} failed: {detail.strip()}.{hint}"


