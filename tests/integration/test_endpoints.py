"""Endpoints that stay put, on a real engine: fronts, replicas, rollouts under load, weighted
traffic, and one writer per name."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pandas as pd
import pytest
import requests
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from mlflow_docker_target import record
from mlflow_docker_target.runtimes import haproxy as front
from mlflow_docker_target.runtimes.container.fronts import as_tar
from mlflow_docker_target.runtimes.container.fronts import reload as _reload
from serving_image.contract import CHECK_TIMEOUT_MS
from tests.helpers.cli import mlflow_cli
from tests.helpers.engine import ENDPOINT, LABEL, servers
from tests.helpers.models import IRIS_INPUT
from tests.helpers.servers import answers, free_port
from tests.helpers.steady_load import SteadyLoad

BODY = {"dataframe_split": IRIS_INPUT}
FRAME = pd.DataFrame(IRIS_INPUT["data"], columns=IRIS_INPUT["columns"])


@pytest.mark.parametrize(("replicas", "fixed_port"), [(1, False), (2, True)])
def test_update_under_steady_load_loses_nothing(iris_versions, deployment_name, docker_client,
                                                replicas: int, fixed_port: bool) -> None:
    client = get_deploy_client("dockerhost")
    config = {"replicas": str(replicas)}
    if fixed_port:
        config["port"] = str(free_port())
    created = client.create_deployment(deployment_name, iris_versions["v1"], config=config)
    assert created["replicas"] == f"{replicas}/{replicas}"
    url = created["endpoint"]
    first = [c.name for c in servers(docker_client, deployment_name)]
    idle = requests.Session()  # a keep-alive connection that sleeps through the update
    assert idle.post(f"{url}/invocations", json=BODY, timeout=30).status_code == 200
    with SteadyLoad(url, BODY) as load:
        load.wait_for(20)
        client.update_deployment(deployment_name, iris_versions["v2"])
        time.sleep(0.5)
    print(f"update, replicas={replicas}, fixed port={fixed_port}: {load.summary()}")
    assert load.lost == 0, load.summary()
    assert load.sent > 100
    # its next request, sent after the old replicas went, is answered by a new one
    woken = idle.post(f"{url}/invocations", json=BODY, timeout=30)
    assert woken.status_code == 200, woken.text
    assert woken.headers["x-mlflow-model-version"] == "2"
    info = client.get_deployment(deployment_name)
    assert info["endpoint"] == url
    assert info["model_version"] == "2"
    now = servers(docker_client, deployment_name)
    assert len(now) == replicas and not {c.name for c in now} & set(first)
    answer = requests.post(f"{url}/invocations", json=BODY, timeout=30)
    assert answer.headers["x-mlflow-deployment"] == deployment_name
    assert answer.headers["x-mlflow-model-version"] == "2"


def test_failed_update_under_load_keeps_the_old_version_serving(
        iris_versions, failing_model, deployment_name, docker_client) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"])
    with SteadyLoad(created["endpoint"], BODY) as load:
        load.wait_for(20)
        with pytest.raises(MlflowException, match=r"(?s)cannot be loaded.*keeps serving"):
            client.update_deployment(deployment_name, failing_model)
    print(f"failed update: {load.summary()}")
    assert load.lost == 0, load.summary()
    assert [c.name for c in servers(docker_client, deployment_name)] == [created["container"]]
    assert client.get_deployment(deployment_name)["model_version"] == "1"
    tags = [t for image in docker_client.images.list() for t in image.tags]
    assert len([t for t in tags if t.startswith(f"mlflow-dockerhost/{deployment_name}:")]) == 1


def test_killing_one_of_two_replicas_under_load(iris_versions, deployment_name,
                                                docker_client) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       config={"replicas": "2"})
    with SteadyLoad(created["endpoint"], BODY) as load:
        load.wait_for(50)
        servers(docker_client, deployment_name)[0].kill()
        sent = load.sent
        load.wait_for(sent + 500)
    print(f"docker kill of one of two replicas: {load.summary()}")
    # The front retries what the killed replica had not begun to answer, even on a reused
    # connection to it (it holds each request whole), so no client connection is closed
    # without an answer. Only an answer the replica had begun writing (headers sent, body
    # not) cannot be retried: at most the 2 or so requests it held at the instant of the kill.
    unanswered = [f for f in load.failures if "without response" in f]
    assert not unanswered, load.summary()
    assert load.lost <= 2, load.summary()
    assert not [s for s in load.statuses if s != 200], load.summary()
    assert load.sent >= sent + 500


def test_replicas_that_stall_stay_in_rotation(iris_versions, deployment_name,
                                              docker_client) -> None:
    """Both replicas stalled for 2.2 s at once (``docker pause``), as a busy host or a CPU
    quota stalls them, three times under load: the front's checks wait for their answers
    (CHECK_TIMEOUT_MS), so no replica leaves the rotation for being slow and nothing is
    refused; what came during a stall is answered after it. With the check interval (500 ms)
    as the timeout, two checks in a row failed, both replicas went out at once and the front
    refused requests ("No replica ... is ready")."""
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       config={"replicas": "2"})
    replicas = servers(docker_client, deployment_name)
    with SteadyLoad(created["endpoint"], BODY, clients=2) as load:
        load.wait_for(50)
        for _ in range(3):
            for replica in replicas:
                replica.pause()
            time.sleep(2.2)
            for replica in replicas:
                replica.unpause()
            time.sleep(2)
    print(f"measured: both replicas stalled 3 x 2.2 s, check timeout {CHECK_TIMEOUT_MS} ms: "
          f"{load.summary()}")
    assert load.sent > 200 and load.lost == 0, load.summary()


def test_scaling_keeps_the_serving_replicas_and_loses_nothing(iris_versions, deployment_name,
                                                              docker_client) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"])
    first = servers(docker_client, deployment_name)[0]
    with SteadyLoad(created["endpoint"], BODY) as load:
        load.wait_for(20)
        up = client.update_deployment(deployment_name, config={"replicas": "3"})
        load.wait_for(load.sent + 100)
        down = client.update_deployment(deployment_name, config={"replicas": "1"})
        load.wait_for(load.sent + 100)
    print(f"scale 1 -> 3 -> 1 under load: {load.summary()}")
    assert load.lost == 0, load.summary()
    assert up["replicas"] == "3/3" and up["config"]["replicas"] == "3"
    assert down["replicas"] == "1/1" and down["config"]["replicas"] == "1"
    assert up["endpoint"] == down["endpoint"] == created["endpoint"]
    left = servers(docker_client, deployment_name)
    assert len(left) == 1 and left[0].id != first.id  # the oldest went first
    # the next rollout keeps the count the engine holds, not the one first recorded
    client.update_deployment(deployment_name, config={"replicas": "2"})
    client.update_deployment(deployment_name, iris_versions["v2"])
    assert len(servers(docker_client, deployment_name)) == 2
    assert client.get_deployment(deployment_name)["model_version"] == "2"


def test_endpoint_with_weighted_traffic(iris_versions, endpoint_name, docker_client) -> None:
    client = get_deploy_client("dockerhost")
    port = free_port()
    made = client.create_endpoint(endpoint_name, config={"port": str(port)})
    assert made["url"] == f"http://127.0.0.1:{port}"
    v1, v2 = f"{endpoint_name}-v1", f"{endpoint_name}-v2"
    client.create_deployment(v1, iris_versions["v1"], endpoint=endpoint_name)
    mlflow_cli("deployments", "create", "-t", "dockerhost", "--name", v2, "-m",
               iris_versions["v2"], "--endpoint", endpoint_name)
    info = client.get_endpoint(endpoint_name)
    assert info["deployments"] == [v1, v2]
    assert info["traffic"] == {v1: 50.0, v2: 50.0}  # even until traffic is set

    mlflow_cli("deployments", "update-endpoint", "-t", "dockerhost", "--endpoint",
               endpoint_name, "-C", f"traffic={v1}:90,{v2}:10")
    got = mlflow_cli("deployments", "get-endpoint", "-t", "dockerhost", "--endpoint",
                     endpoint_name).stdout
    assert f"traffic: {{'{v1}': 90.0, '{v2}': 10.0}}" in got
    session = requests.Session()
    counts: Counter[str] = Counter()
    for _ in range(1000):
        answer = session.post(f"{made['url']}/invocations", json=BODY, timeout=30)
        assert answer.status_code == 200
        counts[answer.headers["x-mlflow-deployment"]] += 1
    print(f"90/10 split over 1000 requests: {dict(counts)}")
    assert 860 <= counts[v1] <= 940  # 90% +- 4 standard deviations

    # every traffic change reloads the front: under load, nothing is lost
    with SteadyLoad(made["url"], BODY) as load:
        load.wait_for(20)
        for shares in ("10,90", "50,50", "90,10"):
            first, second = shares.split(",")
            client.update_endpoint(endpoint_name,
                                   config={"traffic": f"{v1}:{first},{v2}:{second}"})
            load.wait_for(load.sent + 100)
    print(f"three traffic changes under load: {load.summary()}")
    assert load.lost == 0, load.summary()

    # predict through the split, and by name from that deployment only
    assert len(client.predict(endpoint=endpoint_name, inputs=FRAME)["predictions"]) == 3
    assert client.predict(v2, FRAME)["predictions"] != client.predict(v1, FRAME)["predictions"]
    assert [d["name"] for d in client.list_deployments(endpoint=endpoint_name)] == [v1, v2]
    assert endpoint_name in [e["name"] for e in client.list_endpoints()]
    with pytest.raises(MlflowException, match=rf"still has deployments: {v1}, {v2}"):
        client.delete_endpoint(endpoint_name)
    with pytest.raises(MlflowException, match="Not on endpoint"):
        client.update_endpoint(endpoint_name, config={"traffic": "nope:100"})
    with pytest.raises(MlflowException, match="stays on the endpoint"):
        client.update_deployment(v1, endpoint="elsewhere")

    # a deployment attached later gets no share until given one
    v3 = f"{endpoint_name}-v3"
    client.create_deployment(v3, iris_versions["v1"], endpoint=endpoint_name)
    assert client.get_endpoint(endpoint_name)["traffic"][v3] == 0
    # deleting one hands its share to the others; the endpoint keeps its port
    with SteadyLoad(made["url"], BODY) as load:
        load.wait_for(20)
        client.delete_deployment(v1)
        load.wait_for(load.sent + 100)
    print(f"delete of the 90% deployment under load: {load.summary()}")
    assert load.lost == 0, load.summary()
    assert load.served_by[v3] == 0
    for name in (v2, v3):
        client.delete_deployment(name)
    client.delete_endpoint(endpoint_name)
    client.delete_endpoint(endpoint_name)  # idempotent
    assert docker_client.containers.list(all=True,
                                         filters={"label": f"{ENDPOINT}={endpoint_name}"}) == []
    assert docker_client.networks.list(filters={"label": f"{ENDPOINT}={endpoint_name}"}) == []
    assert docker_client.volumes.list(filters={"label": f"{ENDPOINT}={endpoint_name}"}) == []


def test_front_that_refuses_a_configuration_keeps_the_last_one(endpoint_name,
                                                              docker_client) -> None:
    made = get_deploy_client("dockerhost").create_endpoint(endpoint_name)
    front_container = docker_client.containers.get(f"mlflow-endpoint-{endpoint_name}")
    broken = b"frontend broken\n  nonsense\n"
    front_container.put_archive(front.CONFIG_DIR, as_tar({"haproxy.cfg": (broken, 0o644, None)}))
    with pytest.raises(MlflowException, match="did not take its new configuration") as caught:
        _reload(front_container)
    assert "nonsense" in caught.value.message  # HAProxy's own words about the bad line
    answer = requests.post(f"{made['url']}/invocations", json=BODY, timeout=10)
    assert answer.status_code == 503  # the previous configuration: no replica yet
    assert "No replica of endpoint" in answer.json()["message"]


def test_create_with_endpoint_makes_it_and_fixes_its_port(iris_versions, endpoint_name) -> None:
    client = get_deploy_client("dockerhost")
    port = free_port()
    name = f"{endpoint_name}-a"
    created = client.create_deployment(name, iris_versions["v1"], endpoint=endpoint_name,
                                       config={"endpoint_port": str(port)})
    assert created["endpoint"] == f"http://127.0.0.1:{port}"
    assert created["config"] == {}  # the endpoint's port is no setting of the deployment
    client.update_deployment(name, config={"workers": "1"})
    assert client.get_endpoint(endpoint_name)["url"] == f"http://127.0.0.1:{port}"
    with pytest.raises(MlflowException, match="endpoint_port"):
        client.create_deployment(f"{endpoint_name}-b", iris_versions["v1"],
                                 endpoint=endpoint_name, config={"port": "80"})
    client.delete_deployment(name)


def _cli_at_once(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Start the ``mlflow`` commands together, as users in two terminals would."""
    processes = [subprocess.Popen([sys.executable, "-m", "mlflow", *c], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for c in commands]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def test_one_writer_per_name(iris_versions, deployment_name, docker_client) -> None:
    create = ["deployments", "create", "-t", "dockerhost", "--name", deployment_name, "-m",
              iris_versions["v1"]]
    results = _cli_at_once(create, create)
    codes = sorted(r.returncode for r in results)
    print("concurrent creates:", [r.returncode for r in results])
    assert codes[0] == 0 and codes[1] != 0, [r.stderr[-500:] for r in results]
    loser = next(r for r in results if r.returncode)
    assert "RESOURCE_ALREADY_EXISTS" in loser.stderr or "already exists" in loser.stderr
    assert len(servers(docker_client, deployment_name)) == 1

    update = ["deployments", "update", "-t", "dockerhost", "--name", deployment_name, "-m",
              iris_versions["v2"]]
    results = _cli_at_once(update, update)
    print("concurrent updates:", [r.returncode for r in results])
    assert sorted(r.returncode for r in results)[0] == 0
    loser = next(r for r in results if r.returncode)
    assert f"'{deployment_name}' is being updated by another client" in loser.stderr
    assert len(servers(docker_client, deployment_name)) == 1
    locks = docker_client.containers.list(all=True, filters={"label": record.LOCK})
    assert not [c for c in locks if deployment_name in c.name]


def test_run_local_container_goes_with_the_engine_even_if_the_client_is_killed(
        iris_versions, deployment_name, docker_client) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "deployments", "run-local", "-t",
                                "dockerhost", "--name", deployment_name, "-m",
                                iris_versions["v1"], "-C", f"port={port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        answers(f"http://127.0.0.1:{port}/ping", process, seconds=300)
        found = docker_client.containers.list(all=True, filters={"label": f"{LABEL}="
                                                                          f"{deployment_name}"})
        assert found and found[0].attrs["HostConfig"]["AutoRemove"] is True
        process.terminate()
        time.sleep(0.5)
        process.kill()  # before it could remove the container itself
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 60
    while docker_client.containers.list(all=True,
                                        filters={"label": f"{LABEL}={deployment_name}"}):
        assert time.monotonic() < deadline, "the run-local container was left behind"
        time.sleep(0.5)
