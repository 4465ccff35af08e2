"""Fixtures: a real Docker engine, a throwaway MLflow registry, and models registered in it.

Tests that need a Docker engine (the integration tests, and any test that asks for
``docker_client``) are marked ``engine``. Without an engine they skip, except under ``CI=true``,
where a missing engine fails the run (``helpers.ci``). What tests share besides fixtures lives in
``tests/helpers``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import scoring_server

from mlflow_docker_target.demo import register_demo_model
from serving_image.app import create_app
from serving_image.settings import ServerSettings
from tests.helpers.ci import skip_or_fail
from tests.helpers.engine import ENDPOINT, LABEL, remove_leftovers
from tests.helpers.models import FAILING_MODEL_CODE, REFERENCE_MODELS, register_code_model


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts or "docker_client" in getattr(item, "fixturenames",
                                                                           ()):
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as exc:
        skip_or_fail(f"no Docker engine answers ({exc}); `make engine` starts one")
    for variable in ("MLFLOW_DOCKERHOST_BASE_IMAGE", "MLFLOW_DOCKERHOST_PROXY_IMAGE",
                     "MLFLOW_DOCKERHOST_STRIP_IMAGE"):
        if not os.environ.get(variable):
            pytest.fail(f"{variable} is not set; run the tests with `make test`", pytrace=False)
    return client


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite-backed tracking server and registry for the whole session."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    cwd = os.getcwd()
    os.chdir(root)  # the default experiment's artifacts go below the registry
    try:
        yield uri
    finally:
        os.chdir(cwd)
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session")
def iris_versions(registry: str) -> dict[str, str]:
    """Two versions of one registered model whose predictions differ on :data:`IRIS_INPUT`."""
    first = register_demo_model("iris", c=1.0)
    second = register_demo_model("iris", c=0.001)
    return {"v1": first, "v2": second}


@pytest.fixture(scope="session")
def failing_model(iris_versions: dict[str, str], registry: str,
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registered model whose loading raises; it shares iris's requirements (and environment)."""
    return register_code_model(FAILING_MODEL_CODE, "broken", iris_versions["v1"],
                               tmp_path_factory.mktemp("failing"))


@pytest.fixture
def deployment_name(docker_client: docker.DockerClient) -> Iterator[str]:
    """A fresh deployment name; whatever the test left behind under it is removed after."""
    name = f"t-{secrets.token_hex(4)}"
    yield name
    remove_leftovers(docker_client, f"{LABEL}={name}")


@pytest.fixture
def endpoint_name(docker_client: docker.DockerClient) -> Iterator[str]:
    """A fresh endpoint name; its front and deployments left behind are removed after."""
    name = f"e-{secrets.token_hex(4)}"
    yield name
    for container in docker_client.containers.list(all=True,
                                                   filters={"label": f"{ENDPOINT}={name}"}):
        remove_leftovers(docker_client, f"{LABEL}={container.labels.get(LABEL, '-')}")
    remove_leftovers(docker_client, f"{ENDPOINT}={name}")


class _ReferenceServers(dict):
    """(MLflow's app, ours) for a reference model, both serving one model directory; each pair
    is made the first time a test asks for it (the fuzz tests need two of the five models)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> tuple[TestClient, TestClient]:
        path = self.root / name
        REFERENCE_MODELS[name](path)
        model = mlflow.pyfunc.load_model(str(path))
        theirs = TestClient(scoring_server.init(model), raise_server_exceptions=False)
        app = create_app(ServerSettings(model_path=str(path)))
        ours = TestClient(app)
        ours.__enter__()
        assert app.state.model_state.ready.wait(120)
        self[name] = (theirs, ours)
        return theirs, ours


@pytest.fixture(scope="session")
def reference_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_ReferenceServers]:
    clients = _ReferenceServers(tmp_path_factory.mktemp("models"))
    yield clients
    for _, ours in clients.values():
        ours.__exit__(None, None, None)
