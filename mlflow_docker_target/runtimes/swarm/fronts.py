"""An endpoint's front on a swarm: HAProxy as a global service, publishing the endpoint's port in
host mode on every node, so any node answers as the routing mesh would.

The front finds each deployment's replicas through the overlay's DNS (``tasks.<service>``) and
follows them as Swarm starts, moves and stops them, so rollouts, scaling and rescheduling never
touch it. Its task definition never changes once made: a change of the deployments on an
endpoint, of their weights, of the limits or of the certificate is a new generation of its
settings (``front_settings``), which every node's front takes with a hitless reload. What the
front serves is recorded in its service's labels (a label changes no task).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
from docker.types import (
    ContainerSpec,
    EndpointSpec,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.runtimes import fronts, haproxy
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.fronts import Traffic
from mlflow_docker_target.runtimes.haproxy import Limits
from mlflow_docker_target.runtimes.swarm import front_settings
from mlflow_docker_target.runtimes.swarm.names import service_name
from mlflow_docker_target.runtimes.swarm.services import (
    NS,
    labels_of,
    remove_network,
    remove_service,
    update,
    wait_rollout,
)

SWARM = "swarm"
START_TIMEOUT = 120  # a front task: pull the proxy image, start HAProxy


def start(client: docker.DockerClient, settings: Settings, image: str,
          endpoint: str | None = None, deployment: str | None = None,
          backends: tuple[haproxy.Backend, ...] = (),
          tls: Certificate | None = None) -> dict[str, Any]:
    """The overlay network of an endpoint and its front, a global service publishing
    ``settings.port`` on every node, from ``image`` (one every node can pull), with its
    settings service; with ``tls``, serving HTTPS only."""
    name = service_name(str(endpoint or deployment), "endpoint" if endpoint else "front")
    limits = fronts.limits_of(settings)
    labels = {**fronts.labels(settings, endpoint, deployment, https=tls is not None),
              record.RUNTIME: SWARM, record.PORT: str(settings.port),
              record.TRAFFIC: json.dumps(None), record.LIMITS: json.dumps(limits.as_record())}
    if tls is not None:
        labels[record.CERTIFICATE] = tls.chain.decode()
    network = client.networks.create(name, driver="overlay", labels=labels)
    service_id = None
    try:
        rendered = front_settings.generation(str(endpoint or deployment), backends, limits,
                                             record.METRICS_PORT in labels,
                                             tls.chain if tls is not None else None)
        settings_id = front_settings.start(client, name, image, {record.RUNTIME: SWARM},
                                           rendered, tls)
        ports = {int(str(settings.port)): (haproxy.FRONT_PORT, "tcp", "host")}
        if settings.front_metrics_port:
            ports[settings.front_metrics_port] = (haproxy.METRICS_PORT, "tcp", "host")
        service_id = client.api.create_service(
            _template(image, name, network.id), name=name, labels=labels,
            mode=ServiceMode("global"), endpoint_spec=EndpointSpec(mode="dnsrr", ports=ports),
            update_config=UpdateConfig(parallelism=1, delay=NS, order="stop-first",
                                       failure_action="rollback", monitor=2 * NS),
        )["ID"]
        service = client.api.inspect_service(service_id)
        wait_rollout(client, service, time.monotonic() + START_TIMEOUT, "front")
        front_settings.wait(client, settings_id)
    except BaseException as exc:
        _remove(client, name, service_id)
        if isinstance(exc, docker.errors.APIError):
            raise fronts.start_failed(str(endpoint or deployment), str(settings.port), exc,
                                      " on a node") from exc
        raise
    return service


def _template(image: str, name: str, network: str) -> TaskTemplate:
    """The front's task, the same for its whole life: it takes each new configuration from
    its node's settings task."""
    locked = lockdown.service_options()
    return TaskTemplate(
        ContainerSpec(image, command=front_settings.FRONT_COMMAND, init=True,
                      stop_signal="SIGUSR1", user=haproxy.FRONT_USER,
                      mounts=[*locked.pop("mounts", []), front_settings.volume(name)], **locked),
        resources=lockdown.with_pids_limit({}, lockdown.HELPER_PIDS),
        restart_policy=RestartPolicy("any", delay=NS), networks=[network])


def certificate_of(service: Mapping[str, Any]) -> str | None:
    """The certificate chain an HTTPS front's service records (public)."""
    return labels_of(service).get(record.CERTIFICATE) or None


def traffic_of(service: Mapping[str, Any]) -> Traffic:
    """The shares a front's service records in its labels."""
    traffic: Traffic = json.loads(labels_of(service).get(record.TRAFFIC) or "null")
    return traffic


def canaries_of(service: Mapping[str, Any]) -> dict[str, fronts.RecordedCanary]:
    """The canaries a front's service records in its labels, by deployment."""
    recorded = json.loads(labels_of(service).get(record.CANARIES) or "{}")
    return {name: fronts.RecordedCanary(**canary) for name, canary in recorded.items()}


def limits_of(service: Mapping[str, Any]) -> Limits:
    """The limits a front's service records in its labels."""
    return Limits.from_record(json.loads(labels_of(service).get(record.LIMITS) or "null"))


def reconfigure(client: docker.DockerClient, service: Mapping[str, Any],
                backends: tuple[haproxy.Backend, ...], traffic: Traffic,
                limits: Limits | None = None, tls: Certificate | None = None,
                canaries: Mapping[str, fronts.RecordedCanary] | None = None) -> None:
    """Hand the fronts on every node a new configuration (each takes it with a hitless
    reload), unless it is the one they run. ``limits``: these, else the recorded ones;
    ``tls``: a new certificate for an HTTPS front, else the one it has; ``canaries``: the
    canaries ``backends`` hold, to record, else the recorded ones."""
    labels = dict(labels_of(service))
    name = labels.get(record.ENDPOINT) or labels[record.FRONT_OF]
    front = service["Spec"]["Name"]
    limits = limits or limits_of(service)
    labels[record.LIMITS] = json.dumps(limits.as_record())
    https = record.HTTPS in labels
    renewed = https and tls is not None and labels.get(record.CERTIFICATE) != tls.chain.decode()
    if renewed and tls is not None:
        labels[record.CERTIFICATE] = tls.chain.decode()
    chain = labels[record.CERTIFICATE].encode() if https else None
    rendered = front_settings.generation(name, backends, limits,
                                         record.METRICS_PORT in labels, chain)
    settings = front_settings.find(client, front)
    if settings is None:
        raise MlflowException(
            f"The front {front} has no settings service ({front_settings.name_of(front)}), so "
            "it cannot take a new configuration. Delete the endpoint (or deployment) and "
            "create it again.", INVALID_STATE)
    if front_settings.handed(settings) != rendered.name:
        front_settings.hand_over(client, settings, rendered, tls if renewed else None)
    labels[record.TRAFFIC] = json.dumps(dict(traffic) if traffic is not None else None)
    if canaries is not None:
        labels[record.CANARIES] = json.dumps(
            {name: dataclasses.asdict(canary) for name, canary in sorted(canaries.items())})
    if labels != labels_of(service):  # a label alone restarts no task
        update(client, service, labels=labels)


def remove(client: docker.DockerClient, service: Mapping[str, Any]) -> None:
    """The front's service, its settings, its network and (on this node) its volume."""
    _remove(client, service["Spec"]["Name"], service["ID"])


def _remove(client: docker.DockerClient, name: str, service_id: str | None) -> None:
    if service_id is not None:
        remove_service(client, service_id)
    front_settings.remove(client, name)
    remove_network(client, name)
    front_settings.remove_volume(client, name)
