"""Runtime choice and Swarm service names: pure functions of the engine's info and names."""

import re

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target.runtimes import runtime_for
from mlflow_docker_target.runtimes.swarm.names import service_name

MANAGER = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}
WORKER = {"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}
ALONE = {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}}
SERVICE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def test_the_runtime_follows_the_engine_unless_chosen() -> None:
    assert runtime_for(MANAGER, None).name == "swarm"
    assert runtime_for(ALONE, None).name == "container"
    assert runtime_for(WORKER, None).name == "container"
    assert runtime_for(MANAGER, "container").name == "container"
    assert runtime_for({}, None).name == "container"  # an engine that says nothing of Swarm


@pytest.mark.parametrize(("info", "said"), [(ALONE, "inactive"), (WORKER, "active as a worker")])
def test_swarm_on_an_engine_that_is_no_manager_fails_clearly(info, said) -> None:
    with pytest.raises(MlflowException, match=f"swarm state is {said}.*docker node ls"):
        runtime_for(info, "swarm")


def test_service_names_follow_swarms_rules_and_stay_distinct() -> None:
    assert service_name("fraud") == "mlflow-fraud"
    assert service_name("fraud", "front") == "mlflow--front-fraud"
    assert service_name("fraud", "endpoint") == "mlflow--endpoint-fraud"
    names = ("fraud.v2", "fraud_v2", "fraud-v2", "Fraud-V2", "a" * 63, "a" * 62 + "b",
             "front-fraud", "endpoint-x")
    services = [service_name(name, kind) for name in names for kind in
                ("server", "front", "endpoint")]
    assert len(set(services)) == len(services)  # no two deployments or roles share a service
    for service in services:
        assert SERVICE.match(service) and len(service) <= 63, service
    assert service_name("fraud-v2") == "mlflow-fraud-v2"  # unchanged names stay readable
    assert service_name("fraud.v2").startswith("mlflow-fraud-v2-")
