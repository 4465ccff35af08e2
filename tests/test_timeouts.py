"""Every request is bounded by request_timeout, and a slow model never freezes its worker.

Real server processes (uvicorn, one worker) and a model that sleeps as many seconds as its
input's first ``x``. Times are asserted only with wide margins, as behaviour (answered at the
limit, not at the model's end); how fast is for ``make bench``.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import requests

from serving_image.predictor import Busy, DeadlineExceeded, Predictor
from tests.helpers.models import HOST_ONLY, SHAPES, save_sleepy
from tests.helpers.servers import serve_model, stop

LIMIT, SLOW = 1, 3


def serve(model: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    env = {"SCORING_WORKERS": "1", "SCORING_ACCESS_LOG": "false",
           **{f"SCORING_{k.upper()}": v for k, v in settings.items()}}
    return serve_model(model, env=env)



@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("sleepy")
    return {"fast": save_sleepy(tmp / "fast", tmp, with_params=False),
            "mlflow": save_sleepy(tmp / "mlflow", tmp, with_params=True)}


@pytest.fixture(scope="module")
def servers(models: dict[str, Path]) -> Iterator[dict[str, str]]:
    """The same model on the fast path, batched, and a twin that only MLflow's path takes."""
    started = {
        "fast path": serve(models["fast"], request_timeout=str(LIMIT), predict_threads="16"),
        "batching": serve(models["fast"], request_timeout=str(LIMIT), predict_threads="16",
                          batch_max_size="8"),
        "mlflow path": serve(models["mlflow"], request_timeout=str(LIMIT),
                             predict_threads="16"),
    }
    try:
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for process, _ in started.values():
            stop(process)


def post(url: str, shape: str, seconds: float) -> tuple[requests.Response, float]:
    content_type, template = SHAPES[shape]
    started = time.monotonic()
    answer = requests.post(f"{url}/invocations", data=template % seconds,
                           headers={"Content-Type": content_type}, timeout=30)
    return answer, time.monotonic() - started


@pytest.mark.parametrize("path", ["fast path", "batching", "mlflow path"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_slow_prediction_answers_504_at_the_limit(servers: dict[str, str], path: str,
                                                    shape: str) -> None:
    quick, _ = post(servers[path], shape, 0)
    assert quick.status_code == 200, quick.text
    assert quick.json() == {"predictions": [0.0]}
    slow, took = post(servers[path], shape, SLOW)
    assert slow.status_code == 504, slow.text
    assert slow.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert LIMIT - 0.1 < took < SLOW - 0.5, took  # at the limit, not at the model's end


def test_probes_answer_while_predictions_run(servers: dict[str, str]) -> None:
    """A worker with predictions running keeps answering /health, /ping and /metrics."""
    url = servers["fast path"]
    slow = [threading.Thread(target=post, args=(url, "dataframe_records", SLOW))
            for _ in range(3)]
    for thread in slow:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    for probe in ("/health", "/ping", "/metrics") * 3:
        assert requests.get(url + probe, timeout=5).status_code == 200
    took = time.monotonic() - started
    for thread in slow:
        thread.join()
    assert took < 1.0, took  # nine probes, while three 3 s predictions ran


def test_abandoned_predictions_do_not_pile_up(models: dict[str, Path]) -> None:
    """With every predict thread still running a timed-out prediction, a request is refused
    at once (503) instead of queueing behind them; once they end, requests are served."""
    process, url = serve(models["fast"], request_timeout=str(LIMIT), predict_threads="1")
    try:
        timed_out, _ = post(url, "dataframe_split", SLOW)
        assert timed_out.status_code == 504
        refused, took = post(url, "dataframe_split", 0)
        assert refused.status_code == 503 and took < 0.5, (refused.text, took)
        assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert refused.headers["retry-after"] == "1"
        metrics = requests.get(f"{url}/metrics", timeout=5).text
        assert "mlflow_server_abandoned_predictions 1.0" in metrics
        time.sleep(SLOW - LIMIT + 0.2)
        served, _ = post(url, "dataframe_split", 0)
        assert served.status_code == 200
    finally:
        stop(process)


def test_a_full_line_is_refused_at_once(models: dict[str, Path]) -> None:
    process, url = serve(models["fast"], request_timeout="10", predict_threads="1",
                         queue_size="1")
    try:
        answers: dict[str, requests.Response] = {}

        def send(key: str, seconds: float) -> None:
            answers[key] = post(url, "dataframe_split", seconds)[0]

        running = threading.Thread(target=send, args=("running", 1.5))
        running.start()
        time.sleep(0.3)
        waiting = threading.Thread(target=send, args=("waiting", 0))
        waiting.start()
        time.sleep(0.3)
        refused, took = post(url, "dataframe_split", 0)
        running.join()
        waiting.join()
        assert refused.status_code == 503 and took < 0.5, (refused.text, took)
        assert answers["running"].status_code == answers["waiting"].status_code == 200
    finally:
        stop(process)


# The predictor on its own: the line, the hand-over, the deadline.

def test_predictor_hands_threads_over_in_order() -> None:
    async def scenario() -> list[int]:
        predictor, done = Predictor(threads=1, queue_size=8), []
        loop = asyncio.get_running_loop()

        async def job(n: int) -> None:
            await predictor.run(time.sleep, 0.05, deadline=loop.time() + 5)
            done.append(n)

        await asyncio.gather(*(job(n) for n in range(5)))
        assert predictor.running == predictor.waiting == 0
        return done

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_predictor_deadline_in_line_and_while_running() -> None:
    async def scenario() -> None:
        predictor = Predictor(threads=1, queue_size=8)
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(predictor.run(time.sleep, 0.3, deadline=loop.time() + 0.1))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded):  # in line behind the first, past its deadline
            await predictor.run(time.sleep, 0, deadline=loop.time() + 0.05)
        with pytest.raises(DeadlineExceeded):
            await first
        assert predictor.abandoned == 1
        with pytest.raises(Busy):  # the only thread runs abandoned work
            await predictor.run(time.sleep, 0, deadline=loop.time() + 5)
        await asyncio.sleep(0.4)
        assert predictor.abandoned == predictor.running == 0
        assert await predictor.run(sum, [1, 2], deadline=loop.time() + 5) == 3

    asyncio.run(scenario())


def test_a_model_raising_timeouterror_is_not_a_deadline() -> None:
    def raises() -> None:
        raise TimeoutError("the model's own")

    async def scenario() -> None:
        predictor = Predictor(threads=1, queue_size=1)
        with pytest.raises(TimeoutError, match="the model's own"):
            await predictor.run(raises, deadline=asyncio.get_running_loop().time() + 5)

    asyncio.run(scenario())


def test_only_plain_cheap_estimators_run_on_the_event_loop(models: dict[str, Path],
                                                           tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from serving_image.fast_path import FastPath

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    mlflow.sklearn.save_model(LogisticRegression().fit(frame, [0, 1, 0, 1]), tmp_path / "lr",
                              input_example=frame.head(1), pip_requirements=HOST_ONLY)
    linear = FastPath.for_model(mlflow.pyfunc.load_model(str(tmp_path / "lr")))
    assert linear is not None and linear.cost is not None
    assert linear.cheap(1) and linear.cheap(100) and not linear.cheap(100_000)
    assert linear.predict_input(np.zeros((1, 2))).tolist() == [0]
    sleepy = FastPath.for_model(mlflow.pyfunc.load_model(str(models["fast"])))
    assert sleepy is not None and sleepy.cost is None and not sleepy.cheap(1)


def test_the_fast_path_turns_off_when_mlflow_internals_differ(models: dict[str, Path],
                                                              caplog) -> None:
    """An MLflow without the private methods the fast path reads (older versions) gets MLflow's
    own path, with a log line, not a dead worker."""
    from serving_image.fast_path import FastPath

    model = mlflow.pyfunc.load_model(str(models["fast"]))
    assert FastPath.for_model(model) is not None
    del model._predict_fn
    assert FastPath.for_model(model) is None
    assert "Fast path off (AttributeError" in caplog.text
