"""The swarm runtime's pure parts: which tasks run a spec, image names before and after a push,
and what a failed push says to do."""

from __future__ import annotations

from typing import Any

from mlflow_docker_target.config import parse_config
from mlflow_docker_target.record import ModelRef
from mlflow_docker_target.runtimes.interface import Version
from mlflow_docker_target.runtimes.swarm import server_spec
from mlflow_docker_target.runtimes.swarm.registry import local_name as _local
from mlflow_docker_target.runtimes.swarm.registry import push_error as _push_error
from mlflow_docker_target.runtimes.swarm.services import same as _same

SPEC = {"Image": "r:5000/ml/mlflow-dockerhost/a:1", "Env": ["B=2", "A=1"],
        "Configs": [{"ConfigID": "c1"}]}


def test_a_task_runs_a_spec_by_image_environment_and_config_files() -> None:
    pinned = {**SPEC, "Image": SPEC["Image"] + "@sha256:00", "Env": ["A=1", "B=2"]}
    assert _same(pinned, SPEC)  # a digest Swarm pinned, the environment's order
    assert not _same({**SPEC, "Env": ["A=1"]}, SPEC)
    assert not _same({**SPEC, "Configs": [{"ConfigID": "c2"}]}, SPEC)
    assert not _same({**SPEC, "Image": "r:5000/ml/mlflow-dockerhost/a:2"}, SPEC)
    assert not _same({**SPEC, "ReadOnly": True}, SPEC)  # -C hardened changed


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


def test_the_local_name_of_a_pushed_image() -> None:
    assert _local("r:5000/ml/mlflow-dockerhost/a:1@sha256:00", "r:5000/ml/") == \
        "mlflow-dockerhost/a:1"
    assert _local("mlflow-dockerhost/a:1", "") == "mlflow-dockerhost/a:1"  # one node: no push
    assert _local("other/a:1", "r:5000/ml/") == "other/a:1"


def test_a_failed_push_says_what_to_do() -> None:
    insecure = _push_error("r:5000/a:1", "http: server gave HTTP response to HTTPS client")
    assert "insecure-registries" in insecure and "every node" in insecure
    assert "docker login" in _push_error("r:5000/a:1", "unauthorized: authentication required")
