"""A canary's verdict, from what it and the current version served since it started.

- **Errors.** The canary's error rate is its 5xx answers over all of its requests, plus the
  share of 4xx answers it gives beyond the current version's (MLflow answers an exception the
  model raises with 400; clients' own mistakes reach both versions alike).
- **Latency.** Its p99 against the current version's, both read from the servers' histograms
  (buckets 1.25x apart, fine enough to tell 1.5x).
- **When.** No verdict before each version has served ``canary_min_requests``. A bound broken
  beyond doubt aborts the canary at once: the 99% lower confidence bound (Wilson's) of its
  failing share above what the bound allows, or of its share of requests slower than
  ``canary_max_latency_ratio`` times the current p99 above 1%. Otherwise the verdict waits for
  the end of ``canary_window``, and then judges the figures as they stand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mlflow_docker_target.controller.replica_metrics import Served

Z = 2.326  # one-sided 99%


@dataclass(frozen=True)
class Bounds:
    """The canary's keys (``-C canary_*``)."""

    window: float
    min_requests: int
    max_error_rate: float
    max_latency_ratio: float


@dataclass(frozen=True)
class Verdict:
    action: str | None  # "promote", "abort", or None: keep watching
    reason: str
    figures: dict[str, Any]


def wilson_low(failed: int, n: int) -> float:
    """The one-sided 99% lower confidence bound of a share ``failed`` of ``n``."""
    if n == 0:
        return 0.0
    p = failed / n
    centre = p + Z * Z / (2 * n)
    spread = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + Z * Z / n))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def judge(canary: Served, current: Served, elapsed: float, bounds: Bounds) -> Verdict:
    n, m = canary.requests, current.requests
    client_rate = current.client_errors / m if m else 0.0
    rate = (canary.errors / n + max(0.0, canary.client_errors / n - client_rate)) if n else 0.0
    p99, current_p99 = canary.quantile(0.99), current.quantile(0.99)
    figures = {"requests": {"current": m, "canary": n},
               "error_rate": {"current": round((current.errors / m) if m else 0.0, 4),
                              "canary": round(rate, 4)},
               "p99_ms": {"current": _ms(current_p99), "canary": _ms(p99)},
               "seconds": {"watched": round(elapsed), "window": round(bounds.window)}}
    if n < bounds.min_requests or m < bounds.min_requests:
        return Verdict(None, f"waiting until each version has served {bounds.min_requests} "
                       f"requests (current {m}, canary {n})", figures)
    failing = canary.errors + canary.client_errors
    if wilson_low(failing, n) > bounds.max_error_rate + client_rate:
        return Verdict("abort", f"the canary's error rate, {rate:.2%} ({failing} of {n}), is "
                       f"above {bounds.max_error_rate:.2%} (canary_max_error_rate)", figures)
    limit = bounds.max_latency_ratio * (current_p99 or 0.0)
    slower = canary.slower_than(limit) if limit else 0
    if limit and wilson_low(slower, n) > 0.01:
        return Verdict("abort", f"the canary's p99, {_ms(p99)} ms, is above "
                       f"{bounds.max_latency_ratio:g}x the current version's {_ms(current_p99)}"
                       f" ms (canary_max_latency_ratio): {slower} of {n} requests took longer "
                       f"than {_ms(limit)} ms", figures)
    if elapsed < bounds.window:
        return Verdict(None, f"watching: {elapsed:.0f} of {bounds.window:.0f} s", figures)
    if rate > bounds.max_error_rate:
        return Verdict("abort", f"after {bounds.window:.0f} s the canary's error rate, "
                       f"{rate:.2%}, is above {bounds.max_error_rate:.2%}", figures)
    if p99 is not None and limit and p99 > limit:
        return Verdict("abort", f"after {bounds.window:.0f} s the canary's p99, {_ms(p99)} ms, "
                       f"is above {bounds.max_latency_ratio:g}x the current version's "
                       f"{_ms(current_p99)} ms", figures)
    return Verdict("promote", f"within its bounds over {bounds.window:.0f} s: error rate "
                   f"{rate:.2%}, p99 {_ms(p99)} ms against {_ms(current_p99)} ms", figures)
