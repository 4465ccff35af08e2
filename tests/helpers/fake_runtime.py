"""A runtime that keeps deployments and endpoints in memory: the client's rules, tested without
Docker.

It implements ``runtimes.interface.Runtime`` as the real runtimes do where the client can tell
(what it returns, what it records, when it refuses), and writes down every call, so a test can
say what the client asked of its runtime. ``installed`` puts it in the runtime table in place of
the real ones, and connects the client to nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE, RESOURCE_ALREADY_EXISTS

from mlflow_docker_target import record, runtimes
from mlflow_docker_target.client import DockerHostDeploymentClient
from mlflow_docker_target.config import Settings
from mlflow_docker_target.controller import lifecycle
from mlflow_docker_target.record import ModelRef
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.fronts import limits_of
from mlflow_docker_target.runtimes.haproxy import Limits
from mlflow_docker_target.runtimes.interface import (
    CanaryVersion,
    Deployment,
    Endpoint,
    Replica,
    RuntimeEntry,
    Version,
)

FAKE = "fake"


@dataclass
class FakeRuntime:
    name: str = FAKE
    url: str = "fake://engine"
    deployments_: dict[str, Deployment] = field(default_factory=dict)
    endpoints_: dict[str, Endpoint] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)  # leases another client holds
    calls: list[tuple[str, Any]] = field(default_factory=list)
    images: set[str] = field(default_factory=set)  # images the engine holds
    fail: set[str] = field(default_factory=set)  # calls that raise: "build", "roll_out", ...
    builds: int = 0

    def _call(self, name: str, detail: Any = None) -> None:
        self.calls.append((name, detail))
        if name in self.fail:
            raise MlflowException(f"{name} failed (as the test asked)")

    def called(self, name: str) -> list[Any]:
        return [detail for call, detail in self.calls if call == name]

    @contextlib.contextmanager
    def lease(self, kind: str, name: str, doing: str, wait: float = 0) -> Iterator[None]:
        key = f"{kind}:{name}"
        self._call("lease", (key, doing, wait))
        if key in self.held:
            raise MlflowException(
                f"{kind.capitalize()} {name!r} is being changed by another client.",
                RESOURCE_ALREADY_EXISTS if doing == "create" else INVALID_STATE)
        self.held.add(key)
        try:
            yield
        finally:
            self.held.discard(key)

    def host(self, settings: Settings) -> str:
        return settings.host_address or "fake"

    def prepare(self, settings: Settings, makes_front: bool) -> None:
        self._call("prepare", (settings, makes_front))

    def build(self, deployment: str, model: ModelRef,
              settings: Settings) -> tuple[str, ModelRef]:
        self._call("build", (deployment, model))
        self.builds += 1
        image = f"mlflow-dockerhost/{deployment}:{self.builds}"
        self.images.add(image)
        return image, model

    def find(self, name: str) -> Deployment | None:
        return self.deployments_.get(name)

    def deployments(self, endpoint: str | None = None) -> list[Deployment]:
        return sorted((d for d in self.deployments_.values()
                       if endpoint is None or d.endpoint == endpoint), key=lambda d: d.name)

    def _record(self, version: Version, replicas: int) -> Deployment:
        labels = record.server_labels(version.deployment, version.image, version.model,
                                      version.config, "0", version.endpoint)
        token = version.config.get("auth_token", "")
        config = record.recorded_config(labels, [f"SCORING_AUTH_TOKEN={token}"])
        if replicas != 1 or "replicas" in config:
            config["replicas"] = str(replicas)
        current = self.deployments_.get(version.deployment)
        # its own front keeps its scheme and certificate unless the version brings one
        certificate = (version.tls.chain.decode() if version.tls
                       else current.certificate if current else None)
        scheme = "https" if certificate else "http"
        url = (self.endpoints_[version.endpoint].url if version.endpoint
               else f"{scheme}://fake:{version.config.get('port') or 30000}")
        found = Deployment(version.deployment, labels, config,
                           tuple(Replica(f"{version.deployment}-{n}", "running", "healthy",
                                         version.image) for n in range(replicas)),
                           url, version.endpoint, self.name,
                           certificate=None if version.endpoint else certificate)
        self.deployments_[version.deployment] = found
        return found

    def roll_out(self, version: Version, current: Deployment | None) -> Deployment:
        self._call("roll_out", (version, current))
        if version.settings.rollout == "canary" and current is not None:
            new = self._record(version, version.settings.replicas)  # the canary's replicas
            found = replace(current, canary=CanaryVersion(
                version.settings.canary_traffic, new.labels, new.replicas))
            self.deployments_[version.deployment] = found
            return found
        return self._record(version, version.settings.replicas)

    def end_canary(self, deployment: Deployment, promote: bool,
                   stop_timeout: int) -> Deployment:
        self._call("end_canary", (deployment.name, promote))
        assert deployment.canary is not None
        canary = deployment.canary
        found = (replace(deployment, labels=canary.labels, replicas=canary.replicas, canary=None)
                 if promote else replace(deployment, canary=None))
        self.deployments_[deployment.name] = found
        return found

    def scale(self, version: Version, current: Deployment) -> Deployment:
        self._call("scale", (version, current))
        return self._record(version, version.settings.replicas)

    def remove(self, deployment: Deployment, stop_timeout: int) -> set[str]:
        self._call("remove", (deployment.name, stop_timeout))
        del self.deployments_[deployment.name]
        if deployment.endpoint:
            shared = self.endpoints_[deployment.endpoint]
            traffic = {k: v for k, v in (shared.traffic or {}).items() if k != deployment.name}
            self.endpoints_[deployment.endpoint] = replace(
                shared, deployments=tuple(d for d in shared.deployments if d != deployment.name),
                traffic=traffic if shared.traffic is not None else None)
        return {r.image for r in deployment.replicas if r.image}

    def remove_images(self, images: set[str]) -> None:
        self._call("remove_images", set(images))
        self.images -= images

    def endpoint(self, name: str) -> Endpoint | None:
        found = self.endpoints_.get(name)
        if found is None:
            return None
        attached = tuple(sorted(d.name for d in self.deployments_.values()
                                if d.endpoint == name))
        return replace(found, deployments=attached)

    def endpoints(self) -> list[Endpoint]:
        return [e for e in (self.endpoint(n) for n in sorted(self.endpoints_)) if e]

    def create_endpoint(self, name: str, settings: Settings,
                        tls: Certificate | None = None) -> Endpoint:
        self._call("create_endpoint", (name, settings, tls))
        port = settings.port or 31000 + len(self.endpoints_)
        self.endpoints_[name] = Endpoint(
            name, f"{'https' if tls else 'http'}://fake:{port}", port, "running", (), None,
            self.name, limits=limits_of(settings),
            certificate=tls.chain.decode() if tls else None)
        return self.endpoints_[name]

    def reconfigure(self, endpoint: Endpoint, traffic: Mapping[str, int] | None,
                    limits: Limits, tls: Certificate | None = None) -> Endpoint:
        self._call("reconfigure", (endpoint.name, traffic and dict(traffic), limits))
        found = self.endpoints_[endpoint.name]
        self.endpoints_[endpoint.name] = replace(
            found, traffic=traffic and dict(traffic), limits=limits,
            certificate=tls.chain.decode() if tls else found.certificate)
        found = self.endpoint(endpoint.name)
        assert found is not None
        return found

    def remove_endpoint(self, endpoint: Endpoint) -> None:
        self._call("remove_endpoint", endpoint.name)
        del self.endpoints_[endpoint.name]


@contextlib.contextmanager
def installed(monkeypatch: pytest.MonkeyPatch,
              runtime: FakeRuntime | None = None) -> Iterator[tuple[DockerHostDeploymentClient,
                                                                    FakeRuntime]]:
    """A client whose only runtime is ``runtime`` (a new fake one unless given), on no engine."""
    fake = runtime or FakeRuntime()
    entry = RuntimeEntry(FAKE, lambda engine, info: fake, lambda info: None,
                         "In memory, for tests.", "in memory")
    elsewhere = RuntimeEntry("other", lambda engine, info: fake, lambda info: "is not here",
                             "A runtime this engine does not offer.", "elsewhere")
    monkeypatch.setattr(runtimes, "RUNTIMES", {FAKE: entry, "other": elsewhere})
    # the engine's controller is the engine's: here its start and end are calls written down
    monkeypatch.setattr(lifecycle, "ensure", lambda engine, settings, hold: fake._call(
        "controller_ensure"))
    monkeypatch.setattr(lifecycle, "release", lambda engine, needed, hold: fake._call(
        "controller_release", needed))
    monkeypatch.setattr(lifecycle, "describe", lambda engine: lambda name: {
        "controller": "running"})
    engine = SimpleNamespace(url=fake.url, client=SimpleNamespace(
        info=lambda: {}, api=SimpleNamespace(base_url=fake.url, timeout=1)))
    client = DockerHostDeploymentClient("dockerhost")
    monkeypatch.setattr(client, "_connect", lambda settings=None: engine)
    yield client, fake


def recorded(deployment: Deployment) -> dict[str, str]:
    """The config a deployment's labels record (secrets masked)."""
    return dict(json.loads(deployment.labels[record.CONFIG]))
