"""Where a deployment's port is published and the URL clients reach it by (no engine needed)."""

import json
from types import SimpleNamespace
from typing import Any

import pytest

from mlflow_docker_target import containers
from mlflow_docker_target.config import parse_config
from mlflow_docker_target.containers import Spec, endpoint_url
from mlflow_docker_target.engine import Engine
from mlflow_docker_target.engine_address import Address
from mlflow_docker_target.model_fetch import ModelRef

LOCAL = "unix:///var/run/docker.sock"
REMOTE = "tcp://10.0.0.5:2376"


def engine(url: str, client: Any = None) -> Engine:
    return Engine(client=client, address=Address(url, "test"))


def container(host_ip: str | None, config: dict[str, str] | None = None) -> Any:
    ports = {} if host_ip is None else {"8080/tcp": [{"HostIp": host_ip, "HostPort": "32768"}]}
    return SimpleNamespace(
        attrs={"NetworkSettings": {"Ports": ports}},
        labels={"io.mlflow.dockerhost.config": json.dumps(config or {})})


@pytest.mark.parametrize(("url", "bound", "config", "expected"), [
    (LOCAL, "127.0.0.1", {}, "http://127.0.0.1:32768"),
    (LOCAL, "0.0.0.0", {}, "http://127.0.0.1:32768"),
    (REMOTE, "0.0.0.0", {}, "http://10.0.0.5:32768"),
    (REMOTE, "::", {}, "http://10.0.0.5:32768"),
    (REMOTE, "192.168.7.7", {}, "http://192.168.7.7:32768"),  # a specific interface
    (LOCAL, "192.168.7.7", {}, "http://192.168.7.7:32768"),
    (REMOTE, "0.0.0.0", {"host_address": "models.example"}, "http://models.example:32768"),
    ("tcp://[fd00::5]:2376", "::", {}, "http://[fd00::5]:32768"),
])
def test_endpoint_url(url: str, bound: str, config: dict[str, str], expected: str) -> None:
    assert endpoint_url(engine(url), container(bound, config)) == expected


def test_no_published_port_means_no_url() -> None:
    assert endpoint_url(engine(LOCAL), container(None)) is None


class Recorder:
    """Just enough of docker-py's client to see what a container is started with."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.containers = self

    def run(self, image: str, **kwargs: Any) -> str:
        self.kwargs = kwargs
        return "started"


@pytest.mark.parametrize(("url", "config", "bind"), [
    (LOCAL, {}, "127.0.0.1"),
    ("tcp://127.0.0.1:2375", {}, "127.0.0.1"),
    (REMOTE, {}, "0.0.0.0"),
    ("ssh://deploy@10.0.0.5", {}, "0.0.0.0"),
    (REMOTE, {"bind_address": "10.0.0.5"}, "10.0.0.5"),
    (LOCAL, {"bind_address": "0.0.0.0"}, "0.0.0.0"),
])
def test_bind_address_defaults_to_what_the_client_can_reach(url: str, config: dict[str, str],
                                                            bind: str) -> None:
    recorder = Recorder()
    settings = parse_config(config, "create")
    spec = Spec("d", "img", ModelRef("models:/m/1", "models:/m/1", "m", "1", "r"), config,
                settings, "0")
    containers.start(engine(url, recorder), spec, None)
    assert recorder.kwargs["ports"] == {"8080/tcp": (bind, None)}


def test_connection_settings_are_not_recorded() -> None:
    config = {"workers": "2", "tlscacert": "/c/ca.pem", "timeout": "5", "auth_token": "t"}
    spec = Spec("d", "img", ModelRef("models:/m/1", "models:/m/1", "m", "1", "r"), config,
                parse_config(config, "create"), "0")
    assert json.loads(spec.labels()["io.mlflow.dockerhost.config"]) == {
        "workers": "2", "auth_token": "***"}
