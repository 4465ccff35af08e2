"""Waiting for a swarm's nodes' fronts to route (``reach.not_routing``), against real HTTP
servers on this machine: one that answers 503 (no replica ready) a few times before 200, one
that always answers 503, and a port nothing listens on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlflow_docker_target.runtimes import reach


def _front(ready_after: int | None) -> ThreadingHTTPServer:
    """A front whose ``/ping`` answers 503 until it was asked ``ready_after`` times (``None``:
    always)."""
    asked = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            ready = ready_after is not None and len(asked) > ready_after
            self.send_response(200 if ready and self.path == "/ping" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def fronts() -> Iterator[tuple[str, str, str]]:
    late, never = _front(ready_after=3), _front(ready_after=None)
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    nobody = f"http://127.0.0.1:{closed.server_address[1]}"
    closed.server_close()
    yield (f"http://127.0.0.1:{late.server_address[1]}",
           f"http://127.0.0.1:{never.server_address[1]}", nobody)
    for server in (late, never):
        server.shutdown()


def test_only_the_fronts_that_never_route_are_named(fronts: tuple[str, str, str]) -> None:
    late, never, nobody = fronts
    assert reach.not_routing([late, never, nobody], grace=2) == [never, nobody]
    assert reach.not_routing([late], grace=3) == []
