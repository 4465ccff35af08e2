"""The runtime on a Docker Swarm: a replicated service per deployment, a global front per endpoint.

Replicas are the tasks of one service (``endpoint_mode=dnsrr``: no virtual IP, which needs IPVS)
on the endpoint's overlay network. The endpoint's front is HAProxy as on one engine, run as a
global service that publishes the endpoint's port in host mode on every node, so any node
answers as the routing mesh would; it finds each deployment's replicas through the overlay's
DNS (``tasks.<service>``) and follows them as Swarm starts, moves and stops them, so rollouts,
scaling and rescheduling never touch it. Only a change of the deployments on an endpoint or of
their weights rewrites its configuration (a Swarm config), which Swarm rolls out one node at a
time while the other nodes answer.

Swarm does the rest itself: a task counts as running once the image's health check passes,
``update`` is a service update (start-first, rolled back by Swarm when the new version fails),
and the tasks of a lost node are rescheduled on the others. Images built on the manager reach
the other nodes through ``-C registry``. One writer per name is held with the container
runtime's claims, on the manager.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import docker.errors
from docker.types import (
    ConfigReference,
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
from mlflow_docker_target.build.images import remove_images
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.runtimes import haproxy as front
from mlflow_docker_target.runtimes.container import ContainerRuntime, containers
from mlflow_docker_target.runtimes.container.containers import Spec
from mlflow_docker_target.runtimes.interface import Deployment, Endpoint, Replica, Version
from mlflow_docker_target.runtimes.swarm.names import service_name
from mlflow_docker_target.version import __version__

log = logging.getLogger(__name__)

SWARM = "swarm"
POLL = 0.5
HEALTH_INTERVAL = 2.0  # how soon Swarm sees a task ready (the image's own check: every 5 s)
MONITOR_SECONDS = 5  # after a task is ready (healthy), how long Swarm watches it before the next
FRONT_START_TIMEOUT = 120  # a front task: pull the proxy image, start HAProxy
REMOVE_TIMEOUT = 60
LOGS_SECONDS = 5
_NS = 1_000_000_000
_RESTART = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}
_FAILED = ("failed", "rejected", "orphaned")


class SwarmRuntime:
    """Deployments and endpoints as services of the swarm the engine ``engine`` manages."""

    def __init__(self, engine: Engine, info: Mapping[str, Any]) -> None:
        self.engine = engine
        self.client = engine.client
        self.url = engine.url
        self.node_address: str = info["Swarm"]["NodeAddr"]
        self.node_count: int = int(info["Swarm"].get("Nodes") or 1)
        self._claims = ContainerRuntime(engine)

    def claim(self, kind: str, name: str, doing: str, image: str,
              wait: float = 0) -> AbstractContextManager[None]:
        return self._claims.claim(kind, name, doing, image, wait)

    def check(self, settings: Settings, makes_front: bool) -> None:
        """Keys Swarm cannot honour, and what a swarm needs, fail before anything is built."""
        if settings.gpus:
            raise MlflowException(
                "-C gpus needs device requests, which Swarm services do not have. Give the GPU "
                "nodes a label (docker node update --label-add gpu=true <node>) and place the "
                "replicas with -C constraints=node.labels.gpu==true, or run containers on one "
                "engine with -C runtime=container.", INVALID_PARAMETER_VALUE)
        if settings.bind_address:
            raise MlflowException(
                "-C bind_address does not apply on a swarm: the front publishes its port on "
                "every node, on all interfaces (host mode). Leave it out, or run containers "
                "with -C runtime=container.", INVALID_PARAMETER_VALUE)
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

    # -----------------------------------------------------------------------------------------
    # Reading what the swarm holds

    def _services(self, label: str, role: str) -> list[dict[str, Any]]:
        """Services with ``label`` (key or key=value) in the role ``role``."""
        found = self.client.api.services(filters={"label": label})
        return [s for s in found if _labels(s).get(record.ROLE) == role]

    def _server(self, deployment: str) -> dict[str, Any] | None:
        found = self._services(f"{record.DEPLOYMENT}={deployment}", record.SERVER)
        return found[0] if found else None

    def _front(self, deployment: str | None = None,
               endpoint: str | None = None) -> dict[str, Any] | None:
        label = (f"{record.FRONT_OF}={deployment}" if deployment
                 else f"{record.ENDPOINT}={endpoint}")
        found = self._services(label, record.FRONT)
        return found[0] if found else None

    def _front_of(self, deployment: str, endpoint: str | None) -> dict[str, Any] | None:
        return self._front(endpoint=endpoint) if endpoint else self._front(deployment=deployment)

    def _tasks(self, service: Mapping[str, Any], running: bool = True) -> list[dict[str, Any]]:
        filters: dict[str, Any] = {"service": service["ID"]}
        if running:
            filters["desired-state"] = "running"
        tasks = self.client.api.tasks(filters=filters)
        return sorted(tasks, key=lambda t: t.get("CreatedAt", ""), reverse=True)

    def find(self, name: str) -> Deployment | None:
        service = self._server(name)
        return self._deployment(service) if service else None

    def deployments(self, endpoint: str | None = None) -> list[Deployment]:
        label = f"{record.ENDPOINT}={endpoint}" if endpoint else record.DEPLOYMENT
        return sorted((self._deployment(s) for s in self._services(label, record.SERVER)),
                      key=lambda d: d.name)

    def _deployment(self, service: Mapping[str, Any]) -> Deployment:
        labels = _labels(service)
        name = labels[record.DEPLOYMENT]
        endpoint = labels.get(record.ENDPOINT) or None
        spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
        config = record.recorded_config(labels, spec.get("Env"))
        wanted = service["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 1)
        if wanted != 1 or "replicas" in config:
            config["replicas"] = str(wanted)  # scaling changes the mode, not the labels
        pushed_to = f"{config['registry']}/" if config.get("registry") else ""
        replicas = tuple(Replica(f"{service['Spec']['Name']}.{t.get('Slot', t['ID'][:12])}",
                                 t["Status"]["State"], None,
                                 _local(t["Spec"]["ContainerSpec"]["Image"], pushed_to),
                                 t["Status"].get("Err")) for t in self._tasks(service))
        front_service = self._front_of(name, endpoint)
        url, nodes = self._reach(front_service) if front_service else (None, ())
        return Deployment(name, labels, config, replicas, url, endpoint, runtime=SWARM,
                          nodes=nodes)

    def _reach(self, front_service: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
        """The front's URL on the manager's address (or ``host_address``), and the addresses
        of the nodes whose front runs."""
        labels = _labels(front_service)
        port = int(labels[record.PORT])
        url = containers.url_for(self.engine, self.node_address, port,
                                 labels.get(record.HOST_ADDRESS) or None)
        addresses = {n["ID"]: n["Status"].get("Addr", "") for n in self.client.api.nodes()}
        nodes = sorted({addresses.get(t.get("NodeID", ""), "") for t in self._tasks(front_service)
                        if t["Status"]["State"] == "running"} - {""})
        return url, tuple(f"{node}:{port}" for node in nodes)

    def endpoint(self, name: str) -> Endpoint | None:
        service = self._front(endpoint=name)
        return self._endpoint(service) if service else None

    def endpoints(self) -> list[Endpoint]:
        return sorted((self._endpoint(s) for s in self._services(record.ENDPOINT, record.FRONT)),
                      key=lambda e: e.name)

    def _endpoint(self, service: Mapping[str, Any]) -> Endpoint:
        labels = _labels(service)
        name = labels[record.ENDPOINT]
        attached = tuple(sorted(_labels(s)[record.DEPLOYMENT] for s in self._services(
            f"{record.ENDPOINT}={name}", record.SERVER)))
        url, nodes = self._reach(service)
        states = {t["Status"]["State"] for t in self._tasks(service)}
        status = "running" if "running" in states else (min(states) if states else "missing")
        return Endpoint(name, url, int(labels[record.PORT]), status, attached,
                        json.loads(labels.get(record.TRAFFIC) or "null"),
                        service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0],
                        runtime=SWARM, nodes=nodes)

    # -----------------------------------------------------------------------------------------
    # Images on every node

    def _publish(self, image: str, registry: str | None, always: bool = True) -> str:
        """The reference the nodes pull ``image`` by: pushed to ``registry`` (a proxy image
        only when it is a local one, one no registry knows), else as it is."""
        if not registry:
            return image
        local = self.client.images.get(image)
        repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        known = {digest.split("@")[0] for digest in local.attrs.get("RepoDigests") or []}
        if not always and repository in known:  # pulled under this name: nodes pull it too
            return image
        target = f"{registry}/{image}"
        local.tag(target)
        log.info("Pushing %s", target)
        done: set[str] = set()
        last = time.monotonic()
        try:
            for chunk in self.client.api.push(target, stream=True, decode=True):
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("error") or chunk["errorDetail"].get("message")
                    raise MlflowException(_push_error(target, str(detail)))
                status, layer = chunk.get("status", ""), chunk.get("id", "")
                if status in ("Pushed", "Layer already exists", "Mounted from") and layer:
                    done.add(layer)
                    log.info("  %s: %s (%d layers done)", layer, status, len(done))
                elif "progressDetail" in chunk and time.monotonic() - last > 5:
                    last = time.monotonic()
                    log.info("  %s: %s", layer, chunk.get("progress", status))
        except docker.errors.APIError as exc:
            raise MlflowException(_push_error(target, str(exc.explanation or exc))) from exc
        return target

    def remove_images(self, images: set[str]) -> None:
        """The images on the manager, under their local and their pushed names; the registry
        keeps what was pushed (its garbage collection is its own)."""
        names: set[str] = set()
        for image in images:
            try:
                tags = self.client.images.get(image).tags
            except docker.errors.ImageNotFound:
                continue
            names |= {t for t in tags if t == image or t.endswith(f"/{image}")
                      or image.endswith(f"/{t}")}
        remove_images(self.engine, names)

    # -----------------------------------------------------------------------------------------
    # Fronts

    def create_endpoint(self, name: str, settings: Settings) -> Endpoint:
        self._start_front(settings, endpoint=name)
        found = self.endpoint(name)
        assert found is not None
        log.info("Endpoint %s answers at %s (every node: %s)", name, found.url,
                 ", ".join(found.nodes))
        return found

    def _start_front(self, settings: Settings, endpoint: str | None = None,
                     deployment: str | None = None,
                     backends: tuple[front.Backend, ...] = ()) -> dict[str, Any]:
        """The overlay network of an endpoint and its front, a global service publishing
        ``settings.port`` on every node."""
        name = service_name(str(endpoint or deployment), "endpoint" if endpoint else "front")
        labels = {record.ROLE: record.FRONT, record.RUNTIME: SWARM,
                  record.PORT: str(settings.port),
                  record.TRAFFIC: json.dumps(None)}
        if endpoint:
            labels[record.ENDPOINT] = endpoint
        else:
            labels[record.FRONT_OF] = labels[record.DEPLOYMENT] = str(deployment)
        if settings.host_address:
            labels[record.HOST_ADDRESS] = settings.host_address
        image = self._publish(settings.resolved_proxy_image(), settings.registry, always=False)
        network = self.client.networks.create(name, driver="overlay", labels=labels)
        service_id = None
        try:
            config = self._front_config(name, str(endpoint or deployment), backends)
            service_id = self.client.api.create_service(
                self._front_template(image, network.id, config), name=name, labels=labels,
                mode=ServiceMode("global"),
                endpoint_spec=EndpointSpec(mode="dnsrr", ports={
                    int(str(settings.port)): (front.FRONT_PORT, "tcp", "host")}),
                update_config=UpdateConfig(parallelism=1, delay=_NS, order="stop-first",
                                           failure_action="rollback", monitor=2 * _NS),
            )["ID"]
            service = self.client.api.inspect_service(service_id)
            self._wait_rollout(service, time.monotonic() + FRONT_START_TIMEOUT, "front")
        except BaseException as exc:
            if service_id is not None:
                self._remove_service(service_id)
            self._remove_network(name)
            self._remove_configs(name)
            if isinstance(exc, docker.errors.APIError):
                raise MlflowException(
                    f"Could not start the front of {endpoint or deployment!r} on port "
                    f"{settings.port}: {exc.explanation or exc}. If the port is taken on a "
                    "node, choose another with -C port (create-endpoint, create) or "
                    "-C endpoint_port (create --endpoint).", INVALID_PARAMETER_VALUE) from exc
            raise
        return service

    @staticmethod
    def _front_template(image: str, network: str, config: tuple[str, str]) -> TaskTemplate:
        return TaskTemplate(
            ContainerSpec(image, command=front.COMMAND, init=True, stop_signal="SIGUSR1",
                          configs=[ConfigReference(config[0], config[1],
                                                   filename=front.CONFIG_PATH)]),
            restart_policy=RestartPolicy("any", delay=_NS), networks=[network])

    def _front_config(self, service: str, name: str,
                      backends: tuple[front.Backend, ...]) -> tuple[str, str]:
        """A Swarm config holding the front's HAProxy configuration: (id, name)."""
        text = front.render(name, backends).encode()
        config_name = f"{service}-{hashlib.sha256(text).hexdigest()[:12]}"
        try:
            found = self.client.configs.get(config_name)
            return found.id, config_name
        except docker.errors.NotFound:
            made = self.client.configs.create(name=config_name, data=text,
                                              labels={record.FRONT: service})
            return made.id, config_name

    def _backends(self, endpoint: str | None, traffic: Mapping[str, int] | None,
                  add: Version | None = None,
                  leave: str | None = None) -> tuple[front.Backend, ...]:
        """The deployments a front routes to, each found by its tasks' DNS name: those on the
        shared ``endpoint`` (none for a deployment's own front), with ``add``, without
        ``leave``."""
        timeouts: dict[str, int] = {}
        for service in self._services(f"{record.ENDPOINT}={endpoint}",
                                      record.SERVER) if endpoint else []:
            labels = _labels(service)
            recorded = record.recorded_config(labels, None).get("request_timeout")
            timeouts[labels[record.DEPLOYMENT]] = int(recorded or Settings().request_timeout)
        if add is not None:
            timeouts[add.deployment] = add.settings.request_timeout
        timeouts.pop(leave or "", None)
        shares = front.weights(sorted(timeouts), traffic)
        return tuple(front.Backend(name, shares[name], timeouts[name],
                                   tasks=f"tasks.{service_name(name)}")
                     for name in sorted(timeouts))

    def _reconfigure(self, front_service: Mapping[str, Any],
                     backends: tuple[front.Backend, ...],
                     traffic: Mapping[str, int] | None) -> None:
        """Roll a new configuration out to the fronts, one node at a time; a front whose
        configuration is unchanged is left alone."""
        labels = dict(_labels(front_service))
        name = labels.get(record.ENDPOINT) or labels[record.FRONT_OF]
        service = front_service["Spec"]["Name"]
        config = self._front_config(service, name, backends)
        spec = front_service["Spec"]
        template = spec["TaskTemplate"]
        current = [c.get("ConfigID") for c in template["ContainerSpec"].get("Configs") or []]
        rewritten = current != [config[0]]
        labels[record.TRAFFIC] = json.dumps(dict(traffic) if traffic is not None else None)
        if not rewritten and labels == _labels(front_service):
            return
        template["ContainerSpec"]["Configs"] = [
            ConfigReference(config[0], config[1], filename=front.CONFIG_PATH)]
        since = self._update(front_service, task_template=template, labels=labels)
        if rewritten:  # a label alone restarts no task
            self._wait_rollout(self.client.api.inspect_service(front_service["ID"]),
                               time.monotonic() + FRONT_START_TIMEOUT, "front", since)
        self._remove_configs(service, keep=config[0])

    def _nodes_taking_tasks(self) -> set[str]:
        return {n["ID"] for n in self.client.api.nodes()
                if n["Status"]["State"] == "ready" and n["Spec"]["Availability"] == "active"}

    def set_traffic(self, endpoint: Endpoint, traffic: Mapping[str, int]) -> Endpoint:
        service = self._front(endpoint=endpoint.name)
        assert service is not None
        self._reconfigure(service, self._backends(endpoint.name, traffic), traffic)
        found = self.endpoint(endpoint.name)
        assert found is not None
        return found

    def remove_endpoint(self, endpoint: Endpoint) -> None:
        service = self._front(endpoint=endpoint.name)
        if service is not None:
            self._remove_front(service)

    def _remove_front(self, service: Mapping[str, Any]) -> None:
        name = service["Spec"]["Name"]
        self._remove_service(service["ID"])
        self._remove_network(name)
        self._remove_configs(name)

    # -----------------------------------------------------------------------------------------
    # Rollouts

    def roll_out(self, version: Version, current: Deployment | None) -> Deployment:
        name = version.deployment
        settings = version.settings
        made_front = None
        if version.endpoint is not None:
            front_service = self._front(endpoint=version.endpoint)
            if front_service is None:
                raise MlflowException(f"Endpoint {version.endpoint!r} has no front on "
                                      f"{self.url}; create it with create-endpoint.")
        else:
            front_service = self._front(deployment=name)
            if front_service is None:
                front_service = made_front = self._start_front(
                    settings, deployment=name, backends=self._backends(None, None, add=version))
        image = self._publish(version.image, settings.registry)
        service = self._server(name)
        made = None
        try:
            network = front_service["Spec"]["Name"]
            kwargs = self._server_spec(version, image, network)
            deadline = time.monotonic() + settings.ready_timeout + MONITOR_SECONDS
            if service is None:
                made = self.client.api.create_service(**kwargs)["ID"]
                self._wait_rollout(self.client.api.inspect_service(made), deadline, "server")
            else:
                since = self._update(service, **kwargs)
                self._wait_rollout(self.client.api.inspect_service(service["ID"]), deadline,
                                   "server", since)
            # the front routes to this version (on a shared endpoint: joins it; its request
            # timeout may have changed); an unchanged configuration restarts nothing
            traffic = json.loads(_labels(front_service).get(record.TRAFFIC) or "null")
            self._reconfigure(front_service,
                              self._backends(version.endpoint, traffic, add=version), traffic)
            url, _ = self._reach(self.client.api.inspect_service(front_service["ID"]))
            if url:
                containers.check_reachable(url, f"service {service_name(name)}")
        except BaseException as exc:
            if made is not None:
                self._remove_service(made)
            if made_front is not None:
                self._remove_front(made_front)
            if current is not None and isinstance(exc, MlflowException):
                raise MlflowException(f"{exc.message}\nThe deployment's current version keeps "
                                      "serving.", exc.error_code) from exc
            raise
        found = self.find(name)
        assert found is not None
        return found

    def _server_spec(self, version: Version, image: str, network: str) -> dict[str, Any]:
        """Create (and update) arguments of a deployment's service."""
        settings = version.settings
        spec = Spec(version.deployment, version.image, version.model, version.config,
                    settings, __version__, endpoint=version.endpoint)
        policy, _, attempts = settings.restart_policy.partition(":")
        health = Healthcheck(test=["CMD", "python3", "-m", "serving_image.healthcheck"],
                             interval=int(HEALTH_INTERVAL * _NS), timeout=3 * _NS, retries=3,
                             start_period=int(settings.ready_timeout * _NS))
        template = TaskTemplate(
            ContainerSpec(image, env=spec.environment(), init=settings.init,
                          stop_signal="SIGTERM", healthcheck=health,
                          stop_grace_period=settings.stop_timeout * _NS),
            resources=Resources(cpu_limit=int(settings.cpus * 1e9) if settings.cpus else None,
                                mem_limit=settings.memory),
            restart_policy=RestartPolicy(_RESTART[policy], delay=_NS,
                                         max_attempts=int(attempts or 0)),
            placement=Placement(constraints=list(settings.constraints or ())),
            networks=[network])
        rollout = {"parallelism": 1, "order": "start-first", "monitor": MONITOR_SECONDS * _NS}
        return {
            "task_template": template, "name": service_name(version.deployment),
            "labels": {**spec.labels(), record.RUNTIME: SWARM},
            "mode": ServiceMode("replicated", replicas=settings.replicas),
            "endpoint_spec": EndpointSpec(mode="dnsrr"),
            "update_config": UpdateConfig(failure_action="rollback", **rollout),
            "rollback_config": RollbackConfig(failure_action="pause", **rollout),
        }

    def _update(self, service: Mapping[str, Any], **changes: Any) -> str | None:
        """A service update: the current spec with ``changes``; returns when the update
        before it started, for :meth:`_wait_rollout`."""
        spec = service["Spec"]
        current = {"task_template": spec["TaskTemplate"], "name": spec["Name"],
                   "labels": spec.get("Labels"), "mode": spec.get("Mode"),
                   "endpoint_spec": spec.get("EndpointSpec"),
                   "update_config": spec.get("UpdateConfig"),
                   "rollback_config": spec.get("RollbackConfig")}
        self.client.api.update_service(service["ID"], service["Version"]["Index"],
                                       **{**current, **changes})
        return (service.get("UpdateStatus") or {}).get("StartedAt")

    def _wait_rollout(self, service: Mapping[str, Any], deadline: float, what: str,
                      since: str | None = None) -> None:
        """Until every task the service wants runs its current spec (Swarm counts a task as
        running once its health check passes); raise when Swarm rolled the update back, or
        a new task failed, with that task's last log lines. ``since``: when the update before
        this one started (its outcome is no news)."""
        spec = service["Spec"]
        wanted = spec["Mode"].get("Replicated", {}).get("Replicas")
        template = spec["TaskTemplate"]["ContainerSpec"]
        while True:
            service = self.client.api.inspect_service(service["ID"])
            status = service.get("UpdateStatus") or {}
            state = status.get("State", "") if status.get("StartedAt") != since else ""
            if state.startswith("rollback") or state == "paused":
                self._raise_rolled_back(service, state, template)
            tasks = self._tasks(service)
            running = [t for t in tasks if t["Status"]["State"] == "running"]
            if wanted is None:  # a global front: one current task on every node
                nodes = self._nodes_taking_tasks()
                done = nodes <= {t.get("NodeID") for t in running
                                 if _same(t["Spec"]["ContainerSpec"], template)} and all(
                    _same(t["Spec"]["ContainerSpec"], template) for t in running
                    if t.get("NodeID") in nodes)
            else:
                done = len(tasks) == wanted and all(
                    _same(t["Spec"]["ContainerSpec"], template) for t in running) and \
                    len(running) == wanted
            if done and state != "updating":
                return
            self._raise_if_failed(service, what, deadline, template)
            time.sleep(POLL)

    def _raise_if_failed(self, service: Mapping[str, Any], what: str, deadline: float,
                         template: Mapping[str, Any] | None = None) -> None:
        started = service.get("UpdatedAt", "")
        failed = [t for t in self._tasks(service, running=False)
                  if t["Status"]["State"] in _FAILED and t.get("UpdatedAt", "") >= started
                  and (template is None or _same(t["Spec"]["ContainerSpec"], template))]
        if failed:
            task = failed[0]
            raise MlflowException(
                f"A task of the {what} service {service['Spec']['Name']} failed: "
                f"{task['Status'].get('Err') or task['Status']['State']}. Its last log lines:"
                f"\n{self._task_logs(service, task)}")
        if time.monotonic() > deadline:
            tasks = self._tasks(service)
            raise MlflowException(
                f"The {what} service {service['Spec']['Name']} was not ready in time (config "
                f"ready_timeout); its tasks: "
                f"{', '.join(t['Status']['State'] for t in tasks) or 'none'}. Last log lines:"
                f"\n{self._task_logs(service, tasks[0] if tasks else None)}")

    def _raise_rolled_back(self, service: Mapping[str, Any], state: str,
                           template: Mapping[str, Any]) -> None:
        failed = [t for t in self._tasks(service, running=False)
                  if _same(t["Spec"]["ContainerSpec"], template)
                  and t["Status"]["State"] != "running"]
        task = failed[0] if failed else None
        why = (task["Status"].get("Err") or task["Status"]["State"]) if task else state
        message = (service.get("UpdateStatus") or {}).get("Message", "")
        if state == "rollback_started":  # the previous version comes back: wait for it
            deadline = time.monotonic() + REMOVE_TIMEOUT
            while (self.client.api.inspect_service(service["ID"]).get("UpdateStatus") or {}
                   ).get("State") == "rollback_started" and time.monotonic() < deadline:
                time.sleep(POLL)
        raise MlflowException(
            f"Swarm rolled the update of {service['Spec']['Name']} back ({message or state}): "
            f"a new task did not get ready ({why}). Its last log lines:\n"
            f"{self._task_logs(service, task)}", INVALID_STATE)

    def _task_logs(self, service: Mapping[str, Any], task: Mapping[str, Any] | None,
                   lines: int = 40) -> str:
        """The last lines a task logged, through the manager (from whichever node ran it).

        Read on a thread for at most LOGS_SECONDS: the engine's service log stream can stay
        open without end when a task's container is gone, and an error report must not hang
        on it (the thread ends when the engine closes the stream, or with the process).
        """
        if task is None:
            return "(no task)"
        found: list[str] = []

        def read() -> None:
            with contextlib.suppress(docker.errors.APIError, OSError):
                for chunk in self.client.api.service_logs(service["ID"], details=True,
                                                          stdout=True, stderr=True, tail=200):
                    found.extend(chunk.decode(errors="replace").splitlines())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(LOGS_SECONDS)
        mine = [line.split(" ", 1)[-1] for line in list(found)
                if f"com.docker.swarm.task.id={task['ID']}" in line.split(" ", 1)[0]]
        return "\n".join(mine[-lines:]) or "(nothing logged)"

    def scale(self, version: Version, current: Deployment) -> Deployment:
        service = self._server(version.deployment)
        assert service is not None
        mode = ServiceMode("replicated", replicas=version.settings.replicas)
        since = self._update(service, mode=mode)
        try:
            self._wait_rollout(self.client.api.inspect_service(service["ID"]),
                               time.monotonic() + version.settings.ready_timeout, "server", since)
        except MlflowException as exc:
            raise MlflowException(f"{exc.message}\nThe deployment's replicas keep serving.",
                                  exc.error_code) from exc
        found = self.find(version.deployment)
        assert found is not None
        return found

    def remove(self, deployment: Deployment, stop_timeout: int) -> set[str]:
        service = self._server(deployment.name)
        images = {deployment.labels.get(record.IMAGE) or ""} - {""}
        images |= {r.image for r in deployment.replicas if r.image}  # local names: see _local
        shared = self._front(endpoint=deployment.endpoint) if deployment.endpoint else None
        if service is not None:
            self._remove_service(service["ID"], stop_timeout)
        if shared is not None:
            traffic = json.loads(_labels(shared).get(record.TRAFFIC) or "null")
            if traffic is not None:
                traffic = {k: v for k, v in traffic.items() if k != deployment.name}
            self._reconfigure(shared, self._backends(deployment.endpoint, traffic,
                                                     leave=deployment.name), traffic)
        own = self._front(deployment=deployment.name)
        if own is not None:
            self._remove_front(own)
        return images

    # -----------------------------------------------------------------------------------------
    # Removing what was made

    def _remove_service(self, service_id: str, stop_timeout: int = 10) -> None:
        """Remove a service once its tasks are gone: a deployment's are scaled to none first,
        so each drains (out of the fronts, then its requests finished) before ``delete``
        returns; a removed service's tasks can no longer be asked for."""
        try:
            service = self.client.api.inspect_service(service_id)
            if "Replicated" in service["Spec"]["Mode"]:
                self._update(service, mode=ServiceMode("replicated", replicas=0))
                deadline = time.monotonic() + stop_timeout + REMOVE_TIMEOUT
                while time.monotonic() < deadline:
                    live = self._nodes_taking_tasks()  # a lost node's tasks never report
                    if not any(t["Status"]["State"] in ("running", "starting", "preparing")
                               and t.get("NodeID") in live
                               for t in self._tasks(service, running=False)):
                        break
                    time.sleep(POLL)
            self.client.api.remove_service(service_id)
        except docker.errors.NotFound:
            return

    def _remove_network(self, name: str) -> None:
        """The overlay goes once no task on any node holds an address on it; until the
        manager's engine has let go of it too, it is still listed, and asked again."""
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while True:
            found = [n for n in self.client.networks.list(names=[name]) if n.name == name]
            if not found:
                return
            try:
                found[0].remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if time.monotonic() > deadline:
                    raise MlflowException(
                        f"The network {name} is still in use ({exc.explanation or exc}); "
                        f"remove it once its tasks are gone: docker network rm {name}",
                        INVALID_STATE) from exc
            if time.monotonic() > deadline:
                raise MlflowException(f"The network {name} is still listed on {self.url}; "
                                      f"remove it: docker network rm {name}", INVALID_STATE)
            time.sleep(POLL)

    def _remove_configs(self, service: str, keep: str | None = None) -> None:
        for config in self.client.configs.list(filters={"label": f"{record.FRONT}={service}"}):
            if config.id != keep:
                try:
                    config.remove()
                except docker.errors.APIError as exc:  # still in use by a rolling task
                    log.info("Keeping config %s: %s", config.name, exc.explanation or exc)


def _labels(service: Mapping[str, Any]) -> dict[str, str]:
    return dict(service["Spec"].get("Labels") or {})


def _local(image: str, pushed_to: str) -> str:
    """The name an image was built under on the manager, from the one the nodes pull."""
    image = image.split("@")[0]
    return image[len(pushed_to):] if pushed_to and image.startswith(pushed_to) else image


def _same(task_spec: Mapping[str, Any], template: Mapping[str, Any]) -> bool:
    """Whether a task runs ``template`` (its image, environment and configuration files)."""
    def key(spec: Mapping[str, Any]) -> tuple[Any, ...]:
        return (spec.get("Image", "").split("@")[0], sorted(spec.get("Env") or []),
                [c.get("ConfigID") for c in spec.get("Configs") or []])
    return key(task_spec) == key(template)


def _push_error(target: str, detail: str) -> str:
    hint = ""
    if "HTTP response to HTTPS client" in detail:
        hint = (" The registry speaks plain HTTP: add it to the engine's insecure-registries "
                "(daemon.json), on the manager and every node, or serve it with TLS.")
    elif "denied" in detail or "unauthorized" in detail:
        hint = " Log in to the registry on this machine first (docker login)."
    return f"Pushing {target} failed: {detail.strip()}.{hint}"

