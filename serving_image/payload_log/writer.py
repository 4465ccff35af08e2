"""The bounded queue between the request path and a sink, and the thread that empties it.

Each worker has one: ``put`` never blocks (a full queue drops the record and counts it), and a
daemon thread hands records to the sink in batches, gathered for ``GATHER`` seconds. A sink
that fails loses that batch (counted as ``sink_error``) and is tried again with the next one,
after a pause that grows while it keeps failing; records that come meanwhile wait in the queue
or, once it is full, are dropped. Predictions never wait for any of it. ``close`` flushes what
is queued within a time limit (the stop timeout, less what draining took); what is left then
is counted as ``shutdown``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Protocol

from serving_image import metrics
from serving_image.payload_log.records import Exchange

log = logging.getLogger("serving_image")

QUEUE_SIZE = 2048  # records per worker
BATCH = 512  # records handed to the sink at once, at most
# After the first record of a batch, the thread waits this long for more: one wake-up (and one
# write) per batch instead of per record, so that it takes the GIL from the event loop rarely.
GATHER = 0.05
RETRY_PAUSE = (0.5, 10.0)  # seconds after a failure: the first pause, and the longest


class Sink(Protocol):
    """Where records go: the volume's files (``volume_sink``) or an HTTP receiver
    (``http_sink``)."""

    def check(self) -> str | None:
        """Why the sink cannot be reached now, or ``None``: said once at start."""

    def write(self, exchanges: list[Exchange]) -> None:
        """Store a batch, or raise."""

    def close(self) -> None: ...


class Writer:
    def __init__(self, sink: Sink, size: int = QUEUE_SIZE) -> None:
        self.sink = sink
        self.queue: queue.Queue[Exchange | None] = queue.Queue(size)
        self.thread = threading.Thread(target=self._run, name="payload-log", daemon=True)

    def start(self) -> None:
        """In the worker (after the fork): a thread does not survive one."""
        self.thread.start()

    def put(self, exchange: Exchange) -> None:
        try:
            self.queue.put_nowait(exchange)
        except queue.Full:
            metrics.PAYLOAD_DROPPED.labels("queue_full").inc()
            metrics.PAYLOAD_QUEUE.set(self.queue.qsize())

    def close(self, timeout: float) -> None:
        """Flush what is queued, for at most ``timeout`` seconds."""
        if not self.thread.is_alive():
            return
        deadline = time.monotonic() + timeout
        while True:  # the end mark must get in, even behind a full queue
            try:
                self.queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self.thread.join(max(0.0, deadline - time.monotonic()))
        left = self.queue.qsize()
        if self.thread.is_alive() and left:
            metrics.PAYLOAD_DROPPED.labels("shutdown").inc(left)
            log.warning("Inference log: %d records still queued at the stop timeout were lost",
                        left)
        metrics.PAYLOAD_QUEUE.set(0)

    def _run(self) -> None:
        reason = self.sink.check()
        if reason:
            log.warning("%s", reason)
        pause = 0.0
        try:
            while True:
                batch, ending = self._next_batch()
                if batch:
                    pause = self._hand_over(batch, pause)
                metrics.PAYLOAD_QUEUE.set(self.queue.qsize())
                if ending:
                    return
        finally:
            self.sink.close()

    def _next_batch(self) -> tuple[list[Exchange], bool]:
        first = self.queue.get()
        if first is None:
            return [], True
        time.sleep(GATHER)
        batch = [first]
        while len(batch) < BATCH:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _hand_over(self, batch: list[Exchange], pause: float) -> float:
        """Write a batch; returns the pause before the next one (0 after a success)."""
        try:
            self.sink.write(batch)
        except Exception as exc:  # any sink failure: counted, never raised into serving
            metrics.PAYLOAD_DROPPED.labels("sink_error").inc(len(batch))
            pause = min(RETRY_PAUSE[1], max(RETRY_PAUSE[0], pause * 2))
            log.warning("Inference log: %d records lost, the sink failed (%s: %s); "
                        "next try in %.1f s", len(batch), type(exc).__name__, exc, pause)
            time.sleep(pause)
            return pause
        metrics.PAYLOAD_RECORDS.inc(len(batch))
        return 0.0
