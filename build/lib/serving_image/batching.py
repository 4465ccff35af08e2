"""Adaptive batching: concurrent requests merged into one predict call, answers split back.

Opt-in (``SCORING_BATCH_MAX_SIZE`` > 1), because merging is exact only for models that score each
row on its own and whose arithmetic does not depend on how many rows come together, which a
server cannot check: a linear model's BLAS rounds a lone row (a dot product) and a batch (a
matrix-vector product) differently in the last bit (≈1e-15) for most rows, while tree models
give the same answer bit for bit. Class labels are unaffected unless a score is that close to a
decision boundary.

Requests that take the fast path queue here. The first request of a batch schedules the predict
call behind the requests the server has already received, which join it; with ``max_wait`` > 0
the batch instead stays open that long, or until it has ``max_rows``. A request that fills a
batch by itself while nothing waits is predicted at once. The batch runs through ``run`` (on the
event loop only when the fast path knows it is cheap, else on a predict thread) with the latest
deadline among its requests, so no request's answer is abandoned while it still waits; each
request stops waiting at its own deadline. A batch whose predictions do not split by rows fails,
and each of its requests then takes MLflow's own path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from serving_image.predictor import DeadlineExceeded

Input: TypeAlias = np.ndarray | pd.DataFrame
Run = Callable[[Input, float], Awaitable[Any]]  # predictions for an input, by a deadline


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
    def __init__(self, run: Run, max_rows: int, max_wait: float) -> None:
        self.run = run
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.queue: list[tuple[Input, float, asyncio.Future[Any]]] = []
        self.rows = 0  # in the queue
        self.flush: asyncio.Handle | None = None  # the scheduled predict call
        self.waiting = False  # ... is a max_wait timer

    async def submit(self, model_input: Input, deadline: float) -> Any:
        """Predictions for ``model_input``, computed together with whatever else is queued;
        DeadlineExceeded at ``deadline`` (the event loop's clock)."""
        if not self.queue and len(model_input) >= self.max_rows:  # a full batch by itself
            return await self.run(model_input, deadline)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.queue.append((model_input, deadline, future))
        self.rows += len(model_input)
        full = self.rows >= self.max_rows
        if self.flush is None or (full and self.waiting):
            if self.flush is not None:
                self.flush.cancel()
            self.waiting = self.max_wait > 0 and not full
            self.flush = (loop.call_later(self.max_wait, self._predict) if self.waiting
                          else loop.call_soon(self._predict))
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            if future.done():
                return future.result()
            future.add_done_callback(_retrieve)
            raise DeadlineExceeded from None

    def _take(self) -> list[tuple[Input, float, asyncio.Future[Any]]]:
        batch: list[tuple[Input, float, asyncio.Future[Any]]] = []
        rows = 0
        while self.queue and (not batch or rows + len(self.queue[0][0]) <= self.max_rows):
            item = self.queue.pop(0)
            batch.append(item)
            rows += len(item[0])
        self.rows -= rows
        return batch

    def _predict(self) -> None:
        """One predict call for the head of the queue; the rest (beyond max_rows) goes next."""
        batch = self._take()
        self.flush, self.waiting = None, False
        if self.queue:
            self.flush = asyncio.get_running_loop().call_soon(self._predict)
        task = asyncio.ensure_future(self._answer(batch))
        task.add_done_callback(_retrieve)

    async def _answer(self, batch: list[tuple[Input, float, asyncio.Future[Any]]]) -> None:
        inputs = [model_input for model_input, _, _ in batch]
        deadline = max(deadline for _, deadline, _ in batch)
        try:
            if len(inputs) == 1:  # nothing to merge
                parts = [await self.run(inputs[0], deadline)]
            else:
                predictions = await self.run(combine(inputs), deadline)
                parts = split(predictions, [len(i) for i in inputs])
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), part in zip(batch, parts, strict=True):
            if not future.done():  # a client that went away
                future.set_result(part)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Take an outcome nobody waits for any more, so asyncio does not report it as lost."""
    if not future.cancelled():
        future.exception()
