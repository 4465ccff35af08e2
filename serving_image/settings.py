"""Server settings, read from the environment so that every worker process sees the same."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PREFIX = "SCORING_"


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


@dataclass(frozen=True)
class ServerSettings:
    model_path: str = "/opt/ml/model"
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    request_timeout: float = 60.0
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

    @property
    def preloads(self) -> bool:
        """Whether the parent loads the model before forking: with one worker there is nothing
        to share, and a parent holding a copy would only add to the memory."""
        return self.preload and self.workers > 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServerSettings:
        def get(name: str, default: str | None = None) -> str | None:
            value = environ.get(PREFIX + name, "").strip()
            return value or default

        workers = get("WORKERS")
        timeout = get("REQUEST_TIMEOUT") or environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT")
        return cls(
            model_path=get("MODEL_PATH") or cls.model_path,
            host=get("HOST") or cls.host,
            port=int(get("PORT") or cls.port),
            workers=int(workers) if workers else available_cpus(),
            request_timeout=float(timeout or cls.request_timeout),
            max_body_size=int(get("MAX_BODY_SIZE") or cls.max_body_size),
            log_level=get("LOG_LEVEL") or cls.log_level,
            access_log=_flag(get("ACCESS_LOG") or str(cls.access_log)),
            model_name=get("MODEL_NAME"),
            model_version=get("MODEL_VERSION"),
            run_id=get("RUN_ID"),
            image=get("IMAGE"),
            auth_token=get("AUTH_TOKEN"),
            batch_max_size=int(get("BATCH_MAX_SIZE") or cls.batch_max_size),
            batch_max_wait_ms=float(get("BATCH_MAX_WAIT_MS") or cls.batch_max_wait_ms),
            deployment=get("DEPLOYMENT"),
            endpoint=get("ENDPOINT"),
            drain_seconds=float(get("DRAIN_SECONDS") or cls.drain_seconds),
            predict_threads=int(get("PREDICT_THREADS") or cls.predict_threads),
            queue_size=int(get("QUEUE_SIZE") or cls.queue_size),
            max_streams=int(get("MAX_STREAMS") or cls.max_streams),
            preload=_flag(get("PRELOAD") or str(cls.preload)),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes :meth:`from_env` return these settings."""
        values = {
            "MODEL_PATH": self.model_path, "HOST": self.host, "PORT": str(self.port),
            "WORKERS": str(self.workers), "REQUEST_TIMEOUT": str(self.request_timeout),
            "MAX_BODY_SIZE": str(self.max_body_size), "LOG_LEVEL": self.log_level,
            "ACCESS_LOG": "true" if self.access_log else "false",
            "MODEL_NAME": self.model_name, "MODEL_VERSION": self.model_version,
            "RUN_ID": self.run_id, "IMAGE": self.image, "AUTH_TOKEN": self.auth_token,
            "BATCH_MAX_SIZE": str(self.batch_max_size),
            "BATCH_MAX_WAIT_MS": str(self.batch_max_wait_ms),
            "DEPLOYMENT": self.deployment, "ENDPOINT": self.endpoint,
            "DRAIN_SECONDS": str(self.drain_seconds),
            "PREDICT_THREADS": str(self.predict_threads), "QUEUE_SIZE": str(self.queue_size),
            "MAX_STREAMS": str(self.max_streams),
            "PRELOAD": "true" if self.preload else "false",
        }
        return {PREFIX + k: v for k, v in values.items() if v is not None}
