"""Server settings, read from the environment so that every worker process sees the same.

Declared once, as the fields of :class:`ServerSettings`: each is the environment variable
``SCORING_<FIELD NAME>``, parsed by its type; ``from_env`` and ``to_env`` derive from the fields,
and so does the plugin's side (the ``-C`` keys that are server settings take their defaults
here, and a container's environment is ``to_env`` of its settings).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from serving_image.contract import ENV_PREFIX, MODEL_PATH, PAYLOAD_LOG_DIR, SERVER_PORT


def available_cpus() -> int:
    """CPUs this process may use: affinity, then the cgroup CPU quota (docker --cpus)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_quota()
    if quota:
        cpus = min(cpus or 1, max(1, math.ceil(quota)))
    return max(1, cpus or 1)


def _cgroup_quota() -> float | None:
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _text(value: bool | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class ServerSettings:
    model_path: str = MODEL_PATH
    host: str = "0.0.0.0"
    port: int = SERVER_PORT
    workers: int = 1  # from_env: the CPUs the container may use, when not set
    request_timeout: float = 60  # also MLflow's MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    max_body_size: int = 100 * 1024**2
    log_level: str = "info"
    access_log: bool = True
    model_name: str | None = None
    model_version: str | None = None
    run_id: str | None = None
    image: str | None = None
    auth_token: str | None = None
    batch_max_size: int = 1  # rows; 1 means no batching
    batch_max_wait_ms: float = 0.0
    deployment: str | None = None  # named in every answer's x-mlflow-deployment header
    endpoint: str | None = None  # the shared endpoint it serves behind, a V2 model name too
    drain_seconds: float = 0.0  # /ping answers 503 this long after SIGTERM, then shutdown
    predict_threads: int = 4  # per worker: predictions running at once
    queue_size: int = 64  # per worker: requests waiting for a predict thread; beyond, 503
    max_streams: int = 4  # per worker: streamed answers at once; beyond, 503
    preload: bool = True  # load the model once, before forking the workers (not with GPUs)
    stop_timeout: int = 10  # seconds from SIGTERM to SIGKILL: the inference log flushes within
    # The inference log (serving_image/payload_log): off unless a sink is named.
    payload_log: str | None = None  # PAYLOAD_LOG_VOLUME, or an http(s) URL
    payload_log_sample: float = 1.0  # share of requests recorded, decided by request id
    payload_log_max_body: int = 64 * 1024  # bytes of each body kept; beyond, cut (and said)
    payload_log_headers: str | None = None  # request headers recorded (names, commas)
    payload_log_token: str | None = None  # bearer token of the HTTP sink
    payload_log_max_size: int = 1024**3  # the volume's total; the oldest files go first
    payload_log_retention: float = 30 * 86400.0  # seconds a file is kept in the volume
    payload_log_dir: str = PAYLOAD_LOG_DIR  # where the volume sink writes (a host run: any)
    model_uri: str | None = None  # what the deployment serves, in every record
    replica: str | None = None  # the container or task: in records and their file names

    @property
    def preloads(self) -> bool:
        """Whether the parent loads the model before forking: with one worker there is nothing
        to share, and a parent holding a copy would only add to the memory."""
        return self.preload and self.workers > 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServerSettings:
        """Each field from ``SCORING_<NAME>``; unset or empty: its default."""
        parse: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "bool": _flag}
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = environ.get(ENV_PREFIX + spec.name.upper(), "").strip()
            if spec.name == "request_timeout":
                raw = raw or environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "").strip()
            if raw:
                values[spec.name] = parse.get(str(spec.type).split(" ")[0], str)(raw)
        values.setdefault("workers", available_cpus())
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes :meth:`from_env` return these settings."""
        return {ENV_PREFIX + spec.name.upper(): _text(getattr(self, spec.name))
                for spec in fields(self) if getattr(self, spec.name) is not None}
