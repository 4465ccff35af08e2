"""The inference log on a real engine: the volume sink across two replicas, every input shape,
V2 and a stream, files rotated, sampling by request id, and the volume kept after delete until
``prune --volumes``; the HTTP sink against a CloudEvents receiver in the test, checked field by
field against KServe's logger, then refusing and hanging while every prediction still answers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from mlflow.deployments import get_deploy_client

from mlflow_docker_target.engine.connection import connect
from mlflow_docker_target.runtimes.lease import lease
from mlflow_docker_target.runtimes.payload_log import volume_name
from serving_image.payload_log.http_sink import REQUEST_TYPE, RESPONSE_TYPE
from serving_image.payload_log.records import sampled
from tests.helpers.event_receiver import Receiver, receiver
from tests.helpers.models import (
    IRIS_INPUT,
    STREAMING_MODEL,
    STREAMING_SIGNATURE,
    register_code_model,
)
from tests.helpers.networks import gateway
from tests.helpers.servers import free_port

V2 = {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
SHAPES: dict[str, tuple[str, str, str]] = {  # name: (path, content type, body)
    "dataframe_split": ("/invocations", "application/json",
                        '{"dataframe_split": {"columns": ["prompt"], "data": [["hi"]]}}'),
    "dataframe_records": ("/invocations", "application/json",
                          '{"dataframe_records": [{"prompt": "hi"}]}'),
    "inputs": ("/invocations", "application/json", '{"inputs": {"prompt": ["hi"]}}'),
    "instances": ("/invocations", "application/json", '{"instances": [{"prompt": "hi"}]}'),
    "csv": ("/invocations", "text/csv", "prompt\nhi\n"),
    "v2": ("/v2/models/{name}/infer", "application/json", json.dumps(V2)),
    "stream": ("/invocations", "application/json",
               '{"prompt": "hi", "stream": true, "count": 3, "delay": 0}'),
}


@pytest.fixture(scope="module")
def streamer(iris_versions: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model that answers every shape and streams, on iris's environment."""
    return register_code_model(STREAMING_MODEL, "streamer-log", iris_versions["v1"],
                               tmp_path_factory.mktemp("streamer-log"),
                               signature=STREAMING_SIGNATURE)


def _records(client: docker.DockerClient, volume: str, image: str) -> tuple[list[str], list]:
    """The volume's file names and its records, read by a container as the README shows."""
    out = client.containers.run(image, ["sh", "-c", "ls /log; echo ---; cat /log/*.jsonl"],
                                entrypoint=[], remove=True, network_disabled=True,
                                volumes={volume: {"bind": "/log", "mode": "ro"}})
    names, _, lines = out.decode().partition("---\n")
    return ([n for n in names.split() if n.endswith(".jsonl")],
            [json.loads(line) for line in lines.splitlines()])


def _prune(*options: str) -> str:
    """``mlflow-dockerhost prune``, run while a lease keeps the engine's environments: prune
    would remove those no model image is left on, and the suites after this one would each
    build theirs again (80 s for iris's). The lease is on another name, so volumes still go."""
    with lease(connect(None), "deployment", "payload-log-test-keeps-environments", "test"):
        return subprocess.run([sys.executable, "-m", "mlflow_docker_target.cli", "prune",
                               *options], capture_output=True, text=True, timeout=300,
                              check=True).stdout


def test_the_volume_sink(streamer, deployment_name, docker_client) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, streamer, config={
        "replicas": "2", "workers": "1", "payload_log": "volume",
        "payload_log_max_size": "64k", "payload_log_headers": "x-tenant"})
    volume = volume_name(deployment_name)
    assert created["payload_log"] == {"sink": "volume", "volume": volume}
    url, image = created["endpoint"], created["image"]
    session = requests.Session()
    sent: dict[str, str] = {}
    for round_ in range(12):
        for shape, (path, content_type, body) in SHAPES.items():
            rid = f"{shape}-{round_}"
            answer = session.post(url + path.format(name=deployment_name), data=body,
                                  headers={"content-type": content_type, "x-request-id": rid,
                                           "x-tenant": "acme"}, timeout=30)
            assert answer.status_code == 200, (shape, answer.text)
            assert answer.headers["x-request-id"] == rid
            sent[rid] = shape
    time.sleep(1.5)  # the writers' queues empty
    names, found = _records(docker_client, volume, image)
    by_id = {r["id"]: r for r in found}
    assert set(by_id) == set(sent) and len(found) == len(sent)  # each once
    replicas = {r["replica"] for r in found}
    assert len(replicas) == 2 and all(r.startswith(f"mlflow-{deployment_name}-")
                                      for r in replicas)
    assert len(names) > 2 and names == sorted(names)  # rotated by size; names sort by time
    assert {n.split("-")[0][:8] for n in names} == {time.strftime("%Y%m%d", time.gmtime())}
    assert all(any(replica in n for replica in replicas) for n in names)
    for rid, shape in sent.items():
        record = by_id[rid]
        assert record["status"] == 200 and record["deployment"] == deployment_name
        assert record["model_uri"] == streamer and record["request"]["headers"] == {
            "x-tenant": "acme"}
        assert record["protocol"] == ("v2" if shape == "v2" else "mlflow")
        assert record["stream"] is (shape == "stream")
        if shape == "csv":
            assert record["request"]["encoding"] == "text"
        elif shape == "stream":
            assert record["response"]["encoding"] == "events"
            assert [e["index"] for e in record["response"]["body"]
                    if isinstance(e, dict)] == [0, 1, 2]
        else:
            assert record["request"]["body"] == json.loads(SHAPES[shape][2])
            assert record["response"]["encoding"] == "json"

    # sampling: decided by the request id, alike on both replicas
    # (with room for every record: at 64k the oldest files would go, and the share with them)
    client.update_deployment(deployment_name, config={"payload_log_sample": "0.1",
                                                      "payload_log_max_size": "16m"})
    session = requests.Session()  # new connections: see the closing note of this change
    ids = [str(uuid.uuid4()) for _ in range(2000)]
    for rid in ids:
        assert session.post(url + "/invocations", data=SHAPES["inputs"][2], headers={
            "content-type": "application/json", "x-request-id": rid}).status_code == 200
    time.sleep(1.5)
    recorded = {r["id"] for r in _records(docker_client, volume, image)[1]} & set(ids)
    share = len(recorded) / len(ids)
    assert 0.07 <= share <= 0.13, share
    assert recorded == {rid for rid in ids if sampled(rid, 0.1)}  # the same decision

    # delete keeps the volume (data); prune lists it, and removes it only with --volumes
    client.delete_deployment(deployment_name)
    assert docker_client.volumes.get(volume)
    assert f"kept          {volume}" in _prune("--dry-run")
    assert docker_client.volumes.get(volume)
    assert f"removed       {volume}" in _prune("--volumes")
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(volume)


def test_delete_removes_the_volume_when_asked(iris_versions, deployment_name,
                                              docker_client) -> None:
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, iris_versions["v1"],
                                       config={"payload_log": "volume"})
    assert requests.post(created["endpoint"] + "/invocations",
                         json={"dataframe_split": IRIS_INPUT}).status_code == 200
    assert docker_client.volumes.get(volume_name(deployment_name))
    client.delete_deployment(deployment_name, config={"remove_payload_log": "true"})
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(volume_name(deployment_name))


def _dropped(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("mlflow_server_payload_log_dropped_total{"))


@contextlib.contextmanager
def _receiver_on(host: str, port: int) -> Iterator[Receiver]:
    with receiver(host, port) as (events, _):
        yield events


def test_the_http_sink(streamer, deployment_name, docker_client, tmp_path: Path) -> None:
    host, port = gateway(docker_client.networks.get("bridge")), free_port()  # the sink
    sink = f"http://{host}:{port}/events"
    client = get_deploy_client("dockerhost")
    created = client.create_deployment(deployment_name, streamer, config={
        "payload_log": sink, "payload_log_token": "sink-token", "workers": "1",
        "payload_log_headers": "x-tenant"})
    url = created["endpoint"]
    # nothing listens yet: a warning in get, and the deployment serves
    shown = client.get_deployment(deployment_name)["payload_log"]
    assert shown["sink"] == sink and shown["warning"].startswith(
        "Inference log sink unreachable"), shown
    assert "sink-token" not in json.dumps(client.get_deployment(deployment_name))

    with _receiver_on("0.0.0.0", port) as events:
        body = SHAPES["dataframe_split"][2]
        answer = requests.post(f"{url}/invocations", data=body, headers={
            "content-type": "application/json", "x-request-id": "r-1", "x-tenant": "acme"})
        streamed = requests.post(f"{url}/invocations", data=SHAPES["stream"][2],
                                 headers={"content-type": "application/json"})
        got = events.wait_for(4)
        assert answer.status_code == streamed.status_code == 200
        assert [e.type for e in got] == [REQUEST_TYPE, RESPONSE_TYPE] * 2
        request, response = got[0], got[1]
        assert request.body == body.encode() and json.loads(response.body) == answer.json()
        for event in (request, response):
            headers = event.headers
            assert headers["ce-specversion"] == "1.0" and headers["ce-id"] == "r-1"
            assert headers["ce-inferenceservicename"] == deployment_name
            assert headers["ce-endpoint"] == deployment_name
            assert headers["ce-component"] == "predictor" and headers["ce-namespace"]
            assert headers["ce-source"] and headers["ce-time"].endswith("Z")
            assert json.loads(headers["ce-metadata"]) == {"x-tenant": ["acme"]}
            assert headers["ce-modeluri"] == streamer
            assert headers["authorization"] == "Bearer sink-token"
            assert headers["content-type"].startswith("application/json")
        assert got[2].headers["ce-id"] == streamed.headers["x-request-id"]
        assert got[3].headers["content-type"].startswith("text/event-stream")
        assert b"data: " in got[3].body

        # a sink that refuses, then one that hangs: every prediction answers 200
        session = requests.Session()
        for mode in ("refuse", "hang"):
            events.mode = mode
            before = _dropped(url)
            started = time.perf_counter()
            codes = [session.post(f"{url}/invocations", data=body, headers={
                "content-type": "application/json"}, timeout=10).status_code
                for _ in range(2000)]
            took = time.perf_counter() - started
            assert codes == [200] * 2000, mode
            assert took < 60, (mode, took)
            deadline = time.monotonic() + 15
            while _dropped(url) <= before:
                assert time.monotonic() < deadline, f"no drop counted with a sink that {mode}s"
                time.sleep(0.5)
        events.mode = "ok"
    client.delete_deployment(deployment_name)
