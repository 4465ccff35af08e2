"""The test swarm, shared by the swarm tests of a session (it takes half a minute to form)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest

from tests.helpers.ci import skip_or_fail
from tests.helpers.swarm_cluster import IMAGES, Swarm, cannot_make_a_swarm, swarm_cluster


@pytest.fixture(scope="session")
def swarm(docker_client: docker.DockerClient) -> Iterator[Swarm]:
    """Three engines in a swarm and a registry; the local images the builds need are loaded
    into the manager, where builds run."""
    reason = cannot_make_a_swarm()
    if reason:
        skip_or_fail(f"no test swarm: {reason}")
    with swarm_cluster([os.environ[variable] for variable in IMAGES]) as cluster:
        yield cluster
