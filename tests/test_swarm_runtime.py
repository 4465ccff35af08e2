"""The swarm runtime's pure parts: which tasks run a spec, image names before and after a push,
what a failed push says to do, and what a rolling update that Swarm rolls back reports."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target import record
from mlflow_docker_target.config import parse_config
from mlflow_docker_target.record import ModelRef
from mlflow_docker_target.runtimes.haproxy import Backend, Canary, Limits, Server
from mlflow_docker_target.runtimes.interface import Version
from mlflow_docker_target.runtimes.swarm import (
    control_network,
    front_settings,
    server_spec,
    services,
)
from mlflow_docker_target.runtimes.swarm.names import service_name
from mlflow_docker_target.runtimes.swarm.registry import local_name as _local
from mlflow_docker_target.runtimes.swarm.registry import push_error as _push_error
from mlflow_docker_target.runtimes.swarm.services import same as _same

CONTAINER = {"Image": "r:5000/ml/mlflow-dockerhost/a:1", "Env": ["B=2", "A=1"],
             "Configs": [{"ConfigID": "c1"}]}
SPEC = {"ContainerSpec": CONTAINER, "Resources": {"Limits": {"MemoryBytes": 2 ** 30}}}


def _with(**container: Any) -> dict[str, Any]:
    return {**SPEC, "ContainerSpec": {**CONTAINER, **container}}


def test_a_task_runs_a_template_by_container_spec_resources_and_restart_policy() -> None:
    pinned = _with(Image=CONTAINER["Image"] + "@sha256:00", Env=["A=1", "B=2"])
    assert _same({**pinned, "Placement": {"Constraints": ["node.role==worker"]}}, SPEC)
    assert _same(SPEC, {**SPEC, "Runtime": "container"})  # the engine's, not the task's
    assert not _same(_with(Env=["A=1"]), SPEC)
    assert not _same(_with(Configs=[{"ConfigID": "c2"}]), SPEC)
    assert not _same(_with(Image="r:5000/ml/mlflow-dockerhost/a:2"), SPEC)
    assert not _same(_with(ReadOnly=True), SPEC)  # -C hardened changed
    # -C memory or -C stop_timeout alone: Swarm replaces every task, so the old ones are not
    # the new spec yet
    assert not _same({**SPEC, "Resources": {"Limits": {"MemoryBytes": 24 * 2 ** 20}}}, SPEC)
    assert not _same(_with(StopGracePeriod=60 * 10 ** 9), SPEC)
    assert not _same({**SPEC, "RestartPolicy": {"Condition": "none"}}, SPEC)


def test_a_replica_task_is_locked_down_unless_hardened_is_false() -> None:
    def spec(config: dict[str, str]) -> dict[str, Any]:
        version = Version("d", "img", ModelRef("models:/m/1", "models:/m/1", "m", "1", "r"),
                          config, parse_config(config, "create"))
        return server_spec(version, "r:5000/img", "net")["task_template"]

    locked = spec({"pids_limit": "99", "memory": "1g"})
    assert locked["ContainerSpec"]["ReadOnly"] is True
    assert locked["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert locked["ContainerSpec"]["Mounts"][0]["Type"] == "tmpfs"
    assert locked["Resources"]["Limits"] == {"Pids": 99, "MemoryBytes": 1024 ** 3}
    open_spec = spec({"hardened": "false"})
    assert "ReadOnly" not in open_spec["ContainerSpec"]
    assert open_spec["Resources"]["Limits"]["Pids"] == 1024


def test_a_canary_is_a_service_of_its_own_on_the_control_network_too() -> None:
    config = {"rollout": "canary"}
    version = Version("Fraud.v2", "img", ModelRef("models:/m/2", "models:/m/2", "m", "2", "r"),
                      config, parse_config(config, "update"))
    current, canary = server_spec(version, "r/img", "net"), server_spec(version, "r/img", "net",
                                                                         rollout="abc")
    assert current["name"] == service_name("Fraud.v2")
    assert canary["name"] == service_name("Fraud.v2", "canary") != current["name"]
    assert canary["labels"][record.ROLLOUT] == "abc" and record.ROLLOUT not in current["labels"]
    assert canary["labels"][record.DEPLOYMENT] == "Fraud.v2"
    for spec in (current, canary):
        assert [n["Target"] for n in spec["task_template"]["Networks"]] == [
            "net", control_network.NAME]


def test_a_seeded_canary_names_the_same_generation_as_an_unseeded_one() -> None:
    def backends(seed: str | None) -> tuple[Backend, ...]:
        servers = (Server(1, seed),) if seed else ()
        return (Backend("a", 1, 60, servers, "tasks.mlflow-a",
                        Canary(10, servers, "tasks.mlflow--canary-a")),)

    first = front_settings.generation("a", backends("10.0.1.2"), Limits(), False, None)
    later = front_settings.generation("a", backends("10.0.1.7"), Limits(), False, None)
    assert first.name == later.name and first.config == later.config
    assert b"init-addr 10.0.1.2" in first.reload_config
    assert b"init-addr 10." not in first.config


def test_a_task_is_named_by_its_slot_and_found_by_its_address_on_one_network() -> None:
    task = {"ID": "abcdef0123456789", "Slot": 2, "NetworksAttachments": [
        {"Network": {"Spec": {"Name": "front"}}, "Addresses": ["10.0.1.5/24"]},
        {"Network": {"Spec": {"Name": control_network.NAME}}, "Addresses": ["10.0.9.7/24"]}]}
    service = {"Spec": {"Name": "mlflow-a"}}
    assert services.replica_name(service, task) == "mlflow-a.2"
    assert services.replica_name(service, {"ID": "abcdef0123456789"}) == "mlflow-a.abcdef012345"
    assert services.addresses_on(task, control_network.NAME) == ["10.0.9.7"]
    assert services.addresses_on(task, "other") == []


def test_the_local_name_of_a_pushed_image() -> None:
    assert _local("r:5000/ml/mlflow-dockerhost/a:1@sha256:00", "r:5000/ml/") == \
        "mlflow-dockerhost/a:1"
    assert _local("mlflow-dockerhost/a:1", "") == "mlflow-dockerhost/a:1"  # one node: no push
    assert _local("other/a:1", "r:5000/ml/") == "other/a:1"


def test_a_failed_push_says_what_to_do() -> None:
    insecure = _push_error("r:5000/a:1", "http: server gave HTTP response to HTTPS client")
    assert "insecure-registries" in insecure and "every node" in insecure
    assert "docker login" in _push_error("r:5000/a:1", "unauthorized: authentication required")


class _RollingBack:
    """The engine's answers during a rolling update whose new task fails between two of
    :func:`wait_rollout`'s looks, and which Swarm rolls back a moment later (as it did under
    CI's load: the failure was reported before Swarm said it rolled back). Swarm's word that it
    rolled back comes before the previous spec is back and before the new task has left (CI
    once saw the failed version's config and one task too many right after ``update``)."""

    RESTORED_AT = 5  # the look from which the previous spec is back
    LEFT_AT = 7  # the look from which the new task no longer runs

    def __init__(self) -> None:
        self.looks = 0
        self.failed_looks = 0

    def inspect_service(self, _id: str) -> dict[str, Any]:
        self.looks += 1
        state = "updating" if self.looks < 3 else "rollback_completed"
        spec = SERVICE_SPEC if self.looks < self.RESTORED_AT else PREVIOUS_SPEC
        return {"ID": "s", "Spec": spec, "UpdatedAt": "1",
                "UpdateStatus": {"State": state, "StartedAt": "2",
                                 "Message": "update rolled back due to failure"}}

    def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        old = {"ID": "old", "Spec": {"ContainerSpec": {"Image": "old"}}, "UpdatedAt": "1",
               "CreatedAt": "1", "Status": {"State": "running"}}
        new = {"ID": "new", "Spec": {"ContainerSpec": SERVICE_SPEC["TaskTemplate"]
                                     ["ContainerSpec"]}, "UpdatedAt": "3", "CreatedAt": "3",
               "Status": {"State": "running"}}
        if "desired-state" in filters:
            return [old, new] if 3 <= self.looks < self.LEFT_AT else [old]
        self.failed_looks += 1  # the new task has failed from the second look on
        new["Status"] = {"State": "failed" if self.failed_looks > 1 else "starting",
                         "Err": "task: non-zero exit (247)"}
        return [old, new]

    def service_logs(self, *_args: Any, **_kwargs: Any) -> Any:
        return iter(())


SERVICE_SPEC = {"Name": "mlflow-a", "Mode": {"Replicated": {"Replicas": 1}},
                "TaskTemplate": {"ContainerSpec": {"Image": "new"}}}
PREVIOUS_SPEC = {**SERVICE_SPEC, "TaskTemplate": {"ContainerSpec": {"Image": "old"}}}


def test_a_task_failing_between_two_looks_still_waits_for_swarm_to_roll_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "POLL", 0.01)
    client = SimpleNamespace(api=_RollingBack())
    with pytest.raises(MlflowException, match="Swarm rolled the update of mlflow-a back"):
        services.wait_rollout(client, {"ID": "s", "Spec": SERVICE_SPEC},  # type: ignore[arg-type]
                              deadline=float("inf"), what="model")
    assert client.api.looks >= _RollingBack.LEFT_AT  # reported once the previous version runs


class _MemoryOnly:
    """The engine's answers after ``update -C memory=...`` alone: until Swarm's orchestrator
    takes the update, the service has no update status and its tasks are the old ones, whose
    container spec is unchanged (the CI run of stop 39 reported such an update done at once)."""

    TAKEN_AT = 4

    def __init__(self) -> None:
        self.looks = 0

    def inspect_service(self, _id: str) -> dict[str, Any]:
        self.looks += 1
        status = {"State": "completed", "StartedAt": "2"} if self.looks > self.TAKEN_AT else {}
        return {"ID": "s", "Spec": MEMORY_SPEC, "UpdatedAt": "1", "UpdateStatus": status}

    def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        spec = MEMORY_SPEC["TaskTemplate"] if self.looks > self.TAKEN_AT else {
            **MEMORY_SPEC["TaskTemplate"], "Resources": {}}
        return [{"ID": "t", "Spec": spec, "UpdatedAt": "1", "CreatedAt": "1",
                 "Status": {"State": "running"}}]


MEMORY_SPEC = {"Name": "mlflow-a", "Mode": {"Replicated": {"Replicas": 1}},
               "TaskTemplate": {"ContainerSpec": {"Image": "same"},
                                "Resources": {"Limits": {"MemoryBytes": 24 * 2 ** 20}}}}


def test_an_update_of_resources_alone_waits_for_the_new_tasks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "POLL", 0.01)
    client = SimpleNamespace(api=_MemoryOnly())
    services.wait_rollout(client, {"ID": "s", "Spec": MEMORY_SPEC},  # type: ignore[arg-type]
                          deadline=float("inf"), what="server", since="0")
    assert client.api.looks > _MemoryOnly.TAKEN_AT
