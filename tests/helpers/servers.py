"""The scoring server as a process on this machine, on a free loopback port, and waiting for a
server to answer; and counting the batches its batcher makes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from serving_image.batching import Batcher


def free_port() -> int:
    """A host port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_model(model: Path, *options: str,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """The scoring server as a process (``python -m serving_image``) on a free loopback port,
    once ``/ping`` answers 200; ``env`` adds SCORING_* settings."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving_image", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), *options], env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if answers(f"{url}/ping", process):
        return process, url
    stop(process)
    raise AssertionError("the server did not become ready")


def answers(url: str, process: subprocess.Popen | None = None, seconds: float = 120) -> bool:
    """Whether ``url`` answers 200 within ``seconds`` (asked every 0.2 s), giving up early
    if ``process``, the server, exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


def stop(process: subprocess.Popen) -> None:
    """Stop a server as its container would be stopped: SIGTERM, which the supervisor passes on
    to gunicorn after draining. SIGKILL would leave gunicorn (in a session of its own) running."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def count_batches(batcher: Batcher) -> list[int]:
    """The row count of each predict call ``batcher`` makes from now on."""
    calls: list[int] = []
    run = batcher.run

    async def counted(batch: Any, deadline: float) -> Any:
        calls.append(len(batch))
        return await run(batch, deadline)

    batcher.run = counted
    return calls
