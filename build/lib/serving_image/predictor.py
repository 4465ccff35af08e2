"""Where predictions run: a few threads per worker, every call bounded by the request's deadline.

The event loop answers ``/ping``, ``/health`` and ``/metrics``; a model running on it would make
them wait as long as the prediction. So every model call runs here, in a pool of
``predict_threads`` threads, except those the fast path knows to be cheap (``FastPath.cheap``).

A request whose deadline passes answers 504 at once. Python cannot stop a running thread, so
its computation goes on to its end, holding its thread; it is *abandoned*. Abandoned work cannot
pile up: a new computation starts only on a free thread, requests wait for one in a line of at
most ``queue_size``, and when every thread holds abandoned work (a model that hangs) or the line
is full, a request answers 503 at once instead of joining it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serving_image import metrics, thread_limits


class Busy(Exception):
    """No predict thread is free, nor likely to be soon: answer 503 now."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its prediction was done: answer 504.

    Its own type, so that a model that raises TimeoutError is not mistaken for it.
    """


class Predictor:
    def __init__(self, threads: int, queue_size: int) -> None:
        self.threads = threads
        self.queue_size = queue_size
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="predict",
                                           initializer=thread_limits.restore)
        self.running = 0  # computations on threads, abandoned ones included
        self.abandoned = 0  # ... whose request has already answered
        self.waiting = 0  # requests in line for a thread
        self._line: deque[asyncio.Future[None]] = deque()

    async def run(self, function: Callable[..., Any], *args: Any, deadline: float) -> Any:
        """``function(*args)`` on a predict thread; DeadlineExceeded at ``deadline`` (the
        event loop's clock), Busy when it cannot get a thread."""
        if self.abandoned >= self.threads or (self.running >= self.threads
                                              and self.waiting >= self.queue_size):
            raise Busy
        if self.running < self.threads:
            self.running += 1
        else:  # in line until a finishing computation hands its thread over (_release)
            waiter = asyncio.get_running_loop().create_future()
            self._line.append(waiter)
            self.waiting += 1
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                if waiter.done() and not waiter.cancelled():  # handed over as time ran out
                    self._release()
                raise DeadlineExceeded from None
            finally:
                self.waiting -= 1
        future = asyncio.get_running_loop().run_in_executor(self.executor, function, *args)
        future.add_done_callback(self._release)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            if future.done():  # finished as the deadline passed
                return future.result()
            self.abandoned += 1
            metrics.ABANDONED.inc()
            future.add_done_callback(self._forget)
            raise DeadlineExceeded from None

    def _release(self, _: object = None) -> None:
        """A computation ended: its thread goes to the first request in line, if any."""
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():  # not timed out meanwhile
                waiter.set_result(None)
                return
        self.running -= 1

    def _forget(self, future: asyncio.Future[Any]) -> None:
        self.abandoned -= 1
        metrics.ABANDONED.dec()
        if not future.cancelled():
            future.exception()  # retrieved: nobody awaits it any more
