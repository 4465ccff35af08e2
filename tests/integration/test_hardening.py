"""Hardening on a real engine: time limits through the front, secrets, auth on every route,
config keys taken off with ``-C key=``, out-of-memory kills named, nothing left after a failure."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from pathlib import Path

import docker
import pytest
import requests
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from mlflow_docker_target.local_run import run_local
from tests.helpers.cli import mlflow_cli
from tests.helpers.engine import servers
from tests.helpers.models import IRIS_INPUT, SHAPES, SLEEPY_MODEL, register_code_model
from tests.helpers.servers import free_port

HOG_MODEL = """
import os
import mlflow


class Hog(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.held = b"x" * (int(os.environ.get("HOG_MB", "0")) * 1024 * 1024)

    def predict(self, context, model_input, params=None):
        block = b"x" * (int(model_input["x"].iloc[0]) * 1024 * 1024)
        return [len(block)]


mlflow.models.set_model(Hog())
"""
X_DOUBLE = ModelSignature(inputs=Schema([ColSpec("double", "x")]))


@pytest.fixture(scope="module")
def sleepy_model(iris_versions, tmp_path_factory) -> str:
    return register_code_model(SLEEPY_MODEL, "sleepy", iris_versions["v1"],
                               tmp_path_factory.mktemp("sleepy"), X_DOUBLE)


@pytest.fixture(scope="module")
def hog_model(iris_versions, tmp_path_factory) -> str:
    return register_code_model(HOG_MODEL, "hog", iris_versions["v1"],
                               tmp_path_factory.mktemp("hog"), X_DOUBLE)


def _post(url: str, shape: str, seconds: float,
          headers: dict[str, str] | None = None) -> tuple[requests.Response, float]:
    content_type, template = SHAPES[shape]
    started = time.monotonic()
    answer = requests.post(f"{url}/invocations", data=template % seconds, timeout=60,
                           headers={"Content-Type": content_type, **(headers or {})})
    return answer, time.monotonic() - started


def _image_tags(client: docker.DockerClient, name: str) -> list[str]:
    return [t for image in client.images.list() for t in image.tags
            if t.startswith(f"mlflow-dockerhost/{name}:")]


def test_time_limit_holds_on_every_input_shape_through_the_front(sleepy_model,
                                                                 deployment_name) -> None:
    """The issue's case: request_timeout=2, one worker, a 4 s prediction: 504 at 2 s on every
    shape, fast path included, and /health answers meanwhile."""
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, sleepy_model,
                                       config={"request_timeout": "2", "workers": "1"})
    url = created["endpoint"]
    for shape in SHAPES:
        answer, took = _post(url, shape, 4)
        assert answer.status_code == 504, (shape, answer.text)
        assert answer.json()["error_code"] == "DEADLINE_EXCEEDED"
        assert answer.headers["x-mlflow-deployment"] == deployment_name
        assert 1.9 < took < 3.5, (shape, took)
    slow = threading.Thread(target=_post, args=(url, "dataframe_records", 1.5))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    health = requests.get(f"{url}/health", timeout=10)
    took = time.monotonic() - started
    slow.join()
    assert health.status_code == 200 and took < 1.0, took


def test_secrets_stay_in_the_environment_and_keys_come_off(iris_versions, deployment_name,
                                                           docker_client) -> None:
    client = get_deploy_client("dockerhost")
    config = {"auth_token": "s3cret-token", "env.AWS_SECRET_ACCESS_KEY": "aws-s3cret",
              "env.DB_PASSWORD": "pw-s3cret", "env.PLAIN_SETTING": "visible",
              "memory": "512m"}
    created = client.create_deployment(deployment_name, iris_versions["v1"], config=config)
    token = {"Authorization": "Bearer s3cret-token"}

    def check_secrets_hidden() -> docker.models.containers.Container:
        container = servers(docker_client, deployment_name)[0]
        labels = json.dumps(container.labels)
        described = json.dumps(client.get_deployment(deployment_name))
        listed = json.dumps(client.list_deployments())
        for secret in ("s3cret-token", "aws-s3cret", "pw-s3cret"):
            assert secret not in labels and secret not in described and secret not in listed
        return container

    container = check_secrets_hidden()
    assert created["config"]["env.AWS_SECRET_ACCESS_KEY"] == "***"
    assert created["config"]["env.DB_PASSWORD"] == created["config"]["auth_token"] == "***"
    assert created["config"]["env.PLAIN_SETTING"] == "visible"
    assert "AWS_SECRET_ACCESS_KEY=aws-s3cret" in container.attrs["Config"]["Env"]
    url = created["endpoint"]
    for route in ("/invocations", "/version", "/metrics", "/openapi.json", "/docs"):
        method = "POST" if route == "/invocations" else "GET"
        assert requests.request(method, url + route, timeout=30).status_code == 401, route
        assert requests.request(method, url + route, headers=token, json={
            "dataframe_split": IRIS_INPUT}, timeout=30).status_code == 200, route
    for route in ("/ping", "/health"):
        assert requests.get(url + route, timeout=30).status_code == 200, route
    docs = requests.get(f"{url}/docs", headers=token, timeout=30).text
    assets = re.findall(r"(?:src|href)=['\"](/[^'\"]+\.(?:js|css))['\"]", docs)
    assert len(assets) >= 2  # Swagger UI's script and style, from the image (no CDN)
    for asset in assets:
        assert requests.get(url + asset, headers=token, timeout=30).status_code == 200
        assert requests.get(url + asset, timeout=30).status_code == 401

    # an update carries the secrets over
    client.update_deployment(deployment_name, iris_versions["v2"])
    container = check_secrets_hidden()
    env = container.attrs["Config"]["Env"]
    assert "AWS_SECRET_ACCESS_KEY=aws-s3cret" in env and "DB_PASSWORD=pw-s3cret" in env
    assert requests.get(f"{url}/version", timeout=30).status_code == 401

    # `-C key=` takes a key off: auth, a memory limit and one variable
    with pytest.raises(MlflowException, match="cannot reset the port"):
        client.update_deployment(deployment_name, config={"port": ""})
    updated = client.update_deployment(deployment_name, config={
        "auth_token": "", "memory": "", "env.DB_PASSWORD": ""})
    assert {"auth_token", "memory", "env.DB_PASSWORD"}.isdisjoint(updated["config"])
    assert updated["config"]["env.AWS_SECRET_ACCESS_KEY"] == "***"
    container = servers(docker_client, deployment_name)[0]
    env = container.attrs["Config"]["Env"]
    assert not [e for e in env if e.startswith(("DB_PASSWORD=", "SCORING_AUTH_TOKEN="))]
    assert "AWS_SECRET_ACCESS_KEY=aws-s3cret" in env
    assert container.attrs["HostConfig"]["Memory"] == 0
    assert requests.get(f"{url}/version", timeout=30).status_code == 200
    assert client.get_deployment(deployment_name)["endpoint"] == url


def test_out_of_memory_is_named(hog_model, deployment_name, docker_client) -> None:
    client = get_deploy_client("dockerhost")
    # at load: create fails, naming the limit, and leaves nothing behind
    with pytest.raises(MlflowException, match=r"(?s)out of memory.*-C memory"):
        client.create_deployment(deployment_name, hog_model, config={
            "memory": "300m", "workers": "1", "env.HOG_MB": "600", "ready_timeout": "120"})
    assert servers(docker_client, deployment_name) == []
    assert _image_tags(docker_client, deployment_name) == []
    # while serving: get says why the replica stopped
    created = client.create_deployment(deployment_name, hog_model, config={
        "memory": "300m", "workers": "1", "restart_policy": "no"})
    answer, _ = _post(created["endpoint"], "dataframe_split", 600)
    assert answer.status_code >= 500
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        described = client.get_deployment(deployment_name)
        if described["exit_reason"]:
            break
        time.sleep(0.5)
    assert "out of memory" in described["exit_reason"], described
    assert "300 MiB" in described["exit_reason"] and "-C memory" in described["exit_reason"]


def test_a_port_clash_leaves_nothing(iris_versions, deployment_name, docker_client) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MlflowException, match=str(port)):
            get_deploy_client("dockerhost").create_deployment(
                deployment_name, iris_versions["v1"], config={"port": str(port)})
        assert servers(docker_client, deployment_name) == []
        assert _image_tags(docker_client, deployment_name) == []
        with pytest.raises(MlflowException, match=str(port)):
            run_local(deployment_name, iris_versions["v1"], config={"port": str(port)})
        assert _image_tags(docker_client, deployment_name) == []
    assert free_port()  # the socket is closed


def test_readme_examples_work(iris_versions, deployment_name, tmp_path: Path) -> None:
    """What the README gives a first-time user works as written: the Python snippet, the
    input file for `predict --input-path`, and one curl command per input format."""
    import contextlib
    import io
    import subprocess

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"(.{0,40})```(json|bash|python) *\n(.*?)```", readme, re.DOTALL)
    snippet = next(text for _, kind, text in blocks
                   if kind == "python" and "get_deploy_client" in text)
    snippet = snippet.replace('"models:/iris@champion"', repr(iris_versions["v1"]))
    snippet = snippet.replace('"iris"', repr(deployment_name))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet, {})
    assert "'predictions': [0, 2]" in printed.getvalue(), printed.getvalue()
    url = get_deploy_client("dockerhost").get_deployment(deployment_name)["endpoint"]

    marked = [text for before, kind, text in blocks if "<!-- input.json -->" in before]
    assert len(marked) == 1
    (tmp_path / "input.json").write_text(marked[0])
    result = mlflow_cli("deployments", "predict", "-t", "dockerhost", "--name", deployment_name,
                        "--input-path", str(tmp_path / "input.json"))
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"predictions": [0, 2]}

    curls = [text for _, kind, text in blocks
             if kind == "bash" and "curl" in text and "/invocations" in text]
    assert len(curls) >= 5  # one per input format: split, records, inputs, instances, CSV
    for text in curls:
        command = text.replace("http://127.0.0.1:8080", url)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0 and json.loads(done.stdout) == {"predictions": [0]}, (
            text, done.stdout, done.stderr)


def test_gpus_on_an_engine_without_nvidia_fail_clearly_and_leave_nothing(
        iris_versions, deployment_name, docker_client, caplog) -> None:
    """This engine has no NVIDIA runtime: the device request reaches it, its refusal comes
    back with what to do, before anything is built, and run-local says the same."""
    caplog.set_level(logging.INFO, logger="mlflow_docker_target")
    client = get_deploy_client("dockerhost")
    for config in ({"gpus": "all"}, {"gpus": "device=0"}):
        with pytest.raises(MlflowException,
                           match=r"(?s)cannot give containers GPUs.*NVIDIA Container Toolkit"):
            client.create_deployment(deployment_name, iris_versions["v1"], config=config)
    assert servers(docker_client, deployment_name) == []
    assert _image_tags(docker_client, deployment_name) == []
    probes = docker_client.containers.list(all=True, filters={
        "label": "io.mlflow.dockerhost.role=probe"})
    assert probes == []
    with pytest.raises(MlflowException, match="NVIDIA Container Toolkit"):
        run_local(deployment_name, iris_versions["v1"],
                  config={"gpus": "1", "port": str(free_port())})
    assert _image_tags(docker_client, deployment_name) == []
    built = [r.getMessage() for r in caplog.records if "image" in r.getMessage().lower()]
    assert built == [], built  # nor built, then removed: not even looked for
