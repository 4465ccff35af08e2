"""Prometheus metrics, correct with several worker processes.

Each worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (the launcher makes one
per server, before any worker imports prometheus-client), and ``/metrics`` adds them up across
workers, whichever worker answers.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("mlflow_server_requests_total", "HTTP requests, by route, method and status",
                   ["route", "method", "status"])
# The R10 preferred numbers (ISO 3: ten steps a decade, 1.25-1.28x apart), 0.1 ms to 63 s: a p99
# read from the buckets is within a step of the truth, so two versions whose p99s differ by
# 1.5x (a canary's latency bound) fall in different buckets; the 1-2.5-5 series (2-2.5x apart)
# could not tell them apart. A request scans the bounds up to its own, ~10 at a millisecond.
_R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
LATENCY_BUCKETS = tuple(round(step * 10.0 ** exponent, 6) for exponent in range(-4, 2)
                        for step in _R10 if step * 10.0 ** exponent <= 63)
LATENCY = Histogram("mlflow_server_request_duration_seconds", "Request latency, by route",
                    ["route"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("mlflow_server_requests_in_flight", "Requests being answered",
                  multiprocess_mode="livesum")
ROWS = Counter("mlflow_server_rows_predicted_total",
               "Predictions returned (rows or outputs), by /invocations and V2 inference")
ABANDONED = Gauge("mlflow_server_abandoned_predictions",
                  "Predictions still running after their request timed out",
                  multiprocess_mode="livesum")
STREAMS = Counter("mlflow_server_streams_total", "Streamed answers, by how they ended "
                  "(done, error, timeout, cancelled)", ["outcome"])
STREAM_CHUNKS = Counter("mlflow_server_stream_chunks_total", "Chunks sent in streamed answers")
STREAMS_ACTIVE = Gauge("mlflow_server_streams_active", "Stream threads running a generator",
                       multiprocess_mode="livesum")
MODEL_LOAD = Gauge("mlflow_server_model_load_seconds", "Time to load and warm the model",
                   multiprocess_mode="max")
PAYLOAD_RECORDS = Counter("mlflow_server_payload_log_records_total",
                          "Inference log records handed to the sink")
PAYLOAD_DROPPED = Counter("mlflow_server_payload_log_dropped_total",
                          "Inference log records dropped, by reason (queue_full: the sink is "
                          "slower than the traffic; sink_error: it refused or failed; shutdown: "
                          "still queued when the stop timeout ran out)", ["reason"])
PAYLOAD_QUEUE = Gauge("mlflow_server_payload_log_queue_depth",
                      "Inference log records waiting for the sink", multiprocess_mode="livesum")


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST




class MetricsMiddleware:
    """Counts and times every HTTP request (a plain ASGI middleware: no per-request task)."""

    def __init__(self, app: ASGIApp, label: Callable[[str], str]) -> None:
        self.app = app
        self.label = label  # a path's route label (``routes.metric_label``)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.label(scope["path"])
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            IN_FLIGHT.dec()
            _latency(route).observe(time.perf_counter() - started)
            _requests(route, scope["method"], status).inc()


# A metric's child per label values, looked up once: prometheus-client's ``labels`` checks and
# locks on every call (a quarter of this middleware's instructions). Bounded, as a client may
# send any method.
@functools.lru_cache(maxsize=64)
def _latency(route: str) -> Histogram:
    return LATENCY.labels(route)


@functools.lru_cache(maxsize=1024)
def _requests(route: str, method: str, status: int) -> Counter:
    return REQUESTS.labels(route, method, str(status))
