"""Where a deployment's port is published and the URL clients reach it by (no engine needed)."""

import json
from types import SimpleNamespace
from typing import Any

import pytest

from mlflow_docker_target import record
from mlflow_docker_target.config import parse_config
from mlflow_docker_target.engine.address import Address
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.record import ModelRef
from mlflow_docker_target.runtimes.container import containers
from mlflow_docker_target.runtimes.container.containers import published_url
from mlflow_docker_target.runtimes.server_spec import Spec

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
    assert published_url(engine(url), container(bound, config)) == expected


def test_no_published_port_means_no_url() -> None:
    assert published_url(engine(LOCAL), container(None)) is None


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


def test_connection_settings_are_not_recorded_and_secrets_are_masked() -> None:
    config = {"workers": "2", "tlscacert": "/c/ca.pem", "timeout": "5", "auth_token": "t",
              "env.AWS_SECRET_ACCESS_KEY": "s3", "env.OMP_NUM_THREADS": "1",
              "endpoint_port": "8080"}
    spec = Spec("d", "img", ModelRef("models:/m/1", "models:/m/1", "m", "1", "r"), config,
                parse_config({k: v for k, v in config.items() if k != "endpoint_port"},
                             "create"), "0")
    labels = spec.labels()
    assert json.loads(labels["io.mlflow.dockerhost.config"]) == {
        "workers": "2", "auth_token": "***", "env.AWS_SECRET_ACCESS_KEY": "***",
        "env.OMP_NUM_THREADS": "1"}
    assert labels["io.mlflow.dockerhost.role"] == "server"
    assert labels["io.mlflow.dockerhost.deployment"] == "d"


def test_recorded_config_restores_secrets_from_the_environment() -> None:
    labels = {"io.mlflow.dockerhost.config": json.dumps(
        {"auth_token": "***", "env.DB_PASSWORD": "***", "workers": "2"})}
    env = ["SCORING_AUTH_TOKEN=tok", "DB_PASSWORD=pw=with=equals", "PATH=/bin"]
    assert record.recorded_config(labels, env) == {
        "auth_token": "tok", "env.DB_PASSWORD": "pw=with=equals", "workers": "2"}


def test_replicas_publish_nothing_and_drain_behind_a_front() -> None:
    recorder = Recorder()
    spec = Spec("d", "img", ModelRef("models:/m/1", "models:/m/1", "m", "1", "r"), {},
                parse_config({}, "create"), "0")
    containers.start(engine(LOCAL, recorder), spec, publish=False)
    assert "ports" not in recorder.kwargs
    assert float(recorder.kwargs["environment"]["SCORING_DRAIN_SECONDS"]) > 0
    assert recorder.kwargs["environment"]["SCORING_DEPLOYMENT"] == "d"


@pytest.mark.parametrize(("config", "locked"), [({}, True), ({"hardened": "false"}, False)])
def test_replicas_are_locked_down_unless_hardened_is_false(config: dict[str, str],
                                                           locked: bool) -> None:
    recorder = Recorder()
    spec = Spec("d", "img", ModelRef("models:/m/1", "models:/m/1", "m", "1", "r"), {},
                parse_config({**config, "pids_limit": "77"}, "create"), "0")
    containers.start(engine(LOCAL, recorder), spec, publish=False)
    assert recorder.kwargs["pids_limit"] == 77  # hardened or not
    assert recorder.kwargs.get("read_only", False) is locked
    assert (recorder.kwargs.get("cap_drop") == ["ALL"]) is locked
    assert ("no-new-privileges" in recorder.kwargs.get("security_opt", [])) is locked
    assert ("/tmp" in recorder.kwargs.get("tmpfs", {})) is locked
