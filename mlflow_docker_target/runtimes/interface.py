"""What the deployment client needs of a place that runs deployments, and what it gets back.

The client (``mlflow_docker_target.client``) speaks only this interface, as httpx's client
speaks only to its transport. ``runtimes.container`` implements it with plain containers on one
engine, ``runtimes.swarm`` with services on a Docker Swarm, whose orchestrator performs rollouts
itself: ``roll_out`` is "make this version serve, with nothing lost", however the runtime does
it. Everything a runtime needs before it can do that (images, devices, a registry) is its own
business, in ``prepare`` and ``build``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.record import ModelRef
from mlflow_docker_target.runtimes import certificates, payload_log
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.haproxy import Limits, weights


@dataclass(frozen=True)
class Replica:
    """One serving process group (a container, a task)."""

    name: str
    status: str
    health: str | None
    image: str | None
    exit_reason: str | None = None  # why it stopped or restarted (out of memory, exit code)
    model: str | None = None  # the resolved model URI it serves (a rollout holds two)


@dataclass(frozen=True)
class CanaryVersion:
    """A new version serving a share of its deployment's requests beside the current one, until
    it is promoted or aborted (``-C rollout=canary``)."""

    share: int  # percent of the requests the front routes to the deployment
    labels: Mapping[str, str]  # its newest replica's
    replicas: tuple[Replica, ...]

    def describe(self) -> dict[str, Any]:
        ready = sum(r.status == "running" and r.health != "unhealthy" for r in self.replicas)
        return {
            "state": "canary",
            "rollout": self.labels.get(record.ROLLOUT),  # its replicas' label
            "traffic": {"current": 100 - self.share, "canary": self.share},
            "model_uri": self.labels.get(record.MODEL_URI),
            "resolved_model_uri": self.labels.get(record.MODEL_RESOLVED_URI),
            "model_version": self.labels.get(record.MODEL_VERSION) or None,
            "image": self.labels.get(record.IMAGE),
            "replicas": f"{ready}/{len(self.replicas)}",
            "containers": [r.name for r in self.replicas],
            # the controller ends it by its figures (``judged``); a user, at once, with
            "end_with": "update -C canary=promote, or -C canary=abort",
        }


@dataclass(frozen=True)
class Deployment:
    """A deployment as the engine holds it, read back from its newest replica's labels (of the
    current version, while a canary serves beside it)."""

    name: str
    labels: Mapping[str, str]
    config: Mapping[str, str]  # secrets restored: for update to build on, never to print
    replicas: tuple[Replica, ...]
    url: str | None
    endpoint: str | None  # the shared endpoint it is attached to; None for its own front
    runtime: str  # the name of the runtime that holds it (``runtimes.RUNTIMES``)
    nodes: tuple[str, ...] = ()  # swarm: address:port of every node whose front answers
    certificate: str | None = None  # its own front's certificate chain (HTTPS), public
    payload_log_warning: str | None = None  # its inference log's sink was unreachable at start
    canary: CanaryVersion | None = None

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
            # every model its replicas serve, with their counts: two while a rollout or a
            # canary runs
            "models_served": dict(Counter(r.model for r in self.replicas + (
                self.canary.replicas if self.canary else ()) if r.model)),
            **({"canary": self.canary.describe()} if self.canary else {}),
            "config": record.redacted(self.config),
            "plugin_version": labels.get(record.PLUGIN_VERSION),
            "runtime": self.runtime,
            **({"nodes": list(self.nodes)} if self.nodes else {}),
            **_certificate(self.certificate),
            **payload_log.describe(self.name, self.config, self.payload_log_warning),
        }


def _certificate(chain: str | None) -> dict[str, Any]:
    """The certificate an HTTPS front serves, as ``get`` shows it (never its key)."""
    return {"certificate": certificates.describe(chain)} if chain else {}


@dataclass(frozen=True)
class Endpoint:
    """A shared endpoint: a front with a fixed port and the deployments attached to it."""

    name: str
    url: str | None
    port: int | None
    status: str
    deployments: tuple[str, ...]
    traffic: Mapping[str, int] | None  # None: an even split
    runtime: str
    nodes: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    certificate: str | None = None  # its front's certificate chain (HTTPS), public

    def describe(self) -> dict[str, Any]:
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
            "limits": {k: v for k, v in self.limits.as_record().items() if v},
            "runtime": self.runtime,
            **({"nodes": list(self.nodes)} if self.nodes else {}),
            **_certificate(self.certificate),
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
    # a certificate its own front takes (``-C https_cert``/``https_key``, checked); None: the
    # front keeps what it serves
    tls: Certificate | None = None


class Runtime(Protocol):
    """The calls the client makes; every one blocks until done or raises ``MlflowException``."""

    name: str  # its entry in ``runtimes.RUNTIMES``, recorded on what it makes
    url: str

    def lease(self, kind: str, name: str, doing: str,
              wait: float = 0) -> AbstractContextManager[None]:
        """Hold ``kind:name`` for one writer (``runtimes.lease``); another holder makes this
        fail after ``wait`` seconds, naming it."""

    def prepare(self, settings: Settings, makes_front: bool) -> None:
        """Fail, before anything is built, on config this runtime cannot honour, and make sure
        of what it needs (images, GPUs); ``makes_front``: the command makes an endpoint."""

    def host(self, settings: Settings) -> str:
        """The host in the URL of an endpoint made with ``settings``: what an HTTPS
        certificate must name."""

    def build(self, deployment: str, model: ModelRef,
              settings: Settings) -> tuple[str, ModelRef]:
        """The model's serving image where this runtime runs it; the model as resolved."""

    def find(self, name: str) -> Deployment | None: ...

    def deployments(self, endpoint: str | None = None) -> list[Deployment]: ...

    def roll_out(self, version: Version, current: Deployment | None) -> Deployment:
        """Serve ``version``: start it, wait until it takes traffic, then drain ``current``;
        with ``-C rollout=canary`` (and a ``current``), start it as ``current``'s canary, which
        takes its ``canary_traffic`` share, and return.

        On failure what was started is removed and ``current`` keeps serving.
        """

    def end_canary(self, deployment: Deployment, promote: bool,
                   stop_timeout: int) -> Deployment:
        """Promote the deployment's canary (it takes all of its traffic, then the version before
        it drains) or abort it (it drains; the version before it serves on), with nothing
        lost either way."""

    def scale(self, version: Version, current: Deployment) -> Deployment:
        """Bring ``current`` to ``version.settings.replicas`` replicas of the version it serves:
        new ones take traffic once ready, surplus ones (the oldest) drain; a deployment's own
        front takes ``version``'s limits and certificate. Nothing else restarts; on failure the
        new ones are removed."""

    def remove(self, deployment: Deployment, stop_timeout: int) -> set[str]:
        """Drain and remove the deployment (and its own front); returns its images."""

    def remove_images(self, images: set[str]) -> None: ...

    def endpoint(self, name: str) -> Endpoint | None: ...

    def endpoints(self) -> list[Endpoint]: ...

    def create_endpoint(self, name: str, settings: Settings,
                        tls: Certificate | None = None) -> Endpoint:
        """A shared endpoint's front; with ``tls``, serving HTTPS only."""

    def reconfigure(self, endpoint: Endpoint, traffic: Mapping[str, int] | None,
                    limits: Limits, tls: Certificate | None = None) -> Endpoint:
        """The endpoint's front with this traffic split, these limits and (``tls``) a new
        certificate, taken by a hitless reload (on a swarm, each node's front takes it from
        ``swarm.front_settings``: none restarts)."""
        ...

    def remove_endpoint(self, endpoint: Endpoint) -> None: ...


@dataclass(frozen=True)
class RuntimeEntry:
    """One row of ``runtimes.RUNTIMES``: how to make the runtime, which engines offer it, and
    what the target's help says of it."""

    name: str
    make: Callable[[Engine, Mapping[str, Any]], Runtime]
    # why an engine (its ``docker info``) cannot offer this runtime; None: it can
    unavailable: Callable[[Mapping[str, Any]], str | None]
    description: str  # its paragraph of the target's help
    where: str  # how the help names it: "on a swarm"
    # how -C keys behave on it where they differ from their own help; keys it leaves out
    # behave as ``key_default`` says (None: nothing is said of them)
    key_notes: Mapping[str, str] = field(default_factory=dict)
    key_default: str | None = None
