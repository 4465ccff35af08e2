"""A real tracking server (``mlflow server``: SQL backend, artifacts served) on an address an
engine's controller reaches, and the client pointed at it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import requests

from tests.helpers.servers import free_port


@contextlib.contextmanager
def tracking_server(host: str, root: Path) -> Iterator[str]:
    """Its URI, ``http://<host>:<port>``, until the block ends; its files under ``root``."""
    port = free_port()
    with (root / "server.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--serve-artifacts",
             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root,
            # no job runner: MLflow 3 starts seven consumer processes for its GenAI jobs, about
            # half a CPU of this machine's two when idle, which the tests beside it need
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        uri = f"http://{host}:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"{uri}/health", timeout=2).ok:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((root / "server.log").read_text()[-3000:])
                time.sleep(0.5)
            yield uri
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """The client's tracking URI for the block."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
