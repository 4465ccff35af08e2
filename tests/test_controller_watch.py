"""The controller's decisions, one look at a time, against a real registry (SQLite) and a
deployment client that records what it is asked: which look rolls out, which waits, and what
the ledger says. The rollouts themselves are tests/integration/test_controller.py's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_docker_target.controller import canary_watch, watch
from mlflow_docker_target.runtimes.lease import Held


class Deployments:
    """What the controller sees of one deployment, and the updates it asks for."""

    def __init__(self, version: str, fails: Exception | None = None) -> None:
        self.version = version
        self.fails = fails
        self.updates: list[str] = []

    def described(self, registry: str) -> dict[str, Any]:
        return {"name": "fraud", "model_uri": "models:/fraud@champion",
                "model_version": self.version,
                "models_served": {f"models:/fraud/{self.version}": 1},
                "config": {"follow_alias": "true", "follow_interval": "7",
                           "tracking_uri": registry}}

    def update_deployment(self, name: str, model_uri: str) -> dict[str, Any]:
        self.updates.append(model_uri)
        if self.fails:
            raise self.fails
        self.version = "2"
        return {"model_version": self.version}


@pytest.fixture
def registry(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/registry.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("fraud")
    for _ in range(2):
        client.create_model_version("fraud", source=str(tmp_path))
    client.set_registered_model_alias("fraud", "champion", "1")
    return uri


def _look(deployments: Deployments, registry: str, entries: dict) -> float:
    return watch.check(deployments, deployments.described(registry), entries)  # type: ignore[arg-type]


def test_an_alias_that_moved_is_rolled_out_once(registry: str) -> None:
    deployments, entries = Deployments("1"), {}
    assert _look(deployments, registry, entries) == 7
    assert deployments.updates == [] and entries["fraud"]["state"] == "serving"
    MlflowClient(registry, registry).set_registered_model_alias("fraud", "champion", "2")
    _look(deployments, registry, entries)
    _look(deployments, registry, entries)
    assert deployments.updates == ["models:/fraud@champion"]
    assert entries["fraud"]["state"] == "serving" and entries["fraud"]["version"] == "2"


def test_a_version_that_fails_is_not_tried_again_until_the_alias_moves(registry: str) -> None:
    deployments, entries = Deployments("1", MlflowException("it never got ready")), {}
    MlflowClient(registry, registry).set_registered_model_alias("fraud", "champion", "2")
    for _ in range(3):
        _look(deployments, registry, entries)
    assert len(deployments.updates) == 1
    assert entries["fraud"]["state"] == "failed" and entries["fraud"]["failed_version"] == "2"
    assert "it never got ready" in entries["fraud"]["decision"]


def test_a_busy_deployment_is_tried_again_at_the_next_look(registry: str) -> None:
    deployments, entries = Deployments("1", Held("being updated by another client")), {}
    MlflowClient(registry, registry).set_registered_model_alias("fraud", "champion", "2")
    _look(deployments, registry, entries)
    deployments.fails = None
    _look(deployments, registry, entries)
    assert len(deployments.updates) == 2 and entries["fraud"]["state"] == "serving"


def test_a_deleted_alias_leaves_the_deployment_where_it_is(registry: str) -> None:
    deployments, entries = Deployments("1"), {}
    MlflowClient(registry, registry).delete_registered_model_alias("fraud", "champion")
    _look(deployments, registry, entries)
    assert deployments.updates == []
    assert entries["fraud"]["state"] == "alias-missing"
    assert "staying on version 1" in entries["fraud"]["decision"]


def test_a_registry_that_does_not_answer_is_retried_ever_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    deployments, entries = Deployments("1"), {}
    pauses = [_look(deployments, "http://127.0.0.1:9", entries) for _ in range(8)]
    assert pauses == [5, 10, 20, 40, 80, 160, 300, 300]
    assert deployments.updates == []
    assert entries["fraud"]["state"] == "registry-unreachable"
    assert "serving version 1 meanwhile" in entries["fraud"]["decision"]


class CanaryDeployments(Deployments):
    """A deployment whose updates are canaries (``-C rollout=canary``): an update starts one,
    beside the current version, for the canary's verdict to end."""

    canary: dict[str, Any] | None = None

    def described(self, registry: str) -> dict[str, Any]:
        found = super().described(registry)
        found["config"]["rollout"] = "canary"
        return {**found, **({"canary": self.canary} if self.canary else {})}

    def update_deployment(self, name: str, model_uri: str) -> dict[str, Any]:
        self.updates.append(model_uri)
        self.canary = {"model_version": "2", "traffic": {"canary": 10}}
        return {"model_version": self.version, "canary": self.canary}


def test_an_alias_that_moved_as_a_canary_is_left_to_its_verdict(registry: str) -> None:
    deployments, entries = CanaryDeployments("1"), {}
    MlflowClient(registry, registry).set_registered_model_alias("fraud", "champion", "2")
    for _ in range(3):  # the canary runs: the looks wait for its verdict
        _look(deployments, registry, entries)
    assert deployments.updates == ["models:/fraud@champion"]
    assert entries["fraud"]["state"] == "canary" and "its verdict decides" in \
        entries["fraud"]["decision"]


def test_a_canary_aborted_is_a_failed_version_not_tried_again(registry: str) -> None:
    deployments, entries = CanaryDeployments("1"), {}
    MlflowClient(registry, registry).set_registered_model_alias("fraud", "champion", "2")
    _look(deployments, registry, entries)
    described = deployments.described(registry)
    canary_watch.look(Ends(), lambda names: {}, {**described, "containers": [], "canary": {
        **described["canary"], "rollout": "r1", "containers": [],
        "resolved_model_uri": "models:/fraud/2"}}, entries)
    deployments.canary = None  # a user aborted it
    canary_watch.look(Ends(), lambda names: {}, {**deployments.described(registry),
                                                 "containers": []}, entries)
    assert entries["fraud"]["failed_version"] == "2" and entries["fraud"]["state"] == "failed"
    for _ in range(2):
        _look(deployments, registry, entries)
    assert deployments.updates == ["models:/fraud@champion"]  # not tried again


class Ends:
    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None,
                          config: dict[str, Any] | None = None) -> dict[str, Any]:
        raise AssertionError("no verdict is given without figures")
