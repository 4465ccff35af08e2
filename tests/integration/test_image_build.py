"""Image builds on a real engine: failures carry the build's own error and tag nothing."""

from __future__ import annotations

import os
import secrets

import docker
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from mlflow_docker_target.engine import connect
from mlflow_docker_target.image_build import build, build_context
from tests.conftest import LABEL


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
