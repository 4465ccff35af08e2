"""The test swarm, shared by the swarm tests of a session (it takes half a minute to form), and
no engine controller around a test that makes one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest

from mlflow_docker_target import record
from tests.helpers.ci import skip_or_fail
from tests.helpers.engine import environment_image
from tests.helpers.swarm_cluster import IMAGES, Swarm, cannot_make_a_swarm, swarm_cluster


@pytest.fixture(scope="session")
def swarm(docker_client: docker.DockerClient, iris_versions: dict[str, str]) -> Iterator[Swarm]:
    """Three engines in a swarm and a registry; the local images the builds need are loaded
    into the manager, where builds run.

    So is iris's environment (as an engine that served iris before would have it): a cold
    build on the manager cost 80-100 s of CI's 40 minutes. The swarm's creates still build
    their model images, and push both to the registry for the nodes. Environments built on
    another engine are the remote tests' (tests/integration/test_remote.py).
    """
    reason = cannot_make_a_swarm()
    if reason:
        skip_or_fail(f"no test swarm: {reason}")
    images = [os.environ[variable] for variable in IMAGES]
    with swarm_cluster([*images, environment_image(iris_versions["v1"])]) as cluster:
        yield cluster


@pytest.fixture
def no_controller(docker_client: docker.DockerClient) -> Iterator[None]:
    """No controller before or after the test (a failed test may leave one)."""
    def remove() -> None:
        for container in docker_client.containers.list(
                all=True, filters={"label": f"{record.ROLE}={record.CONTROLLER}"}):
            container.remove(force=True)
    remove()
    yield
    remove()
