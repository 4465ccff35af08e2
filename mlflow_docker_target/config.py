"""Typed settings parsed from MLflow's ``-C key=value`` deployment config.

MLflow hands every ``-C`` value over as a string; Python callers may pass real ints and bools, or
``None`` for no config at all. All parsing and validation happens here, once, so the rest of the
plugin works with a validated :class:`Settings` and every error names the key, the accepted values
and the default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target import config_values as values
from serving_image.contract import PAYLOAD_LOG_DIR
from serving_image.settings import ServerSettings

SERVER = ServerSettings()  # the defaults of the keys that are server settings

BASE_IMAGE_ENV = "MLFLOW_DOCKERHOST_BASE_IMAGE"
STRIP_IMAGE_ENV = "MLFLOW_DOCKERHOST_STRIP_IMAGE"
ENV_PREFIX = "env."

MASK = "***"
SECRET_KEYS = frozenset({"auth_token", "payload_log_token"})  # server settings
_SECRET_ENV = re.compile(r"(token|secret|password|passwd|key|credential)", re.IGNORECASE)


def is_secret(key: str) -> bool:
    """The one rule for what is never shown (labels, get, list, logs): ``SECRET_KEYS``,
    and ``env.<NAME>`` whose name looks like a secret."""
    return key in SECRET_KEYS or (key.startswith(ENV_PREFIX) and bool(_SECRET_ENV.search(key)))

DEPLOY = frozenset({"create", "update", "run_local"})
DELETE = frozenset({"delete"})


@dataclass(frozen=True)
class Key:
    """One ``-C`` key: how to parse it, its default, and which commands take it.

    ``default`` is the value :class:`Settings` starts from (``None``: decided where it is used,
    as ``default_text`` says); ``default_text`` defaults to the default's own text.
    """

    name: str
    parse: Callable[[str], Any]
    accepted: str
    default: Any
    help: str
    commands: frozenset[str]
    default_text: str = ""
    server: bool = False  # a server setting of the same name (``ServerSettings``)

    @property
    def shown_default(self) -> str:
        if self.default_text:
            return self.default_text
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


PROXY_IMAGE_ENV = "MLFLOW_DOCKERHOST_PROXY_IMAGE"
DEFAULT_PROXY_IMAGE = "haproxy:2.8"
ENDPOINT = frozenset({"create_endpoint"})
CONNECTION = DEPLOY | DELETE | ENDPOINT | frozenset({"update_endpoint"})
# an endpoint's ports, chosen when it is made: update may only repeat them
FIXED_PORTS = ("port", "front_metrics_port")
# the front's own settings: a deployment's front (create, update), a shared endpoint's
FRONT_KEYS = ("rate_limit", "trusted_proxies", "max_connections")
FRONT_KEYS_AT = DEPLOY - {"run_local"} | ENDPOINT | frozenset({"update_endpoint"})
# an endpoint's certificate: HTTPS is chosen when the endpoint is made, then only replaced
HTTPS_KEYS = ("https_cert", "https_key")

KEYS: tuple[Key, ...] = (
    Key("base_image", values.text, "an image reference", None,
        "Image the serving image builds on; it must have python3 with the venv module.", DEPLOY,
        f"${BASE_IMAGE_ENV}, else python:<model's major.minor>-slim"),
    Key("strip_image", values.text, "an image with GNU binutils (strip, nm)", None,
        "Image of the build step that takes debug symbols out of the environment's shared "
        "objects (about 30 MB of the demo image); with none, they stay.", DEPLOY,
        f"${STRIP_IMAGE_ENV}, else the base image (which strips only if it has binutils)"),
    Key("pull_base", values.boolean, "true or false", True,
        "Pull the base, strip or proxy image when the engine lacks it (announced, never silent).",
        DEPLOY | ENDPOINT),
    Key("mlflow_package", values.choice("auto", "skinny", "full"), "auto, skinny or full", "auto",
        "Serve with mlflow-skinny at the model's MLflow version (auto: when that version exists).",
        DEPLOY),
    Key("system_packages", values.packages, "package names separated by commas", None,
        "System packages installed on the base image with its package manager (apt-get or "
        "dnf), for shared libraries the model's wheels need but do not ship; the build names "
        "them when they are missing. The one build step that uses the network.", DEPLOY,
        "none"),
    Key("port", values.port, "a TCP port 1-65535", None,
        "Host port of the endpoint, chosen at create and kept for the endpoint's life.",
        DEPLOY | ENDPOINT, "a free port (run_local: 5000)"),
    Key("endpoint_port", values.port, "a TCP port 1-65535", None,
        "Host port of the endpoint that create --endpoint makes when it does not exist yet.",
        frozenset({"create"}), "a free port"),
    Key("replicas", values.positive_int, "an integer >= 1", 1,
        "Serving containers behind the endpoint's front.", DEPLOY - {"run_local"}),
    Key("proxy_image", values.text, "an image with haproxy on its PATH", None,
        "Image of the endpoint's front (HAProxy); the plugin supplies command and config.",
        DEPLOY - {"run_local"} | ENDPOINT, f"${PROXY_IMAGE_ENV}, else {DEFAULT_PROXY_IMAGE}"),
    Key("runtime", values.runtime, "the name of a runtime (below)", None,
        "Run the deployment or endpoint as Swarm services or as containers on the engine.",
        DEPLOY - {"run_local"} | ENDPOINT,
        "swarm when the engine is an active Swarm manager, else container"),
    Key("registry", values.registry, "host:port[/prefix]", None,
        "Swarm: the registry the model image (and a local proxy image) is pushed to, for every "
        "node to pull; credentials come from the Docker CLI's config (docker login).",
        DEPLOY - {"run_local"} | ENDPOINT, "none; needed on a swarm of more than one node"),
    Key("constraints", values.constraints, "Swarm constraints separated by commas", None,
        "Swarm: placement constraints of the replicas (docker service create --constraint).",
        DEPLOY - {"run_local"}, "none"),
    Key("traffic", values.traffic, "name:weight,... with weights summing to 100", None,
        "Share of the endpoint's requests each deployment gets.", frozenset({"update_endpoint"}),
        "an even split; a deployment attached later gets 0 once traffic is set"),
    Key("bind_address", values.ip, "an IP address", None,
        "Host address the port is published on.", DEPLOY | ENDPOINT,
        "127.0.0.1 on a local engine, 0.0.0.0 (all interfaces) on a remote one"),
    Key("host_address", values.text, "a host name or IP", None,
        "Host name put in the endpoint URL, when clients reach the engine by another name.",
        DEPLOY | ENDPOINT, "the engine's host"),
    Key("rate_limit", values.positive_int, "requests per second >= 1", None,
        "Requests each client address may send per second (a sliding window at the front); "
        "beyond, 429 with Retry-After. Health probes are never limited.", FRONT_KEYS_AT,
        "no limit"),
    Key("trusted_proxies", values.networks, "CIDRs separated by commas", None,
        "Load balancers in front of the endpoint: for requests from them, the client address "
        "that rate_limit counts is the last one in X-Forwarded-For.", FRONT_KEYS_AT, "none"),
    Key("max_connections", values.positive_int, "an integer >= 1", None,
        "Requests each replica gets from the front at once (HAProxy's maxconn); more wait in "
        "the front's queue, up to 10 s, then get 503. The server never sees them.",
        FRONT_KEYS_AT, "no limit"),
    Key("front_metrics_port", values.port, "a TCP port 1-65535", None,
        "Host port of the front's own Prometheus metrics (HAProxy's exporter, /metrics): "
        "requests, 5xx, queue and retries per deployment, 429s per endpoint. Published on the "
        "endpoint's bind address, chosen at create and kept for the endpoint's life.",
        frozenset({"create", "update", "create_endpoint"}), "none (off)"),
    Key("https_cert", values.path, "a PEM file: the certificate, then its chain", None,
        "Serve the endpoint over HTTPS only (TLS 1.2 and up, Mozilla's intermediate profile) "
        "with this certificate, which must name the endpoint's host (host_address, else the "
        "engine's host). Chosen when the endpoint is made; update (update-endpoint) replaces it "
        "with a hitless reload, and cannot turn HTTPS on or off. Read on the client.",
        FRONT_KEYS_AT, "none (plain HTTP)"),
    Key("https_key", values.path, "a PEM file, not encrypted", None,
        "The certificate's private key, read on the client and given only to the front, as a "
        "file its user alone may read (a Swarm secret on a swarm); never shown or recorded.",
        FRONT_KEYS_AT, "none"),
    Key("restart_policy", values.restart_policy, "no, always, unless-stopped or on-failure[:N]",
        "unless-stopped", "Docker restart policy of the containers.", DEPLOY - {"run_local"}),
    Key("cpus", values.seconds, "a positive number of CPUs", None, "CPU limit of each replica "
        "(docker --cpus).", DEPLOY, "no limit"),
    Key("memory", values.size, "a size such as 512m or 2g", None,
        "Memory limit of each replica (docker --memory).", DEPLOY, "no limit"),
    Key("gpus", values.gpus, "all, a count, or device=<id>[,<id>...]", None,
        "GPUs for each replica (docker --gpus); with GPUs the default is 1 worker, so each GPU "
        "holds one copy of the model. The engine needs the NVIDIA Container Toolkit; use a base "
        "image whose libraries match the model's CUDA wheels.", DEPLOY, "none"),
    Key("init", values.boolean, "true or false", True,
        "Run an init process as PID 1 so signals reach the server at once.", DEPLOY),
    Key("hardened", values.boolean, "true or false", True,
        "Lock the replicas down: a read-only root filesystem (a tmpfs at /tmp, where HOME and "
        "the matplotlib, numba and joblib caches point), every capability dropped and "
        "no-new-privileges; false for a model that writes into its image (Docker's defaults). "
        "Fronts are always locked down.", DEPLOY),
    Key("pids_limit", values.positive_int, "an integer >= 1", 1024,
        "Processes and threads each replica may run (docker --pids-limit); a fork bomb in a "
        "model library stops there.", DEPLOY),
    Key("ready_timeout", values.seconds, "seconds > 0", 300.0,
        "How long create/update wait for the server to answer /ping.", DEPLOY),
    Key("workers", values.positive_int, "an integer >= 1", None,
        "Server worker processes in each replica.", DEPLOY,
        "the CPUs the container may use; 1 with -C gpus"),
    Key("request_timeout", values.positive_int, "seconds >= 1", SERVER.request_timeout,
        "Time limit of every prediction request, whatever its path and input shape: it "
        "answers 504 at the limit (the computation still finishes on its predict thread).",
        DEPLOY, server=True),
    Key("predict_threads", values.positive_int, "an integer >= 1", SERVER.predict_threads,
        "Predictions each worker runs at once, on threads beside the one that answers /ping "
        "and /health; a worker whose threads all run predictions that timed out answers 503.",
        DEPLOY, server=True),
    Key("queue_size", values.number(int, 0), "an integer >= 0", SERVER.queue_size,
        "Requests each worker holds waiting for a predict thread; beyond, it answers 503.",
        DEPLOY, server=True),
    Key("max_streams", values.positive_int, "an integer >= 1", SERVER.max_streams,
        "Streamed answers (\"stream\": true) each worker runs at once, each on a thread of "
        "its own; beyond, it answers 503.", DEPLOY, server=True),
    Key("max_body_size", values.size, "a size such as 100m", SERVER.max_body_size,
        "Largest accepted request body; larger ones answer 413.", DEPLOY, "100m", server=True),
    Key("log_level", values.choice("debug", "info", "warning", "error"),
        "debug, info, warning or error", SERVER.log_level, "Server log level.", DEPLOY,
        server=True),
    Key("access_log", values.boolean, "true or false", SERVER.access_log,
        "Log one line per request.", DEPLOY, server=True),
    Key("auth_token", values.text, "a secret string", None,
        "Require 'Authorization: Bearer <token>' on every route but the health probes (/ping, "
        "/health); kept only in the container's environment, never in labels.",
        DEPLOY, "none (no authentication)", server=True),
    Key("batch_max_size", values.positive_int, "an integer >= 1 (rows)", SERVER.batch_max_size,
        "Merge concurrent requests into one predict call of up to this many rows; only for "
        "models that score each row on its own (a linear model's BLAS may round a batch's "
        "last bit differently from a lone row's).", DEPLOY, "1 (no batching)", server=True),
    Key("batch_max_wait_ms", values.non_negative, "milliseconds >= 0", SERVER.batch_max_wait_ms,
        "How long a batch waits for more requests (0: only those already waiting).", DEPLOY,
        server=True),
    Key("parquet", values.boolean, "true or false", False,
        "Accept application/vnd.apache.parquet bodies (adds pyarrow to the image).", DEPLOY),
    Key("stop_timeout", values.positive_int, "seconds >= 1", SERVER.stop_timeout,
        "Grace period for in-flight requests (and the inference log's queue) when a replica "
        "is stopped.", DEPLOY | DELETE, server=True),
    Key("payload_log", values.payload_sink, "volume, or an http:// or https:// URL", None,
        "Record every prediction's request and answer (the inference log). volume: JSON Lines "
        f"in the deployment's own Docker volume, at {PAYLOAD_LOG_DIR} in its replicas, kept "
        "after delete; a URL: KServe's logger CloudEvents (binary mode) posted there. Records "
        "go through a bounded queue: when the sink is slow or down they are dropped and "
        "counted, and predictions are never slowed or failed.", DEPLOY, "none (off)",
        server=True),
    Key("payload_log_sample", values.fraction, "a number from 0 to 1", SERVER.payload_log_sample,
        "Share of requests recorded, decided by request id (x-request-id), alike on every "
        "replica.", DEPLOY, server=True),
    Key("payload_log_max_body", values.size, "a size such as 64k", SERVER.payload_log_max_body,
        "Bytes of each request and answer body recorded; longer ones are cut, and the record "
        "says so.", DEPLOY, "64k", server=True),
    Key("payload_log_headers", values.header_names, "header names separated by commas", None,
        "Request headers recorded; none unless named, and never Authorization.", DEPLOY,
        "none", server=True),
    Key("payload_log_token", values.text, "a secret string", None,
        "Bearer token sent to the HTTP sink; kept only in the container's environment.",
        DEPLOY, "none", server=True),
    Key("payload_log_max_size", values.size, "a size such as 1g", SERVER.payload_log_max_size,
        "The volume sink's total; beyond, its oldest files are removed (records may hold "
        "personal data).", DEPLOY, "1g", server=True),
    Key("payload_log_retention", values.duration, "a duration such as 30d, 12h or 3600",
        SERVER.payload_log_retention, "How long the volume sink keeps a file.", DEPLOY, "30d",
        server=True),
    Key("remove_payload_log", values.boolean, "true or false", False,
        "Remove the deployment's inference log volume too; by default it stays, as data "
        "(mlflow-dockerhost prune --volumes removes it later).", DELETE),
    Key("follow_alias", values.boolean, "true or false", False,
        "Follow the registry alias of -m models:/<name>@<alias>: the engine's controller "
        "checks it every follow_interval seconds and rolls the version it names out with "
        "nothing lost (it builds the image on the engine, reusing the environment when the "
        "requirements are the same). A version that fails is recorded and not retried until "
        "the alias moves again; a deleted alias leaves the deployment where it is.",
        DEPLOY - {"run_local"}),
    Key("follow_interval", values.seconds, "seconds > 0", 30.0,
        "How often the controller checks a followed alias.", DEPLOY - {"run_local"}),
    Key("tracking_uri", values.tracking_uri, "an http(s):// or databricks tracking URI", None,
        "The model registry the controller asks, as the engine's containers reach it; "
        "the client's MLFLOW_TRACKING_USERNAME, _PASSWORD and _TOKEN go with it as secrets.",
        DEPLOY - {"run_local"}, "the client's tracking URI"),
    Key("rollout", values.choice("rolling", "canary"), "rolling or canary", "rolling",
        "How an update serves a new version: rolling (its replicas start, take traffic once "
        "ready, then the current ones drain), or canary (its replicas start beside the current "
        "ones and take canary_traffic percent of the deployment's requests; the engine's "
        "controller promotes or aborts it by its metrics, or update -C canary=promote or "
        "-C canary=abort does at once). Recorded: later updates use it.",
        DEPLOY - {"run_local"}),
    Key("canary_traffic", values.number(int, 1, 50), "an integer percent 1-50", 10,
        "The canary's share of the deployment's requests (of its share, on a shared "
        "endpoint); needs rollout=canary.", DEPLOY - {"run_local"}),
    Key("canary_window", values.seconds, "seconds > 0", 300.0,
        "How long the engine's controller watches a canary before it promotes it (when it "
        "kept within its bounds) or aborts it; a bound broken beyond doubt aborts it at once.",
        DEPLOY - {"run_local"}),
    Key("canary_min_requests", values.positive_int, "an integer >= 1", 100,
        "Requests each version must have served before the controller judges the canary.",
        DEPLOY - {"run_local"}),
    Key("canary_max_error_rate", values.number(float, 0, 1), "a share 0-1", 0.01,
        "The canary's highest error rate (5xx, and 4xx beyond the current version's, over "
        "all of its requests).", DEPLOY - {"run_local"}),
    Key("canary_max_latency_ratio", values.number(float, 1), "a ratio >= 1", 1.5,
        "The canary's highest p99 latency, as a multiple of the current version's.",
        DEPLOY - {"run_local"}),
    Key("canary", values.choice("promote", "abort"), "promote or abort", None,
        "End the deployment's canary at once: promote (it takes all traffic, with nothing "
        "lost, and the version before it drains) or abort (it drains; the current version "
        "serves on). Given alone.", frozenset({"update"}), "none"),
    Key("timeout", values.seconds, "seconds > 0", 60.0,
        "Time limit for reaching the Docker engine and for each call to it (builds are not "
        "limited).", CONNECTION),
    Key("docker_host", values.text, "a Docker engine URL or context name", None,
        "Engine for run_local, which gets no target URI from MLflow.", frozenset({"run_local"}),
        "DOCKER_HOST, then the context"),
    Key("tlscacert", values.path, "a file path", None,
        "CA certificate that signed a tcp:// engine's certificate (docker --tlscacert).",
        CONNECTION, "DOCKER_CERT_PATH/ca.pem when DOCKER_TLS_VERIFY is set"),
    Key("tlscert", values.path, "a file path", None,
        "Client certificate for a tcp:// engine (docker --tlscert).", CONNECTION,
        "DOCKER_CERT_PATH/cert.pem"),
    Key("tlskey", values.path, "a file path", None,
        "Key of the client certificate (docker --tlskey).", CONNECTION, "DOCKER_CERT_PATH/key.pem"),
    Key("tlsverify", values.boolean, "true or false", None,
        "Verify the engine's certificate against tlscacert (or the system's CAs).",
        CONNECTION, "true when any tls* key is given"),
    Key("remove_image", values.boolean, "true or false", True,
        "Remove the deployment's model image, unless another deployment uses it; false keeps "
        "it. Unused environment images stay as a cache, bounded by "
        "$MLFLOW_DOCKERHOST_KEEP_ENVIRONMENTS (default 5).", DELETE),
)

_BY_NAME = {key.name: key for key in KEYS}
SERVER_KEYS = tuple(key.name for key in KEYS if key.server)
EXAMPLES = {
    "batch_max_size": "64",
    "auth_token": "$(openssl rand -hex 16)",
    "base_image": "mlflow-dockerhost/base:bookworm-python3.11",
    "port": "8080",
    "bind_address": "0.0.0.0",
    "memory": "2g",
    "cpus": "1.5",
    "workers": "2",
    "gpus": "all",
    "system_packages": "libgomp1",
    "replicas": "2",
    "traffic": "fraud-v3:90,fraud-v4:10",
    "restart_policy": "on-failure:3",
    "registry": "registry.example.com:5000/ml",
    "constraints": "node.labels.gpu==true,node.role!=manager",
    "rate_limit": "50",
    "trusted_proxies": "10.0.0.0/8",
    "max_connections": "8",
    "https_cert": "endpoint.pem",
    "https_key": "endpoint.key",
    "payload_log": "volume",
    "payload_log_sample": "0.1",
    "payload_log_headers": "user-agent,x-tenant",
    "follow_alias": "true",
    "tracking_uri": "http://mlflow.internal:5000",
    "rollout": "canary",
    "canary_traffic": "20",
    "canary": "promote",
}


def _default(name: str) -> Any:
    return _BY_NAME[name].default


@dataclass(frozen=True)
class Settings:
    """Validated settings; every default is its :class:`Key`'s (``None``: decided by context)."""

    base_image: str | None = _default("base_image")
    strip_image: str | None = _default("strip_image")
    pull_base: bool = _default("pull_base")
    mlflow_package: str = _default("mlflow_package")
    system_packages: tuple[str, ...] | None = _default("system_packages")
    port: int | None = _default("port")
    endpoint_port: int | None = _default("endpoint_port")
    replicas: int = _default("replicas")
    proxy_image: str | None = _default("proxy_image")
    runtime: str | None = _default("runtime")
    registry: str | None = _default("registry")
    constraints: tuple[str, ...] | None = _default("constraints")
    traffic: dict[str, int] | None = _default("traffic")  # noqa: RUF009 (it is None)
    bind_address: str | None = _default("bind_address")
    host_address: str | None = _default("host_address")
    rate_limit: int | None = _default("rate_limit")
    trusted_proxies: tuple[str, ...] | None = _default("trusted_proxies")
    max_connections: int | None = _default("max_connections")
    front_metrics_port: int | None = _default("front_metrics_port")
    https_cert: str | None = _default("https_cert")
    https_key: str | None = _default("https_key")
    restart_policy: str = _default("restart_policy")
    cpus: float | None = _default("cpus")
    memory: int | None = _default("memory")
    gpus: str | None = _default("gpus")
    init: bool = _default("init")
    hardened: bool = _default("hardened")
    pids_limit: int = _default("pids_limit")
    ready_timeout: float = _default("ready_timeout")
    workers: int | None = _default("workers")
    request_timeout: int = _default("request_timeout")
    predict_threads: int = _default("predict_threads")
    queue_size: int = _default("queue_size")
    max_streams: int = _default("max_streams")
    max_body_size: int = _default("max_body_size")
    log_level: str = _default("log_level")
    access_log: bool = _default("access_log")
    auth_token: str | None = _default("auth_token")
    batch_max_size: int = _default("batch_max_size")
    batch_max_wait_ms: float = _default("batch_max_wait_ms")
    parquet: bool = _default("parquet")
    stop_timeout: int = _default("stop_timeout")
    timeout: float = _default("timeout")
    docker_host: str | None = _default("docker_host")
    tlscacert: str | None = _default("tlscacert")
    tlscert: str | None = _default("tlscert")
    tlskey: str | None = _default("tlskey")
    tlsverify: bool | None = _default("tlsverify")
    remove_image: bool = _default("remove_image")
    payload_log: str | None = _default("payload_log")
    payload_log_sample: float = _default("payload_log_sample")
    payload_log_max_body: int = _default("payload_log_max_body")
    payload_log_headers: str | None = _default("payload_log_headers")
    payload_log_token: str | None = _default("payload_log_token")
    payload_log_max_size: int = _default("payload_log_max_size")
    payload_log_retention: float = _default("payload_log_retention")
    remove_payload_log: bool = _default("remove_payload_log")
    follow_alias: bool = _default("follow_alias")
    follow_interval: float = _default("follow_interval")
    tracking_uri: str | None = _default("tracking_uri")
    rollout: str = _default("rollout")
    canary_traffic: int = _default("canary_traffic")
    canary_window: float = _default("canary_window")
    canary_min_requests: int = _default("canary_min_requests")
    canary_max_error_rate: float = _default("canary_max_error_rate")
    canary_max_latency_ratio: float = _default("canary_max_latency_ratio")
    canary: str | None = _default("canary")
    env: dict[str, str] = field(default_factory=dict)

    def resolved_base_image(self, python_version: str) -> str:
        """Config wins, then the environment variable, then the official slim image."""
        if self.base_image:
            return self.base_image
        from_env = os.environ.get(BASE_IMAGE_ENV, "").strip()
        if from_env:
            return from_env
        major_minor = ".".join(python_version.split(".")[:2])
        return f"python:{major_minor}-slim"

    def resolved_strip_image(self) -> str | None:
        """Config wins, then the environment variable; None: the base image strips, if it can."""
        return self.strip_image or os.environ.get(STRIP_IMAGE_ENV, "").strip() or None

    def resolved_proxy_image(self) -> str:
        """Config wins, then the environment variable, then the official HAProxy image."""
        return (self.proxy_image or os.environ.get(PROXY_IMAGE_ENV, "").strip()
                or DEFAULT_PROXY_IMAGE)


def normalize(config: Mapping[str, Any] | None) -> dict[str, str]:
    """Config as MLflow's CLI would hand it over: string keys to string values."""
    result: dict[str, str] = {}
    for key, value in (config or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        result[str(key)] = str(value)
    return result


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def recorded_value(config: Mapping[str, str], name: str) -> Any:
    """One key of a deployment's recorded config, parsed as ``-C`` parses it; its default when
    it is not recorded, or no longer parses. For a reader of a few keys (the controller), which
    must not stop on another recorded key that the current rules would refuse, as
    :func:`parse_config` of the whole config would."""
    key = _BY_NAME[name]
    raw = config.get(name, "")
    try:
        return key.parse(raw) if raw.strip() else key.default
    except ValueError:
        return key.default


def parse_config(config: Mapping[str, Any] | None, command: str) -> Settings:
    """Parse raw ``-C`` config for one command; ``None`` and ``{}`` both mean defaults."""
    values: dict[str, Any] = {}
    env: dict[str, str] = {}
    for name, raw in normalize(config).items():
        if name.startswith(ENV_PREFIX):
            var = name[len(ENV_PREFIX):]
            if command not in DEPLOY or not _ENV_NAME.match(var):
                raise MlflowException(
                    f"Invalid config key '{name}': 'env.<NAME>=<value>' sets an environment "
                    "variable of the server, NAME being letters, digits and underscores; "
                    "it applies to create, update and run_local.",
                    INVALID_PARAMETER_VALUE,
                )
            if raw != "":  # `-C env.NAME=`: no NAME (update: removes it)
                env[var] = raw
            continue
        key = _BY_NAME.get(name)
        if key is None:
            accepted = ", ".join(k.name for k in KEYS if command in k.commands)
            raise MlflowException(
                f"Unknown config key '{name}' for {command}. Accepted keys: {accepted}, "
                "env.<NAME>. See `mlflow deployments help -t dockerhost`.",
                INVALID_PARAMETER_VALUE,
            )
        if command not in key.commands:
            raise MlflowException(
                f"Config key '{name}' does not apply to {command}; it applies to "
                f"{', '.join(sorted(key.commands))}.",
                INVALID_PARAMETER_VALUE,
            )
        if not raw.strip():  # `-C key=`: the default (update: what was recorded is dropped)
            if name in FIXED_PORTS and command == "update":
                raise MlflowException(
                    f"-C {name}= cannot reset the port: an endpoint keeps its ports for its "
                    "life. Delete and create the deployment to move it.",
                    INVALID_PARAMETER_VALUE)
            continue
        try:
            values[name] = key.parse(raw)
        except ValueError as exc:
            raise MlflowException(
                f"Invalid value {raw!r} for config key '{name}': expected {key.accepted} "
                f"(default: {key.shown_default}).",
                INVALID_PARAMETER_VALUE,
            ) from exc
    return Settings(**values, env=env)


def help_text(notes: Callable[[str], list[str]]) -> str:
    """The config section of ``target_help()``, generated from :data:`KEYS`; ``notes`` gives
    the lines the runtimes add to a key (how it behaves on each)."""
    lines = []
    for key in KEYS:
        commands = ", ".join(sorted(key.commands))
        example = EXAMPLES.get(key.name)
        lines.append(f"  {key.name}  [{commands}]")
        lines.append(f"      {key.help}")
        lines.append(f"      accepts {key.accepted}; default: {key.shown_default}"
                     + (f"; e.g. -C {key.name}={example}" if example else ""))
        lines += [f"      {note}" for note in notes(key.name)]
    lines.append("  env.<NAME>  [create, run_local, update]  (every runtime: the same)")
    lines.append("      Environment variable of the server, e.g. -C env.OMP_NUM_THREADS=1; "
                 "values of names with KEY, SECRET,")
    lines.append("      TOKEN, PASSWORD or CREDENTIAL are shown as *** and kept only in the "
                 "container's environment")
    lines.append("  key=  (empty value)  update: back to the default; env.NAME= removes NAME; "
                 "port= is refused")
    return "\n".join(lines)

