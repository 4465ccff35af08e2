"""What a version's replicas have served, read from their own Prometheus metrics.

Each replica's own server answers ``/metrics`` (with its bearer token, when it has one).
- A container is asked at its address on its network: the controller of one engine runs on
  the host's network, which reaches the engine's bridges. Where that does not connect (the
  controller of a swarm's manager runs on the swarm's control network, from which the bridges
  are walled off), it is asked from inside instead, through ``docker exec`` of the image's
  Python on 127.0.0.1, and so from then on: a read through ``exec`` took ~120 ms and ~80 ms of
  the replica's CPU (a Python start), one over HTTP ~8 ms.
- A swarm's task, on any node, is asked over the swarm's control network, which the
  controller's service and every deployment's service share (``runtimes.swarm.control_network``).
Health probes and the scrapes themselves are left out: what is judged is what clients asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from prometheus_client.parser import text_string_to_metric_families

from mlflow_docker_target import record
from mlflow_docker_target.runtimes.swarm import control_network
from mlflow_docker_target.runtimes.swarm.services import addresses_on, replica_name, tasks_of
from serving_image.contract import ENV_PREFIX, HEALTHCHECK, PROBE_PATHS, SERVER_PORT

REQUESTS = "mlflow_server_requests"  # the counter's family, as the parser names it
LATENCY = "mlflow_server_request_duration_seconds"
NOT_JUDGED = frozenset({*PROBE_PATHS, "/metrics"})
SCRAPE_SECONDS = 5
CONNECT_SECONDS = 1  # an address this process cannot reach is given up on after this
TOKEN_VARIABLE = f"{ENV_PREFIX}AUTH_TOKEN"  # the server's setting ``auth_token``


@dataclass(frozen=True)
class Served:
    """Requests answered, those answered 5xx (``errors``) and 4xx (``client_errors``: MLflow
    answers an exception the model raises with 400), and the latency histogram's cumulative
    counts at its bounds (seconds; ``inf`` last)."""

    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    bounds: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()

    def __add__(self, other: Served) -> Served:
        bounds = self.bounds or other.bounds
        return Served(self.requests + other.requests, self.errors + other.errors,
                      self.client_errors + other.client_errors, bounds,
                      _sum(self.counts, other.counts))

    def since(self, earlier: Served) -> Served:
        """What was served after ``earlier``; all of it when the counters started again (the
        replica's server restarted)."""
        if self.requests < earlier.requests or self.bounds != earlier.bounds:
            return self
        return Served(self.requests - earlier.requests, self.errors - earlier.errors,
                      self.client_errors - earlier.client_errors, self.bounds,
                      tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True)))

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile as Prometheus's ``histogram_quantile`` reads it (linear within its
        bucket); ``None`` with nothing served."""
        if not self.counts or self.counts[-1] == 0:
            return None
        rank = q * self.counts[-1]
        below, lower = 0, 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - below) / max(1, count - below)
            below, lower = count, bound
        return lower

    def slower_than(self, seconds: float) -> int:
        """Requests that certainly took longer than ``seconds``: above the first bound at or
        past it."""
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if bound >= seconds:
                return self.counts[-1] - count
        return 0

    def as_record(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "client_errors": self.client_errors, "bounds": list(self.bounds),
                "counts": list(self.counts)}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Served:
        return cls(int(data["requests"]), int(data["errors"]), int(data["client_errors"]),
                   tuple(float(b) for b in data["bounds"]),
                   tuple(int(c) for c in data["counts"]))


def _sum(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if not a or not b:
        return a or b
    return tuple(x + y for x, y in zip(a, b, strict=True))


def parse(text: str) -> Served:
    """A server's ``/metrics`` page, reduced to what a canary is judged by."""
    requests_, errors, client_errors = 0, 0, 0
    buckets: dict[float, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS:
            for sample in family.samples:
                if (sample.name.endswith("_total")
                        and sample.labels.get("route") not in NOT_JUDGED):
                    count, status = int(sample.value), sample.labels.get("status", "")
                    requests_ += count
                    errors += count if status.startswith("5") else 0
                    client_errors += count if status.startswith("4") else 0
        elif family.name == LATENCY:
            for sample in family.samples:
                if (sample.name.endswith("_bucket")
                        and sample.labels.get("route") not in NOT_JUDGED):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0) + int(sample.value)
    bounds = tuple(sorted(buckets))
    return Served(requests_, errors, client_errors, bounds, tuple(buckets[b] for b in bounds))


def scrape(address: str, token: str | None) -> Served:
    """A replica's page, at its ``address``."""
    answer = requests.get(f"http://{address}:{SERVER_PORT}/metrics",
                          timeout=(CONNECT_SECONDS, SCRAPE_SECONDS),
                          headers={"Authorization": f"Bearer {token}"} if token else {})
    answer.raise_for_status()
    return parse(answer.text)


# Run by the replica's own Python: its page, on stdout, asked with the bearer token its server
# takes from its own environment (so the token is in no command line, or the engine's events).
_FETCH = ("import os, sys, urllib.request as r; "
          f"t = os.environ.get('{TOKEN_VARIABLE}'); "
          "q = r.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + t} if t else {}); "
          f"sys.stdout.write(r.urlopen(q, timeout={SCRAPE_SECONDS}).read().decode())")


def container_address(container: Container) -> tuple[str | None, str | None]:
    """A container's address on its network (the first, for one on several; none for one on
    the host's network), and its server's token."""
    networks = container.attrs["NetworkSettings"].get("Networks") or {}
    address = next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), None)
    config = record.recorded_config(container.labels,
                                    container.attrs.get("Config", {}).get("Env"))
    return address, config.get("auth_token")


def scrape_container(container: Container, unreachable: set[str]) -> Served:
    """A container's page over HTTP, or from inside it when its address does not connect from
    here; ``unreachable``: the containers found so, asked from inside from then on."""
    address, token = container_address(container)
    if address is not None and container.name not in unreachable:
        try:
            return scrape(address, token)
        except (requests.ConnectionError, requests.ConnectTimeout):
            unreachable.add(container.name)
    return scrape_inside(container)


def scrape_inside(container: Container) -> Served:
    """A container's page, asked by its own Python on 127.0.0.1."""
    code, (out, err) = container.exec_run(
        [HEALTHCHECK[0], "-c", _FETCH, f"http://127.0.0.1:{SERVER_PORT}/metrics"], demux=True)
    if code != 0:
        raise ValueError(f"{container.name}: {(err or b'').decode(errors='replace')[-200:]}")
    return parse((out or b"").decode())


def task_addresses(client: docker.DockerClient) -> dict[str, tuple[str, str | None]]:
    """Every running task of the swarm's deployments by its replica name (``<service>.<slot>``,
    as the swarm runtime names it): its address on the control network, and its token."""
    found: dict[str, tuple[str, str | None]] = {}
    for service in client.api.services(filters={"label": f"{record.ROLE}={record.SERVER}"}):
        spec = service["Spec"]
        token = record.recorded_config(spec.get("Labels") or {}, spec["TaskTemplate"][
            "ContainerSpec"].get("Env")).get("auth_token")
        for task in tasks_of(client, service):
            addresses = addresses_on(task, control_network.NAME)
            if addresses and task["Status"]["State"] == "running":  # the newest in a slot
                found.setdefault(replica_name(service, task), (addresses[0], token))
    return found


def read(client: docker.DockerClient, names: list[str],
         unreachable: set[str]) -> dict[str, Served]:
    """The figures of the replicas (container names, or a swarm's task names) that answer;
    the others are left out. ``unreachable``: kept by the caller across reads (see
    :func:`scrape_container`)."""
    found = {}
    tasks: dict[str, tuple[str, str | None]] | None = None
    for name in names:
        try:
            try:
                found[name] = scrape_container(client.containers.get(name), unreachable)
            except docker.errors.NotFound:
                tasks = task_addresses(client) if tasks is None else tasks
                found[name] = scrape(*tasks[name])
        except (docker.errors.APIError, requests.RequestException, KeyError, ValueError):
            continue
    return found

