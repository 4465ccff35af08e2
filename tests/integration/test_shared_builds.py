"""Clients that need one environment at once share its build (the build lease of
mlflow_docker_target/runtimes/lease.py), a build leaves none of its stage images behind, and
what one client reads goes on when another removes a container or an image under it."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import docker.errors
import mlflow
import pytest
from docker import APIClient
from mlflow.deployments import get_deploy_client

from mlflow_docker_target import prune
from mlflow_docker_target.engine.connection import Engine, connect
from mlflow_docker_target.image_build import environment_cache
from mlflow_docker_target.record import (
    DEPLOYMENT,
    ENVIRONMENT,
    KIND,
    LOCK_ROLE,
    ROLE,
    SERVER,
    STAGE,
)
from mlflow_docker_target.runtimes import lease
from mlflow_docker_target.runtimes.lease import lease_name
from tests.helpers.cli import mlflow_cli, mlflow_cli_background, wait_for_output
from tests.helpers.engine import remove_leftovers
from tests.helpers.models import IRIS_INPUT

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


def _register(iris: str, tmp: Path, count: int, prefix: str = "doubles") -> list[str]:
    """``count`` registered models with one set of requirements: iris's and one more, which
    excludes a version no package has, so that their environment is one no run has built."""
    requirements = Path(mlflow.artifacts.download_artifacts(
        f"{iris}/requirements.txt")).read_text().split()
    tmp.mkdir(parents=True, exist_ok=True)
    code = tmp / "doubles.py"
    code.write_text(PLAIN_MODEL)
    unique = f"six!=0.0.{secrets.randbelow(10**9)}"
    uris = []
    for n in range(count):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                           pip_requirements=[*requirements, unique],
                                           registered_model_name=f"{prefix}-{n}")
        uris.append(f"models:/{prefix}-{n}/{info.registered_model_version}")
    return uris


@pytest.mark.slow  # 130 s on a fresh engine, a cold build shared four ways: make test-all
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


def test_create_delete_and_prune_at_once_leave_what_is_in_use(
        iris_versions, names, docker_client: docker.DockerClient) -> None:
    old, new = names[:2]
    mlflow_cli("deployments", "create", "-t", "dockerhost", "--name", old, "-m",
               iris_versions["v1"])
    before = {image.id for image in docker_client.images.list()  # build stages inherit the
              if image.labels.get(KIND) == "base"  # label, and go when their build ends
              and STAGE not in image.labels}
    pruned: list[str] = []
    done = threading.Event()

    def prune_meanwhile() -> None:
        while not done.is_set():
            answer = subprocess.run([sys.executable, "-m", "mlflow_docker_target.cli",
                                     "prune"], capture_output=True, text=True, timeout=120)
            assert answer.returncode == 0, answer.stderr
            pruned.append(answer.stdout)
            time.sleep(0.5)

    pruner = threading.Thread(target=prune_meanwhile)
    pruner.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            created = pool.submit(mlflow_cli, "deployments", "create", "-t", "dockerhost",
                                  "--name", new, "-m", iris_versions["v2"], check=False)
            deleted = pool.submit(mlflow_cli, "deployments", "delete", "-t", "dockerhost",
                                  "--name", old, check=False)
            results = created.result(), deleted.result()
    finally:
        done.set()
        pruner.join()
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
    print(f"prunes during the create: {len(pruned)}")
    assert pruned and any("A client is at work" in p for p in pruned)
    client = get_deploy_client("dockerhost")
    assert client.predict(new, {"dataframe_split": IRIS_INPUT})["predictions"]
    assert before <= {image.id for image in docker_client.images.list()}  # bases untouched
    assert client.list_deployments() and old not in [d["name"]
                                                     for d in client.list_deployments()]


@pytest.mark.slow  # 110 s, most of it the lease's 30 s expiry and a build: make test-all
def test_a_killed_builder_is_taken_over_once_its_lease_expires(
        iris_versions, names, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    first, second = _register(iris_versions["v1"], tmp_path, 2)
    killed, taker = names[:2]
    builder, lines = mlflow_cli_background("deployments", "create", "-t", "dockerhost",
                                           "--name", killed, "-m", first)
    environment = None
    try:
        wait_for_output(builder, lines, "Building mlflow-dockerhost/env:")
        builder.send_signal(signal.SIGKILL)
        builder.wait(30)
        stopped = time.monotonic()
        result = mlflow_cli("deployments", "create", "-t", "dockerhost", "--name", taker,
                            "-m", second, check=False)
        took = time.monotonic() - stopped
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        print(f"the second client waited, took the build over and deployed in {took:.0f} s")
        assert "Waiting for " in output and "building environment" in output, output
        assert "Taking over the lease on environment" in output, output
        found = docker_client.containers.list(
            filters={"label": f"io.mlflow.dockerhost.deployment={taker}"})
        environment = docker_client.images.get(found[0].image.id).labels[ENVIRONMENT]
    finally:
        builder.kill()
        with contextlib.suppress(docker.errors.NotFound):  # the killed client's own lease
            docker_client.containers.get(lease_name("deployment", killed)).remove(force=True)
        mlflow_cli("deployments", "delete", "-t", "dockerhost", "--name", taker, check=False)
        if environment is not None:
            docker_client.images.remove(environment)


@pytest.mark.slow
def test_four_creates_at_once_with_different_environments(
        iris_versions, names, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    uris = [_register(iris_versions["v1"], tmp_path / str(n), 1, f"apart-{n}")[0]
            for n in range(len(names))]
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda pair: mlflow_cli(
            "deployments", "create", "-t", "dockerhost", "--name", pair[0], "-m", pair[1],
            check=False), zip(names, uris, strict=True)))
    environments = set()
    for name, result in zip(names, results, strict=True):
        assert result.returncode == 0, result.stdout + result.stderr
        found = docker_client.containers.list(
            filters={"label": f"io.mlflow.dockerhost.deployment={name}"})
        environments.add(docker_client.images.get(found[0].image.id).labels[ENVIRONMENT])
    assert len(environments) == len(names)
    for name in names:
        mlflow_cli("deployments", "delete", "-t", "dockerhost", "--name", name)
    for environment in environments:
        docker_client.images.remove(environment)


@pytest.mark.slow
def test_ten_deployments_leave_a_bounded_cache(iris_versions, docker_client: docker.DockerClient,
                                               tmp_path: Path) -> None:
    """Ten deployments on three new environments, each deleted after its create: no model
    image of theirs stays, and no more unused environments than the cache keeps (1 here)."""
    environments = [_register(iris_versions["v1"], tmp_path / str(n), 4, f"cache-{n}")
                    for n in range(3)]
    uris = [environments[n % 3][n // 3] for n in range(10)]
    names = [f"cache-{n}-{secrets.token_hex(3)}" for n in range(10)]
    keep = {"MLFLOW_DOCKERHOST_KEEP_ENVIRONMENTS": "1"}
    before = docker_client.df()["LayersSize"]
    for name, uri in zip(names, uris, strict=True):
        mlflow_cli("deployments", "create", "-t", "dockerhost", "--name", name, "-m", uri,
                   env=keep)
        mlflow_cli("deployments", "delete", "-t", "dockerhost", "--name", name, env=keep)
    after = docker_client.df()["LayersSize"]
    print(f"images on the engine: {before / 1e9:.2f} GB before, {after / 1e9:.2f} GB after "
          "ten deployments on three new environments")
    for name in names:
        assert docker_client.images.list(f"mlflow-dockerhost/{name}") == []
    idle = [image for image in docker_client.images.list(
        filters={"label": "io.mlflow.dockerhost.kind=environment"})
        if not any(image.tags[0] == i.labels.get(ENVIRONMENT) for i in docker_client.images.list(
            filters={"label": "io.mlflow.dockerhost.kind=model"}))]
    assert len(idle) <= 1, [i.tags for i in idle]


def _removed_at_inspect(monkeypatch: pytest.MonkeyPatch, method: str, target: str,
                        remove: Callable[[], object]) -> list[str]:
    """Make docker-py's ``APIClient.<method>`` remove ``target`` just before its first inspect,
    as another client would between a list and its inspects; the list returned names it once
    that happened."""
    inspect = getattr(APIClient, method)
    removed: list[str] = []

    def removed_first(api: APIClient, resource: str) -> dict:
        if resource == target and not removed:
            remove()
            removed.append(resource)
        return inspect(api, resource)

    monkeypatch.setattr(APIClient, method, removed_first)
    return removed


@pytest.mark.parametrize(("role", "reader"), [
    (SERVER, lambda engine: list(prune.unused(engine, set()))),
    (SERVER, lambda engine: prune.orphaned_volumes(engine, set())),
    (LOCK_ROLE, lease.held),
    (SERVER, lambda engine: get_deploy_client("dockerhost").list_deployments()),
])
def test_a_container_removed_between_list_and_inspect_is_left_out(
        role: str, reader: Callable[[Engine], object], names,
        docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-py inspects each container it lists. Here the container goes in between, as when
    another client deletes a deployment during ``prune`` (a CI run failed on that 404)."""
    gone = docker_client.containers.create(
        os.environ["MLFLOW_DOCKERHOST_PROXY_IMAGE"], ["true"],
        labels={DEPLOYMENT: names[0], ROLE: role})
    removed = _removed_at_inspect(monkeypatch, "inspect_container", gone.id,
                                  lambda: gone.remove(force=True))
    reader(connect(None))
    assert removed == [gone.id]


@pytest.mark.parametrize("reader", [
    lambda engine: list(prune.unused(engine, set())),
    environment_cache.unused,
])
def test_an_image_removed_between_list_and_inspect_is_left_out(
        reader: Callable[[Engine], object], names, docker_client: docker.DockerClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, for images: docker-py's ``images.list`` inspects each and has no
    ``ignore_removed``."""
    dockerfile = f"FROM {os.environ['MLFLOW_DOCKERHOST_PROXY_IMAGE']}\nLABEL {KIND}=environment\n"
    gone, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()),
                                         tag=f"mlflow-dockerhost/{names[0]}:gone", rm=True)
    removed = _removed_at_inspect(monkeypatch, "inspect_image", gone.id,
                                  lambda: docker_client.images.remove(gone.id))
    reader(connect(None))
    assert removed == [gone.id]
