"""Waiting on a deployment as ``get`` shows it: what the engine's controller does happens after
the command that asked for it has returned."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException


def until_get(client: Any, name: str, done: Callable[[dict], Any], what: str,
              seconds: float = 300, restarting: bool = False) -> dict:
    """``get`` until ``done`` holds of it, every half second, failing after ``seconds`` with
    the last answer; ``restarting``: an engine that does not answer a while (it restarts) is
    waited for too."""
    deadline = time.monotonic() + seconds
    got: dict | None = None
    while True:
        try:
            got = client.get_deployment(name)
        except MlflowException:
            if not restarting:
                raise
        else:
            if done(got):
                return got
        assert time.monotonic() < deadline, f"{what}: never; last get: {got}"
        time.sleep(0.5)
