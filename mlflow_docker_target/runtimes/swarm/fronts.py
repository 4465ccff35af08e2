"""An endpoint's front on a swarm: HAProxy as a global service, publishing the endpoint's port in
host mode on every node, so any node answers as the routing mesh would.

The front finds each deployment's replicas through the overlay's DNS (``tasks.<service>``) and
follows them as Swarm starts, moves and stops them, so rollouts, scaling and rescheduling never
touch it. Its configuration is a Swarm config (immutable: a change is a new config); only a
change of the deployments on an endpoint, of their weights, of the limits or of the certificate
makes one, which Swarm rolls out one node at a time while the other nodes answer. An HTTPS
front's certificate and key are a Swarm secret, readable only by the front's user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
from docker.models.configs import ConfigCollection
from docker.models.secrets import SecretCollection
from docker.types import (
    ConfigReference,
    ContainerSpec,
    EndpointSpec,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.runtimes import fronts, haproxy
from mlflow_docker_target.runtimes.certificates import Certificate
from mlflow_docker_target.runtimes.fronts import Traffic
from mlflow_docker_target.runtimes.haproxy import Limits
from mlflow_docker_target.runtimes.swarm.names import service_name
from mlflow_docker_target.runtimes.swarm.services import (
    NS,
    labels_of,
    remove_network,
    remove_service,
    update,
    wait_rollout,
)

log = logging.getLogger(__name__)

SWARM = "swarm"
START_TIMEOUT = 120  # a front task: pull the proxy image, start HAProxy
TLS_FILE = "mlflow-dockerhost-tls.pem"  # the secret's name in the task's /run/secrets
TLS_PATH = f"/run/secrets/{TLS_FILE}"


def start(client: docker.DockerClient, settings: Settings, image: str,
          endpoint: str | None = None, deployment: str | None = None,
          backends: tuple[haproxy.Backend, ...] = (),
          tls: Certificate | None = None) -> dict[str, Any]:
    """The overlay network of an endpoint and its front, a global service publishing
    ``settings.port`` on every node, from ``image`` (one every node can pull); with ``tls``,
    serving HTTPS only."""
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
        config = _config(client, name, str(endpoint or deployment), backends, limits,
                         record.METRICS_PORT in labels, tls is not None)
        secret = _secret(client, name, tls) if tls is not None else None
        ports = {int(str(settings.port)): (haproxy.FRONT_PORT, "tcp", "host")}
        if settings.front_metrics_port:
            ports[settings.front_metrics_port] = (haproxy.METRICS_PORT, "tcp", "host")
        service_id = client.api.create_service(
            _template(image, network.id, config, secret), name=name, labels=labels,
            mode=ServiceMode("global"),
            endpoint_spec=EndpointSpec(mode="dnsrr", ports=ports),
            update_config=UpdateConfig(parallelism=1, delay=NS, order="stop-first",
                                       failure_action="rollback", monitor=2 * NS),
        )["ID"]
        service = client.api.inspect_service(service_id)
        wait_rollout(client, service, time.monotonic() + START_TIMEOUT, "front")
    except BaseException as exc:
        if service_id is not None:
            remove_service(client, service_id)
        remove_network(client, name)
        _remove_stored(client.configs, name)
        _remove_stored(client.secrets, name)
        if isinstance(exc, docker.errors.APIError):
            raise fronts.start_failed(str(endpoint or deployment), str(settings.port), exc,
                                      " on a node") from exc
        raise
    return service


def _template(image: str, network: str, config: tuple[str, str],
              secret: SecretReference | None) -> TaskTemplate:
    return TaskTemplate(
        ContainerSpec(image, command=haproxy.COMMAND, init=True, stop_signal="SIGUSR1",
                      user=haproxy.FRONT_USER,
                      configs=[ConfigReference(config[0], config[1],
                                               filename=haproxy.CONFIG_PATH)],
                      secrets=[secret] if secret else None, **lockdown.service_options()),
        resources=lockdown.with_pids_limit({}, lockdown.HELPER_PIDS),
        restart_policy=RestartPolicy("any", delay=NS), networks=[network])


def _config(client: docker.DockerClient, service: str, name: str,
            backends: tuple[haproxy.Backend, ...], limits: Limits,
            metrics: bool, https: bool) -> tuple[str, str]:
    """A Swarm config holding the front's HAProxy configuration: (id, name)."""
    text = haproxy.render(name, backends, limits, metrics, TLS_PATH if https else None).encode()
    config_name = f"{service}-{hashlib.sha256(text).hexdigest()[:12]}"
    return _stored(client.configs, service, config_name, text), config_name


def _secret(client: docker.DockerClient, service: str, tls: Certificate) -> SecretReference:
    """A Swarm secret holding the certificate and key, as a file only the front's user reads.
    Its name holds a hash of the certificate (never of the key: the certificate names it), as
    secrets are immutable."""
    name = f"{service}-tls-{hashlib.sha256(tls.chain).hexdigest()[:12]}"
    uid, gid = haproxy.FRONT_USER.split(":")
    return SecretReference(_stored(client.secrets, service, name, tls.pem()), name,
                           filename=TLS_FILE, uid=uid, gid=gid, mode=0o400)


def _stored(stored: ConfigCollection | SecretCollection, service: str, name: str,
            data: bytes) -> str:
    """The id of the front's config (or secret) ``name``, made with ``data`` unless it exists
    (its name holds a hash of what it holds: both are immutable)."""
    try:
        return str(stored.get(name).id)
    except docker.errors.NotFound:
        return str(stored.create(name=name, data=data, labels={record.FRONT: service}).id)


def certificate_of(service: Mapping[str, Any]) -> str | None:
    """The certificate chain an HTTPS front's service records (public)."""
    return labels_of(service).get(record.CERTIFICATE) or None


def traffic_of(service: Mapping[str, Any]) -> Traffic:
    """The shares a front's service records in its labels."""
    traffic: Traffic = json.loads(labels_of(service).get(record.TRAFFIC) or "null")
    return traffic


def limits_of(service: Mapping[str, Any]) -> Limits:
    """The limits a front's service records in its labels."""
    return Limits.from_record(json.loads(labels_of(service).get(record.LIMITS) or "null"))


def reconfigure(client: docker.DockerClient, service: Mapping[str, Any],
                backends: tuple[haproxy.Backend, ...], traffic: Traffic,
                limits: Limits | None = None, tls: Certificate | None = None) -> None:
    """Roll a new configuration out to the fronts, one node at a time; a front whose
    configuration is unchanged is left alone. ``limits``: these, else the recorded ones;
    ``tls``: a new certificate for an HTTPS front, else the one it has."""
    labels = dict(labels_of(service))
    name = labels.get(record.ENDPOINT) or labels[record.FRONT_OF]
    service_name_ = service["Spec"]["Name"]
    limits = limits or limits_of(service)
    labels[record.LIMITS] = json.dumps(limits.as_record())
    https = record.HTTPS in labels
    config = _config(client, service_name_, name, backends, limits,
                     record.METRICS_PORT in labels, https)
    template = service["Spec"]["TaskTemplate"]
    current = [c.get("ConfigID") for c in template["ContainerSpec"].get("Configs") or []]
    renewed = https and tls is not None and labels.get(record.CERTIFICATE) != tls.chain.decode()
    rewritten = current != [config[0]] or renewed
    labels[record.TRAFFIC] = json.dumps(dict(traffic) if traffic is not None else None)
    if not rewritten and labels == labels_of(service):
        return
    template["ContainerSpec"]["Configs"] = [
        ConfigReference(config[0], config[1], filename=haproxy.CONFIG_PATH)]
    if renewed and tls is not None:
        labels[record.CERTIFICATE] = tls.chain.decode()
        template["ContainerSpec"]["Secrets"] = [_secret(client, service_name_, tls)]
    since = update(client, service, task_template=template, labels=labels)
    if rewritten:  # a label alone restarts no task
        wait_rollout(client, client.api.inspect_service(service["ID"]),
                     time.monotonic() + START_TIMEOUT, "front", since)
    _remove_stored(client.configs, service_name_, keep=config[0])
    kept = template["ContainerSpec"].get("Secrets") or []
    _remove_stored(client.secrets, service_name_, keep=kept[0]["SecretID"] if kept else None)


def remove(client: docker.DockerClient, service: Mapping[str, Any]) -> None:
    """The front's service, its network and its configs."""
    name = service["Spec"]["Name"]
    remove_service(client, service["ID"])
    remove_network(client, name)
    _remove_stored(client.configs, name)
    _remove_stored(client.secrets, name)


def _remove_stored(stored: ConfigCollection | SecretCollection, service: str,
                   keep: str | None = None) -> None:
    """The front's configs (or secrets), all but ``keep``; one a rolling task still uses stays
    until the next change."""
    for item in stored.list(filters={"label": f"{record.FRONT}={service}"}):
        if item.id != keep:
            try:
                item.remove()
            except docker.errors.APIError as exc:
                log.info("Keeping %s: %s", item.name, exc.explanation or exc)
