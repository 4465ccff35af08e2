"""What each runtime refuses before anything is built: keys it cannot honour, and what a swarm
needs (a registry for more than one node, a given port). The engine's own info decides."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.config import parse_config
from mlflow_docker_target.runtimes import runtime_for
from mlflow_docker_target.runtimes.container import ContainerRuntime
from mlflow_docker_target.runtimes.swarm import SwarmRuntime

ENGINE = SimpleNamespace(client=None, url="unix:///var/run/docker.sock")


def _swarm(nodes: int) -> SwarmRuntime:
    return SwarmRuntime(ENGINE, {"Swarm": {"NodeAddr": "10.0.0.2", "Nodes": nodes}})  # type: ignore[arg-type]


def _settings(**config: str):
    return parse_config(config, "create")


@pytest.mark.parametrize(("config", "says"), [
    ({"port": "80", "registry": "r:5000", "gpus": "all"}, "-C constraints=node.labels.gpu"),
    ({"port": "80", "registry": "r:5000", "bind_address": "10.0.0.2"}, "every node"),
    ({"registry": "r:5000"}, "port must be given"),
    ({"port": "80"}, "-C registry=host:port"),
])
def test_a_swarm_refuses_what_it_cannot_do(config: dict[str, str], says: str) -> None:
    with pytest.raises(MlflowException, match=says):
        _swarm(3).prepare(_settings(**config), makes_front=True)


def test_a_swarm_takes_what_it_can() -> None:
    _swarm(3).prepare(_settings(port="80", registry="r:5000/ml", constraints="node.role!=manager"),
                    makes_front=True)
    _swarm(1).prepare(_settings(port="80"), makes_front=True)  # one node: no registry needed
    _swarm(3).prepare(_settings(registry="r:5000"), makes_front=False)  # an existing endpoint's


@pytest.mark.parametrize("key", ["registry", "constraints"])
def test_one_engine_refuses_swarm_only_keys(key: str) -> None:
    value = {"registry": "r:5000", "constraints": "node.role==manager"}[key]
    with pytest.raises(MlflowException, match=f"-C {key} applies to Swarm services"):
        ContainerRuntime(ENGINE).prepare(_settings(**{key: value}), makes_front=True)  # type: ignore[arg-type]


def test_an_unknown_runtime_is_refused_naming_those_in_the_table() -> None:
    """Which runtimes exist is the runtime table's to say, so the table refuses a name it does
    not hold (``create`` asks it before anything is built)."""
    with pytest.raises(MlflowException, match="Invalid value 'k8s' for config key 'runtime': "
                                              "expected swarm or container"):
        runtime_for({}, "k8s")


@pytest.mark.parametrize("bad", ["registry=http://r:5000", "constraints=gpu"])
def test_swarm_keys_are_checked_on_parse(bad: str) -> None:
    key, value = bad.split("=", 1)
    with pytest.raises(MlflowException, match=f"Invalid value .* for config key '{key}'"):
        parse_config({key: value}, "create")
