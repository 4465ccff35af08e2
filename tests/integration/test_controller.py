"""Deployments that follow a registry alias (``-C follow_alias``), on a real engine, with a
real tracking server (SQL backend, artifacts served) that the engine's controller reaches.

The tracking server listens on the engine's bridge gateway: the address by which containers on
this engine reach the host, and one this host has too, so the client and the controller use
the same URI.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_docker_target import record
from mlflow_docker_target.controller import lifecycle
from mlflow_docker_target.demo import register_demo_model
from mlflow_docker_target.engine.connection import connect
from tests.helpers.models import FAILING_MODEL_CODE, IRIS_INPUT, register_code_model
from tests.helpers.networks import gateway
from tests.helpers.servers import free_port
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.tracking_server import tracking
from tests.helpers.tracking_server import tracking_server as served_tracking
from tests.helpers.waiting import until_get

MODEL = "followed"
TIMEOUT = 600  # seconds for a rollout the controller makes (its first build included)


@pytest.fixture(scope="module")
def tracking_server(docker_client: docker.DockerClient,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    host = gateway(docker_client.networks.get("bridge"))
    with served_tracking(host, tmp_path_factory.mktemp("tracking")) as uri:
        yield uri


def _predictions(url: str) -> list:
    answer = requests.post(f"{url}/invocations", json={"dataframe_split": IRIS_INPUT},
                           timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def _controller(docker_client: docker.DockerClient):
    found = docker_client.containers.list(
        all=True, filters={"label": f"{record.ROLE}={lifecycle.ROLE}"})
    return found[0] if found else None


def test_a_deployment_follows_its_alias_with_nothing_lost(
        tracking_server: str, docker_client: docker.DockerClient, deployment_name: str,
        no_controller: None, tmp_path: Path) -> None:
    name = deployment_name
    with tracking(tracking_server):
        first = register_demo_model(MODEL)  # @champion: version 1
    client = get_deploy_client("dockerhost")
    made = client.create_deployment(name, f"models:/{MODEL}@champion", config={
        "follow_alias": "true", "follow_interval": "2", "tracking_uri": tracking_server})
    assert made["model_version"] == first.rsplit("/", 1)[1]
    controller = _controller(docker_client)
    assert controller is not None and controller.status == "running"
    url = made["endpoint"]
    before = _predictions(url)
    got = until_get(client, name, lambda d: d["follow"].get("state") == "serving",
                    "the controller sees version 1 served", 60)
    assert got["config"]["tracking_uri"] == tracking_server
    listed = {d["name"]: d for d in client.list_deployments()}
    assert listed[name]["follow"] == got["follow"]

    with SteadyLoad(url, {"dataframe_split": IRIS_INPUT}) as load:
        time.sleep(1)
        with tracking(tracking_server):
            second = register_demo_model(MODEL, c=0.001)  # @champion moves to version 2
        moved = time.monotonic()
        rolling = until_get(client, name, lambda d: second in d["models_served"],
                            "the moved alias's version started", TIMEOUT)
        started = time.monotonic() - moved
        got = until_get(client, name, lambda d: d["models_served"] == {second: 1},
                        "the moved alias's version alone served", TIMEOUT)
        took = time.monotonic() - moved
        time.sleep(1)
    print(f"measured: alias moved; version 2 started {started:.1f} s and served alone "
          f"{took:.1f} s later (follow_interval 2 s, environment reused); {load.sent} "
          f"requests, {load.lost} lost")
    assert load.lost == 0, load.failures[:3]
    if len(rolling["containers"]) == 2:  # seen mid-rollout: both versions shown
        assert rolling["models_served"] == {first: 1, second: 1}, rolling
    assert got["endpoint"] == url  # the deployment keeps its URL
    assert got["model_version"] == "2"
    assert _predictions(url) != before
    follow = until_get(client, name, lambda d: d["follow"].get("version") == "2",
                       "the ledger records version 2", 30)["follow"]
    # "rolled out version 2", until the next look confirms it ("serving version 2, ...")
    assert follow["state"] == "serving" and "version 2" in follow["decision"], follow
    logs = controller.logs().decode()
    assert "moved from version 1 to 2" in logs, logs[-2000:]

    # a version that cannot load: recorded as failed, version 2 serves on, no retry
    with tracking(tracking_server):
        broken = register_code_model(FAILING_MODEL_CODE, MODEL, second, tmp_path)
        MlflowClient().set_registered_model_alias(MODEL, "champion",
                                                  broken.rsplit("/", 1)[1])
    follow = until_get(client, name, lambda d: d["follow"].get("state") == "failed",
                       "the broken version recorded as failed", TIMEOUT)["follow"]
    assert follow["failed_version"] == "3"
    assert "cannot be loaded" in follow["decision"], follow
    got = client.get_deployment(name)
    assert got["models_served"] == {second: 1} and got["replicas"] == "1/1", got
    assert _predictions(url) != before
    time.sleep(5)  # two more looks at the alias: not tried again
    assert controller.logs().decode().count("moved from version 2 to 3") == 1

    # the alias deleted: the deployment stays on its version, and the controller says so
    with tracking(tracking_server):
        MlflowClient().delete_registered_model_alias(MODEL, "champion")
    follow = until_get(client, name, lambda d: d["follow"].get("state") == "alias-missing",
                       "the deleted alias noticed", 60)["follow"]
    assert "staying on version 2" in follow["decision"]

    # the last deployment that follows an alias takes the controller with it
    client.delete_deployment(name)
    assert _controller(docker_client) is None


def test_what_the_controller_cannot_follow_fails_before_anything_is_built(
        tracking_server: str, iris_versions: dict[str, str], docker_client: docker.DockerClient,
        deployment_name: str, no_controller: None) -> None:
    client = get_deploy_client("dockerhost")
    port = free_port()  # nothing listens there
    host = tracking_server.rsplit(":", 1)[0]
    cases = {
        f"{host}:{port}": "does not answer from the engine's controller",
        "http://127.0.0.1:5000": "loopback",
        "sqlite:///mlflow.db": None,  # refused by the key's own parser
    }
    for uri, said in cases.items():
        with pytest.raises(MlflowException) as error:
            client.create_deployment(deployment_name, "models:/iris@champion", config={
                "follow_alias": "true", "tracking_uri": uri})
        assert said is None or said in str(error.value), error.value
        assert client.list_deployments() == [] or deployment_name not in {
            d["name"] for d in client.list_deployments()}
        assert _controller(docker_client) is None  # nothing left running
    with pytest.raises(MlflowException, match="names none"):
        client.create_deployment(deployment_name, iris_versions["v1"],
                                 config={"follow_alias": "true"})


def test_a_rollout_cut_short_by_the_controllers_death_is_finished_when_it_starts_again(
        tracking_server: str, docker_client: docker.DockerClient, deployment_name: str,
        no_controller: None) -> None:
    name, model = deployment_name, f"{MODEL}-killed"
    with tracking(tracking_server):
        first = register_demo_model(model)
    client = get_deploy_client("dockerhost")
    made = client.create_deployment(name, f"models:/{model}@champion", config={
        "follow_alias": "true", "follow_interval": "1", "tracking_uri": tracking_server})
    controller = _controller(docker_client)
    with SteadyLoad(made["endpoint"], {"dataframe_split": IRIS_INPUT}) as load:
        with tracking(tracking_server):
            second = register_demo_model(model, c=0.001)
        until_get(client, name, lambda d: len(d["models_served"]) == 2,
                  "the rollout under way", TIMEOUT)
        controller.kill()  # SIGKILL: no cleanup of any kind
        mixed = client.get_deployment(name)
        controller.start()  # as the engine would after a restart
        done = until_get(client, name, lambda d: d["models_served"] == {second: 1}
                         and d["follow"].get("state") == "serving", "the rollout finished", TIMEOUT)
        time.sleep(1)
    print(f"measured: controller killed mid-rollout (replicas then: {mixed['models_served']}); "
          f"finished after its restart; {load.sent} requests, {load.lost} lost")
    assert mixed["models_served"] == {first: 1, second: 1}, mixed
    assert load.lost == 0, load.failures[:3]
    assert len(done["containers"]) == 1  # nothing of the cut rollout left
    logs = controller.logs().decode()
    assert "was cut short" in logs, logs[-2000:]
    client.delete_deployment(name)


def test_a_stopped_controller_starts_again_and_an_older_one_is_replaced(
        tracking_server: str, docker_client: docker.DockerClient, deployment_name: str,
        no_controller: None) -> None:
    name, model = deployment_name, f"{MODEL}-kept"
    with tracking(tracking_server):
        register_demo_model(model)
    client = get_deploy_client("dockerhost")
    client.create_deployment(name, f"models:/{model}@champion", config={
        "follow_alias": "true", "follow_interval": "5", "tracking_uri": tracking_server})
    current = _controller(docker_client)
    current.stop(timeout=30)
    client.update_deployment(name, config={"follow_interval": "4"})  # needs the controller
    again = _controller(docker_client)
    assert again.status == "running" and again.image.id == current.image.id
    until_get(client, name, lambda d: d["follow"].get("state") == "serving", "followed again", 60)

    # an older plugin's controller (another image) is replaced, and its image removed
    engine = connect(None)
    older, _ = docker_client.images.build(
        fileobj=io.BytesIO(f"FROM {current.image.id}\nLABEL older=true\n".encode()),
        tag="mlflow-dockerhost/controller:older", rm=True, network_mode="none")
    again.remove(force=True)
    lifecycle.start(engine, "mlflow-dockerhost/controller:older")
    client.update_deployment(name, config={"follow_interval": "5"})
    newest = _controller(docker_client)
    assert newest.image.id == current.image.id and newest.status == "running"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(older.id)
    client.delete_deployment(name)
    assert _controller(docker_client) is None


def test_an_alias_move_rolls_out_as_a_canary_that_its_verdict_promotes(
        tracking_server: str, deployment_name: str, no_controller: None) -> None:
    name, model = deployment_name, f"{MODEL}-canary"
    with tracking(tracking_server):
        register_demo_model(model)
    client = get_deploy_client("dockerhost")
    made = client.create_deployment(name, f"models:/{model}@champion", config={
        "follow_alias": "true", "follow_interval": "1", "tracking_uri": tracking_server,
        "rollout": "canary", "canary_traffic": "30", "canary_window": "10",
        "canary_min_requests": "30", "canary_max_latency_ratio": "3"})
    with SteadyLoad(made["endpoint"], {"dataframe_split": IRIS_INPUT}) as load:
        with tracking(tracking_server):
            second = register_demo_model(model, c=0.001)
        canary = until_get(client, name, lambda d: "canary" in d,
                           "the new version as a canary", TIMEOUT)
        done = until_get(client, name, lambda d: d["models_served"] == {second: 1}
                         and d["follow"].get("state") == "serving", "the canary promoted", TIMEOUT)
        time.sleep(1)
    print(f"measured: alias moved, rolled out as a canary and promoted: {load.sent} requests, "
          f"{load.lost} lost; verdict: {done.get('last_canary', {}).get('reason')}")
    assert load.lost == 0, load.failures[:3]
    assert canary["canary"]["model_version"] == "2" and canary["model_version"] == "1"
    assert done["last_canary"]["state"] == "promoted" and done["model_version"] == "2"
    client.delete_deployment(name)
