"""The latency histogram's buckets are fine enough to tell a p99 1.5x slower (a canary's bound).

The p99 is read from the buckets as Prometheus's ``histogram_quantile`` reads it: linear within
the bucket the quantile falls in.
"""

from __future__ import annotations

import bisect
import itertools

import numpy as np
import pytest

from serving_image.metrics import LATENCY_BUCKETS


def histogram_quantile(q: float, bounds: tuple[float, ...], latencies: np.ndarray) -> float:
    """Prometheus's estimate of the ``q`` quantile from cumulative bucket counts."""
    counts = [int(np.count_nonzero(latencies <= bound)) for bound in bounds]
    rank = q * len(latencies)
    index = bisect.bisect_left(counts, rank)
    lower, below = (0.0, 0) if index == 0 else (bounds[index - 1], counts[index - 1])
    return lower + (bounds[index] - lower) * (rank - below) / (counts[index] - below)


def test_adjacent_bounds_are_at_most_1_28_apart_from_0_1_ms_to_a_minute() -> None:
    assert LATENCY_BUCKETS[0] <= 0.0001 and LATENCY_BUCKETS[-1] >= 60
    ratios = [high / low for low, high in itertools.pairwise(LATENCY_BUCKETS)]
    assert max(ratios) <= 1.28


@pytest.mark.parametrize("p99", [0.0004, 0.0013, 0.0021, 0.007, 0.033, 0.18, 0.9, 4.2, 27.0])
def test_a_p99_1_5_times_slower_reads_as_such(p99: float) -> None:
    """Both p99s are read within 13% of the truth, wherever they fall between the bounds, so
    a 1.5x ratio reads between 1.3x and 1.7x; a 1.2x one never reads as 1.5x."""
    rng = np.random.default_rng(7)
    shape = rng.lognormal(0.0, 0.5, 200_000)
    shape *= 1 / np.quantile(shape, 0.99)  # its p99 is 1
    for ratio, (low, high) in ((1.5, (1.3, 1.7)), (1.2, (1.0, 1.4))):
        current = histogram_quantile(0.99, LATENCY_BUCKETS, shape * p99)
        canary = histogram_quantile(0.99, LATENCY_BUCKETS, shape * p99 * ratio)
        assert abs(current / p99 - 1) < 0.13
        assert low < canary / current < high
