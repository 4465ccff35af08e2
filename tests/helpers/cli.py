"""The real ``mlflow`` CLI, run as a user would, in the foreground or the background."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def mlflow_cli(*args: str, check: bool = True, timeout: float = 900,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real ``mlflow`` CLI, as a user would; ``env`` adds to the environment."""
    result = subprocess.run([sys.executable, "-m", "mlflow", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"mlflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def mlflow_cli_background(*args: str, preexec_fn: Callable[[], Any] | None = None,
                          ) -> tuple[subprocess.Popen, list[str]]:
    """Start the ``mlflow`` CLI; its output lines are collected into the returned list."""
    process = subprocess.Popen([sys.executable, "-m", "mlflow", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
                               preexec_fn=preexec_fn)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True).start()
    return process, lines


def wait_for_output(process: subprocess.Popen, lines: list[str], text: str,
                    timeout: float = 600) -> None:
    """Wait until a line holds ``text``; fail with the output if the process ends first."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert process.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.2)
