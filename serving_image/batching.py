"""Adaptive batching: concurrent requests merged into one predict call, answers split back.

Opt-in (``SCORING_BATCH_MAX_SIZE`` > 1), because merging is exact only for models that score each
row on its own, which a server cannot check. Requests that take the fast path queue here; one
predict runs at a time in a dedicated thread, and whatever queued meanwhile (up to the batch size
in rows) becomes the next call. With ``max_wait`` 0 a lone request never waits; a positive wait
holds a batch open that long for more requests. A batch whose predictions do not split by rows
fails, and each of its requests then takes MLflow's own path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

Input = np.ndarray | pd.DataFrame


def combine(inputs: list[Input]) -> Input:
    if isinstance(inputs[0], np.ndarray):
        return np.vstack(inputs)
    return pd.concat(inputs, ignore_index=True)


def split(predictions: Any, sizes: list[int]) -> list[Any]:
    """The predictions of each request, by its row count; ValueError if they do not line up."""
    if not hasattr(predictions, "__len__") or len(predictions) != sum(sizes):
        raise ValueError("predictions do not match the batch's rows")
    parts, start = [], 0
    for size in sizes:
        end = start + size
        if isinstance(predictions, (pd.DataFrame, pd.Series)):
            parts.append(predictions.iloc[start:end].reset_index(drop=True))
        else:
            parts.append(predictions[start:end])
        start = end
    return parts


class Batcher:
    def __init__(self, predict: Callable[[Input], Any], max_rows: int, max_wait: float) -> None:
        self.predict = predict
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.queue: list[tuple[Input, asyncio.Future[Any]]] = []
        self.running = False
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")

    async def submit(self, model_input: Input) -> Any:
        """Predictions for ``model_input``, computed together with whatever else is queued."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.append((model_input, future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[Input, asyncio.Future[Any]]]:
        batch, rows = [], 0
        while self.queue and (not batch or rows + len(self.queue[0][0]) <= self.max_rows):
            item = self.queue.pop(0)
            batch.append(item)
            rows += len(item[0])
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                if self.max_wait and sum(len(i) for i, _ in self.queue) < self.max_rows:
                    await asyncio.sleep(self.max_wait)
                batch = self._take()
                inputs = [model_input for model_input, _ in batch]
                try:
                    predictions = await loop.run_in_executor(
                        self.executor, self.predict, combine(inputs))
                    parts = split(predictions, [len(i) for i in inputs])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), part in zip(batch, parts, strict=True):
                    if not future.done():
                        future.set_result(part)
        finally:
            self.running = False
