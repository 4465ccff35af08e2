"""Streaming on /invocations: Server-Sent Events from predict_stream, in a real server process,
and the plugin's client side of it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException

from mlflow_docker_target.scoring_client import invoke_stream
from serving_image.app import create_app
from serving_image.settings import ServerSettings
from tests.helpers.models import SLEEPY_MODEL, save_sleepy, save_streamer
from tests.helpers.servers import serve_model, stop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = save_streamer(tmp_path_factory.mktemp("streamer") / "model")
    process, url = serve_model(model, env={"SCORING_WORKERS": "1",
                                           "SCORING_REQUEST_TIMEOUT": "1",
                                           "SCORING_MAX_STREAMS": "2"})
    yield url
    stop(process)



def sse(url: str, body: dict) -> tuple[requests.Response, list[tuple[float, str]]]:
    """The answer and its non-empty lines, each with the time it arrived."""
    started = time.monotonic()
    answer = requests.post(f"{url}/invocations", json=body, stream=True, timeout=30)
    lines = [(time.monotonic() - started, line)
             for line in answer.iter_lines(decode_unicode=True) if line]
    return answer, lines


@pytest.mark.parametrize("body", [
    {"prompt": "hello"},  # MLflow 3's unified input
    {"dataframe_split": {"columns": ["prompt"], "data": [["hello"]]}},
    {"inputs": {"prompt": "hello"}},
    {"dataframe_records": [{"prompt": "hello"}]},
])
def test_chunks_arrive_as_the_model_yields_them(server: str, body: dict) -> None:
    answer, lines = sse(server, {**body, "stream": True, "params": {"delay": 0.3}}
                        if "prompt" not in body else {**body, "stream": True, "delay": 0.3})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for _, line in lines), lines
    assert lines[-1][1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for _, line in lines[:-1]]
    assert chunks == [{"index": i, "prompt": "hello"} for i in range(5)]
    first, last = lines[0][0], lines[-1][0]
    assert first < 0.9 and last > 1.4, (first, last)  # not buffered to the end


def test_an_error_mid_stream_ends_it_with_an_error_line(server: str) -> None:
    answer, lines = sse(server, {"prompt": "x", "stream": True, "fail_at": 2, "delay": 0})
    assert answer.status_code == 200
    assert [line for _, line in lines[:2]] == [
        'data: {"index":0,"prompt":"x"}', 'data: {"index":1,"prompt":"x"}']
    assert len(lines) == 3 and lines[2][1].startswith("data: ")
    last = json.loads(lines[2][1][6:])
    assert set(last) == {"error_code", "message"} and "failed at chunk 2" in last["message"]


def test_errors_before_the_first_chunk_are_plain_answers(server: str) -> None:
    failed = requests.post(f"{server}/invocations", timeout=30,
                           json={"prompt": "x", "stream": True, "fail_at": 0})
    assert failed.status_code == 500 and "failed at chunk 0" in failed.json()["message"]
    late = requests.post(f"{server}/invocations", timeout=30,
                         json={"prompt": "x", "stream": True, "stall_at": 0})
    assert late.status_code == 504 and late.json()["error_code"] == "DEADLINE_EXCEEDED"


def test_request_timeout_bounds_the_gap_between_chunks(server: str) -> None:
    # 5 chunks 0.6 s apart take 3 s, longer than the 1 s limit: the limit is per gap
    _, lines = sse(server, {"prompt": "x", "stream": True, "delay": 0.6})
    assert lines[-1][1] == "data: [DONE]" and len(lines) == 6
    _, lines = sse(server, {"prompt": "x", "stream": True, "delay": 0, "stall_at": 2})
    assert len(lines) == 3
    assert json.loads(lines[2][1][6:])["error_code"] == "DEADLINE_EXCEEDED"
    assert 0.9 < lines[2][0] < 2.5


def test_streams_are_bounded(server: str) -> None:
    time.sleep(3)  # the stalled generators of the tests above end
    long = [threading.Thread(target=sse, args=(server, {"prompt": "x", "stream": True,
                                                        "delay": 0.5, "count": 3}))
            for _ in range(2)]
    for thread in long:
        thread.start()
    time.sleep(0.3)
    refused = requests.post(f"{server}/invocations", json={"prompt": "x", "stream": True},
                            timeout=30)
    for thread in long:
        thread.join()
    assert refused.status_code == 503 and "max_streams" in refused.json()["message"]
    metrics = requests.get(f"{server}/metrics", timeout=10).text
    assert 'mlflow_server_streams_total{outcome="done"}' in metrics
    assert 'mlflow_server_streams_total{outcome="error"}' in metrics
    assert "mlflow_server_stream_chunks_total" in metrics


def test_a_model_without_predict_stream_answers_400(tmp_path: Path) -> None:
    """The route's own answer (in-process: no server process is needed to see it)."""
    model = save_sleepy(tmp_path / "sleepy", tmp_path, with_params=False)
    assert "predict_stream" not in SLEEPY_MODEL
    app = create_app(ServerSettings(model_path=str(model)))
    with TestClient(app) as client:
        assert app.state.model_state.ready.wait(120)
        answer = client.post("/invocations", json={
            "dataframe_split": {"columns": ["x"], "data": [[0]]}, "stream": True})
        assert answer.status_code == 400
        assert "cannot stream" in answer.json()["message"]
        plain = client.post("/invocations", json={
            "dataframe_split": {"columns": ["x"], "data": [[0]]}, "stream": False})
        assert plain.status_code == 200  # "stream": false is an ordinary request


def test_the_plugins_predict_stream_yields_dicts(server: str) -> None:
    started = time.monotonic()
    chunks = invoke_stream(server, {"prompt": "hi", "delay": 0.3})
    first = next(chunks)
    took_first = time.monotonic() - started
    rest = list(chunks)
    assert first == {"index": 0, "prompt": "hi"} and len(rest) == 4
    assert took_first < 0.9 < time.monotonic() - started
    with pytest.raises(MlflowException, match="failed at chunk 1"):
        list(invoke_stream(server, {"prompt": "hi", "fail_at": 1, "delay": 0}))
