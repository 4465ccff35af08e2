"""Clients that need one environment at once share its build (the build lease of
mlflow_docker_target/runtimes/lease.py), and a build leaves none of its stage images behind."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import mlflow
import pytest

from mlflow_docker_target.record import ENVIRONMENT, STAGE
from tests.helpers.cli import mlflow_cli
from tests.helpers.engine import remove_leftovers

PLAIN_MODEL = """
import mlflow


class Doubles(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return (model_input["x"] * 2).tolist()


mlflow.models.set_model(Doubles())
"""


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    found = [f"shared-{n}-{int(time.time()) % 100000}" for n in range(4)]
    yield found
    for name in found:
        remove_leftovers(docker_client, f"io.mlflow.dockerhost.deployment={name}")


def _register(iris: str, tmp: Path, count: int) -> list[str]:
    """``count`` registered models with one set of requirements: iris's and one more, which
    excludes a version no package has, so that their environment is one no run has built."""
    requirements = Path(mlflow.artifacts.download_artifacts(
        f"{iris}/requirements.txt")).read_text().split()
    code = tmp / "doubles.py"
    code.write_text(PLAIN_MODEL)
    unique = f"six!=0.0.{secrets.randbelow(10**9)}"
    uris = []
    for n in range(count):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                           pip_requirements=[*requirements, unique],
                                           registered_model_name=f"doubles-{n}")
        uris.append(f"models:/doubles-{n}/{info.registered_model_version}")
    return uris


def test_four_creates_at_once_build_their_environment_once(
        iris_versions, names, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    uris = _register(iris_versions["v1"], tmp_path, len(names))
    started = time.monotonic()
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda pair: mlflow_cli(
            "deployments", "create", "-t", "dockerhost", "--name", pair[0], "-m", pair[1],
            check=False), zip(names, uris, strict=True)))
    wall = time.monotonic() - started
    outputs = [r.stdout + r.stderr for r in results]
    environment = None
    try:
        for result, output in zip(results, outputs, strict=True):
            assert result.returncode == 0, output
        built = [o for o in outputs if "Building mlflow-dockerhost/env:" in o]
        print(f"four creates at once: {wall:.1f} s; the environment was built "
              f"{len(built)} time(s)")
        assert len(built) == 1, outputs
        for output in outputs:
            if output is not built[0]:
                assert ("was built meanwhile by another client" in output
                        or "is already on the engine" in output), output
        waited = [o for o in outputs if "Waiting for " in o and "building environment" in o]
        print(f"clients told whom they waited for: {len(waited)}")
        images = {docker_client.images.get(
            docker_client.containers.list(filters={"label": f"io.mlflow.dockerhost.deployment="
                                                             f"{name}"})[0].image.id
        ).labels[ENVIRONMENT] for name in names}
        assert len(images) == 1
        environment = images.pop()
        assert docker_client.images.list(all=True, filters={"label": f"{STAGE}=build"}) == []
    finally:
        for name in names:
            mlflow_cli("deployments", "delete", "-t", "dockerhost", "--name", name, "-C",
                       "remove_image=true", check=False)
        if environment is not None:
            docker_client.images.remove(environment)
