"""A canary's verdict from the figures of both versions (``controller.canary_verdict``), the
figures as read from a server's metrics page (``controller.replica_metrics``), and the
controller's looks at a canary that add them up and carry a verdict out
(``controller.canary_watch``). No engine: the pages are made by prometheus-client, as the
server makes them, and the looks read scripted figures."""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlflow_docker_target.controller import canary_watch
from mlflow_docker_target.controller.canary_verdict import Bounds, judge, wilson_low
from mlflow_docker_target.controller.replica_metrics import Served, parse
from serving_image.metrics import LATENCY_BUCKETS

BOUNDS = Bounds(window=300, min_requests=100, max_error_rate=0.01, max_latency_ratio=1.5)
RNG = np.random.default_rng(7)


def _page(latencies: np.ndarray, statuses: dict[str, int], probes: int = 50) -> str:
    """A server's /metrics page with these requests to /invocations (and health probes)."""
    registry = CollectorRegistry()
    requests = Counter("mlflow_server_requests_total", "", ["route", "method", "status"],
                       registry=registry)
    latency = Histogram("mlflow_server_request_duration_seconds", "", ["route"],
                        buckets=LATENCY_BUCKETS, registry=registry)
    for status, count in statuses.items():
        requests.labels("/invocations", "POST", status).inc(count)
    for seconds in latencies:
        latency.labels("/invocations").observe(float(seconds))
    requests.labels("/ping", "GET", "200").inc(probes)
    for _ in range(probes):
        latency.labels("/ping").observe(0.0001)
    return generate_latest(registry).decode()


def _served(median_ms: float, n: int, errors: int = 0, client_errors: int = 0) -> Served:
    latencies = RNG.lognormal(np.log(median_ms / 1000), 0.3, n)
    return parse(_page(latencies, {"200": n - errors - client_errors, "500": errors,
                                   "400": client_errors}))


def test_a_page_is_read_without_probes_and_its_p99_within_a_bucket() -> None:
    latencies = RNG.lognormal(np.log(0.004), 0.3, 2000)
    served = parse(_page(latencies, {"200": 1990, "503": 6, "404": 4}))
    assert (served.requests, served.errors, served.client_errors) == (2000, 6, 4)
    assert served.counts[-1] == 2000  # the probes' 50 are left out
    truth = float(np.quantile(latencies, 0.99))
    assert abs(served.quantile(0.99) / truth - 1) < 0.28  # buckets are 1.25-1.28x apart


def test_no_verdict_before_each_version_served_the_minimum() -> None:
    verdict = judge(_served(4, 99, errors=99), _served(4, 5000), 1000, BOUNDS)
    assert verdict.action is None and "waiting until each version has served 100" in \
        verdict.reason


def test_a_failing_canary_is_aborted_at_once_not_at_the_window_end() -> None:
    verdict = judge(_served(4, 120, errors=30), _served(4, 600), 20, BOUNDS)
    assert verdict.action == "abort" and "error rate, 25.00% (30 of 120)" in verdict.reason
    # predictions that fail answer 400 (MLflow's answer to a model's exception)
    verdict = judge(_served(4, 120, client_errors=40), _served(4, 600, client_errors=6),
                    20, BOUNDS)
    assert verdict.action == "abort", verdict.reason


def test_client_errors_both_versions_see_are_not_the_canarys() -> None:
    verdict = judge(_served(4, 1000, client_errors=50), _served(4, 9000, client_errors=450),
                    300, BOUNDS)
    assert verdict.action == "promote", verdict.reason


def test_a_few_errors_wait_for_the_window_and_are_judged_there() -> None:
    canary, current = _served(4, 200, errors=3), _served(4, 2000)
    assert judge(canary, current, 100, BOUNDS).action is None  # 1.5%: not beyond doubt yet
    verdict = judge(canary, current, 300, BOUNDS)
    assert verdict.action == "abort" and "after 300 s" in verdict.reason


def test_a_canary_twice_as_slow_is_aborted_one_20_percent_slower_is_promoted() -> None:
    current = _served(4, 3000)
    slow = judge(_served(8, 600), current, 30, BOUNDS)
    assert slow.action == "abort" and "p99" in slow.reason, slow
    near = _served(4.8, 600)
    assert judge(near, current, 30, BOUNDS).action is None
    promoted = judge(near, current, 300, BOUNDS)
    assert promoted.action == "promote", promoted.reason
    assert promoted.figures["requests"] == {"current": 3000, "canary": 600}


def test_the_wilson_bound_is_below_the_share_and_tightens_with_more_requests() -> None:
    assert wilson_low(0, 100) < 1e-12
    assert wilson_low(5, 100) < 0.05 < wilson_low(500, 10000) + 0.01
    assert wilson_low(50, 1000) > wilson_low(5, 100)


class Ends:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None,
                          config: dict[str, Any] | None = None) -> dict[str, Any]:
        self.updates.append({"name": name, **(config or {})})
        return {}


def _described(rollout: str = "r2") -> dict[str, Any]:
    return {"name": "d", "containers": ["d-1"],
            "config": {"rollout": "canary", "canary_window": "60", "canary_min_requests": "100"},
            "canary": {"rollout": rollout, "containers": ["d-2"], "model_version": "2",
                       "resolved_model_uri": "models:/m/2", "traffic": {"canary": 10}}}


def test_looks_count_from_the_canarys_start_and_carry_the_verdict_out() -> None:
    ends, entries, clock = Ends(), {}, [1000.0]
    history = _served(4, 5000)  # the current replica's counts before the canary started
    figures = {"d-1": history, "d-2": _served(4, 20)}

    def look() -> None:
        canary_watch.look(ends, lambda names: figures, _described(), entries,
                          now=lambda: clock[0])

    look()
    watched = entries["d"]["canary"]
    assert watched["figures"]["requests"] == {"current": 0, "canary": 20}
    figures = {"d-1": history + _served(4, 900), "d-2": _served(4, 20) + _served(4, 110)}
    clock[0] += 30
    look()
    assert watched["figures"]["requests"] == {"current": 900, "canary": 130}
    assert watched["state"] == "watching" and ends.updates == []
    # the current replica restarted (an engine restart): it counts again from zero
    figures = {"d-1": _served(4, 300), "d-2": figures["d-2"] + _served(4, 50)}
    clock[0] += 31
    look()
    assert watched["figures"]["requests"] == {"current": 1200, "canary": 180}
    assert watched["state"] == "promoted" and ends.updates == [{"name": "d",
                                                                "canary": "promote"}]


def test_a_new_canary_is_watched_afresh_and_one_ended_by_a_user_is_said_to_be() -> None:
    ends, entries = Ends(), {}
    canary_watch.look(ends, lambda names: {}, _described("r2"), entries)
    canary_watch.look(ends, lambda names: {}, _described("r3"), entries)
    assert entries["d"]["canary"]["rollout"] == "r3"
    canary_watch.look(ends, lambda names: {}, {**_described(), "canary": None}, entries)
    assert entries["d"]["canary"]["state"] == "ended" and ends.updates == []
