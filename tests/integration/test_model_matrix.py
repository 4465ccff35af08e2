"""Models logged over the years, deployed for real and checked against their own predictions.

Each model is saved by its own MLflow version in its own virtualenv (tests/model_matrix.py). The
default run covers a model saved by MLflow 2.16 and the build feature it exercises (Flask for
MLflow < 2.21). ``make test-all`` runs the whole matrix (CPU-only XGBoost builds among them), and
the libgomp test, where LightGBM's OpenMP comes from system packages.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator

import docker
import pytest
import requests
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException
from packaging.version import Version

from mlflow_docker_target.record import BASE_IMAGE, STAGE, SYSTEM_PACKAGES
from tests.helpers.engine import LABEL, installed_in, remove_leftovers
from tests.helpers.model_matrix import FLAVORS, PINS, SavedModel, saved, values

# In `make test`, one model saved by an older MLflow (the suite's own models are MLflow 3.17.2's),
# the rest in `make test-all`: CI's 40 minutes on a fresh machine, where each is a cold
# environment build (100 s). XGBoost's CPU-only build is decided in tests/test_dependencies.py,
# and its image measured by tests/benchmarks/matrix.py.
DEFAULT = {("2.16.2", "sklearn")}
MATRIX = [pytest.param(version, flavor, id=f"mlflow{version}-{flavor}",
                       marks=() if (version, flavor) in DEFAULT else pytest.mark.slow)
          for version in PINS for flavor in FLAVORS]
MAX_XGBOOST_IMAGE = 600 * 1000**2  # bytes, as `docker images` counts MB
# MLflow versions whose `import mlflow` loads the Databricks SDK (2.22: through its Unity Catalog
# store), and with it google-auth's cryptography
IMPORTS_DATABRICKS_SDK = {"2.22.1"}


def _endpoint(name: str) -> str:
    return get_deploy_client("dockerhost").get_deployment(name)["endpoint"]


def _predict(url: str, model: SavedModel) -> list:
    answer = requests.post(f"{url}/invocations", json=model.rows, timeout=60)
    assert answer.status_code == 200, answer.text
    return values(answer.json()["predictions"])


def _image(client: docker.DockerClient, name: str) -> docker.models.images.Image:
    container = client.containers.list(filters={"label": f"{LABEL}={name}"})[0]
    return client.images.get(container.attrs["Config"]["Image"])


def _uvloop_bytes(client: docker.DockerClient, image: str) -> int:
    out = client.containers.run(image, ["python3", "-c", (
        "import pathlib, uvloop; "
        "print(next(pathlib.Path(uvloop.__file__).parent.glob('loop*.so')).stat().st_size)")],
        entrypoint=[], remove=True, network_disabled=True)
    return int(out.decode().split()[-1])


@pytest.mark.parametrize(("version", "flavor"), MATRIX)
def test_model_from_each_mlflow_version_serves_its_own_predictions(
        version: str, flavor: str, deployment_name: str, docker_client) -> None:
    model = saved(version, flavor)
    get_deploy_client("dockerhost").create_deployment(deployment_name, str(model.path),
                                                      config={"workers": "2"})
    predictions = _predict(_endpoint(deployment_name), model)
    assert predictions == pytest.approx(model.expected, rel=1e-6)
    # loaded once by gunicorn's parent, then forked: two workers (boosters included, whose
    # OpenMP would hang a fork made after its pool exists), each warmed up after the fork
    container = docker_client.containers.list(filters={"label": f"{LABEL}={deployment_name}"})[0]
    logs = container.logs().decode()
    assert "before the workers start" in logs, logs[-2000:]
    assert logs.count("Model loaded and warmed") == 2, logs[-2000:]
    assert _predict(_endpoint(deployment_name), model) == predictions  # both workers, again
    image = _image(docker_client, deployment_name)
    installed = installed_in(docker_client, image.id)
    assert "mlflow-skinny" in installed and "mlflow" not in installed
    # Flask only where the scoring module imports it
    assert ("flask" in installed) is (Version(version) < Version("2.21"))
    assert not any(name.startswith("nvidia-") for name in installed)
    # MLflow's client-only packages (Databricks' credential signing, a run's git commit) are
    # left out; when `import mlflow` needs cryptography, the build check puts back just that
    assert ("cryptography" in installed) is (version in IMPORTS_DATABRICKS_SDK), installed
    assert "gitpython" not in installed and "setuptools" not in installed, installed
    # the strip stage (on MLFLOW_DOCKERHOST_STRIP_IMAGE) took uvloop's 12 MB of debug symbols out
    assert _uvloop_bytes(docker_client, image.id) < 3_000_000
    if flavor == "xgboost":
        assert "xgboost-cpu" in installed and "xgboost" not in installed
        assert image.attrs["Size"] <= MAX_XGBOOST_IMAGE, image.attrs["Size"]


@pytest.fixture(scope="module")
def base_without_libgomp(docker_client) -> Iterator[str]:
    """The local base with libgomp1 purged: as python:X-slim is, which cannot be pulled here."""
    tag = f"mlflow-dockerhost/test-base-no-gomp:{secrets.token_hex(4)}"
    dockerfile = (f"FROM {os.environ['MLFLOW_DOCKERHOST_BASE_IMAGE']}\n"
                  "RUN dpkg --purge libgomp1\n").encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, network_mode="none",
                               rm=True, forcerm=True)
    yield tag
    _remove_built_on(docker_client, tag)
    docker_client.images.remove(tag, force=True)


def _remove_built_on(client: docker.DockerClient, base: str) -> None:
    """Environment and system images built on ``base``, and those built on them."""
    for image in client.images.list(filters={"label": f"{BASE_IMAGE}={base}"}):
        for tag in image.tags:
            _remove_built_on(client, tag)
        client.images.remove(image.id, force=True)


@pytest.mark.slow  # two cold builds and a system image, 150-180 s: make test-all; the naming
# itself is tests/test_native_libs.py's, and a system-packages build that fails is test_remote's
def test_missing_libgomp_is_named_with_its_package_then_system_packages_installs_it(
        base_without_libgomp: str, deployment_name: str, docker_client) -> None:
    model = saved("3.17.2", "lightgbm")
    client = get_deploy_client("dockerhost")
    with pytest.raises(MlflowException) as err:
        client.create_deployment(deployment_name, str(model.path),
                                 config={"base_image": base_without_libgomp})
    message = err.value.message
    assert "libgomp.so.1 (needed by lib/python3.11/site-packages/lightgbm/lib/lib_lightgbm.so; " \
           "Debian package libgomp1)" in message, message
    assert "-C system_packages=libgomp1" in message
    assert docker_client.containers.list(all=True,
                                         filters={"label": f"{LABEL}={deployment_name}"}) == []
    assert docker_client.images.list(f"mlflow-dockerhost/{deployment_name}") == []
    # nor the failed build stage's layers (the wheels, installed)
    assert docker_client.images.list(all=True, filters={"label": f"{STAGE}=build"}) == []

    client.create_deployment(deployment_name, str(model.path),
                             config={"base_image": base_without_libgomp,
                                     "system_packages": "libgomp1"})
    assert _predict(_endpoint(deployment_name), model) == model.expected
    system = docker_client.images.list(filters={"label": f"{BASE_IMAGE}={base_without_libgomp}"})
    assert [image.labels[SYSTEM_PACKAGES] for image in system] == ["libgomp1"]
    remove_leftovers(docker_client, f"{LABEL}={deployment_name}")  # before the images go
