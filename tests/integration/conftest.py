"""The test swarm, shared by the swarm tests of a session (it takes half a minute to form)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest

from tests.swarm_cluster import Swarm, cannot_make_a_swarm, swarm_cluster

IMAGES = ("MLFLOW_DOCKERHOST_BASE_IMAGE", "MLFLOW_DOCKERHOST_PROXY_IMAGE",
          "MLFLOW_DOCKERHOST_STRIP_IMAGE")


@pytest.fixture(scope="session")
def swarm(docker_client: docker.DockerClient) -> Iterator[Swarm]:
    """Three engines in a swarm and a registry; the local images the builds need are loaded
    into the manager, where builds run."""
    reason = cannot_make_a_swarm()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no test swarm: {reason}", pytrace=False)
        pytest.skip(f"no test swarm: {reason}")
    with swarm_cluster([os.environ[variable] for variable in IMAGES]) as cluster:
        yield cluster
