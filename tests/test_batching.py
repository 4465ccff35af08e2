"""Adaptive batching: concurrent requests share predict calls, each gets exactly its own rows."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving_image.app import create_app
from serving_image.batching import Batcher, combine, split
from serving_image.settings import ServerSettings
from tests.helpers.models import HOST_ONLY, IRIS_COLS, save_iris, save_long_double
from tests.helpers.servers import count_batches


def _forest(path) -> None:
    """Float answers through the sklearn array route; trees are exact whatever the batch."""
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestRegressor

    features, target = load_iris(return_X_y=True, as_frame=True)
    model = RandomForestRegressor(n_estimators=20, random_state=0).fit(features, target * 1.37)
    mlflow.sklearn.save_model(model, path, input_example=features.head(2),
                              skops_trusted_types=["sklearn.tree._tree.Tree"],
                              pip_requirements=HOST_ONLY)


def test_combine_and_split_round_trip() -> None:
    arrays = [np.ones((1, 2)), np.zeros((3, 2))]
    assert combine(arrays).shape == (4, 2)
    parts = split(np.arange(4), [1, 3])
    assert [p.tolist() for p in parts] == [[0], [1, 2, 3]]
    frames = split(pd.DataFrame({"a": range(4)}), [3, 1])
    assert frames[1]["a"].tolist() == [3] and frames[1].index.tolist() == [0]
    with pytest.raises(ValueError, match="do not match"):
        split(np.arange(3), [1, 3])


def _iris_row(i: int) -> list[float]:
    return [4.0 + i % 4, 3.0 + i / 97, 1.0 + (i % 6), 0.1 * (i % 25)]


def test_full_batches_do_not_wait() -> None:
    calls: list[int] = []

    async def run(rows: np.ndarray, deadline: float) -> np.ndarray:
        calls.append(len(rows))
        return np.zeros(len(rows))

    batcher = Batcher(run, 4, 10.0)
    alone = batcher.submit(np.ones((5, 2)), deadline=1e12)
    with pytest.raises(StopIteration) as done:  # predicted without suspending even once
        alone.send(None)
    assert len(done.value.value) == 5

    async def two_that_fill_one() -> list[int]:  # the second ends the first one's 10 s wait
        deadline = asyncio.get_running_loop().time() + 5
        answers = await asyncio.wait_for(asyncio.gather(
            batcher.submit(np.ones((1, 2)), deadline),
            batcher.submit(np.ones((3, 2)), deadline)), 1)
        return [len(a) for a in answers]

    assert asyncio.run(two_that_fill_one()) == [1, 3]
    assert calls == [5, 4]


def test_each_request_stops_waiting_at_its_own_deadline() -> None:
    """A batch runs until the latest deadline among its requests; one whose deadline comes
    first answers DeadlineExceeded then, the other still gets its predictions."""
    from serving_image.predictor import DeadlineExceeded

    async def run(rows: np.ndarray, deadline: float) -> np.ndarray:
        await asyncio.sleep(0.2)
        return np.arange(len(rows))

    async def scenario() -> tuple[object, object]:
        batcher = Batcher(run, 8, 0.0)
        now = asyncio.get_running_loop().time()
        early, late = await asyncio.gather(batcher.submit(np.ones((1, 2)), now + 0.05),
                                           batcher.submit(np.ones((2, 2)), now + 5),
                                           return_exceptions=True)
        return early, late

    early, late = asyncio.run(scenario())
    assert isinstance(early, DeadlineExceeded)
    assert list(late) == [1, 2]


@pytest.mark.parametrize(("save", "columns", "make_row", "wait_ms"), [
    (save_iris, IRIS_COLS, _iris_row, 20),
    (_forest, IRIS_COLS, _iris_row, 0),  # no wait: merges what has arrived
    (save_long_double, ["a", "b"], lambda i: [i, i / 4], 20),  # the DataFrame route
])
def test_concurrent_requests_are_batched_exactly(tmp_path, save, columns, make_row,
                                                 wait_ms) -> None:
    save(tmp_path / "model")
    settings = ServerSettings(model_path=str(tmp_path / "model"), batch_max_size=64,
                              batch_max_wait_ms=wait_ms)
    app = create_app(settings)
    bodies = [{"dataframe_split": {"columns": columns,
                                   "data": [make_row(i), make_row(i + 1)][: 1 + i % 2]}}
              for i in range(40)]
    with TestClient(app) as client:
        state = app.state.model_state
        assert state.ready.wait(120) and state.batcher is not None
        expected = [state.fast_path.encode(state.fast_path.predict_input(
            state.fast_path.prepare("application/json", httpx.Request(
                "POST", "/", json=body).content)))[0] for body in bodies]
        calls = count_batches(state.batcher)

        async def send_all() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                return await asyncio.gather(*(http.post("/invocations", json=b) for b in bodies))

        answers = asyncio.run(send_all())
        assert client.get("/ping").status_code == 200
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert [a.text for a in answers] == expected
    assert len(calls) < len(bodies) / 4  # requests really were merged
    assert max(calls) <= 64
