"""Deployments on a real three-node swarm, through MLflow's CLI: services, fronts on every node,
images through a registry, Swarm's own rollouts and rollbacks, the controller (aliases,
canaries) and a lost node.

The swarm is the session's (``conftest.swarm``); the test that kills a node runs last. ``make
test`` runs the CLI session and the followed alias; shared endpoints, canaries and the lost
node are ``slow`` (``make test-all``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.deployments import get_deploy_client

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings
from mlflow_docker_target.controller import registry_credentials
from mlflow_docker_target.controller.as_service import SERVICE_ID
from mlflow_docker_target.controller.image import ensure_controller_image
from mlflow_docker_target.demo import register_demo_model
from mlflow_docker_target.engine.connection import connect
from mlflow_docker_target.runtimes.payload_log import volume_name
from mlflow_docker_target.runtimes.swarm import control_network, front_settings
from mlflow_docker_target.runtimes.swarm.names import service_name
from serving_image.contract import PAYLOAD_LOG_DIR, SCRATCH_DIR
from tests.helpers.cli import mlflow_cli
from tests.helpers.models import IRIS_COLUMNS, IRIS_INPUT, PREDICT_FAILS_CODE, register_code_model
from tests.helpers.remote_engine import load_images
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.swarm_cluster import Swarm
from tests.helpers.tls_files import make_ca, make_cert
from tests.helpers.tracking_server import tracking, tracking_server
from tests.helpers.waiting import until_get

PORT = 18080
BODY = {"dataframe_split": IRIS_INPUT}


def _target(swarm: Swarm) -> str:
    return f"dockerhost:/{swarm.manager.socket}"


def _get(swarm: Swarm, name: str) -> dict[str, str]:
    out = mlflow_cli("deployments", "get", "-t", _target(swarm), "--name", name).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def _predict(url: str) -> list:
    answer = requests.post(f"{url}/invocations", json=BODY, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def _running_nodes(swarm: Swarm, service: str) -> list[str]:
    """The node of every running task of ``service``."""
    manager = swarm.manager.client()
    names = {n.id: n.attrs["Description"]["Hostname"] for n in manager.nodes.list()}
    tasks = manager.services.get(service).tasks(filters={"desired-state": "running"})
    return sorted(names[t["NodeID"]] for t in tasks if t["Status"]["State"] == "running")


def _measured(what: str, value: object) -> None:
    """A figure for the closing note and the README (``pytest -rP`` shows it)."""
    print(f"measured: {what}: {value}")


def test_cli_session_on_a_swarm(swarm: Swarm, iris_versions, tmp_path: Path) -> None:
    target, name = _target(swarm), "fraud.v1"  # a name a service cannot have as it is
    create = ("deployments", "create", "-t", target, "--name", name, "-m", iris_versions["v1"])
    manager = swarm.manager.client()

    # What a swarm needs is asked for before anything is built.
    missing = mlflow_cli(*create, "-C", f"port={PORT}", check=False)
    assert missing.returncode != 0 and "-C registry=host:port" in missing.stderr
    missing = mlflow_cli(*create, "-C", f"registry={swarm.registry}/ml", check=False)
    assert missing.returncode != 0 and "port must be given" in missing.stderr
    refused = mlflow_cli(*create, "-C", f"registry={swarm.registry}/ml", "-C", f"port={PORT}",
                         "-C", "gpus=all", check=False)
    assert refused.returncode != 0 and "constraints=node.labels.gpu==true" in refused.stderr
    assert manager.images.list("mlflow-dockerhost/fraud.v1") == []

    started = time.monotonic()
    mlflow_cli(*create, "-C", f"registry={swarm.registry}/ml", "-C", f"port={PORT}",
               "-C", "replicas=3", "-C", "request_timeout=90", "-C", "rate_limit=100000",
               "-C", f"front_metrics_port={PORT + 5}", "-C", "payload_log=volume")
    _measured("create on the swarm, push included (s)", round(time.monotonic() - started, 1))
    info = _get(swarm, name)
    assert info["runtime"] == "swarm" and info["replicas"] == "3/3", info
    assert info["endpoint"] == f"http://{swarm.manager.address}:{PORT}"
    nodes = [f"{node.address}:{PORT}" for node in swarm.nodes]
    assert json.loads(info["nodes"].replace("'", '"')) == nodes
    # one replica on each node, and the name mapped, the original kept in the labels
    service = service_name(name)
    assert service == "mlflow-fraud-v1-" + service[len("mlflow-fraud-v1-"):]
    assert _running_nodes(swarm, service) == sorted(node.name for node in swarm.nodes)
    _measured("replicas per node", _running_nodes(swarm, service))
    # its own front waits as long as the deployment's request_timeout allows, plus 5 s
    # (a configuration its settings service hands to the front on each node)
    front = manager.services.get(service_name(name, "front")).attrs["Spec"]
    settings = manager.services.get(front_settings.name_of(front["Name"])).attrs["Spec"]
    config = manager.configs.get(
        settings["TaskTemplate"]["ContainerSpec"]["Configs"][0]["ConfigID"])
    assert "timeout server 95s" in base64.b64decode(config.attrs["Spec"]["Data"]).decode()
    labels = manager.services.get(service).attrs["Spec"]["Labels"]
    assert labels["io.mlflow.dockerhost.deployment"] == name
    # replicas and fronts locked down, as far as Swarm's API allows (no no-new-privileges)
    server_task = manager.services.get(service).attrs["Spec"]["TaskTemplate"]
    for task in (server_task, front["TaskTemplate"], settings["TaskTemplate"]):
        container_spec = task["ContainerSpec"]
        assert container_spec["ReadOnly"] and container_spec["CapabilityDrop"] == ["ALL"]
        assert task["Resources"]["Limits"]["Pids"] in (1024, 256)
    running = [t for t in manager.api.tasks(filters={"service": service})
               if t["Status"]["State"] == "running"]
    container = swarm.nodes[0].client().containers.get(
        next(t for t in running if t["NodeID"] == manager.info()["Swarm"]["NodeID"]
             )["Status"]["ContainerStatus"]["ContainerID"])
    assert container.attrs["HostConfig"]["ReadonlyRootfs"]
    assert container.attrs["HostConfig"]["PidsLimit"] == 1024
    assert labels["io.mlflow.dockerhost.runtime"] == "swarm"

    # every node answers; the CLI's predict goes through the manager's
    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps(IRIS_COLUMNS))
    predicted = mlflow_cli("deployments", "predict", "-t", target, "--name", name,
                           "--input-path", str(input_path)).stdout
    first = json.loads(predicted)["predictions"]
    assert first == [0, 2, 1]
    assert all(_predict(f"http://{node}") == first for node in nodes)
    # each node's front has its own metrics, on the port asked for, with the rate limit's table
    metrics = requests.get(f"http://{swarm.nodes[1].address}:{PORT + 5}/metrics", timeout=10)
    assert f'haproxy_backend_http_requests_total{{proxy="{name}"}}' in metrics.text
    assert 'haproxy_frontend_requests_denied_total{proxy="endpoint"} 0' in metrics.text
    assert "'rate_limit': '100000'" in _get(swarm, name)["config"]
    # a change of the front's settings loses nothing through any node: each node's front
    # reloads in place (its task stays), as its settings task hands it the new configuration
    fronts_before = _front_tasks(swarm, front["Name"])
    with SteadyLoad(f"http://{nodes[0]}", BODY, clients=2) as load0, \
            SteadyLoad(f"http://{nodes[1]}", BODY, clients=2) as load1, \
            SteadyLoad(f"http://{nodes[2]}", BODY, clients=2) as load2:
        started = time.monotonic()
        mlflow_cli("deployments", "update", "-t", target, "--name", name,
                   "-C", "rate_limit=200000")
        _measured("front settings change (s)", round(time.monotonic() - started, 1))
        time.sleep(1)
    loads = (load0, load1, load2)
    _measured("front settings change, per node: lost/sent",
              [f"{load.lost}/{load.sent}" for load in loads])
    assert all(load.sent > 20 and load.lost == 0 for load in loads), \
        [load.failures[:3] for load in loads]
    assert _front_tasks(swarm, front["Name"]) == fronts_before
    assert "'rate_limit': '200000'" in _get(swarm, name)["config"]
    assert "gt 200000" in _front_file(swarm, front["Name"], "haproxy.cfg")
    # the inference log: a volume on each node, holding the records of the replicas it runs
    for _ in range(12):  # the front takes turns: each replica answers some
        _predict(info["endpoint"])
    time.sleep(1)
    recorded = _payload_records(swarm, service, volume_name(name))
    assert len(recorded) >= 13 + len(nodes), recorded
    assert {r["replica"].rpartition("@")[2] for r in recorded} == {
        node.name for node in swarm.nodes}
    assert all(r["deployment"] == name and r["status"] == 200 for r in recorded)

    # an update is Swarm's rolling update; nothing is lost through a node that is not the manager.
    # Its inference log goes to an HTTP sink that no replica can reach: the update serves, and
    # get says why nothing is recorded (one rolling update for both: each costs about a minute)
    worker = f"http://{swarm.nodes[1].address}:{PORT}"
    with SteadyLoad(worker, BODY) as load:
        mlflow_cli("deployments", "update", "-t", target, "--name", name,
                   "-m", "models:/iris@champion", "-C", "payload_log=http://127.0.0.1:9/events")
        time.sleep(1)
    _measured("update through a worker node: lost/sent", f"{load.lost}/{load.sent}")
    assert load.sent > 50 and load.lost == 0, load.failures[:5]
    for _ in range(3):  # the manager gathers the nodes' logs as they come
        info = _get(swarm, name)
        if "warning" in info["payload_log"]:
            break
    assert info["model_version"] == "2" and info["replicas"] == "3/3", info
    assert "Inference log sink unreachable" in info["payload_log"], info
    second = _predict(worker)
    assert second != first

    # a version that never gets ready is rolled back by Swarm; the current one keeps serving
    with SteadyLoad(worker, BODY) as load:
        started = time.monotonic()
        failed = mlflow_cli("deployments", "update", "-t", target, "--name", name,
                            "-C", "memory=24m", check=False)
    _measured("update rolled back after (s)", round(time.monotonic() - started, 1))
    assert failed.returncode != 0
    assert "rolled the update" in failed.stderr and "keeps serving" in failed.stderr
    assert load.lost == 0, load.failures[:5]
    info = _get(swarm, name)
    assert "'memory'" not in info["config"] and info["replicas"] == "3/3", (info, failed.stderr)
    assert _predict(worker) == second

    # replicas alone: the service scales
    mlflow_cli("deployments", "update", "-t", target, "--name", name, "-C", "replicas=2")
    assert _get(swarm, name)["replicas"] == "2/2"
    assert len(_running_nodes(swarm, service)) == 2
    assert _predict(worker) == second

    listed = mlflow_cli("deployments", "list", "-t", target).stdout
    assert f"'name': '{name}'" in listed and "'runtime': 'swarm'" in listed

    for _ in range(2):  # delete is idempotent
        mlflow_cli("deployments", "delete", "-t", target, "--name", name)
    for node in swarm.nodes:  # the records stay, as data
        volume = node.client().volumes.get(volume_name(name))
        assert volume.attrs["Labels"]["io.mlflow.dockerhost.role"] == "payload-log"
        volume.remove()
    _remove_settings_volumes(swarm, front["Name"])
    assert not manager.services.list(filters={"label": "io.mlflow.dockerhost.deployment"})
    assert not manager.networks.list(filters={"label": "io.mlflow.dockerhost.role"})
    assert not manager.configs.list()
    missing = mlflow_cli("deployments", "get", "-t", target, "--name", name, check=False)
    assert missing.returncode != 0 and "No deployment named" in missing.stderr


def _payload_records(swarm: Swarm, service: str, volume: str) -> list[dict]:
    """The inference log records in every node's volume, read in a replica running there."""
    manager = swarm.manager.client()
    found = []
    for task in manager.api.tasks(filters={"service": service, "desired-state": "running"}):
        node = next(n for n in swarm.nodes
                    if n.client().info()["Swarm"]["NodeID"] == task["NodeID"])
        container = node.client().containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
        assert any(m.get("Name") == volume for m in container.attrs["Mounts"])
        out = container.exec_run(["sh", "-c", f"cat {PAYLOAD_LOG_DIR}/*.jsonl"])
        found += [json.loads(line) for line in out.output.decode().splitlines()]
    return list({r["id"]: r for r in found}.values())  # a node's volume is read once per task


def _front_tasks(swarm: Swarm, front: str) -> set[str]:
    """The IDs of a front's running tasks: a task that restarts gets a new one."""
    manager = swarm.manager.client()
    return {t["ID"] for t in manager.api.tasks(filters={"service": front})
            if t["Status"]["State"] == "running"}


def _front_events(swarm: Swarm, front: str) -> list[str]:
    """What the fronts logged of their servers going up, down or out (HAProxy's own lines),
    for a test that lost requests to say why."""
    logs = swarm.manager.client().api.service_logs(front, stdout=True, stderr=True,
                                                    timestamps=True)
    return [line for line in b"".join(logs).decode(errors="replace").splitlines()
            if any(word in line for word in ("DOWN", " UP", "maintenance", "no server"))][-40:]


def _front_file(swarm: Swarm, front: str, path: str) -> str:
    """A file in the settings volume of the manager's front, read in that front."""
    manager = swarm.manager.client()
    node = manager.info()["Swarm"]["NodeID"]
    task = next(t for t in manager.api.tasks(filters={"service": front, "node": node})
                if t["Status"]["State"] == "running")
    container = manager.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
    return container.exec_run(["sh", "-c", f"cat {front_settings.DIR}/{path}"]).output.decode()


def _remove_settings_volumes(swarm: Swarm, front: str) -> None:
    """Each node but the manager keeps the emptied volume of a deleted front's settings."""
    for node in swarm.nodes:
        for volume in node.client().volumes.list(
                filters={"label": f"{record.SETTINGS_OF}={front}"}):
            assert node.name != swarm.manager.name, "the manager's volume is removed by delete"
            volume.remove()


def test_an_https_endpoint_on_a_swarm(swarm: Swarm, tmp_path: Path) -> None:
    """An HTTPS endpoint's fronts on every node serve the certificate, whose key is a Swarm
    secret only the front's user reads; a new certificate rolls out to every node and the old
    secret goes; nothing is left after delete."""
    ca = make_ca(tmp_path)
    first, second = (make_cert(tmp_path, ca, stem, swarm.manager.address)
                     for stem in ("first", "second"))
    client = get_deploy_client(_target(swarm))
    port, name = PORT + 10, "tls-ep"
    made = client.create_endpoint(name, config={
        "port": str(port), "registry": f"{swarm.registry}/ml",
        "https_cert": str(first.cert), "https_key": str(first.key)})
    assert made["url"] == f"https://{swarm.manager.address}:{port}"
    manager = swarm.manager.client()
    service = manager.services.get(service_name(name, "endpoint"))

    def served(pair: Any) -> None:
        """Every node's front answers over TLS with ``pair``'s certificate, which curl
        verifies with the CA (the front has no deployment yet: its answer is a 503)."""
        for node in swarm.nodes:
            answer = subprocess.run(
                ["curl", "-sS", "--cacert", str(ca.cert), "-o", "/dev/null", "-w",
                 "%{http_code}", "--connect-to", f"::{node.address}:{port}", f"{made['url']}/ping"],
                capture_output=True, text=True, timeout=30)
            assert answer.stdout == "503", (node.name, answer.stdout, answer.stderr)
            pem = ssl.get_server_certificate((node.address, port))
            assert ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(
                pair.cert.read_text()), node.name

    served(first)
    settings = manager.services.get(front_settings.name_of(service.name))
    spec = settings.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert [(s["File"]["UID"], s["File"]["Mode"]) for s in spec["Secrets"]] == [("99", 0o400)]
    assert service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") is None
    key = first.key.read_text().strip().splitlines()[1]
    assert key not in json.dumps(service.attrs) and key not in json.dumps(client.get_endpoint(name))
    # the key reaches the front's node in a tmpfs volume only the front's user reads
    listing = _front_file(swarm, service.name, "*/tls.pem")
    assert key in listing
    mounts = [m for m in manager.containers.list(filters={"name": service.name})[0].attrs[
        "Mounts"] if m["Destination"] == front_settings.DIR]
    assert manager.volumes.get(mounts[0]["Name"]).attrs["Options"]["type"] == "tmpfs"

    fronts_before = _front_tasks(swarm, service.name)
    client.update_endpoint(name, config={"https_cert": str(second.cert),
                                         "https_key": str(second.key)})
    served(second)
    assert _front_tasks(swarm, service.name) == fronts_before  # reloaded, not restarted
    # a front that starts again (here: killed on a worker node) takes the current settings
    worker = swarm.nodes[2].client()
    worker.containers.list(filters={"label": f"com.docker.swarm.service.name={service.name}"}
                           )[0].kill()
    deadline = time.monotonic() + 60
    while len(_front_tasks(swarm, service.name) - fronts_before) < 1:
        assert time.monotonic() < deadline, "Swarm did not start the front again"
        time.sleep(0.5)
    while True:  # its HAProxy starts a moment after its task runs
        try:
            ssl.get_server_certificate((swarm.nodes[2].address, port), timeout=5)
            break
        except OSError:
            assert time.monotonic() < deadline, "the restarted front never answered"
            time.sleep(0.2)
    served(second)
    secrets = manager.secrets.list(filters={"label": f"{record.SETTINGS_OF}={service.name}"})
    assert len(secrets) == 1, [s.name for s in secrets]
    client.delete_endpoint(name)
    assert manager.secrets.list(filters={"label": f"{record.SETTINGS_OF}={service.name}"}) \
        == []
    assert not manager.configs.list(filters={"label": f"{record.SETTINGS_OF}={service.name}"})
    _remove_settings_volumes(swarm, service.name)


@pytest.mark.slow
def test_weighted_traffic_on_a_swarm_endpoint(swarm: Swarm, iris_versions) -> None:
    """A shared endpoint's fronts take each new split one node at a time: the other nodes
    answer meanwhile, and the split holds on every node."""
    from mlflow.deployments import get_deploy_client

    client = get_deploy_client(_target(swarm))
    registry = f"{swarm.registry}/ml"
    client.create_endpoint("shared", {"port": str(PORT + 2), "registry": registry})
    for name, version in (("one", "v1"), ("two", "v2")):
        client.create_deployment(name, iris_versions[version], endpoint="shared",
                                 config={"registry": registry})
    endpoint = client.get_endpoint("shared")
    assert endpoint["runtime"] == "swarm" and endpoint["deployments"] == ["one", "two"]
    assert len(endpoint["nodes"]) == 3

    def served_by(node: str, count: int = 40) -> set[str]:
        answers = [requests.post(f"http://{node}:{PORT + 2}/invocations", json=BODY, timeout=30)
                   for _ in range(count)]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers][:3]
        return {a.headers["x-mlflow-deployment"] for a in answers}

    assert served_by(swarm.nodes[0].address) == {"one", "two"}  # an even split
    others = [f"http://{node.address}:{PORT + 2}" for node in swarm.nodes[1:]]
    with SteadyLoad(others[0], BODY, clients=2) as near, SteadyLoad(others[1], BODY,
                                                                    clients=2) as far:
        client.update_endpoint("shared", {"traffic": "one:0,two:100"})
        time.sleep(1)
    _measured("traffic change, per node: lost/sent",
              [f"{load.lost}/{load.sent}" for load in (near, far)])
    # each node's front reloads in place: nothing is lost through either node
    assert all(load.sent > 20 and load.lost == 0 for load in (near, far)), \
        [load.failures[:3] for load in (near, far)]
    for node in swarm.nodes:
        assert served_by(node.address) == {"two"}
    assert json.loads(json.dumps(client.get_endpoint("shared")["traffic"])) == {
        "one": 0.0, "two": 100.0}

    client.delete_deployment("two")  # its share goes; "one" takes every request
    for node in swarm.nodes:
        assert served_by(node.address, 10) == {"one"}
    client.delete_deployment("one")
    client.delete_endpoint("shared")
    manager = swarm.manager.client()
    assert not manager.services.list() and not manager.configs.list()
    assert not manager.networks.list(filters={"label": "io.mlflow.dockerhost.role"})
    _remove_settings_volumes(swarm, service_name("shared", "endpoint"))


@pytest.mark.slow  # 186 s: CI's engine tests reached its 40 minutes (the controller itself is
# tested in CI on one engine, in tests/integration/test_controller.py)
def test_a_swarm_deployment_follows_its_alias(swarm: Swarm, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller on a swarm: one service held on the manager the client talks to (on the
    swarm's control network, the manager's socket mounted, locked down); an alias move rolls out as
    Swarm's rolling update, pushed to the registry, with nothing lost through a node that is
    not the manager. The tracking server listens on this host's end of the swarm's bridge.

    The controller's image is this machine's engine's, loaded into the manager as an engine
    that ran a controller before would have it (the same build on the manager cost a minute of
    CI's 40; the remote tests build it on another engine). The client has logged in to the
    registry (which takes pushes without): the controller gets that entry for its pushes."""
    from mlflow.deployments import get_deploy_client

    client, name, port = get_deploy_client(_target(swarm)), "followed", PORT + 7
    manager = swarm.manager.client()
    load_images(manager, [ensure_controller_image(connect(None), Settings())])
    login = tmp_path / "docker-config"
    login.mkdir()
    entry = {"auth": base64.b64encode(b"ci:s3cret").decode()}
    (login / "config.json").write_text(json.dumps({"auths": {swarm.registry: entry}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(login))
    controller = {"label": f"{record.ROLE}={record.CONTROLLER}"}
    with tracking_server(swarm.gateway, tmp_path) as uri, tracking(uri):
        first = register_demo_model("followed")
        made = client.create_deployment(name, "models:/followed@champion", config={
            "follow_alias": "true", "follow_interval": "2", "tracking_uri": uri,
            "registry": f"{swarm.registry}/ml", "port": str(port), "replicas": "2"})
        assert made["runtime"] == "swarm" and made["model_version"] == "1"
        [service] = manager.services.list(filters=controller)
        template = service.attrs["Spec"]["TaskTemplate"]
        assert template["Placement"]["Constraints"] == [
            f"node.id=={manager.info()['Swarm']['NodeID']}"]
        assert template["ContainerSpec"]["ReadOnly"]
        assert template["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
        assert not manager.containers.list(filters=controller)  # a task, not a container
        assert not [line for line in caplog.text.splitlines()  # loaded there, not built
                    if "Building mlflow-dockerhost/controller" in line
                    and swarm.manager.socket in line]
        environment = dict(e.split("=", 1) for e in template["ContainerSpec"]["Env"])
        assert json.loads(environment[registry_credentials.ENV]) == {
            "auths": {swarm.registry: entry}}
        until_get(client, name, lambda d: d["follow"].get("state") == "serving",
                  "the controller sees version 1 served")
        before = _predict(f"http://{swarm.nodes[2].address}:{port}")

        with SteadyLoad(f"http://{swarm.nodes[1].address}:{port}", BODY, clients=2) as load:
            moved = time.monotonic()
            second = register_demo_model("followed", c=0.001)
            got = until_get(client, name, lambda d: set(d["models_served"]) == {second}
                            and d["follow"].get("version") == "2",
                            "the moved alias's version served")
            served_in = time.monotonic() - moved
            time.sleep(1)
        _measured("swarm: alias moved to served (s), lost/sent",
                  (round(served_in, 1), f"{load.lost}/{load.sent}"))
        assert load.sent > 50 and load.lost == 0, (load.failures[:3], _front_events(
            swarm, service_name(name, "front")))
        assert got["endpoint"] == made["endpoint"] and first != second
        assert _predict(f"http://{swarm.nodes[2].address}:{port}") != before
        logs = b"".join(manager.api.service_logs(service.id, stdout=True, stderr=True))
        assert b"moved from version 1 to 2" in logs
        # its pushes took the client's entry, from a Docker config in its scratch tmpfs
        task = manager.containers.list(filters={"label": f"{SERVICE_ID}={service.id}"})[0]
        assert task.exec_run(["cat", f"{SCRATCH_DIR}/docker-config/config.json"]).output == \
            environment[registry_credentials.ENV].encode()

        client.delete_deployment(name)
        assert not manager.services.list(filters=controller)


@pytest.mark.slow
def test_swarm_canaries_judged_by_the_controller_lose_nothing_through_any_node(
        swarm: Swarm, iris_versions: dict[str, str], tmp_path: Path) -> None:
    """A canary on a swarm is a service of its own beside the current one, reached by every
    node's front; the controller (a service on the control network) reads both versions'
    replicas on any node. A good canary is promoted after its window, though the controller's
    task is killed meanwhile (Swarm starts it again; its ledger carries on); a version whose
    predictions fail is aborted within it; requests go through two nodes that are not the
    manager throughout. The same controller judges a canary of containers on the manager's
    engine (``-C runtime=container``), which it asks from inside them."""
    client, name, port = get_deploy_client(_target(swarm)), "canaried", PORT + 8
    manager = swarm.manager.client()
    load_images(manager, [ensure_controller_image(connect(None), Settings())])
    failing = register_code_model(PREDICT_FAILS_CODE, "swarm-predict-fails",
                                  iris_versions["v1"], tmp_path)
    client.create_deployment(name, iris_versions["v1"], config={
        "registry": f"{swarm.registry}/ml", "port": str(port), "replicas": "2",
        "rollout": "canary", "canary_traffic": "30", "canary_window": "15",
        "canary_min_requests": "40", "canary_max_latency_ratio": "3"})
    [controller] = manager.services.list(
        filters={"label": f"{record.ROLE}={record.CONTROLLER}"})
    networks = controller.attrs["Spec"]["TaskTemplate"]["Networks"]
    assert [manager.networks.get(n["Target"]).name for n in networks] == [
        control_network.NAME]
    urls = [f"http://{node.address}:{port}" for node in swarm.nodes[1:]]

    with contextlib.ExitStack() as running:
        loads = [running.enter_context(SteadyLoad(url, BODY, clients=2)) for url in urls]
        started = client.update_deployment(name, iris_versions["v2"])
        assert started["canary"]["traffic"] == {"current": 70, "canary": 30}
        assert started["canary"]["replicas"] == "2/2" and started["model_version"] == "1"
        assert manager.services.get(service_name(name, "canary"))
        begun = time.monotonic()
        until_get(client, name, lambda d: d.get("canary", {}).get("judged", {}).get("figures"),
                  "the controller's first figures", 60)
        [task] = manager.containers.list(filters={"label": f"{SERVICE_ID}={controller.id}"})
        task.kill()
        promoted = until_get(client, name, lambda d: d.get("last_canary", {}).get("state")
                             == "promoted", "the good canary promoted", 240)
        took = time.monotonic() - begun
        for load in loads:
            load.wait_for(load.sent + 30)
        share = [load.versions["2"] / max(1, sum(load.versions.values())) for load in loads]
    _measured("swarm: good canary promoted after (s), lost/sent through each node",
              (round(took, 1), [f"{load.lost}/{load.sent}" for load in loads]))
    assert all(load.lost == 0 for load in loads), [load.failures[:3] for load in loads]
    assert promoted["model_version"] == "2" and "canary" not in promoted
    assert promoted["models_served"] == {iris_versions["v2"]: 2}
    assert took >= 15 and all(s >= 0.2 for s in share), share  # 30%, then all
    assert not manager.services.list(filters={"name": service_name(name, "canary")})

    with SteadyLoad(urls[0], BODY, clients=2) as load:
        load.wait_for(30)
        sent = load.sent
        client.update_deployment(name, failing)
        begun = time.monotonic()
        aborted = until_get(client, name, lambda d: d.get("last_canary", {}).get("state")
                            == "aborted", "the failing canary aborted", 120)
        took = time.monotonic() - begun
        during, failed = load.sent - sent, load.lost
        load.wait_for(load.sent + 30)
    _measured("swarm: failing canary (30%) aborted after (s), failed/sent meanwhile",
              (round(took, 1), f"{failed}/{during}"))
    assert "error rate" in aborted["last_canary"]["reason"], aborted["last_canary"]
    assert aborted["model_version"] == "2" and "canary" not in aborted
    assert failed <= 0.3 * during + 25 and load.lost == failed, (failed, during, load.lost)

    here = "canaried-here"
    client.create_deployment(here, iris_versions["v1"], config={
        "runtime": "container", "port": str(port + 1), "bind_address": "0.0.0.0",
        "host_address": swarm.manager.address,
        "rollout": "canary", "canary_traffic": "30", "canary_window": "5",
        "canary_min_requests": "20", "canary_max_latency_ratio": "3"})
    with SteadyLoad(f"http://{swarm.manager.address}:{port + 1}", BODY, clients=1) as load:
        client.update_deployment(here, iris_versions["v2"])
        judged = until_get(client, here, lambda d: "last_canary" in d,
                           "the containers' canary judged", 120)
    assert judged["last_canary"]["state"] == "promoted", judged["last_canary"]
    assert judged["model_version"] == "2" and load.lost == 0, load.failures[:3]
    client.delete_deployment(here)
    client.delete_deployment(name)
    assert not manager.services.list(filters={"label": f"{record.DEPLOYMENT}={name}"})
    assert not manager.services.list(filters={"label": f"{record.ROLE}={record.CONTROLLER}"})
    assert not [n for n in manager.networks.list() if n.name == control_network.NAME]


@pytest.mark.slow
def test_a_lost_node_under_load(swarm: Swarm, iris_versions) -> None:
    """Kills the engine of a node that is not the manager: its replica is rescheduled on the
    others, and the other nodes' fronts keep answering. The swarm stays damaged after."""
    target, name = _target(swarm), "lost"
    mlflow_cli("deployments", "create", "-t", target, "--name", name, "-m", iris_versions["v1"],
               "-C", f"registry={swarm.registry}/ml", "-C", f"port={PORT + 1}",
               "-C", "replicas=3")
    service = service_name(name)
    assert len(set(_running_nodes(swarm, service))) == 3
    lost = swarm.nodes[2]
    with SteadyLoad(f"http://{swarm.nodes[1].address}:{PORT + 1}", BODY) as load:
        time.sleep(2)
        swarm.lose(lost)
        killed = time.monotonic()
        deadline = killed + 120
        while time.monotonic() < deadline:
            running = _running_nodes(swarm, service)
            if len(running) == 3 and lost.name not in running:
                break
            time.sleep(0.5)
        recovered = time.monotonic() - killed
        time.sleep(2)
    _measured("node lost: replicas running elsewhere after (s)", round(recovered, 1))
    _measured("node lost: lost/sent through another node", f"{load.lost}/{load.sent}")
    assert len(running) == 3 and lost.name not in running, running
    assert load.lost <= load.clients, load.failures[:10]  # at most those in flight on it
    mlflow_cli("deployments", "delete", "-t", target, "--name", name)
    assert not swarm.manager.client().services.list()
