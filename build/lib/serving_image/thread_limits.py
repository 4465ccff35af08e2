"""Native thread pools across the fork from a preloading parent to its workers.

With ``preload``, the parent process loads the model once and forks the workers, which share
its memory. GNU OpenMP (LightGBM, XGBoost) does not survive a fork: a child forked after the
parent's OpenMP thread pool exists hangs in its first parallel region, and loading a booster
already makes that pool. So the parent runs with one thread per native library (the
environment variables below, set by the supervisor), where no pool is made, and each worker
thread that may predict gives the libraries their threads back (threadpoolctl): the user's own
``OMP_NUM_THREADS`` and friends, else the CPUs the container may use. OpenMP keeps its thread
count per thread, hence a call in every predict thread rather than once per worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from serving_image.settings import available_cpus

ENV = "SCORING_THREAD_LIMITS"  # the user's own values, as JSON, while the parent runs with 1
VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def for_preload(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a preloading parent: one native thread, the user's values kept."""
    originals = {name: environ[name] for name in VARIABLES if name in environ}
    return {**{name: "1" for name in VARIABLES}, ENV: json.dumps(originals)}


def restore_environment() -> None:
    """In a worker: the user's variables back, for whatever the model starts as a process."""
    raw = os.environ.pop(ENV, None)
    if raw is None:
        return
    originals = json.loads(raw)
    for name in VARIABLES:
        if name in originals:
            os.environ[name] = originals[name]
        else:
            os.environ.pop(name, None)
    os.environ[f"_{ENV}"] = raw  # for restore(), in threads started later


def restore() -> None:
    """Give this thread's native libraries their threads back (a no-op without preload)."""
    raw = os.environ.get(f"_{ENV}")
    if raw is None:
        return
    from threadpoolctl import threadpool_limits

    originals = json.loads(raw)
    openmp = int(originals.get("OMP_NUM_THREADS") or available_cpus())
    blas = int(originals.get("OPENBLAS_NUM_THREADS") or originals.get("MKL_NUM_THREADS")
               or openmp)
    threadpool_limits(limits={"openmp": openmp, "blas": blas})
