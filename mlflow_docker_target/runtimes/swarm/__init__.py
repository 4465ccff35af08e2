"""The runtime on a Docker Swarm: a replicated service per deployment, a global front per endpoint.

Replicas are the tasks of one service (``endpoint_mode=dnsrr``: no virtual IP, which needs IPVS)
on the endpoint's overlay network, behind the endpoint's front (``fronts``: HAProxy as a global
service in host mode, so any node answers), which takes each new configuration from its
settings service (``front_settings``) without restarting. Swarm does the rest itself
(``services``): a task counts as running once the image's health check passes, ``update`` is a
service update (start-first, rolled back by Swarm when the new version fails), and the tasks of
a lost node are rescheduled on the others. Images built on the manager reach the other nodes
through ``-C registry`` (``registry``). Leases are held on the manager's engine.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import docker.errors
from docker.types import (
    ContainerSpec,
    EndpointSpec,
    Healthcheck,
    Placement,
    Resources,
    RestartPolicy,
    RollbackConfig,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, INVALID_STATE

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings, recorded_value
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.images import remove_images
from mlflow_docker_target.image_build import environment_cache
from mlflow_docker_target.image_build.model_image import model_image
from mlflow_docker_target.record import ModelRef
from mlflow_docker_target.runtimes import fronts as shared
from mlflow_docker_target.runtimes import haproxy, lease, reach
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.interface import (
    CanaryVersion,
    Deployment,
    Endpoint,
    Replica,
    RuntimeEntry,
    Version,
)
from mlflow_docker_target.runtimes.server_spec import Spec
from mlflow_docker_target.runtimes.swarm import control_network, fronts, registry, services
from mlflow_docker_target.runtimes.swarm.fronts import SWARM
from mlflow_docker_target.runtimes.swarm.key_notes import KEY_NOTES
from mlflow_docker_target.runtimes.swarm.names import service_name
from mlflow_docker_target.runtimes.swarm.services import NS, labels_of, tasks_of
from serving_image.contract import HEALTHCHECK, HEALTHCHECK_RETRIES, HEALTHCHECK_TIMEOUT_SECONDS
from serving_image.contract import VERSION as PLUGIN_VERSION

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 2.0  # how soon Swarm sees a task ready (the image's own check: every 5 s)
MONITOR_SECONDS = 5  # after a task is ready (healthy), how long Swarm watches it before the next
# Keys a swarm cannot honour, and what to do instead.
REFUSED = {
    "gpus": "-C gpus needs device requests, which Swarm services do not have. Give the GPU nodes "
            "a label (docker node update --label-add gpu=true <node>) and place the replicas "
            "with -C constraints=node.labels.gpu==true, or run containers on one engine with "
            "-C runtime=container.",
    "bind_address": "-C bind_address does not apply on a swarm: the front publishes its port on "
                    "every node, on all interfaces (host mode). Leave it out, or run containers "
                    "with -C runtime=container.",
}
_DEFAULTS = Settings()
_RESTART = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}


class SwarmRuntime:
    """Deployments and endpoints as services of the swarm the engine ``engine`` manages."""

    name = SWARM

    def __init__(self, engine: Engine, info: Mapping[str, Any]) -> None:
        self.engine = engine
        self.client = engine.client
        self.url = engine.url
        self.node_address: str = info["Swarm"]["NodeAddr"]
        self.node_count: int = int(info["Swarm"].get("Nodes") or 1)

    def lease(self, kind: str, name: str, doing: str,
              wait: float = 0) -> AbstractContextManager[None]:
        return lease.lease(self.engine, kind, name, doing, wait)

    def prepare(self, settings: Settings, makes_front: bool) -> None:
        """Keys Swarm cannot honour, and what a swarm needs, fail before anything is built."""
        for key, why in REFUSED.items():
            if getattr(settings, key) != getattr(_DEFAULTS, key):
                raise MlflowException(why, INVALID_PARAMETER_VALUE)
        if makes_front and settings.port is None:
            raise MlflowException(
                "On a swarm the endpoint's port must be given (no free port can be checked on "
                "every node): -C port for create and create-endpoint, -C endpoint_port for "
                "create --endpoint.", INVALID_PARAMETER_VALUE)
        if self.node_count > 1 and not settings.registry:
            raise MlflowException(
                f"This swarm has {self.node_count} nodes: images built on the manager reach "
                "the others through a registry. Give -C registry=host:port[/prefix] (docker "
                "login for its credentials).", INVALID_PARAMETER_VALUE)

    def build(self, deployment: str, model: ModelRef,
              settings: Settings) -> tuple[str, ModelRef]:
        """Built on the manager; ``roll_out`` pushes it for the other nodes."""
        return model_image(self.engine, deployment, model, settings, lease.builds(self.engine))

    # -----------------------------------------------------------------------------------------
    # Reading what the swarm holds

    def _services(self, label: str, role: str) -> list[dict[str, Any]]:
        """Services with ``label`` (key or key=value) in the role ``role``."""
        found = self.client.api.services(filters={"label": label})
        return [s for s in found if labels_of(s).get(record.ROLE) == role]

    def _server(self, deployment: str, kind: str = "server") -> dict[str, Any] | None:
        """A deployment's service: its current version's (``server``), or its canary's."""
        found = self._services(f"{record.DEPLOYMENT}={deployment}", record.SERVER)
        return next((s for s in found if s["Spec"]["Name"] == service_name(deployment, kind)),
                    None)

    def _front(self, deployment: str | None = None,
               endpoint: str | None = None) -> dict[str, Any] | None:
        found = self._services(shared.selector(deployment, endpoint), record.FRONT)
        return found[0] if found else None

    def find(self, name: str) -> Deployment | None:
        service = self._server(name)
        return self._deployment(service) if service else None

    def deployments(self, endpoint: str | None = None) -> list[Deployment]:
        label = f"{record.ENDPOINT}={endpoint}" if endpoint else record.DEPLOYMENT
        return sorted((self._deployment(s) for s in self._services(label, record.SERVER)
                       if not _is_canary(s)), key=lambda d: d.name)

    def _deployment(self, service: Mapping[str, Any]) -> Deployment:
        labels = labels_of(service)
        name = labels[record.DEPLOYMENT]
        endpoint = labels.get(record.ENDPOINT) or None
        spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
        config = record.recorded_config(labels, spec.get("Env"))
        wanted = service["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 1)
        if wanted != 1 or "replicas" in config:
            config["replicas"] = str(wanted)  # scaling changes the mode, not the labels
        pushed_to = f"{config['registry']}/" if config.get("registry") else ""
        tasks = tasks_of(self.client, service)
        front = self._front(name, endpoint)
        url, nodes = self._reach(front) if front else (None, ())
        if endpoint is None and front is not None:
            config = shared.with_limits(config, fronts.limits_of(front))
        canary = self._server(name, "canary")
        recorded = fronts.canaries_of(front).get(name) if front else None
        return Deployment(name, labels, config, self._replicas(service, tasks, pushed_to), url,
                          endpoint, runtime=SWARM, nodes=nodes,
                          certificate=fronts.certificate_of(front) if front else None,
                          payload_log_warning=services.sink_warning(self.client, service,
                                                                    tasks, config),
                          # one its rollout left before it took a share (killed) has none
                          canary=CanaryVersion(
                              recorded.share if recorded else 0, labels_of(canary),
                              self._replicas(canary, tasks_of(self.client, canary), pushed_to))
                          if canary else None)

    def _replicas(self, service: Mapping[str, Any], tasks: list[dict[str, Any]],
                  pushed_to: str) -> tuple[Replica, ...]:
        """A service's tasks as replicas, named ``<service>.<slot>``, each with the model its
        image serves."""
        images = {t["Spec"]["ContainerSpec"]["Image"] for t in tasks}
        local = {image: registry.local_name(image, pushed_to) for image in images}
        models = {image: self._model_of(local[image]) for image in images}
        return tuple(
            Replica(services.replica_name(service, t), t["Status"]["State"], None,
                    local[t["Spec"]["ContainerSpec"]["Image"]], t["Status"].get("Err"),
                    models[t["Spec"]["ContainerSpec"]["Image"]])
            for t in tasks)

    def _model_of(self, image: str | None) -> str | None:
        """The model a task's image serves, from the model image's labels on the manager
        (where it was built); None once the image is gone from there."""
        if not image:
            return None
        try:
            return self.client.images.get(image).labels.get(record.MODEL_RESOLVED_URI)
        except docker.errors.ImageNotFound:
            return None

    def _reach(self, front: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
        """The front's URL on the manager's address (or ``host_address``), and the addresses
        of the nodes whose front runs."""
        labels = labels_of(front)
        port = int(labels[record.PORT])
        url = reach.url_for(self.engine, self.node_address, port,
                            labels.get(record.HOST_ADDRESS) or None,
                            https=record.HTTPS in labels)
        addresses = {n["ID"]: n["Status"].get("Addr", "") for n in self.client.api.nodes()}
        nodes = sorted({addresses.get(t.get("NodeID", ""), "")
                        for t in tasks_of(self.client, front)
                        if t["Status"]["State"] == "running"} - {""})
        return url, tuple(f"{node}:{port}" for node in nodes)

    def endpoint(self, name: str) -> Endpoint | None:
        service = self._front(endpoint=name)
        return self._endpoint(service) if service else None

    def endpoints(self) -> list[Endpoint]:
        return sorted((self._endpoint(s) for s in self._services(record.ENDPOINT, record.FRONT)),
                      key=lambda e: e.name)

    def _endpoint(self, service: Mapping[str, Any]) -> Endpoint:
        name = labels_of(service)[record.ENDPOINT]
        attached = tuple(sorted(labels_of(s)[record.DEPLOYMENT] for s in self._services(
            f"{record.ENDPOINT}={name}", record.SERVER) if not _is_canary(s)))
        url, nodes = self._reach(service)
        states = {t["Status"]["State"] for t in tasks_of(self.client, service)}
        status = "running" if "running" in states else (min(states) if states else "missing")
        return Endpoint(name, url, int(labels_of(service)[record.PORT]), status, attached,
                        fronts.traffic_of(service), runtime=SWARM, nodes=nodes,
                        limits=fronts.limits_of(service),
                        certificate=fronts.certificate_of(service))

    def remove_images(self, images: set[str]) -> None:
        remove_images(self.engine, registry.names_on_manager(self.client, images))
        environment_cache.trim(self.engine, lease.at_work(lease.held(self.engine)))

    # -----------------------------------------------------------------------------------------
    # Fronts

    def host(self, settings: Settings) -> str:
        return reach.host_for(self.engine, self.node_address, settings.host_address)

    def create_endpoint(self, name: str, settings: Settings,
                        tls: Certificate | None = None) -> Endpoint:
        fronts.start(self.client, settings, self._proxy_image(settings), endpoint=name,
                     tls=tls)
        found = self.endpoint(name)
        assert found is not None
        return found

    def _proxy_image(self, settings: Settings) -> str:
        return registry.publish(self.client, settings.resolved_proxy_image(), settings.registry,
                                always=False)

    def _backends(self, endpoint: str | None, traffic: shared.Traffic,
                  add: Version | None = None, leave: str | None = None, own: str | None = None,
                  canaries: Mapping[str, shared.RecordedCanary] | None = None,
                  ) -> tuple[haproxy.Backend, ...]:
        """The deployments a front routes to, each found by its tasks' DNS name: those on the
        shared ``endpoint`` (for a deployment's own front, ``own``), with ``add``, without
        ``leave``; and their ``canaries``, each by its own service's tasks."""
        on_endpoint = {labels_of(s)[record.DEPLOYMENT]: s for s in (
            self._services(f"{record.ENDPOINT}={endpoint}", record.SERVER) if endpoint
            else [self._server(own)] if own else []) if s and not _is_canary(s)}
        timeouts = {name: shared.request_timeout(labels_of(s))
                    for name, s in on_endpoint.items()}
        if add is not None:
            timeouts[add.deployment] = add.settings.request_timeout
        timeouts.pop(leave or "", None)
        network = (service_name(endpoint, "endpoint") if endpoint
                   else service_name(str(add.deployment if add else own or leave), "front"))
        seeds = {name: self._addresses(on_endpoint.get(name) or self._server(name), network)
                 for name in timeouts}
        return shared.backends(timeouts, traffic, seeds,
                               tasks=lambda name: f"tasks.{service_name(name)}", canaries={
            name: haproxy.Canary(canary.share, tuple(self._addresses(
                self._server(name, "canary"), network)),
                tasks=f"tasks.{service_name(name, 'canary')}")
            for name, canary in (canaries or {}).items() if name in timeouts})

    def _addresses(self, service: Mapping[str, Any] | None,
                   network: str) -> list[haproxy.Server]:
        """The addresses of a deployment's running tasks on the front's ``network``: the
        fronts' next reload starts routing with them (``front_settings.Generation``)."""
        found = sorted({address for task in (tasks_of(self.client, service) if service else [])
                        if task["Status"]["State"] == "running"
                        for address in services.addresses_on(task, network)})
        return [haproxy.Server(slot, address)
                for slot, address in enumerate(found[:haproxy.SWARM_SERVERS], 1)]

    def reconfigure(self, endpoint: Endpoint, traffic: shared.Traffic,
                    limits: haproxy.Limits, tls: Certificate | None = None) -> Endpoint:
        service = self._front(endpoint=endpoint.name)
        assert service is not None
        canaries = fronts.canaries_of(service)
        fronts.reconfigure(self.client, service,
                           self._backends(endpoint.name, traffic, canaries=canaries), traffic,
                           limits, tls)
        found = self.endpoint(endpoint.name)
        assert found is not None
        return found

    def remove_endpoint(self, endpoint: Endpoint) -> None:
        service = self._front(endpoint=endpoint.name)
        if service is not None:
            fronts.remove(self.client, service)

    # -----------------------------------------------------------------------------------------
    # Rollouts

    def roll_out(self, version: Version, current: Deployment | None) -> Deployment:
        name = version.deployment
        settings = version.settings
        made_front = None
        if version.endpoint is not None:
            front = self._front(endpoint=version.endpoint)
            if front is None:
                raise shared.no_front(version.endpoint, self.url)
        else:
            front = self._front(deployment=name)
            if front is None:
                front = made_front = fronts.start(
                    self.client, settings, self._proxy_image(settings), deployment=name,
                    backends=self._backends(None, None, add=version), tls=version.tls)
        image = registry.publish(self.client, version.image, settings.registry)
        control_network.ensure(self.client)
        if settings.rollout == "canary" and current is not None:
            return self._start_canary(version, image, front)
        service = self._server(name)
        made = None
        try:
            kwargs = server_spec(version, image, front["Spec"]["Name"])
            deadline = time.monotonic() + settings.ready_timeout + MONITOR_SECONDS
            if service is None:
                made = self.client.api.create_service(**kwargs)["ID"]
                services.wait_rollout(self.client, self.client.api.inspect_service(made),
                                      deadline, "server")
            else:
                since = services.update(self.client, service, **kwargs)
                services.wait_rollout(self.client,
                                      self.client.api.inspect_service(service["ID"]),
                                      deadline, "server", since)
            # the front routes to this version (on a shared endpoint: joins it; its request
            # timeout may have changed); an unchanged configuration restarts nothing
            traffic = fronts.traffic_of(front)
            fronts.reconfigure(self.client, front, self._backends(
                version.endpoint, traffic, add=version, canaries=fronts.canaries_of(front)),
                traffic, None if version.endpoint else shared.limits_of(settings),
                None if version.endpoint else version.tls)
            front = self.client.api.inspect_service(front["ID"])
            url, nodes = self._reach(front)
            if url:
                reach.check_reachable(url, f"service {service_name(name)}",
                                      fronts.certificate_of(front))
            if made is not None:  # a new service: every node's front routes to it
                self._wait_for_nodes(front, nodes)
        except BaseException as exc:
            if made is not None:
                services.remove_service(self.client, made)
            if made_front is not None:
                fronts.remove(self.client, made_front)
            if current is not None and isinstance(exc, MlflowException):
                raise shared.still_serving(exc) from exc
            raise
        return self._found(name)

    def _wait_for_nodes(self, front: Mapping[str, Any], nodes: tuple[str, ...]) -> None:
        """Until every node's front routes to a ready replica (so that a client of any node
        is served once ``create`` returns), for a while; a node that does not is said."""
        scheme = "https" if record.HTTPS in labels_of(front) else "http"
        for node in reach.not_routing([f"{scheme}://{node}" for node in nodes],
                                      fronts.certificate_of(front)):
            log.warning("The front at %s does not route to a ready replica yet (or does not "
                        "answer this machine); the other nodes' fronts do.", node)

    def _start_canary(self, version: Version, image: str,
                      front: Mapping[str, Any]) -> Deployment:
        """The version as a service of its own beside the current one (``service_name(name,
        "canary")``, labelled with its rollout), ready on every node before the fronts give
        it its ``canary_traffic`` share of the deployment's requests."""
        name, settings = version.deployment, version.settings
        rollout = uuid.uuid4().hex[:12]
        made = None
        try:
            kwargs = server_spec(version, image, front["Spec"]["Name"], rollout=rollout)
            made = self.client.api.create_service(**kwargs)["ID"]
            services.wait_rollout(self.client, self.client.api.inspect_service(made),
                                  time.monotonic() + settings.ready_timeout + MONITOR_SECONDS,
                                  "canary")
            self._route(front, name, shared.RecordedCanary(rollout, settings.canary_traffic))
        except BaseException as exc:
            if made is not None:
                services.remove_service(self.client, made)
            if isinstance(exc, MlflowException):
                raise shared.still_serving(exc) from exc
            raise
        return self._found(name)

    def end_canary(self, deployment: Deployment, promote: bool,
                   stop_timeout: int) -> Deployment:
        """Abort: the canary's share goes to 0%, then its service drains away. Promote: it
        takes 100% while Swarm rolls the current service over to the canary's task
        definition (start-first, rolled back by Swarm if it never gets ready), then the
        current service takes all again and the canary's drains away. Every share change is a
        hitless reload of every node's front."""
        name = deployment.name
        front = self._front(name, deployment.endpoint)
        canary = self._server(name, "canary")
        if front is None or canary is None:
            raise MlflowException(f"Deployment {name!r} has no {'front' if canary else 'canary'}"
                                  f" on {self.url}; delete it and create it again.",
                                  INVALID_STATE)
        rollout = labels_of(canary).get(record.ROLLOUT, "")
        self._route(front, name, shared.RecordedCanary(rollout, 100 if promote else 0))
        if promote:
            current = self._server(name)
            assert current is not None
            spec = canary["Spec"]
            since = services.update(self.client, current, task_template=spec["TaskTemplate"],
                                    labels=spec.get("Labels"))
            try:
                services.wait_rollout(
                    self.client, self.client.api.inspect_service(current["ID"]),
                    time.monotonic() + recorded_value(deployment.config, "ready_timeout")
                    + MONITOR_SECONDS, "server", since)
            except MlflowException as exc:
                raise MlflowException(
                    f"{exc.message}\nThe canary serves all of the deployment's requests: "
                    "update -C canary=promote tries again, -C canary=abort goes back to the "
                    "version before it.", exc.error_code) from exc
        self._route(self._front(name, deployment.endpoint) or front, name, None)
        services.remove_service(self.client, canary["ID"], stop_timeout)
        return self._found(name)

    def _route(self, front: Mapping[str, Any], deployment: str,
               canary: shared.RecordedCanary | None) -> None:
        """Every node's front with ``deployment``'s canary taking its share (``None``: with
        no canary), the rest as recorded."""
        canaries = {name: recorded for name, recorded in fronts.canaries_of(front).items()
                    if name != deployment}
        if canary is not None:
            canaries[deployment] = canary
        endpoint = labels_of(front).get(record.ENDPOINT) or None
        traffic = fronts.traffic_of(front)
        fronts.reconfigure(self.client, front, self._backends(
            endpoint, traffic, own=None if endpoint else deployment, canaries=canaries),
            traffic, canaries=canaries)

    def scale(self, version: Version, current: Deployment) -> Deployment:
        service = self._server(version.deployment)
        assert service is not None
        mode = ServiceMode("replicated", replicas=version.settings.replicas)
        since = services.update(self.client, service, mode=mode)
        try:
            services.wait_rollout(self.client, self.client.api.inspect_service(service["ID"]),
                                  time.monotonic() + version.settings.ready_timeout, "server",
                                  since)
            front = None if current.endpoint else self._front(deployment=version.deployment)
            if front is not None:  # its own front takes the version's limits and certificate
                fronts.reconfigure(self.client, front, self._backends(
                    None, None, add=version, canaries=fronts.canaries_of(front)),
                    None, shared.limits_of(version.settings), version.tls)
        except MlflowException as exc:
            raise shared.still_serving(exc, "replicas keep serving") from exc
        return self._found(version.deployment)

    def remove(self, deployment: Deployment, stop_timeout: int) -> set[str]:
        images = {deployment.labels.get(record.IMAGE) or ""} - {""}
        images |= {r.image for r in deployment.replicas + (
            deployment.canary.replicas if deployment.canary else ()) if r.image}  # local names
        endpoint = self._front(endpoint=deployment.endpoint) if deployment.endpoint else None
        for kind in ("canary", "server"):
            service = self._server(deployment.name, kind)
            if service is not None:
                services.remove_service(self.client, service["ID"], stop_timeout)
        if endpoint is not None:
            traffic = shared.without(fronts.traffic_of(endpoint), deployment.name)
            canaries = {name: canary for name, canary in fronts.canaries_of(endpoint).items()
                        if name != deployment.name}
            fronts.reconfigure(self.client, endpoint, self._backends(
                deployment.endpoint, traffic, leave=deployment.name, canaries=canaries),
                traffic, canaries=canaries)
        own = self._front(deployment=deployment.name)
        if own is not None:
            fronts.remove(self.client, own)
        control_network.remove_if_unused(self.client)
        return images

    def _found(self, name: str) -> Deployment:
        found = self.find(name)
        assert found is not None
        return found


# A task's name in its inference log records: service.slot.task-id, on the node that runs it.
REPLICA_TEMPLATE = "{{.Task.Name}}@{{.Node.Hostname}}"


def server_spec(version: Version, image: str, network: str,
                rollout: str | None = None) -> dict[str, Any]:
    """Create (and update) arguments of a deployment's service, its tasks from ``image`` (the
    reference the nodes pull) on the front's ``network`` and the controller's; with
    ``rollout``, of its canary's service, labelled with it."""
    settings = version.settings
    spec = Spec(version.deployment, version.image, version.model, version.config,
                settings, PLUGIN_VERSION, endpoint=version.endpoint, rollout=rollout)
    policy, _, attempts = settings.restart_policy.partition(":")
    health = Healthcheck(test=["CMD", *HEALTHCHECK], interval=int(HEALTH_INTERVAL * NS),
                         timeout=HEALTHCHECK_TIMEOUT_SECONDS * NS,
                         retries=HEALTHCHECK_RETRIES,
                         start_period=int(settings.ready_timeout * NS))
    resources = Resources(cpu_limit=int(settings.cpus * 1e9) if settings.cpus else None,
                          mem_limit=settings.memory)
    locked = lockdown.service_options(settings.hardened)
    mounts = [*locked.pop("mounts", []), *spec.mounts()]
    template = TaskTemplate(
        ContainerSpec(image, env=spec.environment(replica=REPLICA_TEMPLATE), init=settings.init,
                      stop_signal="SIGTERM", healthcheck=health,
                      stop_grace_period=settings.stop_timeout * NS, mounts=mounts, **locked),
        resources=lockdown.with_pids_limit(resources, settings.pids_limit),
        restart_policy=RestartPolicy(_RESTART[policy], delay=NS,
                                     max_attempts=int(attempts or 0)),
        placement=Placement(constraints=list(settings.constraints or ())),
        networks=[network, control_network.NAME])
    rolling = {"parallelism": 1, "order": "start-first", "monitor": MONITOR_SECONDS * NS}
    return {
        "task_template": template,
        "name": service_name(version.deployment, "canary" if rollout else "server"),
        "labels": {**spec.labels(), record.RUNTIME: SWARM},
        "mode": ServiceMode("replicated", replicas=settings.replicas),
        "endpoint_spec": EndpointSpec(mode="dnsrr"),
        "update_config": UpdateConfig(failure_action="rollback", **rolling),
        "rollback_config": RollbackConfig(failure_action="pause", **rolling),
    }


def _is_canary(service: Mapping[str, Any]) -> bool:
    """Whether a deployment's service is its canary's (by its name, which says so)."""
    deployment = labels_of(service).get(record.DEPLOYMENT, "")
    return bool(service["Spec"]["Name"] == service_name(deployment, "canary"))


def manages_swarm(info: Mapping[str, Any]) -> bool:
    """Whether an engine (its ``docker info``) is an active swarm's manager."""
    swarm = info.get("Swarm") or {}
    return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))


def _unavailable(info: Mapping[str, Any]) -> str | None:
    """Why an engine cannot run services: it does not manage an active swarm."""
    if manages_swarm(info):
        return None
    state = (info.get("Swarm") or {}).get("LocalNodeState") or "inactive"
    role = " as a worker" if state == "active" else ""
    return (f"needs an engine that manages a swarm; this one's swarm state is {state}{role}. "
            "Point the target at a manager (docker node ls shows them), or leave runtime out "
            "to run containers on this engine.")


ENTRY = RuntimeEntry(
    name=SWARM,
    make=SwarmRuntime,
    unavailable=_unavailable,
    description="""\
Docker Swarm (runtime 'swarm', the default on an engine that is an active Swarm manager):
one replicated service per deployment (endpoint_mode=dnsrr, so no IPVS is needed) and the
front as a global service publishing the port in host mode on every node, so any node
answers. The build runs on the manager; the image (and a local proxy image) is pushed to
-C registry=host:port[/prefix] for the nodes to pull (required with more than one node;
credentials from docker login). The port must be given. update is Swarm's rolling update
(start-first, rolled back by Swarm when the new version never gets ready); a change of an
endpoint's deployments, weights, limits or certificate reloads every node's front in place
(hitless), through a settings service beside it. Pushed images stay in the registry after
delete.""",
    where="on a swarm",
    key_notes=KEY_NOTES,
    key_default="as on one engine",
)
