"""Readiness shared by a server's worker processes, through marker files in one directory.

Requests go to whichever worker accepts them, so one worker's loaded model says nothing about
the others: ``/ping`` answers 200 only when every worker has marked itself ready. A worker whose
model fails to load leaves a ``failed`` marker, so the launcher can exit with an error code.
The launcher leaves ``draining`` when it is told to stop, so that ``/ping`` answers 503 and a
front takes the server out of rotation before it shuts down; a worker leaves ``front-seen`` the
first time it answers a front's health check with 200, which tells the plugin's probe that the
front now sends this server traffic.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

READY_DIR_ENV = "SCORING_READY_DIR"
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start


class Readiness:
    def __init__(self, directory: str | None, workers: int) -> None:
        self.directory = Path(directory) if directory else None
        self.workers = workers

    def mark_ready(self) -> None:
        if self.directory:
            (self.directory / f"ready-{os.getpid()}").touch()

    def mark_failed(self) -> None:
        self._touch("failed")

    def failed(self) -> bool:
        return self._has("failed")

    def mark_draining(self) -> None:
        self._touch("draining")

    def draining(self) -> bool:
        return self._has("draining")

    def mark_front_seen(self) -> None:
        self._touch("front-seen")

    def front_seen(self) -> bool:
        return self._has("front-seen")

    def _touch(self, name: str) -> None:
        if self.directory:
            (self.directory / name).touch()

    def _has(self, name: str) -> bool:
        return bool(self.directory and (self.directory / name).exists())

    def all_ready(self) -> bool:
        """Every worker has marked itself ready (the caller checks its own model first)."""
        if not self.directory:
            return True
        alive = 0
        for marker in self.directory.glob("ready-*"):
            pid = int(marker.name.split("-", 1)[1])
            try:
                os.kill(pid, 0)
                alive += 1
            except ProcessLookupError:  # a worker that died; its replacement marks itself
                with contextlib.suppress(FileNotFoundError):
                    marker.unlink()
            except PermissionError:
                alive += 1
        return alive >= self.workers
