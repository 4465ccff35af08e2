"""The server as a process: SIGTERM drains in-flight requests, then it exits cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import requests

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
def slow_server(tmp_path: Path):
    code = tmp_path / "slow.py"
    code.write_text(SLOW_MODEL)
    model = tmp_path / "model"
    mlflow.pyfunc.save_model(model, python_model=str(code))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "serving_image", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    yield process, url
    if process.poll() is None:
        process.kill()
    process.wait()


def test_sigterm_finishes_in_flight_requests(slow_server) -> None:
    process, url = slow_server
    answers: list[requests.Response] = []

    def call() -> None:
        answers.append(requests.post(f"{url}/invocations", json={"inputs": [[1.0]]}, timeout=30))

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
