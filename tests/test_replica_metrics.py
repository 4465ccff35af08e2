"""How the controller reads a container replica's figures: over HTTP at the container's address
when that connects from here (the controller of one engine, on the host's network), else from
inside the container through ``exec``, and from then on only so. Real HTTP servers on
loopback; the container is the few attributes the reader looks at."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from mlflow_docker_target import record
from mlflow_docker_target.controller import replica_metrics


def _page() -> str:
    """A server's page: 9 predictions, 2 of them 503, and health probes (not judged)."""
    registry = CollectorRegistry()
    requests = Counter("mlflow_server_requests_total", "", ["route", "method", "status"],
                       registry=registry)
    requests.labels("/invocations", "POST", "200").inc(7)
    requests.labels("/invocations", "POST", "503").inc(2)
    requests.labels("/ping", "GET", "200").inc(40)
    return generate_latest(registry).decode()


PAGE = _page()


@contextmanager
def _metrics_server(port: int, token: str, hits: list[str]) -> Iterator[None]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            allowed = self.headers.get("Authorization") == f"Bearer {token}"
            self.send_response(200 if allowed else 401)
            self.end_headers()
            self.wfile.write(PAGE.encode() if allowed else b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _container(execs: list[list[str]]) -> Any:
    def exec_run(command: list[str], demux: bool) -> tuple[int, tuple[bytes, bytes]]:
        execs.append(command)
        return 0, (PAGE.encode(), b"")

    return SimpleNamespace(
        name="mlflow-fraud-1",
        labels={record.CONFIG: json.dumps({"auth_token": record.MASK})},
        attrs={"NetworkSettings": {"Networks": {"mlflow-fraud": {"IPAddress": "127.0.0.1"}}},
               "Config": {"Env": ["SCORING_AUTH_TOKEN=s3cret"]}},
        exec_run=exec_run)


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    free = _free_port()
    monkeypatch.setattr(replica_metrics, "SERVER_PORT", free)
    return free


def test_a_container_that_answers_here_is_read_over_http_with_its_token(port: int) -> None:
    hits: list[str] = []
    execs: list[list[str]] = []
    unreachable: set[str] = set()
    with _metrics_server(port, "s3cret", hits):
        served = replica_metrics.scrape_container(_container(execs), unreachable)
    assert (served.requests, served.errors) == (9, 2)  # the health probes are not judged
    assert hits == ["/metrics"] and not execs and not unreachable


def test_a_container_that_does_not_connect_is_read_from_inside_from_then_on(port: int) -> None:
    hits: list[str] = []
    execs: list[list[str]] = []
    unreachable: set[str] = set()
    container = _container(execs)
    first = replica_metrics.scrape_container(container, unreachable)  # nothing listens
    assert first.requests == 9 and len(execs) == 1
    assert unreachable == {"mlflow-fraud-1"}
    with _metrics_server(port, "s3cret", hits):  # now it would answer: not asked again
        replica_metrics.scrape_container(container, unreachable)
    assert not hits and len(execs) == 2
