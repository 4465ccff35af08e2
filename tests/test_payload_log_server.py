"""The inference log in real server processes (no engine): every input shape and a stream
recorded into a directory, KServe's events sent to a receiver, and sinks that refuse or hang
while every prediction answers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pandas as pd
import pytest
import requests

from serving_image.payload_log.http_sink import REQUEST_TYPE, RESPONSE_TYPE
from tests.helpers.agents import save_agent
from tests.helpers.event_receiver import receiver
from tests.helpers.models import IRIS_INPUT, save_iris, save_streamer
from tests.helpers.servers import serve_model, stop


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("payload-models")
    save_iris(root / "iris")
    (root / "streamer").mkdir()
    return {"iris": root / "iris", "streamer": save_streamer(root / "streamer" / "model")}


@pytest.fixture
def logged(models: dict[str, Path], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    process, url = serve_model(models["iris"], env={
        "SCORING_WORKERS": "2", "SCORING_PAYLOAD_LOG": "volume",
        "SCORING_PAYLOAD_LOG_DIR": str(tmp_path), "SCORING_DEPLOYMENT": "iris",
        "SCORING_REPLICA": "iris-1", "SCORING_PAYLOAD_LOG_MAX_BODY": "300",
        "SCORING_PAYLOAD_LOG_HEADERS": "user-agent,x-tenant"})
    try:
        yield url, tmp_path
    finally:
        stop(process)  # flushes the queues


def _lines(directory: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_every_input_shape_is_recorded_with_its_id(logged: tuple[str, Path]) -> None:
    url, directory = logged
    split = {"dataframe_split": IRIS_INPUT}
    csv = pd.DataFrame(IRIS_INPUT["data"], columns=IRIS_INPUT["columns"]).to_csv(index=False)
    answers = [
        requests.post(f"{url}/invocations", json=split,
                      headers={"x-request-id": "mine-1", "x-tenant": "acme",
                               "authorization": "Bearer secret"}),
        requests.post(f"{url}/invocations", data=csv, headers={"content-type": "text/csv"}),
        requests.post(f"{url}/invocations", json={"dataframe_split": {
            **IRIS_INPUT, "data": IRIS_INPUT["data"] * 20}}),  # over 300 bytes: cut
        requests.post(f"{url}/invocations", json={"nonsense": 1}),  # 400, recorded too
        requests.post(f"{url}/v2/models/iris/infer", json={"inputs": [
            {"name": c, "shape": [1], "datatype": "FP64", "data": [IRIS_INPUT["data"][0][i]]}
            for i, c in enumerate(IRIS_INPUT["columns"])]}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 400, 200]
    assert answers[0].headers["x-request-id"] == "mine-1"
    assert all(uuid.UUID(a.headers["x-request-id"]) for a in answers[1:])
    requests.get(f"{url}/ping")  # not a prediction: not recorded
    time.sleep(1.5)
    found = {r["id"]: r for r in _lines(directory)}
    assert set(found) == {a.headers["x-request-id"] for a in answers}
    first = found["mine-1"]
    assert first["request"]["body"] == split and first["request"]["encoding"] == "json"
    assert set(first["request"]["headers"]) == {"user-agent", "x-tenant"}  # named: no token
    assert "secret" not in json.dumps(list(found.values()))
    assert first["response"]["body"]["predictions"] and first["status"] == 200
    assert (first["protocol"], first["route"], first["replica"]) == ("mlflow", "/invocations",
                                                                     "iris-1")
    second = found[answers[1].headers["x-request-id"]]
    assert second["request"]["encoding"] == "text" and second["request"]["body"] == csv
    cut = found[answers[2].headers["x-request-id"]]["request"]
    assert cut["truncated"] and len(cut["body"]) == 300 and cut["size"] > 300
    assert found[answers[3].headers["x-request-id"]]["status"] == 400
    v2 = found[answers[4].headers["x-request-id"]]
    assert v2["protocol"] == "v2" and v2["response"]["body"]["outputs"]
    metrics_text = requests.get(f"{url}/metrics").text
    assert "mlflow_server_payload_log_records_total 5.0" in metrics_text


def test_a_stream_is_one_record(models: dict[str, Path], tmp_path: Path) -> None:
    process, url = serve_model(models["streamer"], env={
        "SCORING_WORKERS": "1", "SCORING_PAYLOAD_LOG": "volume",
        "SCORING_PAYLOAD_LOG_DIR": str(tmp_path)})
    try:
        answer = requests.post(f"{url}/invocations", json={
            "prompt": "hi", "stream": True, "count": 3, "delay": 0})
        assert answer.status_code == 200
        with requests.post(f"{url}/invocations", stream=True, json={
                "prompt": "left", "stream": True, "count": 50, "delay": 0.1}) as left:
            next(left.iter_lines())  # the client goes away after the first chunk
        time.sleep(1.5)  # the server sees it at its next chunk
    finally:
        stop(process)
    whole, cut = sorted(_lines(tmp_path), key=lambda r: r["request"]["body"]["prompt"])
    assert whole["stream"] is True and whole["response"]["encoding"] == "events"
    assert [e["index"] for e in whole["response"]["body"] if isinstance(e, dict)] == [0, 1, 2]
    assert whole["id"] == answer.headers["x-request-id"]
    assert cut["id"] == left.headers["x-request-id"] and cut["stream"] is True
    assert 1 <= len(cut["response"]["body"]) < 50


def test_openai_clients_calls_are_recorded(tmp_path: Path) -> None:
    """The official client, as users call a chat agent: a completion and a stream are one
    record each, under the protocol ``openai``; a call auth refuses is none."""
    process, url = serve_model(save_agent("chat_agent", tmp_path / "agent"), env={
        "SCORING_WORKERS": "1", "SCORING_PAYLOAD_LOG": "volume",
        "SCORING_PAYLOAD_LOG_DIR": str(tmp_path), "SCORING_AUTH_TOKEN": "sk-test"})
    messages = [{"role": "user", "content": "hi there"}]
    try:
        agent = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
        plain = agent.chat.completions.with_raw_response.create(model="m", messages=messages)
        with agent.chat.completions.with_streaming_response.create(
                model="m", messages=messages, stream=True) as streamed:
            chunks = list(streamed.iter_lines())
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) \
                .chat.completions.create(model="m", messages=messages)
    finally:
        stop(process)
    found = {r["id"]: r for r in _lines(tmp_path)}
    assert set(found) == {plain.headers["x-request-id"], streamed.headers["x-request-id"]}
    whole, stream = found[plain.headers["x-request-id"]], found[streamed.headers["x-request-id"]]
    for record in (whole, stream):
        assert (record["protocol"], record["route"], record["status"]) == (
            "openai", "/v1/chat/completions", 200)
        assert record["request"]["body"]["messages"] == messages
    assert whole["stream"] is False
    assert whole["response"]["body"] == plain.parse().model_dump(exclude_unset=True)
    assert stream["stream"] is True and stream["response"]["encoding"] == "events"
    assert stream["response"]["body"][-1] == "[DONE]"
    assert len(stream["response"]["body"]) == sum(1 for c in chunks if c.startswith("data:"))


def test_the_http_sink_sends_kserves_events(models: dict[str, Path]) -> None:
    with receiver() as (events, sink_url):
        process, url = serve_model(models["iris"], env={
            "SCORING_WORKERS": "1", "SCORING_PAYLOAD_LOG": sink_url,
            "SCORING_PAYLOAD_LOG_TOKEN": "sink-token", "SCORING_DEPLOYMENT": "iris",
            "SCORING_MODEL_URI": "models:/iris/2", "SCORING_MODEL_VERSION": "2",
            "SCORING_PAYLOAD_LOG_HEADERS": "x-tenant"})
        try:
            body = {"dataframe_split": IRIS_INPUT}
            answer = requests.post(f"{url}/invocations", json=body,
                                   headers={"x-request-id": "r-1", "x-tenant": "acme"})
            failed = requests.post(f"{url}/invocations", json={"nonsense": 1})
            got = events.wait_for(3)
        finally:
            stop(process)
    assert answer.status_code == 200 and failed.status_code == 400
    assert [e.type for e in got] == [REQUEST_TYPE, RESPONSE_TYPE, REQUEST_TYPE]
    request, response, _ = got
    assert json.loads(request.body) == body
    assert json.loads(response.body) == answer.json()
    for event in (request, response):
        headers = event.headers
        assert headers["ce-specversion"] == "1.0" and headers["ce-id"] == "r-1"
        assert headers["ce-inferenceservicename"] == "iris"
        assert headers["ce-component"] == "predictor" and headers["ce-endpoint"] == "iris"
        assert json.loads(headers["ce-metadata"]) == {"x-tenant": ["acme"]}
        assert headers["ce-modelversion"] == "2" and headers["ce-modeluri"] == "models:/iris/2"
        assert headers["authorization"] == "Bearer sink-token"
        assert headers["content-type"] == "application/json"
        assert headers["ce-time"].endswith("Z") and headers["ce-source"]


def _dropped(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("mlflow_server_payload_log_dropped_total{"))


@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_a_failing_sink_never_fails_a_prediction(models: dict[str, Path], mode: str) -> None:
    with receiver() as (events, sink_url):
        events.mode = mode
        process, url = serve_model(models["iris"], env={
            "SCORING_WORKERS": "1", "SCORING_PAYLOAD_LOG": sink_url,
            "SCORING_STOP_TIMEOUT": "2"})  # the hung sink's flush gives up after 1 s
        try:
            session = requests.Session()
            codes = [session.post(f"{url}/invocations", json={"dataframe_split": IRIS_INPUT},
                                  timeout=5).status_code for _ in range(400)]
            deadline = time.monotonic() + 15  # a hanging sink fails after its 5 s timeout
            while not _dropped(url):
                assert time.monotonic() < deadline, "no record counted as dropped"
                time.sleep(0.2)
        finally:
            stop(process)
    assert codes == [200] * 400
