"""The server as a process: SIGTERM drains in-flight requests, then it exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import mlflow
import pytest
import requests

from tests.helpers.models import HOST_ONLY, IRIS_COLS, ROW, save_iris
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
    mlflow.pyfunc.save_model(model, python_model=str(code), pip_requirements=HOST_ONLY)
    return model


def _shared_dirs(process: subprocess.Popen) -> set[Path]:
    """The directories a running server shares between its workers (readiness markers and
    metrics files), read from the environment of the gunicorn it supervises: other servers
    (tests running in parallel) make directories of their own."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    environment = Path(f"/proc/{children[0]}/environ").read_bytes().split(b"\0")
    found = dict(entry.decode().partition("=")[::2] for entry in environment if b"=" in entry)
    dirs = {Path(found["SCORING_READY_DIR"]), Path(found["PROMETHEUS_MULTIPROC_DIR"])}
    assert all(d.is_dir() for d in dirs)
    return dirs


def test_sigterm_finishes_in_flight_requests(slow_model: Path) -> None:
    process, url = serve_model(slow_model, "--workers", "1")
    shared = _shared_dirs(process)
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
        assert not any(d.exists() for d in shared)  # the workers' files are removed
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
    save_iris(tmp_path / "iris")
    process, url = serve_model(tmp_path / "iris", "--workers", "2")
    shared = _shared_dirs(process)
    try:
        for _ in range(30):  # a new connection each: the kernel spreads them over the workers
            with requests.Session() as session:
                answer = session.post(f"{url}/invocations", json={"dataframe_split": {
                    "columns": IRIS_COLS, "data": [ROW, ROW]}}, timeout=30)
                assert answer.status_code == 200
        key = 'mlflow_server_requests_total{method="POST",route="/invocations",status="200"}'

        def samples() -> dict[str, str]:
            text = requests.get(f"{url}/metrics", timeout=5).text
            return dict(line.rsplit(" ", 1) for line in text.splitlines()
                        if line and not line.startswith("#"))

        # a request is counted once its answer is sent, so the last may lag the client by a
        # moment on a busy machine
        deadline = time.monotonic() + 5
        while float(samples().get(key, 0)) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(10):  # whichever worker answers /metrics reports every worker's counts
            found = samples()
            assert float(found[key]) == 30
            assert float(found["mlflow_server_rows_predicted_total"]) == 60
    finally:
        stop(process)
    assert not any(d.exists() for d in shared)
