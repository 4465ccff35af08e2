"""Runtime choice and Swarm service names: pure functions of the engine's info and names."""

import re

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.swarm_names import runtime_for, service_name

MANAGER = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}
WORKER = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}
ALONE = {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}}
SERVICE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def test_the_runtime_follows_the_engine_unless_chosen() -> None:
    assert runtime_for(MANAGER, None) == "swarm"
    assert runtime_for(ALONE, None) == "container"
    assert runtime_for(WORKER, None) == "container"
    assert runtime_for(MANAGER, "container") == "container"
    assert runtime_for({}, None) == "container"  # an engine that says nothing of Swarm


@pytest.mark.parametrize(("info", "said"), [(ALONE, "inactive"), (WORKER, "active as a worker")])
def test_swarm_on_an_engine_that_is_no_manager_fails_clearly(info, said) -> None:
    with pytest.raises(MlflowException, match=f"swarm state is {said}.*docker node ls"):
        runtime_for(info, "swarm")


def test_service_names_follow_swarms_rules_and_stay_distinct() -> None:
    assert service_name("fraud") == "mlflow-fraud"
    assert service_name("fraud", "front") == "mlflow-fraud-front"
    names = {name: service_name(name) for name in (
        "fraud.v2", "fraud_v2", "fraud-v2", "Fraud-V2", "a" * 63, "a" * 62 + "b")}
    assert len(set(names.values())) == len(names)
    for name, service in names.items():
        assert SERVICE.match(service), service
        assert len(service_name(name, "front")) <= 63
    assert names["fraud-v2"] == "mlflow-fraud-v2"  # unchanged names stay readable
    assert names["fraud.v2"].startswith("mlflow-fraud-v2-")
