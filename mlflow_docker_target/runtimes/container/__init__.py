"""The runtime on one Docker engine: a front container per endpoint, replicas as containers.

Each endpoint (a shared one, or a deployment's own) is a user-defined network plus a front
(``fronts``) that publishes the endpoint's host port. Replicas (``containers``) start on the
default bridge, are proven ready from inside (``docker exec`` of the image's health check), and
only then join the endpoint's network under a name of their own (deployment alias and slot
number, recorded in a label), so the front never sees a replica that is not ready. The front's
configuration is rendered from what the engine holds and reloaded whenever replicas join or
leave. A rollout waits until the front has checked every new replica, then stops the old ones,
whose servers drain (``serving_image.contract``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from docker.models.containers import Container
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, INVALID_STATE

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.containers import list_containers
from mlflow_docker_target.engine.images import ensure_image, remove_images
from mlflow_docker_target.image_build import environment_cache
from mlflow_docker_target.image_build.model_image import model_image
from mlflow_docker_target.record import ModelRef
from mlflow_docker_target.runtimes import fronts as shared
from mlflow_docker_target.runtimes import haproxy, lease, reach
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.container import containers, fronts, gpus
from mlflow_docker_target.runtimes.interface import (
    CanaryVersion,
    Deployment,
    Endpoint,
    Replica,
    RuntimeEntry,
    Version,
)
from mlflow_docker_target.runtimes.server_spec import Spec
from serving_image.contract import VERSION

CONTAINER = "container"
# Swarm-only keys: what a container on one engine cannot honour, and why.
REFUSED = ("registry", "constraints")


class ContainerRuntime:
    """Deployments and endpoints as containers on the engine ``engine``."""

    name = CONTAINER

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.client = engine.client
        self.url = engine.url

    def lease(self, kind: str, name: str, doing: str,
              wait: float = 0) -> AbstractContextManager[None]:
        return lease.lease(self.engine, kind, name, doing, wait)

    def prepare(self, settings: Settings, makes_front: bool) -> None:
        for key in REFUSED:
            if getattr(settings, key):
                raise MlflowException(
                    f"-C {key} applies to Swarm services, and {self.url} runs containers (it "
                    "is not a Swarm manager, or -C runtime=container says so). Leave it out, "
                    "or point the target at a swarm's manager.", INVALID_PARAMETER_VALUE)
        ensure_image(self.engine, settings.resolved_proxy_image(), settings.pull_base, "proxy")
        gpus.check(self.engine, settings)

    def build(self, deployment: str, model: ModelRef,
              settings: Settings) -> tuple[str, ModelRef]:
        return model_image(self.engine, deployment, model, settings, lease.builds(self.engine))

    # -----------------------------------------------------------------------------------------
    # Reading what the engine holds

    def find(self, name: str) -> Deployment | None:
        servers = containers.servers(self.client, name)
        return self._deployment(name, servers) if servers else None

    def deployments(self, endpoint: str | None = None) -> list[Deployment]:
        by_name: dict[str, list[Container]] = {}
        for container in containers.servers(self.client, endpoint=endpoint):
            by_name.setdefault(container.labels[record.DEPLOYMENT], []).append(container)
        return [self._deployment(name, servers) for name, servers in sorted(by_name.items())]

    def _deployment(self, name: str, servers: list[Container]) -> Deployment:
        endpoint = servers[0].labels.get(record.ENDPOINT) or None
        front = fronts.find(self.client, name, endpoint)
        state = fronts.recorded(front) if front is not None else shared.State()
        servers, canary = _apart(servers, state.canaries.get(name))
        running = [c for c in servers if c.status == "running"]
        labels = (running or servers)[0].labels
        replicas = tuple(_replica(c) for c in servers)
        config = record.recorded_config(labels, (running or servers)[0].attrs.get(
            "Config", {}).get("Env"))
        if len(servers) != 1 or "replicas" in config:
            # scaling adds or stops replicas without relabelling the others (their config
            # labels differ): the count of containers is the replica count; of one image's,
            # as a rollout to a new image that a killed client left half-done holds two
            config["replicas"] = str(max(Counter(
                c.labels.get(record.IMAGE) for c in servers).values()))
        if endpoint is None:
            config = shared.with_limits(config, state.limits)
        return Deployment(name, labels, config, replicas,
                          fronts.url(self.engine, front) if front else None, endpoint, CONTAINER,
                          certificate=state.certificate,
                          payload_log_warning=containers.sink_warning((running or servers)[0],
                                                                      config),
                          canary=CanaryVersion(state.canaries[name].share, canary[0].labels,
                                               tuple(_replica(c) for c in canary))
                          if canary else None)

    def endpoint(self, name: str) -> Endpoint | None:
        container = fronts.find(self.client, endpoint=name)
        return self._endpoint(container) if container else None

    def endpoints(self) -> list[Endpoint]:
        found = list_containers(self.client, record.ENDPOINT)
        return sorted((self._endpoint(c) for c in found
                       if c.labels.get(record.ROLE) == record.FRONT), key=lambda e: e.name)

    def _endpoint(self, container: Container) -> Endpoint:
        name = container.labels[record.ENDPOINT]
        attached = tuple(sorted({c.labels[record.DEPLOYMENT]
                                 for c in containers.servers(self.client, endpoint=name)}))
        port = container.labels.get(record.PORT)
        state = fronts.recorded(container)
        return Endpoint(name, fronts.url(self.engine, container), int(port) if port else None,
                        container.status, attached, state.traffic, CONTAINER,
                        limits=state.limits, certificate=state.certificate)

    # -----------------------------------------------------------------------------------------
    # Fronts

    def host(self, settings: Settings) -> str:
        return reach.host_for(self.engine, reach.bind_address(self.engine, settings),
                              settings.host_address)

    def create_endpoint(self, name: str, settings: Settings,
                        tls: Certificate | None = None) -> Endpoint:
        fronts.start(self.engine, settings, settings.resolved_proxy_image(), endpoint=name,
                     tls=tls)
        found = self.endpoint(name)
        assert found is not None
        return found

    def _backends(self, endpoint: str | None, deployment: str | None, traffic: shared.Traffic,
                  add: Version | None = None, network: str | None = None,
                  canaries: Mapping[str, shared.RecordedCanary] | None = None,
                  ) -> tuple[haproxy.Backend, ...]:
        """The backends of a front: the deployments on it (with ``add``, whose replicas may not
        exist yet), each with its replicas' slots and their addresses on ``network``, and
        its canary's apart."""
        timeouts: dict[str, int] = {}
        servers: dict[str, list[haproxy.Server]] = {}
        canary_servers: dict[str, list[haproxy.Server]] = {}
        canaries = canaries or {}
        for container in containers.servers(self.client, deployment, endpoint):
            name = container.labels[record.DEPLOYMENT]
            timeouts.setdefault(name, shared.request_timeout(container.labels))
            joined = container.attrs["NetworkSettings"]["Networks"].get(network or "") or {}
            address = joined.get("IPAddress") if container.status == "running" else None
            canary = canaries.get(name)
            group = (canary_servers if canary is not None
                     and container.labels.get(record.ROLLOUT) == canary.rollout else servers)
            group.setdefault(name, []).append(
                haproxy.Server(int(container.labels[record.SLOT]), address or None))
        if add is not None:
            timeouts[add.deployment] = add.settings.request_timeout
        return shared.backends(timeouts, traffic, servers, canaries={
            name: haproxy.Canary(canary.share, tuple(sorted(canary_servers.get(name, []),
                                                            key=lambda s: s.slot)))
            for name, canary in canaries.items() if name in timeouts})

    def _refresh(self, front: Container, traffic: shared.Traffic = None,
                 keep_traffic: bool = True, held: bool = False,
                 limits: haproxy.Limits | None = None,
                 tls: Certificate | None = None,
                 canary: tuple[str, shared.RecordedCanary | None] | None = None,
                 ) -> shared.State:
        """Render the front's configuration from what the engine holds now and reload it;
        return its record of itself.

        ``keep_traffic``: the recorded traffic, else ``traffic``; ``limits``: these, else the
        recorded ones; ``tls``: a new certificate, else the one it has; ``canary``: a
        deployment's canary set (or, ``None``, ended), else the recorded ones. A shared
        endpoint's front is refreshed under the endpoint's lease (unless ``held`` by the
        caller), so two deployments changing at once do not write over each other's replicas.
        """
        endpoint = front.labels.get(record.ENDPOINT)
        deployment = front.labels.get(record.FRONT_OF)
        name = str(endpoint or deployment)
        holding = (self.lease("endpoint", name, "update", wait=60) if endpoint and not held
                   else contextlib.nullcontext())
        with holding:
            state = fronts.recorded(front)
            canaries = dict(state.canaries)
            if canary is not None:
                changed, recorded = canary
                canaries.pop(changed, None)
                if recorded is not None:
                    canaries[changed] = recorded
            traffic = state.traffic if keep_traffic else traffic
            return fronts.configure(front, name, self._backends(
                endpoint, deployment, traffic, network=fronts.network_of(front),
                canaries=canaries),
                dataclasses.replace(state, traffic=traffic, limits=limits or state.limits,
                                    canaries=canaries), tls)

    def reconfigure(self, endpoint: Endpoint, traffic: shared.Traffic,
                    limits: haproxy.Limits, tls: Certificate | None = None) -> Endpoint:
        front = fronts.find(self.client, endpoint=endpoint.name)
        assert front is not None
        self._refresh(front, traffic, keep_traffic=False, held=True,  # update-endpoint's lease
                      limits=limits, tls=tls)
        found = self.endpoint(endpoint.name)
        assert found is not None
        return found

    def remove_endpoint(self, endpoint: Endpoint) -> None:
        front = fronts.find(self.client, endpoint=endpoint.name)
        if front is not None:
            fronts.remove(self.engine, front)

    # -----------------------------------------------------------------------------------------
    # Rollouts

    def roll_out(self, version: Version, current: Deployment | None) -> Deployment:
        name = version.deployment
        made_front = None
        if version.endpoint is not None:
            front = fronts.find(self.client, endpoint=version.endpoint)
            if front is None:
                raise shared.no_front(version.endpoint, self.url)
        else:
            front = fronts.find(self.client, deployment=name)
            if front is None:
                front = made_front = fronts.start(
                    self.engine, version.settings, version.settings.resolved_proxy_image(),
                    deployment=name, backends=self._backends(None, name, None, add=version),
                    tls=version.tls)
        rollout = uuid.uuid4().hex[:12]
        canary = version.settings.rollout == "canary" and current is not None
        if canary:  # named before its replicas join, so that they join as the canary
            self._refresh(front, canary=(name, shared.RecordedCanary(
                rollout, version.settings.canary_traffic)))
        try:
            started = self._add_replicas(version, version.settings.replicas, front, rollout)
        except BaseException as exc:
            if made_front is not None:
                fronts.remove(self.engine, made_front)
            if canary:
                self._refresh(front, canary=(name, None))
            if current is not None and isinstance(exc, MlflowException):
                raise shared.still_serving(exc) from exc
            raise
        if canary:
            return self._found(name)
        if current is not None:
            new = {c.id for c in started}
            _in_parallel(lambda c: containers.remove(c, version.settings.stop_timeout),
                         [c for c in containers.servers(self.client, name) if c.id not in new])
            self._refresh(front)
        return self._found(name)

    def end_canary(self, deployment: Deployment, promote: bool,
                   stop_timeout: int) -> Deployment:
        """The canary's share goes to 100% (promote) or 0% (abort) before the replicas that
        lose it drain; then the front forgets the canary, and what is left is the
        deployment's current version."""
        name = deployment.name
        front = fronts.find(self.client, name, deployment.endpoint)
        if front is None:
            raise MlflowException(f"Deployment {name!r} has no front on {self.url}; delete it "
                                  "and create it again.", INVALID_STATE)
        recorded = fronts.recorded(front).canaries[name]
        self._refresh(front, canary=(name, dataclasses.replace(
            recorded, share=100 if promote else 0)))
        _in_parallel(lambda c: containers.remove(c, stop_timeout),
                     [c for c in containers.servers(self.client, name)
                      if (c.labels.get(record.ROLLOUT) == recorded.rollout) != promote])
        self._refresh(front, canary=(name, None))
        return self._found(name)

    def scale(self, version: Version, current: Deployment) -> Deployment:
        name = version.deployment
        servers = containers.servers(self.client, name)
        wanted = version.settings.replicas
        front = fronts.find(self.client, name, current.endpoint)
        if front is None:
            raise MlflowException(f"Deployment {name!r} has no front on {self.url}; delete it "
                                  "and create it again.", INVALID_STATE)
        if wanted > len(servers):  # the front reloads once they join
            try:
                self._add_replicas(version, wanted - len(servers), front,
                                   current.labels.get(record.ROLLOUT))
            except MlflowException as exc:
                raise shared.still_serving(exc, "replicas keep serving") from exc
            return self._found(name)
        if wanted < len(servers):  # the oldest go first; each drains
            _in_parallel(lambda c: containers.remove(c, version.settings.stop_timeout),
                         servers[wanted:])
        limits = _own_limits(version)
        if wanted < len(servers) or limits is not None or version.tls is not None:
            self._refresh(front, limits=limits, tls=version.tls)
        return self._found(name)

    def _add_replicas(self, version: Version, count: int, front: Container,
                      rollout: str | None) -> list[Container]:
        """Start ``count`` replicas of ``version`` (labelled with ``rollout``) in free slots,
        prove each ready, join them to the front's network under their own names, reload the
        front with them (a deployment's own front with the version's limits too) and wait until
        it has checked them; on failure, remove them all and raise."""
        name = version.deployment
        used = {int(c.labels[record.SLOT]) for c in containers.servers(self.client, name)}
        slots = [n for n in range(1, len(used) + count + 1) if n not in used][:count]
        started: list[Container] = []
        try:
            for slot in slots:
                spec = Spec(name, version.image, version.model, version.config,
                            version.settings, VERSION, endpoint=version.endpoint, slot=slot,
                            rollout=rollout)
                started.append(containers.start(self.engine, spec, publish=False))
            deadline = time.monotonic() + version.settings.ready_timeout
            for container in started:
                containers.wait_probe(container, deadline, behind_front=False)
            network = self.client.networks.get(fronts.network_of(front))
            for slot, container in zip(slots, started, strict=True):
                network.connect(container, aliases=[haproxy.server_name(name, slot)])
            state = self._refresh(front, limits=_own_limits(version), tls=version.tls)
            for container in started:
                containers.wait_probe(container, deadline, behind_front=True)
            url = fronts.url(self.engine, front)
            if url:
                reach.check_reachable(url, started[0].name, state.certificate)
        except BaseException:
            _in_parallel(lambda c: containers.remove(c, stop_timeout=1), started)
            with contextlib.suppress(Exception):  # their server lines go too
                self._refresh(front)
            raise
        return started

    def remove(self, deployment: Deployment, stop_timeout: int) -> set[str]:
        servers = containers.servers(self.client, deployment.name)
        images = {c.labels.get(record.IMAGE) or "" for c in servers} - {""}
        endpoint = (fronts.find(self.client, endpoint=deployment.endpoint)
                    if deployment.endpoint else None)
        traffic = fronts.recorded(endpoint).traffic if endpoint is not None else None
        if endpoint is not None and traffic is not None:
            # its share goes to the others before its replicas drain
            self._refresh(endpoint, {**traffic, deployment.name: 0}, keep_traffic=False)
        _in_parallel(lambda c: containers.remove(c, stop_timeout), servers)
        if endpoint is not None:
            self._refresh(endpoint, shared.without(traffic, deployment.name),
                          keep_traffic=False, canary=(deployment.name, None))
        own = fronts.find(self.client, deployment=deployment.name)
        if own is not None:
            fronts.remove(self.engine, own)
        return images

    def remove_images(self, images: set[str]) -> None:
        remove_images(self.engine, images)
        environment_cache.trim(self.engine, lease.at_work(lease.held(self.engine)))

    def _found(self, name: str) -> Deployment:
        found = self.find(name)
        assert found is not None
        return found


def _own_limits(version: Version) -> haproxy.Limits | None:
    """The limits a version asks of its deployment's own front; ``None`` on a shared
    endpoint, whose limits are the endpoint's."""
    return shared.limits_of(version.settings) if version.endpoint is None else None


def _apart(servers: list[Container], canary: shared.RecordedCanary | None
           ) -> tuple[list[Container], list[Container]]:
    """A deployment's replicas: those of its current version, and its canary's (the rollout
    its front names); all are current when there is no canary, or only it is left."""
    ours = [c for c in servers
            if canary is not None and c.labels.get(record.ROLLOUT) == canary.rollout]
    current = [c for c in servers if c not in ours]
    return (current, ours) if current else (servers, [])


def _replica(container: Container) -> Replica:
    return Replica(container.name, container.status, _health(container),
                   container.labels.get(record.IMAGE), containers.exit_reason(container),
                   container.labels.get(record.MODEL_RESOLVED_URI))


def _health(container: Container) -> str | None:
    return (container.attrs.get("State", {}).get("Health") or {}).get("Status")


def _in_parallel(action: Callable[[Container], Any], items: list[Container]) -> None:
    """Run ``action`` on every item at once (stopping replicas: each drains for seconds)."""
    if len(items) <= 1:
        for item in items:
            action(item)
        return
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        for future in [pool.submit(action, item) for item in items]:
            future.result()


ENTRY = RuntimeEntry(
    name=CONTAINER,
    make=lambda engine, info: ContainerRuntime(engine),
    unavailable=lambda info: None,  # every engine runs containers
    description="""\
Containers on one engine (runtime 'container', the default on any engine that is not a Swarm
manager): replicas are containers behind the endpoint's front container, which publishes the
port on the engine's host.""",
    where="on one engine",
    key_notes={key: "refused: Swarm only" for key in REFUSED},
)
