"""What every runtime's fronts share: their labels, what they route to, and the errors of
making one or of rolling out behind one.

A front is HAProxy (``runtimes.haproxy``) owning an endpoint's port: a deployment's own, or a
shared endpoint's. How it runs (a container, a global service) is each runtime's business.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import docker.errors
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target import record
from mlflow_docker_target.config import FRONT_KEYS, Settings
from mlflow_docker_target.runtimes.haproxy import Backend, Canary, Limits, Server, weights

Traffic = Mapping[str, int] | None  # a shared endpoint's shares; None: an even split


@dataclass(frozen=True)
class RecordedCanary:
    """A deployment's canary as its front records it: the rollout whose replicas are the
    canary (their ``record.ROLLOUT`` label), and its share of the deployment's requests."""

    rollout: str
    share: int


@dataclass(frozen=True)
class State:
    """What a front records of itself, beside its configuration: the traffic split, the
    limits, (HTTPS) its certificate chain, public, which ``get`` describes and the plugin's
    own checks trust, and the canaries of the deployments behind it."""

    traffic: Traffic = None
    limits: Limits = field(default_factory=Limits)
    certificate: str | None = None
    canaries: Mapping[str, RecordedCanary] = field(default_factory=dict)


def labels(settings: Settings, endpoint: str | None, deployment: str | None,
           https: bool = False) -> dict[str, str]:
    """A front's labels: a shared endpoint's, or the front of one deployment; ``https``: its
    port serves TLS, for its life (the URL's scheme)."""
    found = {record.ROLE: record.FRONT}
    if https:
        found[record.HTTPS] = "true"
    if endpoint:
        found[record.ENDPOINT] = endpoint
    else:
        found[record.FRONT_OF] = found[record.DEPLOYMENT] = str(deployment)
    if settings.host_address:
        found[record.HOST_ADDRESS] = settings.host_address
    if settings.front_metrics_port:
        found[record.METRICS_PORT] = str(settings.front_metrics_port)
    return found


def limits_of(settings: Settings) -> Limits:
    """The front's limits that ``settings`` ask for."""
    return Limits(settings.rate_limit, settings.trusted_proxies or (), settings.max_connections)


def with_limits(config: Mapping[str, str], limits: Limits) -> dict[str, str]:
    """A deployment's recorded config with its own front's limits as the front records them:
    a change of limits alone reloads the front without relabelling the replicas."""
    found = {k: v for k, v in config.items() if k not in FRONT_KEYS}
    for key, value in limits.as_record().items():
        if value:
            found[key] = ",".join(value) if isinstance(value, list) else str(value)
    return found


def selector(deployment: str | None = None, endpoint: str | None = None) -> str:
    """The label filter that finds the front a deployment is served through: its shared
    ``endpoint``'s if it has one, else its own."""
    return f"{record.ENDPOINT}={endpoint}" if endpoint else f"{record.FRONT_OF}={deployment}"


def request_timeout(server_labels: Mapping[str, str]) -> int:
    """The request timeout a deployment was made with (its front waits a little longer)."""
    recorded = json.loads(server_labels.get(record.CONFIG) or "{}").get("request_timeout")
    return int(recorded or Settings().request_timeout)


def backends(timeouts: Mapping[str, int], traffic: Traffic,
             servers: Mapping[str, list[Server]] | None = None,
             tasks: Callable[[str], str] | None = None,
             canaries: Mapping[str, Canary] | None = None) -> tuple[Backend, ...]:
    """The backends of a front, one per deployment in ``timeouts`` (its request timeout),
    weighted by ``traffic``: with the replicas' ``servers`` (one engine), or the DNS name of
    its ``tasks`` (a swarm); and a deployment's canary, if it has one."""
    shares = weights(sorted(timeouts), traffic)
    return tuple(Backend(name, shares[name], timeouts[name],
                         tuple(sorted((servers or {}).get(name, []), key=lambda s: s.slot)),
                         tasks(name) if tasks else None, (canaries or {}).get(name))
                 for name in sorted(timeouts))


def without(traffic: Traffic, deployment: str) -> Traffic:
    """The shares once ``deployment`` has left the endpoint."""
    if traffic is None:
        return None
    return {name: share for name, share in traffic.items() if name != deployment}


def start_failed(name: str, port: int | str, exc: docker.errors.APIError,
                 where: str = "") -> MlflowException:
    """A front that the engine would not start: most often, its port is taken."""
    return MlflowException(
        f"Could not start the front of {name!r} on port {port}: {exc.explanation or exc}. If "
        f"the port is taken{where}, choose another with -C port (create-endpoint, create) or "
        "-C endpoint_port (create --endpoint).", INVALID_PARAMETER_VALUE)


def no_front(endpoint: str, url: str) -> MlflowException:
    return MlflowException(f"Endpoint {endpoint!r} has no front on {url}; create it with "
                           "create-endpoint.")


def still_serving(exc: MlflowException, what: str = "current version keeps serving"
                  ) -> MlflowException:
    """A failed rollout's error, saying that what served before still does."""
    return MlflowException(f"{exc.message}\nThe deployment's {what}.", exc.error_code)
