"""Typed settings parsed from MLflow's ``-C key=value`` deployment config.

MLflow hands every ``-C`` value over as a string; Python callers may pass real ints and bools, or
``None`` for no config at all. All parsing and validation happens here, once, so the rest of the
plugin works with a validated :class:`Settings` and every error names the key, the accepted values
and the default.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

BASE_IMAGE_ENV = "MLFLOW_DOCKERHOST_BASE_IMAGE"
ENV_PREFIX = "env."

DEPLOY = frozenset({"create", "update", "run_local"})
DELETE = frozenset({"delete"})


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(value)


def _number(convert: Callable[[str], Any], low: float, high: float = math.inf,
            low_allowed: bool = True) -> Callable[[str], Any]:
    """A parser for numbers within [low, high] (or (low, high] when low is not allowed)."""

    def parse(value: str) -> Any:
        number = convert(value)
        if not low <= number <= high or (number == low and not low_allowed):
            raise ValueError(value)
        return number

    return parse


_positive_int = _number(int, 1)
_port = _number(int, 1, 65535)
_seconds = _number(float, 0, low_allowed=False)
_non_negative = _number(float, 0)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)i?b?$", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(value: str) -> int:
    """Docker-style sizes: ``512m``, ``2g``, ``1.5GiB``, or plain bytes."""
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(value)
    number = int(float(match.group(1)) * _SIZE_FACTOR[match.group(2).lower()])
    if number < 1:
        raise ValueError(value)
    return number


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value.strip()))


_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(?::\d+)?)$")


def _restart_policy(value: str) -> str:
    if not _RESTART.match(value.strip()):
        raise ValueError(value)
    return value.strip()


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.strip() not in options:
            raise ValueError(value)
        return value.strip()

    return parse


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError(value)
    return value.strip()


def _path(value: str) -> str:
    return os.path.abspath(os.path.expanduser(_text(value)))


@dataclass(frozen=True)
class Key:
    """One ``-C`` key: how to parse it, what it accepts, and which commands take it."""

    name: str
    parse: Callable[[str], Any]
    accepted: str
    default_text: str
    help: str
    commands: frozenset[str]


KEYS: tuple[Key, ...] = (
    Key("base_image", _text, "an image reference",
        f"${BASE_IMAGE_ENV}, else python:<model's major.minor>-slim",
        "Image the serving image builds on; it must have python3 with the venv module.", DEPLOY),
    Key("pull_base", _bool, "true or false", "true",
        "Pull the base image when the engine lacks it (announced, never silent).", DEPLOY),
    Key("mlflow_package", _choice("auto", "skinny", "full"), "auto, skinny or full", "auto",
        "Serve with mlflow-skinny at the model's MLflow version (auto: when that version exists).",
        DEPLOY),
    Key("port", _port, "a TCP port 1-65535", "a free port (run_local: 5000)",
        "Host port the endpoint is published on.", DEPLOY),
    Key("bind_address", _ip, "an IP address",
        "127.0.0.1 on a local engine, 0.0.0.0 (all interfaces) on a remote one",
        "Host address the port is published on.", DEPLOY),
    Key("host_address", _text, "a host name or IP", "the engine's host",
        "Host name put in the endpoint URL, when clients reach the engine by another name.",
        DEPLOY),
    Key("restart_policy", _restart_policy, "no, always, unless-stopped or on-failure[:N]",
        "unless-stopped", "Docker restart policy of the container.", DEPLOY - {"run_local"}),
    Key("cpus", _seconds, "a positive number of CPUs", "no limit", "CPU limit (docker --cpus).",
        DEPLOY),
    Key("memory", _size, "a size such as 512m or 2g", "no limit",
        "Memory limit (docker --memory).", DEPLOY),
    Key("init", _bool, "true or false", "true",
        "Run an init process as PID 1 so signals reach the server at once.", DEPLOY),
    Key("ready_timeout", _seconds, "seconds > 0", "300",
        "How long create/update wait for the server to answer /ping.", DEPLOY),
    Key("workers", _positive_int, "an integer >= 1", "the CPUs the container may use",
        "Server worker processes.", DEPLOY),
    Key("request_timeout", _positive_int, "seconds >= 1", "60",
        "Per-request time limit; slower requests answer 504.", DEPLOY),
    Key("max_body_size", _size, "a size such as 100m", "100m",
        "Largest accepted request body; larger ones answer 413.", DEPLOY),
    Key("log_level", _choice("debug", "info", "warning", "error"), "debug, info, warning or error",
        "info", "Server log level.", DEPLOY),
    Key("access_log", _bool, "true or false", "true", "Log one line per request.", DEPLOY),
    Key("auth_token", _text, "a secret string", "none (no authentication)",
        "Require 'Authorization: Bearer <token>' on /invocations; never stored in labels.",
        DEPLOY),
    Key("batch_max_size", _positive_int, "an integer >= 1 (rows)", "1 (no batching)",
        "Merge concurrent requests into one predict call of up to this many rows; only for "
        "models that score each row on its own (a linear model's BLAS may round a batch's "
        "last bit differently from a lone row's).", DEPLOY),
    Key("batch_max_wait_ms", _non_negative, "milliseconds >= 0", "0",
        "How long a batch waits for more requests (0: only those already waiting).", DEPLOY),
    Key("parquet", _bool, "true or false", "false",
        "Accept application/vnd.apache.parquet bodies (adds pyarrow to the image).", DEPLOY),
    Key("stop_timeout", _positive_int, "seconds >= 1", "10",
        "Grace period for in-flight requests when a container is stopped.", DEPLOY | DELETE),
    Key("timeout", _seconds, "seconds > 0", "60",
        "Time limit for reaching the Docker engine and for each call to it (builds are not "
        "limited).",
        DEPLOY | DELETE),
    Key("docker_host", _text, "a Docker engine URL or context name",
        "DOCKER_HOST, then the context",
        "Engine for run_local, which gets no target URI from MLflow.", frozenset({"run_local"})),
    Key("tlscacert", _path, "a file path", "DOCKER_CERT_PATH/ca.pem when DOCKER_TLS_VERIFY is set",
        "CA certificate that signed a tcp:// engine's certificate (docker --tlscacert).",
        DEPLOY | DELETE),
    Key("tlscert", _path, "a file path", "DOCKER_CERT_PATH/cert.pem",
        "Client certificate for a tcp:// engine (docker --tlscert).", DEPLOY | DELETE),
    Key("tlskey", _path, "a file path", "DOCKER_CERT_PATH/key.pem",
        "Key of the client certificate (docker --tlskey).", DEPLOY | DELETE),
    Key("tlsverify", _bool, "true or false", "true when any tls* key is given",
        "Verify the engine's certificate against tlscacert (or the system's CAs).",
        DEPLOY | DELETE),
    Key("remove_image", _bool, "true or false", "false",
        "Also remove the deployment's model image.", DELETE),
)

_BY_NAME = {key.name: key for key in KEYS}
EXAMPLES = {
    "batch_max_size": "64",
    "auth_token": "$(openssl rand -hex 16)",
    "base_image": "mlflow-dockerhost/base:bookworm-python3.11",
    "port": "8080",
    "bind_address": "0.0.0.0",
    "memory": "2g",
    "cpus": "1.5",
    "workers": "2",
    "restart_policy": "on-failure:3",
}


@dataclass(frozen=True)
class Settings:
    """Validated settings; ``None`` means "use the documented default for this context"."""

    base_image: str | None = None
    pull_base: bool = True
    mlflow_package: str = "auto"
    port: int | None = None
    bind_address: str | None = None
    host_address: str | None = None
    restart_policy: str = "unless-stopped"
    cpus: float | None = None
    memory: int | None = None
    init: bool = True
    ready_timeout: float = 300.0
    workers: int | None = None
    request_timeout: int = 60
    max_body_size: int = 100 * 1024**2
    log_level: str = "info"
    access_log: bool = True
    auth_token: str | None = None
    batch_max_size: int = 1
    batch_max_wait_ms: float = 0.0
    parquet: bool = False
    stop_timeout: int = 10
    timeout: float = 60.0
    docker_host: str | None = None
    tlscacert: str | None = None
    tlscert: str | None = None
    tlskey: str | None = None
    tlsverify: bool | None = None
    remove_image: bool = False
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


def normalize(config: Mapping[str, Any] | None) -> dict[str, str]:
    """Config as MLflow's CLI would hand it over: string keys to string values."""
    result: dict[str, str] = {}
    for key, value in (config or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        result[str(key)] = str(value)
    return result


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
        try:
            values[name] = key.parse(raw)
        except ValueError:
            raise MlflowException(
                f"Invalid value {raw!r} for config key '{name}': expected {key.accepted} "
                f"(default: {key.default_text}).",
                INVALID_PARAMETER_VALUE,
            ) from None
    return Settings(**values, env=env)


SECRET_KEYS = frozenset({"auth_token"})
# How this client reaches the engine, not part of the deployment: never recorded on it.
CONNECTION_KEYS = frozenset({"docker_host", "timeout", "tlscacert", "tlscert", "tlskey",
                             "tlsverify"})
MASK = "***"
_SECRET_ENV = re.compile(r"(token|secret|password|passwd|key|credential)", re.IGNORECASE)


def redacted(config: Mapping[str, str]) -> dict[str, str]:
    """Config fit to print: secrets, and env.<NAME> values that look like secrets, masked."""
    return {k: (MASK if k in SECRET_KEYS or (k.startswith(ENV_PREFIX) and _SECRET_ENV.search(k))
                else v)
            for k, v in config.items()}


def help_text() -> str:
    """The config section of ``target_help()``, generated from :data:`KEYS`."""
    lines = []
    for key in KEYS:
        commands = ", ".join(sorted(key.commands))
        example = EXAMPLES.get(key.name)
        lines.append(f"  {key.name}  [{commands}]")
        lines.append(f"      {key.help}")
        lines.append(f"      accepts {key.accepted}; default: {key.default_text}"
                     + (f"; e.g. -C {key.name}={example}" if example else ""))
    lines.append("  env.<NAME>  [create, run_local, update]")
    lines.append("      Environment variable of the server, e.g. -C env.OMP_NUM_THREADS=1")
    return "\n".join(lines)

