"""Image builds on a real engine: failures carry the build's own error and tag nothing."""

from __future__ import annotations

import logging
import os
import re
import secrets

import docker
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from mlflow_docker_target.engine.connection import connect
from mlflow_docker_target.image_build.docker_build import build, build_context
from mlflow_docker_target.record import ENVIRONMENT
from tests.helpers.engine import LABEL, installed_in


def test_failed_build_raises_its_own_error_and_tags_nothing(docker_client) -> None:
    tag = f"mlflow-dockerhost/test-failure:{secrets.token_hex(4)}"
    dockerfile = (f"FROM {os.environ['MLFLOW_DOCKERHOST_BASE_IMAGE']}\n"
                  "RUN echo building && exit 3\n").encode()
    with build_context({"Dockerfile": dockerfile}) as context, \
            pytest.raises(MlflowException, match="returned a non-zero code: 3") as err:
        build(connect(None), context, tag, buildargs={})
    assert "building" in err.value.message  # the build's own output comes along
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)
    assert not docker_client.containers.list(all=True, filters={"status": "exited",
                                                                "ancestor": tag})


def test_requirement_without_a_wheel_fails_before_building(registry, deployment_name,
                                                          docker_client, tmp_path) -> None:
    import mlflow
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0.0]], [0])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=[
            "scikit-learn", "no-such-package-mlflow-dockerhost==0.0.1"])
    with pytest.raises(MlflowException, match=r"(?s)needs a wheel.*no-such-package"):
        get_deploy_client("dockerhost").create_deployment(deployment_name, info.model_uri)
    assert docker_client.containers.list(all=True,
                                         filters={"label": f"{LABEL}={deployment_name}"}) == []


def test_config_environment_reaches_the_server(iris_versions, deployment_name,
                                               docker_client) -> None:
    get_deploy_client("dockerhost").create_deployment(
        deployment_name, iris_versions["v1"],
        config={"env.OMP_NUM_THREADS": "1", "request_timeout": "7", "cpus": "1"})
    container = docker_client.containers.list(filters={"label": f"{LABEL}={deployment_name}"})[0]
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["OMP_NUM_THREADS"] == "1"
    assert float(env["SCORING_REQUEST_TIMEOUT"]) == 7
    assert container.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert container.attrs["Config"]["Healthcheck"]["Test"][-1] == "serving_image.healthcheck"


SEALED_MODEL = """
import mlflow


class Sealed(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from cryptography.fernet import Fernet  # installed with MLflow, not named by the model

        self.fernet = Fernet(Fernet.generate_key())

    def predict(self, context, model_input, params=None):
        return [self.fernet.decrypt(self.fernet.encrypt(b"ok")).decode()] * len(model_input)


mlflow.models.set_model(Sealed())
"""


def test_a_model_that_loads_a_left_out_package_gets_it_back(
        registry, deployment_name, docker_client, tmp_path,
        caplog: pytest.LogCaptureFixture) -> None:
    import mlflow
    import pandas

    path = tmp_path / "sealed.py"
    path.write_text(SEALED_MODEL)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(path), pip_requirements=[
            f"mlflow=={mlflow.__version__}", f"pandas=={pandas.__version__}"])
    caplog.set_level(logging.INFO, logger="mlflow_docker_target")
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, info.model_uri)
    if "Building mlflow-dockerhost/env:" not in caplog.text:  # an earlier run built it: again
        environment = docker_client.images.get(created["image"]).labels[ENVIRONMENT]
        client.delete_deployment(deployment_name, config={"remove_image": "true"})
        docker_client.images.remove(environment)
        caplog.clear()
        client.create_deployment(deployment_name, info.model_uri)
    assert client.predict(deployment_name, {"inputs": [1, 2]})["predictions"] == ["ok", "ok"]
    build_log = caplog.text
    assert re.search(r"Leaving out .*MLflow's client-only packages.*cryptography==", build_log)
    # only what the model missed comes back (with what it needs), not the rest left out
    assert re.search(r"did not load without cffi==\S+, cryptography==\S+, pycparser==\S+; "
                     "putting that back", build_log), build_log[-3000:]
    container = docker_client.containers.list(filters={"label": f"{LABEL}={deployment_name}"})[0]
    installed = installed_in(docker_client, container.attrs["Config"]["Image"])
    assert "cryptography" in installed and "gitpython" not in installed, installed
