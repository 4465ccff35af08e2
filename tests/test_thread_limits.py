"""Native thread counts across the preloading parent's fork (serving_image/thread_limits.py).

The fork itself, with LightGBM and XGBoost models, runs in the integration tests
(tests/integration/test_model_matrix.py: two workers forked from a parent that loaded them).
"""

import json
import os
import threading

import pytest

from serving_image import thread_limits


def test_parent_runs_single_threaded_keeping_the_users_values() -> None:
    env = thread_limits.for_preload({"OMP_NUM_THREADS": "3", "PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert json.loads(env[thread_limits.ENV]) == {"OMP_NUM_THREADS": "3"}


def test_worker_gets_the_users_environment_back(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in thread_limits.for_preload({"OMP_NUM_THREADS": "3"}).items():
        monkeypatch.setenv(name, value)
    thread_limits.restore_environment()
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert "OPENBLAS_NUM_THREADS" not in os.environ and "MKL_NUM_THREADS" not in os.environ
    assert thread_limits.ENV not in os.environ
    monkeypatch.delenv(f"_{thread_limits.ENV}")


def test_each_thread_gets_its_threads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """threadpoolctl sets OpenMP's count for the calling thread: every predict thread calls."""
    import sklearn.utils._openmp_helpers  # noqa: F401 (loads scikit-learn's OpenMP runtime)
    from threadpoolctl import threadpool_info

    monkeypatch.setenv(f"_{thread_limits.ENV}", json.dumps({"OMP_NUM_THREADS": "3"}))
    seen: list = []

    def predict_thread() -> None:
        thread_limits.restore()
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp")

    thread = threading.Thread(target=predict_thread)
    thread.start()
    thread.join()
    assert seen and set(seen) == {3}  # not the default, this machine's CPUs


def test_without_preload_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """No preloading parent: the environment and every thread's counts stay as they are."""
    import sklearn.utils._openmp_helpers  # noqa: F401 (loads scikit-learn's OpenMP runtime)
    from threadpoolctl import threadpool_info

    monkeypatch.delenv(f"_{thread_limits.ENV}", raising=False)
    monkeypatch.delenv(thread_limits.ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    environment = dict(os.environ)
    before = [(i["user_api"], i["num_threads"]) for i in threadpool_info()]
    thread_limits.restore_environment()
    thread_limits.restore()
    assert dict(os.environ) == environment
    assert [(i["user_api"], i["num_threads"]) for i in threadpool_info()] == before
