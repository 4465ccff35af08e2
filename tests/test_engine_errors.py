"""No docker.errors or requests exception crosses the client's boundary: every public method,
against an engine that answers each kind of error, raises an MlflowException that says what
failed and what to do (engine/errors.py). The engine is a small HTTP server on loopback that
speaks just enough of Docker's API to be connected to."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker.errors
import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.client import DockerHostDeploymentClient

ANSWERS = {  # what the engine answers to everything but its version: status, message
    "not found": (404, "No such container: mlflow-x"),
    "conflict": (409, 'Conflict. The container name "/x" is already in use'),
    "busy": (409, "a prune operation is already running"),
    "refused": (400, "invalid reference format"),
    "failed": (500, "failed to create endpoint on network bridge"),
}
SAYS = {"not found": "another client changed it meanwhile", "conflict": "run the command again",
        "busy": "busy with another operation", "refused": "refused it (400)",
        "failed": "Its own log"}


class FakeEngine(BaseHTTPRequestHandler):
    answer: str = "failed"

    def _reply(self) -> None:
        if self.path.endswith("/version") or self.path.endswith("/_ping"):
            body = json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"}).encode()
            self.send_response(200)
        elif self.answer == "drop":  # the engine goes away mid-command
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        else:
            status, message = ANSWERS[self.answer]
            body = json.dumps({"message": message}).encode()
            self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def engine() -> Iterator[type[FakeEngine]]:
    handler = type("Engine", (FakeEngine,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"tcp://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()


CALLS = {
    "create": lambda c: c.create_deployment("d", "runs:/0123/model", config={"timeout": "1"}),
    "create on an endpoint": lambda c: c.create_deployment("d", "runs:/0123/model",
                                                           endpoint="e"),
    "update": lambda c: c.update_deployment("d", config={"replicas": "2"}),
    "delete": lambda c: c.delete_deployment("d"),
    "list": lambda c: c.list_deployments(),
    "get": lambda c: c.get_deployment("d"),
    "predict": lambda c: c.predict("d", {"inputs": [1]}),
    "predict_stream": lambda c: list(c.predict_stream("d", {"inputs": [1]})),
    "create_endpoint": lambda c: c.create_endpoint("e", config={"port": "8080"}),
    "update_endpoint": lambda c: c.update_endpoint("e", config={"traffic": "d:100"}),
    "delete_endpoint": lambda c: c.delete_endpoint("e"),
    "list_endpoints": lambda c: c.list_endpoints(),
    "get_endpoint": lambda c: c.get_endpoint("e"),
}


@pytest.mark.parametrize("answer", [*ANSWERS, "drop"])
@pytest.mark.parametrize("call", list(CALLS))
def test_every_public_method_raises_an_mlflow_exception(engine, answer: str, call: str,
                                                        monkeypatch) -> None:
    engine.answer = answer
    monkeypatch.setenv("DOCKER_HOST", engine.url)
    client = DockerHostDeploymentClient("dockerhost")
    with pytest.raises(MlflowException) as raised:
        CALLS[call](client)
    message = raised.value.message
    assert engine.url in message
    if answer in ANSWERS:
        assert SAYS[answer] in message, message
        assert isinstance(raised.value.__cause__, docker.errors.APIError)  # chained
    else:  # the engine went away
        assert "Lost the Docker engine" in message, message
