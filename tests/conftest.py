"""Fixtures: a real Docker engine, a throwaway MLflow registry, and models registered in it.

Tests marked ``engine`` need a Docker engine. Without one they skip, except under ``CI=true``,
where a missing engine fails the run: CI must never pass by skipping the integration tests.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import mlflow
import pytest
import requests

from mlflow_docker_target.demo import register_demo_model

LABEL = "io.mlflow.dockerhost.deployment"
ROLE = "io.mlflow.dockerhost.role"
FRONT_OF = "io.mlflow.dockerhost.front-of"
ENDPOINT = "io.mlflow.dockerhost.endpoint"


def free_port() -> int:
    """A host port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_model(model: Path, *options: str,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """The scoring server as a process (``python -m serving_image``) on a free loopback port,
    once ``/ping`` answers 200; ``env`` adds SCORING_* settings."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving_image", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), *options], env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not become ready")


def servers(client: docker.DockerClient, name: str) -> list:
    """A deployment's serving containers (made before roles existed, they have none)."""
    found = client.containers.list(all=True, filters={"label": f"{LABEL}={name}"})
    return [c for c in found if c.labels.get(ROLE, "server") == "server"]


def front_of(client: docker.DockerClient, name: str) -> Any:
    """A deployment's own front container, or ``None``."""
    found = client.containers.list(all=True, filters={"label": f"{FRONT_OF}={name}"})
    return found[0] if found else None


def installed_in(client: docker.DockerClient, image: str) -> set[str]:
    """Distribution names installed in an image's virtualenv."""
    out = client.containers.run(image, ["python3", "-c", (
        "import importlib.metadata as m; "
        "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))")],
        entrypoint=[], remove=True, network_disabled=True)
    return set(out.decode().split())


def remove_leftovers(client: docker.DockerClient, label: str) -> None:
    """Containers, networks and images a test left behind under ``label`` (key=value)."""
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": label}):
        network.remove()
    name = label.split("=", 1)[1]
    for image in client.images.list(f"mlflow-dockerhost/{name}"):
        client.images.remove(image.id, force=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as exc:
        message = f"no Docker engine answers ({exc}); `make engine` starts one"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
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


IRIS_INPUT = {
    "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
    "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]],
}
IRIS_COLUMNS = {column: [row[i] for row in IRIS_INPUT["data"]]
                for i, column in enumerate(IRIS_INPUT["columns"])}


FAILING_MODEL_CODE = """
import mlflow


class FailingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("this model cannot be loaded")

    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(FailingModel())
"""


def register_code_model(code: str, registered: str, like: str, tmp: Path,
                        signature: Any = None) -> str:
    """Register a models-from-code pyfunc with the requirements (and so the environment image)
    of the model ``like``; returns its ``models:/`` URI."""
    requirements = Path(mlflow.artifacts.download_artifacts(
        f"{like}/requirements.txt")).read_text().split()
    path = tmp / f"{registered}.py"
    path.write_text(code)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(path),
                                       pip_requirements=requirements, signature=signature,
                                       registered_model_name=registered)
    return f"models:/{registered}/{info.registered_model_version}"


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


def mlflow_cli(*args: str, check: bool = True, timeout: float = 900,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real ``mlflow`` CLI, as a user would; ``env`` adds to the environment."""
    result = subprocess.run([sys.executable, "-m", "mlflow", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"mlflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def mlflow_cli_background(*args: str, preexec_fn: Callable[[], Any] | None = None,
                          ) -> tuple[subprocess.Popen, list[str]]:
    """Start the ``mlflow`` CLI; its output lines are collected into the returned list."""
    process = subprocess.Popen([sys.executable, "-m", "mlflow", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
                               preexec_fn=preexec_fn)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True).start()
    return process, lines


def wait_for_output(process: subprocess.Popen, lines: list[str], text: str,
                    timeout: float = 600) -> None:
    """Wait until a line holds ``text``; fail with the output if the process ends first."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert process.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.2)
