"""What the deployment client needs of a place that runs deployments, and what it gets back.

``deployment.py`` speaks only this interface; ``container_runtime.py`` implements it with plain
containers on one engine, ``swarm_runtime.py`` with services on a Docker Swarm, whose
orchestrator performs rollouts itself: ``roll_out`` is "make this version serve, with nothing
lost", however the runtime does it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlflow_docker_target import record
from mlflow_docker_target.build.model_fetch import ModelRef
from mlflow_docker_target.config import Settings


@dataclass(frozen=True)
class Replica:
    """One serving process group (a container, a task)."""

    name: str
    status: str
    health: str | None
    image: str | None
    exit_reason: str | None = None  # why it stopped or restarted (out of memory, exit code)


@dataclass(frozen=True)
class Deployment:
    """A deployment as the engine holds it, read back from its newest replica's labels."""

    name: str
    labels: Mapping[str, str]
    config: Mapping[str, str]  # secrets restored: for update to build on, never to print
    replicas: tuple[Replica, ...]
    url: str | None
    endpoint: str | None  # the shared endpoint it is attached to; None for its own front
    legacy: bool = False  # made before fronts: one container on its own published port
    runtime: str = "container"
    nodes: tuple[str, ...] = ()  # swarm: address:port of every node whose front answers

    @property
    def model(self) -> ModelRef:
        return record.model_from_labels(self.labels)

    @property
    def ready(self) -> int:
        """Running replicas the engine does not call unhealthy (a rollout proved each ready
        before Docker's own health check may have run)."""
        return sum(r.status == "running" and r.health != "unhealthy" for r in self.replicas)

    def describe(self) -> dict[str, Any]:
        """What ``get`` and ``list`` report."""
        labels = self.labels
        newest = self.replicas[0] if self.replicas else None
        return {
            "name": self.name,
            "flavor": labels.get(record.FLAVOR, "python_function"),
            "endpoint": self.url,
            "endpoint_name": self.endpoint,
            "status": newest.status if newest else "missing",
            "health": newest.health if newest else None,
            "exit_reason": next((r.exit_reason for r in self.replicas if r.exit_reason), None),
            "replicas": f"{self.ready}/{len(self.replicas)}",
            "model_uri": labels.get(record.MODEL_URI),
            "resolved_model_uri": labels.get(record.MODEL_RESOLVED_URI),
            "model_name": labels.get(record.MODEL_NAME) or None,
            "model_version": labels.get(record.MODEL_VERSION) or None,
            "run_id": labels.get(record.RUN_ID) or None,
            "image": labels.get(record.IMAGE),
            "container": newest.name if newest else None,
            "containers": [r.name for r in self.replicas],
            "config": record.redacted(self.config),
            "plugin_version": labels.get(record.PLUGIN_VERSION),
            "layout": "legacy (one container, no front)" if self.legacy else "front",
            "runtime": self.runtime,
            **({"nodes": list(self.nodes)} if self.nodes else {}),
        }


@dataclass(frozen=True)
class Endpoint:
    """A shared endpoint: a front with a fixed port and the deployments attached to it."""

    name: str
    url: str | None
    port: int | None
    status: str
    deployments: tuple[str, ...]
    traffic: Mapping[str, int] | None  # None: an even split
    image: str  # the front's image: claims on the endpoint are made from it
    runtime: str = "container"
    nodes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        from mlflow_docker_target.runtimes.haproxy import weights

        shares = weights(self.deployments, self.traffic)
        total = sum(shares.values()) or 1
        return {
            "name": self.name,
            "url": self.url,
            "port": self.port,
            "status": self.status,
            "deployments": list(self.deployments),
            "traffic": {name: round(100 * share / total, 2) for name, share in shares.items()},
            "traffic_set": self.traffic is not None,
            "runtime": self.runtime,
            **({"nodes": list(self.nodes)} if self.nodes else {}),
        }


@dataclass(frozen=True)
class Version:
    """What ``roll_out`` starts: one model image with its settings, for one deployment."""

    deployment: str
    image: str
    model: ModelRef
    config: Mapping[str, str]
    settings: Settings
    endpoint: str | None = None  # a shared endpoint; None: the deployment's own front
    environment: Mapping[str, str] = field(default_factory=dict)


class Runtime(Protocol):
    """The calls ``deployment.py`` makes; every one blocks until done or raises."""

    url: str

    def claim(self, kind: str, name: str, doing: str, image: str,
              wait: float = 0) -> AbstractContextManager[None]:
        """Hold ``kind:name`` for one writer; another claim fails (after trying for ``wait``
        seconds) until this one ends. ``image`` is one the runtime surely has."""

    def check(self, settings: Settings, makes_front: bool) -> None:
        """Fail, before anything is built, on config this runtime cannot honour
        (``makes_front``: the command makes an endpoint's front)."""

    def find(self, name: str) -> Deployment | None: ...

    def deployments(self, endpoint: str | None = None) -> list[Deployment]: ...

    def roll_out(self, version: Version, current: Deployment | None) -> Deployment:
        """Serve ``version``: start it, wait until it takes traffic, then drain ``current``.

        On failure what was started is removed and ``current`` keeps serving.
        """

    def scale(self, version: Version, current: Deployment) -> Deployment:
        """Bring ``current`` to ``version.settings.replicas`` replicas of the version it serves:
        new ones take traffic once ready, surplus ones (the oldest) drain. Nothing else
        restarts; on failure the new ones are removed."""

    def remove(self, deployment: Deployment, stop_timeout: int) -> set[str]:
        """Drain and remove the deployment (and its own front); returns its images."""

    def remove_images(self, images: set[str]) -> None: ...

    def endpoint(self, name: str) -> Endpoint | None: ...

    def endpoints(self) -> list[Endpoint]: ...

    def create_endpoint(self, name: str, settings: Settings) -> Endpoint: ...

    def set_traffic(self, endpoint: Endpoint, traffic: Mapping[str, int]) -> Endpoint: ...

    def remove_endpoint(self, endpoint: Endpoint) -> None: ...


