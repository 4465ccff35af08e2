"""Locked-down containers on a real engine: what ``docker inspect`` shows of a replica and a
front, what a process inside may write, and a model that writes into its image.

Every other engine test deploys with the defaults, so the matrix models, the streaming model and
V2 (``test_protocols``) are served locked down too.
"""

from __future__ import annotations

import docker
import pytest
import requests
from docker.models.containers import Container
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from mlflow_docker_target import record
from serving_image.contract import MODEL_PATH
from tests.helpers.engine import servers
from tests.helpers.models import IRIS_INPUT, register_code_model

WRITER_MODEL = """
import os
from pathlib import Path

import mlflow


def write():
    (Path(os.environ["SCORING_MODEL_PATH"]) / "written.txt").write_text("a cache")


class Writer(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        if os.environ.get("WRITE_AT_LOAD"):
            write()

    def predict(self, context, model_input, params=None):
        write()
        return [1] * len(model_input)


mlflow.models.set_model(Writer())
"""


@pytest.fixture(scope="module")
def writer_model(iris_versions, tmp_path_factory) -> str:
    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]))
    return register_code_model(WRITER_MODEL, "writer", iris_versions["v1"],
                               tmp_path_factory.mktemp("writer"), signature)


def _front(client: docker.DockerClient, deployment: str) -> Container:
    return next(c for c in client.containers.list(
        filters={"label": f"{record.DEPLOYMENT}={deployment}"})
        if c.labels.get(record.ROLE) == record.FRONT)


def _assert_locked_down(container: Container, pids_limit: int) -> None:
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True, container.name
    assert host["CapDrop"] == ["ALL"], container.name
    assert "no-new-privileges" in host["SecurityOpt"], container.name
    assert host["PidsLimit"] == pids_limit, container.name


def _sh(container: Container, command: str) -> tuple[int, str]:
    result = container.exec_run(["sh", "-c", command])
    return result.exit_code, result.output.decode(errors="replace")


def test_replicas_and_front_are_locked_down(iris_versions, deployment_name,
                                            docker_client) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       config={"replicas": "2"})
    replicas = servers(docker_client, deployment_name)
    assert len(replicas) == 2
    for replica in replicas:
        _assert_locked_down(replica, 1024)
    _assert_locked_down(_front(docker_client, deployment_name), 256)

    replica = replicas[0]
    code, said = _sh(replica, f"touch {MODEL_PATH}/x")
    assert code != 0 and "Read-only file system" in said
    assert _sh(replica, "touch /tmp/x && echo $HOME $MPLCONFIGDIR") == (0, "/tmp /tmp/matplotlib\n")
    code, said = _sh(replica, "grep ^CapEff /proc/self/status")
    assert said.split()[-1] == "0000000000000000"  # no capability left, even to a root process

    answer = requests.post(f"{created['endpoint']}/invocations",
                           json={"dataframe_split": IRIS_INPUT}, timeout=30)
    assert answer.status_code == 200 and answer.json()["predictions"] == [0, 2, 1]

    client.update_deployment(deployment_name, config={"pids_limit": "300"})
    assert {c.attrs["HostConfig"]["PidsLimit"] for c in servers(docker_client,
                                                                deployment_name)} == {300}
    client.delete_deployment(deployment_name)
    assert docker_client.volumes.list(
        filters={"label": f"{record.DEPLOYMENT}={deployment_name}"}) == []


def test_a_model_that_writes_into_its_image(writer_model, deployment_name) -> None:
    """Locked down, the write fails with an answer that names -C hardened=false (at predict) or
    a create that does (at load); with hardened=false the model may write its own files."""
    client = get_deploy_client("dockerhost")
    with pytest.raises(MlflowException, match="hardened=false") as refused:
        client.create_deployment(deployment_name, writer_model,
                                 config={"env.WRITE_AT_LOAD": "1", "ready_timeout": "60"})
    assert "Read-only file system" in refused.value.message

    created = client.create_deployment(deployment_name, writer_model)
    url = f"{created['endpoint']}/invocations"
    answer = requests.post(url, json={"inputs": [{"x": 1.0}]}, timeout=30)
    assert answer.status_code == 400  # MLflow's answer to a model's exception
    assert "-C hardened=false" in answer.json()["message"]
    assert "Read-only file system" in answer.json()["stack_trace"]

    client.update_deployment(deployment_name, config={"hardened": "false"})
    answer = requests.post(url, json={"inputs": [{"x": 1.0}]}, timeout=30)
    assert answer.status_code == 200 and answer.json() == {"predictions": [1]}
