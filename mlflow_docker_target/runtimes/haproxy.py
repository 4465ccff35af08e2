"""The HAProxy configuration of an endpoint's front.

The front owns the endpoint's host port and reaches each replica by a name of its own on the
endpoint's Docker network (its deployment's alias and its slot number), one server line per
replica. Each server follows its name through Docker's embedded DNS, so a replica that restarts
elsewhere (an engine restart) is found again; one name per server means a replica that goes away
never moves the others (a shared name with several addresses makes HAProxy reshuffle them and cut
the streams of healthy replicas). The front sends a request only to replicas whose ``/ping``
answers 200, and retries one that a vanishing replica could not answer. Replicas joining or
leaving, and traffic changes, reload it (hitless, master-worker mode); the configuration read at
a reload names the replicas' current addresses, so the new worker can route its first request.

Routing: a request naming a deployment in ``x-mlflow-deployment`` goes to that deployment;
any other goes to a deployment drawn by weight. A drawn deployment with no ready replica hands
the request on to one that has some, so a share never turns into errors.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving_image.contract import (
    CHECK_FALL,
    CHECK_INTERVAL_MS,
    CHECK_TIMEOUT_MS,
    DEPLOYMENT_HEADER,
    FRONT_HEADER,
    PING_PATH,
    PROBE_PATHS,
    SERVER_PORT,
)

CONFIG_DIR = "/etc/mlflow-dockerhost"
CONFIG_PATH = f"{CONFIG_DIR}/haproxy.cfg"
STATE_PATH = f"{CONFIG_DIR}/front.json"  # the endpoint's traffic, read back by get-endpoint
TLS_PATH = f"{CONFIG_DIR}/tls.pem"  # an HTTPS front's certificate chain and key
FRONT_USER = "99:99"  # the fronts' user (the haproxy image's): the only one that reads the key
FRONT_PORT = 8080  # inside the front container; non-root images can bind it
METRICS_PORT = 8405  # the front's Prometheus exporter, inside; only with -C front_metrics_port
SWARM_SERVERS = 64  # server slots per deployment on a swarm: replicas, twice during a rollout
COMMAND = ["haproxy", "-W", "-db", "-f", CONFIG_PATH]
HANDOFF = "handoff:current"  # the backend by which a retiring worker reaches its successor
# the successor's loopback entry for them: the PROXY protocol carries each request's client
# address, so the successor's rate limit and logs see the client, not 127.0.0.1
HANDOFF_PORT = 8081


def alias(deployment: str) -> str:
    """The network alias of a deployment's replicas: a DNS label whatever the name holds."""
    return "d-" + hashlib.sha256(deployment.encode()).hexdigest()[:12]


def server_name(deployment: str, slot: int) -> str:
    """The network alias of one replica: the one name its server line follows."""
    return f"{alias(deployment)}-{slot}"


@dataclass(frozen=True)
class Server:
    """One replica behind the front."""

    slot: int
    # its current address on the endpoint's network, if known: a reloaded front starts with
    # it, as it would otherwise have none until Docker's DNS answers
    address: str | None = None


@dataclass(frozen=True)
class Canary:
    """A deployment's canary as the front sees it: its replicas, in a backend of their own
    (``<deployment>:canary``, so the exporter counts its answers apart), and the percent of the
    requests routed to the deployment that it takes, drawn afresh for each request: a share
    that holds at any concurrency, as ``leastconn`` weights would not."""

    share: int
    servers: tuple[Server, ...] = ()
    tasks: str | None = None  # on a swarm: the DNS name of its own service's tasks


@dataclass(frozen=True)
class Backend:
    """One deployment as the front sees it."""

    deployment: str
    weight: int
    request_timeout: int
    servers: tuple[Server, ...] = ()
    # on a swarm: the DNS name of the deployment's tasks (``tasks.<service>``); the front
    # fills up to SWARM_SERVERS server slots from its answers, and follows them as tasks come
    # and go, so a rollout or a rescheduled replica never rewrites the configuration. Its
    # ``servers`` are then the tasks' current addresses, the first slots' seeds at a reload
    tasks: str | None = None
    canary: Canary | None = None


@dataclass(frozen=True)
class Limits:
    """What the front enforces before a request reaches a replica (``-C rate_limit``,
    ``trusted_proxies``, ``max_connections``); health probes pass whatever the limits."""

    rate_limit: int | None = None  # requests per second per client address
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For names the client
    max_connections: int | None = None  # requests at once per replica; more wait in a queue

    def as_record(self) -> dict[str, Any]:
        return {"rate_limit": self.rate_limit, "trusted_proxies": list(self.trusted_proxies),
                "max_connections": self.max_connections}

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> Limits:
        data = data or {}
        return cls(data.get("rate_limit"), tuple(data.get("trusted_proxies") or ()),
                   data.get("max_connections"))


QUEUE_SECONDS = 10  # how long a request waits for a replica below max_connections


def weights(deployments: Sequence[str], traffic: Mapping[str, int] | None) -> dict[str, int]:
    """Each deployment's share: the recorded traffic (0 for one attached later), else even."""
    if traffic is None:
        return dict.fromkeys(deployments, 1)
    return {name: traffic.get(name, 0) for name in deployments}


def _json_string(data: dict[str, str]) -> str:
    """A JSON body as an HAProxy double-quoted string."""
    return '"' + json.dumps(data).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unavailable(message: str, status: int = 503) -> str:
    body = {"error_code": "TEMPORARILY_UNAVAILABLE" if status == 503 else
            "RESOURCE_DOES_NOT_EXIST", "message": message}
    return (f"http-request return status {status} content-type application/json "
            f"string {_json_string(body)}")


def _rate_limited(endpoint: str, limits: Limits) -> list[str]:
    """The frontend lines that answer 429 beyond ``rate_limit`` requests per second per
    client: a stick table counts each address's requests over a sliding second. A request
    from a trusted proxy counts against the last address of its X-Forwarded-For."""
    if limits.rate_limit is None:
        return []
    body = {"error_code": "REQUEST_LIMIT_EXCEEDED",
            "message": f"Too many requests: endpoint {endpoint} takes {limits.rate_limit} per "
                       "second from each client (-C rate_limit). Retry after a second."}
    lines = ["    stick-table type ipv6 size 100k expire 10s store http_req_rate(1s)"]
    if limits.trusted_proxies:
        lines += [f"    acl from_proxy src {' '.join(limits.trusted_proxies)}",
                  "    http-request track-sc0 req.hdr_ip(x-forwarded-for,-1) if !probe "
                  "from_proxy { req.hdr(x-forwarded-for) -m found }"]
    # deny, not return: the exporter counts denied requests, which are these 429s
    lines += ["    http-request track-sc0 src if !probe !{ sc_tracked(0) }",
              "    http-request deny status 429 content-type application/json string "
              f"{_json_string(body)} hdr Retry-After 1 "
              f"if !probe {{ sc_http_req_rate(0) gt {limits.rate_limit} }}"]
    return lines


def _metrics() -> list[str]:
    """HAProxy's Prometheus exporter on :data:`METRICS_PORT`; its proxies are ``endpoint``
    (the front) and one backend per deployment, named as the deployment. Only the frontend and
    backend scopes: HAProxy 2.6's process scope names a counter without ``_total``, which
    ``promtool check metrics`` refuses, and the server scope repeats every swarm slot."""
    return ["", "frontend metrics", f"    bind :{METRICS_PORT}",
            "    http-request set-query scope=frontend&scope=backend if { path /metrics }",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    http-request return status 404"]


# Mozilla's "intermediate" TLS profile (ssl-config.mozilla.org, guidelines 5.7, for HAProxy):
# TLS 1.2 and 1.3, forward-secret AEAD ciphers, no session tickets.
_TLS_GLOBAL = [
    "    ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
    "DHE-RSA-CHACHA20-POLY1305",
    "    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
    "TLS_CHACHA20_POLY1305_SHA256",
    "    ssl-default-bind-options prefer-client-ciphers no-sslv3 no-tlsv10 no-tlsv11 "
    "no-tls-tickets",
    "    tune.ssl.default-dh-param 2048",  # RFC 7919's ffdhe2048 for the DHE ciphers
]


def backend_name(deployment: str) -> str:
    """A deployment's backend: its own name (the exporter's ``proxy`` label), in the
    characters HAProxy allows."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", deployment)


def canary_backend_name(deployment: str) -> str:
    """A deployment's canary's backend (a deployment's name has no ``:``)."""
    return f"{backend_name(deployment)}:canary"


def _route(backend: Backend, condition: str) -> list[str]:
    """The lines that send a request meeting ``condition`` to ``backend``'s deployment: to its
    canary, if it has one with a ready replica, for its share of them."""
    name = backend_name(backend.deployment)
    lines = []
    if backend.canary is not None and backend.canary.share > 0:
        canary = canary_backend_name(backend.deployment)
        lines.append(f"    use_backend {canary} if {condition} "
                     f"{{ rand(100) lt {backend.canary.share} }} {{ nbsrv({canary}) gt 0 }}")
    return [*lines, f"    use_backend {name} if {condition}"]


def _task_slots(tasks: str, servers: tuple[Server, ...]) -> list[str]:
    """A swarm service's server slots, filled from its tasks' DNS name: a template, or, with
    the tasks' current addresses (a reload), one line a slot, the first ones seeded with them.
    Servers that share a name take distinct addresses from its answers either way."""
    target = f"{tasks}:{SERVER_PORT}"
    if not servers:
        return [f"    server-template s 1-{SWARM_SERVERS} {target}"]
    seeds = [server.address for server in servers]
    return [f"    server s{slot} {target}"
            + (f" init-addr {seeds[slot - 1]}" if slot <= len(seeds) else "")
            for slot in range(1, SWARM_SERVERS + 1)]


def render(endpoint: str, backends: Sequence[Backend], limits: Limits = Limits(),
           metrics: bool = False, tls: str | None = None) -> str:
    """The whole configuration for ``endpoint`` serving ``backends`` within ``limits``; with
    ``metrics``, the front's own exporter too; with ``tls`` (the path of the certificate and
    key), the endpoint's port serves HTTPS only."""
    longest = max([b.request_timeout for b in backends] or [60])
    queue_full = {"error_code": "TEMPORARILY_UNAVAILABLE",
                  "message": f"No replica of endpoint {endpoint} could take the request within "
                             f"{QUEUE_SECONDS} s (each is at -C max_connections, or none is "
                             "ready). Retry later."}
    lines = [
        "global",
        "    log stdout format raw local0 info",
        # old processes after a reload finish their requests, then go
        f"    hard-stop-after {longest + 30}s",
        *(_TLS_GLOBAL if tls else []),
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlog-normal",  # log only errors and retries
        # on a reload, an idle keep-alive connection is closed after its next answer (which
        # says so), not at once: a client would lose a request sent as it closed
        "    option idle-close-on-response",
        # a streamed answer's chunks go out as the server sends them: without this, HAProxy
        # holds a small first chunk (with the headers) until more data comes, one chunk late
        "    option http-no-delay",
        # a replica that vanished mid-connect (killed) gets no answer: try another soon
        "    timeout connect 1s",
        "    timeout client 75s",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 60s",
        f"    timeout queue {QUEUE_SECONDS}s",
        # HAProxy's own 503 (the queue timed out, no server left): MLflow's JSON shape
        f"    http-error status 503 content-type application/json string "
        f"{_json_string(queue_full)}",
        # a replica that goes away before answering: try another. Only a request HAProxy still
        # holds whole can be sent again, so it waits for the body (up to its 16 kB buffer)
        # before choosing a replica; without it, a request whose reused connection to a killed
        # replica closes is answered by closing the client's connection, unlogged.
        "    option http-buffer-request",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 503",
        "",
        "resolvers docker",
        "    nameserver dns 127.0.0.11:53",
        "    accepted_payload_size 8192",
        "    resolve_retries 3",
        "    timeout resolve 500ms",
        "    timeout retry 500ms",
        "    hold valid 500ms",
        "    hold obsolete 0s",
        "    hold nx 500ms",
        "",
        "frontend endpoint",
        f"    bind :{FRONT_PORT}" + (f" ssl crt {tls} alpn http/1.1" if tls else ""),
        f"    bind 127.0.0.1:{HANDOFF_PORT} accept-proxy",
        f"    acl probe path {' '.join(PROBE_PATHS)}",
        *_rate_limited(endpoint, limits),
    ]
    # http-request rules run before any use_backend: the answers the front gives itself
    # carry conditions that exclude every case a backend takes.
    named = {b.deployment: backend_name(b.deployment) for b in backends}
    for backend in backends:
        name = named[backend.deployment]
        value = backend.deployment.replace('"', "")
        lines += [f"    acl asked_{name} req.hdr({DEPLOYMENT_HEADER}) -m str {value}",
                  f"    acl up_{name} nbsrv({name}) gt 0"]
        if backend.canary is not None and backend.canary.share > 0:  # ORed with the above
            lines.append(f"    acl up_{name} nbsrv({canary_backend_name(backend.deployment)})"
                         " gt 0")
    # A worker that a reload retires still answers the next request of each keep-alive
    # connection it holds (idle-close-on-response), however long that connection slept. Its
    # configuration may name replicas that are gone by then, so it hands every request to
    # the current worker, which routes it as the current configuration says.
    lines.append("    acl retiring stopping")
    known = "".join(f" !asked_{named[b.deployment]}" for b in backends)
    unknown = _unavailable(f"No deployment of that name on endpoint {endpoint}.", 404)
    lines.append(f"    {unknown} if !retiring {{ req.hdr({DEPLOYMENT_HEADER}) -m found }}{known}")
    none_up = "".join(f" !up_{named[b.deployment]}" for b in backends)
    lines.append(f"    {_unavailable(f'No replica of endpoint {endpoint} is ready.')}"
                 f" if !retiring{none_up}")
    drawn = [b for b in backends if b.weight > 0] or list(backends)
    weighted = any(b.weight for b in drawn)
    total = sum(b.weight for b in drawn) if weighted else len(drawn)
    if drawn:
        lines.append(f"    http-request set-var(txn.pick) rand({total})")
    lines.append(f"    use_backend {HANDOFF} if retiring")
    for backend in backends:
        lines += _route(backend, f"asked_{named[backend.deployment]}")
    if drawn:
        low = 0
        for backend in drawn:
            high = low + (backend.weight if weighted else 1)
            lines += _route(backend, f"{{ var(txn.pick) -m int ge {low} }} "
                                     f"{{ var(txn.pick) -m int lt {high} }} "
                                     f"up_{named[backend.deployment]}")
            low = high
    # a drawn deployment with no ready replica hands its share on to one that has some
    for backend in [*drawn, *(b for b in backends if b not in drawn)]:
        lines += _route(backend, f"up_{named[backend.deployment]}")
    lines += ["", f"backend {HANDOFF}", f"    timeout server {longest + 5}s",
              f"    server current 127.0.0.1:{HANDOFF_PORT} send-proxy-v2"]
    for backend in backends:
        lines += _backend(named[backend.deployment], backend, backend.servers, backend.tasks,
                          limits)
        if backend.canary is not None:
            lines += _backend(canary_backend_name(backend.deployment), backend,
                              backend.canary.servers, backend.canary.tasks, limits)
    if metrics:
        lines += _metrics()
    return "\n".join(lines) + "\n"


def _backend(name: str, backend: Backend, servers: tuple[Server, ...], tasks: str | None,
             limits: Limits) -> list[str]:
    """One backend's section: ``servers`` of ``backend``'s deployment, checked by their
    ``/ping``, or (a swarm) the slots of its ``tasks``, seeded with ``servers``."""
    lines = [
        "",
        f"backend {name}",
        "    balance leastconn",
        f"    timeout server {backend.request_timeout + 5}s",
        "    option httpchk",
        f"    timeout check {CHECK_TIMEOUT_MS}ms",
        f"    http-check send meth GET uri {PING_PATH} hdr {FRONT_HEADER} 1",
        "    http-check expect status 200",
        f"    default-server check inter {CHECK_INTERVAL_MS}ms fall {CHECK_FALL} rise 1 "
        "resolvers docker init-addr none resolve-prefer ipv4"
        + (f" maxconn {limits.max_connections}" if limits.max_connections else ""),
    ]
    if tasks:
        return lines + _task_slots(tasks, servers)
    for server in servers:
        seed = f" init-addr {server.address}" if server.address else ""
        lines.append(f"    server s{server.slot} "
                     f"{server_name(backend.deployment, server.slot)}:{SERVER_PORT}{seed}")
    return lines
