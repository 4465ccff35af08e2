"""The server as a process: SIGTERM drains in-flight requests, then it exits cleanly."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import pytest
import requests

from tests.helpers.servers import serve_model, stop

SLOW_MODEL = """
import time
import mlflow


class Slow(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep(2)
        return [len(model_input)]


mlflow.models.set_model(Slow())
"""


@pytest.fixture
def slow_model(tmp_path: Path) -> Path:
    code = tmp_path / "slow.py"
    code.write_text(SLOW_MODEL)
    model = tmp_path / "model"
    mlflow.pyfunc.save_model(model, python_model=str(code))
    return model


def _shared_dirs() -> set[Path]:
    return set(Path("/dev/shm").glob("scoring-*"))


def test_sigterm_finishes_in_flight_requests(slow_model: Path) -> None:
    shared_before = _shared_dirs()
    process, url = serve_model(slow_model, "--workers", "1")
    try:
        answers: list[requests.Response] = []

        def call() -> None:
            answers.append(requests.post(f"{url}/invocations", json={"inputs": [[1.0]]},
                                         timeout=30))

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)  # the request is inside predict
        os.kill(process.pid, signal.SIGTERM)
        caller.join(timeout=30)
        assert answers and answers[0].status_code == 200
        assert answers[0].json() == {"predictions": [1]}
        # uvicorn drains, then re-raises the signal it caught: the conventional "ended by SIGTERM"
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=2)
        assert not _shared_dirs() - shared_before  # the workers' files are removed
    finally:
        stop(process)


def test_request_timeout_answers_504(slow_model: Path) -> None:
    process, url = serve_model(slow_model, "--workers", "1", "--request-timeout", "0.5")
    try:
        answer = requests.post(f"{url}/invocations", json={"inputs": [[1.0]]}, timeout=30)
        assert answer.status_code == 504
        assert answer.json()["error_code"] == "DEADLINE_EXCEEDED"
    finally:
        stop(process)


def test_metrics_add_up_across_workers(tmp_path: Path) -> None:
    from tests.helpers.models import IRIS_COLS, ROW, save_iris

    save_iris(tmp_path / "iris")
    shared_before = _shared_dirs()
    process, url = serve_model(tmp_path / "iris", "--workers", "2")
    try:
        for _ in range(30):  # a new connection each: the kernel spreads them over the workers
            with requests.Session() as session:
                answer = session.post(f"{url}/invocations", json={"dataframe_split": {
                    "columns": IRIS_COLS, "data": [ROW, ROW]}}, timeout=30)
                assert answer.status_code == 200
        key = 'mlflow_server_requests_total{method="POST",route="/invocations",status="200"}'
        for _ in range(10):  # whichever worker answers /metrics reports every worker's counts
            text = requests.get(f"{url}/metrics", timeout=5).text
            samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                           if line and not line.startswith("#"))
            assert float(samples[key]) == 30
            assert float(samples["mlflow_server_rows_predicted_total"]) == 60
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert not _shared_dirs() - shared_before
