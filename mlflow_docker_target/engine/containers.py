"""Listing an engine's containers while other clients change them."""
from __future__ import annotations

import docker
from docker.models.containers import Container


def list_containers(client: docker.DockerClient, label: str | None = None) -> list[Container]:
    """Containers in any state, with ``label`` (``key`` or ``key=value``) when given.

    docker-py lists, then inspects each container; one that another client removed in between
    is left out rather than failing the caller with a 404 (a delete beside a ``prune`` did).
    """
    filters = {"label": label} if label else None
    return client.containers.list(all=True, filters=filters, ignore_removed=True)
