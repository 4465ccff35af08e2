"""The dockerhost target end to end on a real Docker engine, through MLflow's CLI and API."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import docker
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.deployments import PredictionsResponse, get_deploy_client
from mlflow.exceptions import MlflowException

from tests.helpers.cli import mlflow_cli, mlflow_cli_background, wait_for_output
from tests.helpers.engine import servers
from tests.helpers.models import IRIS_COLUMNS, IRIS_INPUT
from tests.helpers.servers import free_port

_containers = servers


def _get(name: str) -> dict[str, str]:
    """``mlflow deployments get`` output (``key: value`` lines) as a dict."""
    out = mlflow_cli("deployments", "get", "-t", "dockerhost", "--name", name).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def _curl(endpoint: str) -> list:
    response = requests.post(f"{endpoint}/invocations", json={"dataframe_split": IRIS_INPUT},
                             timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_cli_session(iris_versions, deployment_name, docker_client, tmp_path: Path) -> None:
    name = deployment_name
    created = mlflow_cli("deployments", "create", "-t", "dockerhost", "--name", name,
                         "-m", iris_versions["v1"])
    assert f"python_function deployment {name} is created" in created.stdout

    listed = mlflow_cli("deployments", "list", "-t", "dockerhost").stdout
    assert f"'name': '{name}'" in listed

    info = _get(name)
    assert info["model_uri"] == iris_versions["v1"]
    assert info["model_version"] == "1"
    assert info["status"] == "running"
    endpoint = info["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")

    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps(IRIS_COLUMNS))
    predicted = mlflow_cli("deployments", "predict", "-t", "dockerhost", "--name", name,
                           "--input-path", str(input_path)).stdout
    first = json.loads(predicted)["predictions"]
    assert first == _curl(endpoint) == [0, 2, 1]

    updated = mlflow_cli("deployments", "update", "-t", "dockerhost", "--name", name,
                         "-m", "models:/iris@champion")
    assert f"Deployment {name} is updated" in updated.stdout
    info = _get(name)
    assert info["model_uri"] == "models:/iris@champion"
    assert info["resolved_model_uri"] == iris_versions["v2"]
    assert info["model_version"] == "2"
    assert _curl(info["endpoint"]) != first
    assert len(_containers(docker_client, name)) == 1  # the old container is gone

    for _ in range(2):  # delete is idempotent
        deleted = mlflow_cli("deployments", "delete", "-t", "dockerhost", "--name", name)
        assert f"Deployment {name} is deleted" in deleted.stdout
    assert _containers(docker_client, name) == []
    missing = mlflow_cli("deployments", "get", "-t", "dockerhost", "--name", name, check=False)
    assert missing.returncode != 0
    assert "RESOURCE_DOES_NOT_EXIST" in missing.stderr or "No deployment named" in missing.stderr


def test_python_api_with_fixed_port(iris_versions, deployment_name, docker_client) -> None:
    client = get_deploy_client("dockerhost")
    port = free_port()
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       config={"port": port, "workers": 1, "memory": "1g"})
    assert created["name"] == deployment_name
    assert created["flavor"] == "python_function"
    assert created["endpoint"] == f"http://127.0.0.1:{port}"
    container = _containers(docker_client, deployment_name)[0]
    assert container.attrs["HostConfig"]["Memory"] == 1024**3
    assert container.attrs["HostConfig"]["Init"] is True
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert container.labels["io.mlflow.dockerhost.run-id"]

    frame = pd.DataFrame(IRIS_INPUT["data"], columns=IRIS_INPUT["columns"])
    response = client.predict(deployment_name, frame)
    assert isinstance(response, PredictionsResponse)
    assert response["predictions"] == [0, 2, 1]
    as_dict = {column: np.array(values) for column, values in IRIS_COLUMNS.items()}
    assert client.predict(deployment_name, as_dict)["predictions"] == [0, 2, 1]

    # A config-only update keeps the model, the fixed port and the recorded config.
    updated = client.update_deployment(deployment_name, config={"workers": "2"})
    assert updated["flavor"] == "python_function"
    info = client.get_deployment(deployment_name)
    assert info["endpoint"] == f"http://127.0.0.1:{port}"
    assert info["model_version"] == "1"
    assert info["config"] == {"port": str(port), "workers": "2", "memory": "1g"}
    assert info["container"] != container.name
    assert client.predict(deployment_name, frame)["predictions"] == [0, 2, 1]
    assert [d["name"] for d in client.list_deployments()].count(deployment_name) == 1

    image = info["image"]
    client.delete_deployment(deployment_name, config={"remove_image": "true"})
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image)
    with pytest.raises(MlflowException, match="No deployment named") as err:
        client.get_deployment(deployment_name)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_auth_token_stays_out_of_labels_and_survives_update(iris_versions, deployment_name,
                                                            docker_client) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       config={"auth_token": "s3cret-token"})
    container = _containers(docker_client, deployment_name)[0]
    assert "s3cret-token" not in json.dumps(container.labels)
    assert created["config"]["auth_token"] == "***"
    denied = requests.post(f"{created['endpoint']}/invocations",
                           json={"dataframe_split": IRIS_INPUT}, timeout=30)
    assert denied.status_code == 401
    frame = pd.DataFrame(IRIS_INPUT["data"], columns=IRIS_INPUT["columns"])
    assert client.predict(deployment_name, frame)["predictions"] == [0, 2, 1]
    client.update_deployment(deployment_name, iris_versions["v2"])
    assert requests.post(f"{client.get_deployment(deployment_name)['endpoint']}/invocations",
                         json={"dataframe_split": IRIS_INPUT}, timeout=30).status_code == 401
    assert len(client.predict(deployment_name, frame)["predictions"]) == 3


def test_failed_create_leaves_nothing(failing_model, deployment_name, docker_client) -> None:
    client = get_deploy_client("dockerhost")
    with pytest.raises(MlflowException, match="this model cannot be loaded"):
        client.create_deployment(deployment_name, failing_model, config={"ready_timeout": "120"})
    assert _containers(docker_client, deployment_name) == []
    tags = [t for image in docker_client.images.list() for t in image.tags]
    assert not [t for t in tags if t.startswith(f"mlflow-dockerhost/{deployment_name}:")]


@pytest.mark.parametrize("fixed_port", [False, True])
def test_failed_update_keeps_old_serving(iris_versions, failing_model, deployment_name,
                                         docker_client, fixed_port: bool) -> None:
    client = get_deploy_client("dockerhost")
    config = {"port": str(free_port())} if fixed_port else {}
    created = client.create_deployment(deployment_name, iris_versions["v1"], config=config)
    with pytest.raises(MlflowException, match="keeps serving"):
        client.update_deployment(deployment_name, failing_model)
    info = client.get_deployment(deployment_name)
    assert info["container"] == created["container"]
    assert info["endpoint"] == created["endpoint"]
    assert info["model_version"] == "1"
    assert _curl(info["endpoint"]) == [0, 2, 1]
    assert len(_containers(docker_client, deployment_name)) == 1
    tags = [t for image in docker_client.images.list() for t in image.tags
            if t.startswith(f"mlflow-dockerhost/{deployment_name}:")]
    assert tags == [info["image"]]  # the failed version's image is gone


def test_name_conflict(iris_versions, deployment_name) -> None:
    client = get_deploy_client("dockerhost")
    first = client.create_deployment(deployment_name, iris_versions["v1"])
    with pytest.raises(MlflowException, match="already exists") as err:
        client.create_deployment(deployment_name, iris_versions["v2"])
    assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert client.get_deployment(deployment_name)["container"] == first["container"]


def test_bad_inputs_are_clear_and_leave_nothing(registry, deployment_name, docker_client) -> None:
    client = get_deploy_client("dockerhost")
    with pytest.raises(MlflowException, match="Unknown config key 'prot'"):
        client.create_deployment(deployment_name, "models:/iris/1", config={"prot": "80"})
    with pytest.raises(MlflowException, match="nonexistent-model") as err:
        client.create_deployment(deployment_name, "models:/nonexistent-model/1")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException, match=r"(?s)could not be pulled.*make base-image"):
        client.create_deployment(deployment_name, "models:/iris/1",
                                 config={"base_image": "example.invalid/no-such-image:1"})
    assert _containers(docker_client, deployment_name) == []


def test_engine_not_reachable_is_clear(tmp_path: Path) -> None:
    socket_path = tmp_path / "no-engine.sock"
    client = get_deploy_client(f"dockerhost:/unix://{socket_path}")
    expected = re.escape(f"Cannot reach the Docker engine at unix://{socket_path}")
    with pytest.raises(MlflowException, match=expected):
        client.list_deployments()


def test_predict_error_carries_server_message(iris_versions, deployment_name) -> None:
    client = get_deploy_client("dockerhost")
    client.create_deployment(deployment_name, iris_versions["v1"])
    with pytest.raises(MlflowException, match=r"(?s)answered 400.*Failed to enforce schema"):
        client.predict(deployment_name, pd.DataFrame({"x": [1.0]}))
    with pytest.raises(MlflowException, match="does not compute explanations"):
        client.explain(deployment_name, pd.DataFrame({"x": [1.0]}))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_local_serves_until_signalled(iris_versions, deployment_name, docker_client,
                                          signum: int) -> None:
    port = free_port()
    # SIGINT ignored at start, as a shell does for background jobs: run-local must still stop.
    process, lines = mlflow_cli_background(
        "deployments", "run-local", "-t", "dockerhost", "--name", deployment_name, "-m",
        iris_versions["v1"], "-C", f"port={port}",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for_output(process, lines, f"at http://127.0.0.1:{port}")
        assert _curl(f"http://127.0.0.1:{port}") == [0, 2, 1]
        # run-local containers are not deployments
        listed = get_deploy_client("dockerhost").list_deployments()
        assert deployment_name not in [d["name"] for d in listed]
    finally:
        process.send_signal(signum)
        process.wait(timeout=60)
    output = "".join(lines)
    assert process.returncode == 0, output
    assert "Serving models:/iris/1" in output
    assert "Application startup complete" in output  # the server's own log is streamed
    assert _containers(docker_client, deployment_name) == []
