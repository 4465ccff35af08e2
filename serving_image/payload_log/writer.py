"""The bounded queue between the request path and a sink, and the thread that empties it.

Each worker has one: ``put`` never blocks (a full queue, by records or by the bytes of their
bodies, drops the record and counts it), and a daemon thread hands what has queued to the sink
every ``GATHER`` seconds, in batches. The queue is a plain deque: the event loop only appends
and the thread only pops, which CPython does atomically, so a prediction takes no lock and
wakes no thread. A sink that fails loses that batch (counted as ``sink_error``) and is tried
again with the next one, after a pause that grows while it keeps failing; records that come
meanwhile wait in the queue or, once it is full, are dropped. Predictions never wait for any
of it. ``close`` flushes what is queued within a time limit (the stop timeout, less what
draining took); what is left then is counted as ``shutdown``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Protocol

from serving_image import metrics
from serving_image.payload_log.records import Exchange

log = logging.getLogger("serving_image")

QUEUE_SIZE = 2048  # records per worker
# and the bytes of their bodies: 2,048 records of two 64 kB bodies would be 256 MB, and a
# larger payload_log_max_body more, in a server whose container may have far less memory
QUEUE_BYTES = 64 * 1024 * 1024
BATCH = 512  # records handed to the sink at once, at most
# The thread wakes this often: one wake-up (and one write) for all that came meanwhile instead
# of one per record, so that it takes the GIL from the event loop rarely.
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
    def __init__(self, sink: Sink, size: int = QUEUE_SIZE, max_bytes: int = QUEUE_BYTES) -> None:
        self.sink = sink
        self.size = size
        self.max_bytes = max_bytes
        self.queue: deque[Exchange] = deque()
        # body bytes ever queued (written by the event loop only) and ever taken (by the thread
        # only): one writer each, so no lock, and what the queue holds is the difference
        self.bytes_in = 0
        self.bytes_out = 0
        self.ending = threading.Event()
        self.thread = threading.Thread(target=self._run, name="payload-log", daemon=True)

    def start(self) -> None:
        """In the worker (after the fork): a thread does not survive one."""
        self.thread.start()

    def put(self, exchange: Exchange) -> None:
        """Queue a record, or drop it when the queue is full. An empty queue takes any one
        record, so a ``payload_log_max_body`` beyond the byte bound still records."""
        size = exchange.kept
        if len(self.queue) < self.size and (
                not self.queue or self.bytes_in - self.bytes_out + size <= self.max_bytes):
            self.queue.append(exchange)
            self.bytes_in += size
        else:
            metrics.PAYLOAD_DROPPED.labels("queue_full").inc()

    def close(self, timeout: float) -> None:
        """Flush what is queued, for at most ``timeout`` seconds."""
        if not self.thread.is_alive():
            return
        self.ending.set()
        self.thread.join(timeout)
        left = len(self.queue)
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
                ending = self.ending.wait(pause or GATHER)  # close wakes it at once
                pause = self._flush(ending, pause)
                metrics.PAYLOAD_QUEUE.set(len(self.queue))
                if ending:
                    return
        finally:
            self.sink.close()

    def _flush(self, ending: bool, pause: float) -> float:
        """Hand what is queued to the sink; returns the pause before the next try (0 after a
        success, longer after each failure in a row). At the end, a failing sink is not waited
        for: its records are counted."""
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]
            self.bytes_out += sum(exchange.kept for exchange in batch)
            pause = self._hand_over(batch, pause)
            if pause and not ending:
                break
        return pause

    def _hand_over(self, batch: list[Exchange], pause: float) -> float:
        """Write a batch; returns the pause before the next one (0 after a success)."""
        try:
            self.sink.write(batch)
        except Exception as exc:  # any sink failure: counted, never raised into serving
            metrics.PAYLOAD_DROPPED.labels("sink_error").inc(len(batch))
            pause = min(RETRY_PAUSE[1], max(RETRY_PAUSE[0], pause * 2))
            log.warning("Inference log: %d records lost, the sink failed (%s: %s); "
                        "next try in %.1f s", len(batch), type(exc).__name__, exc, pause)
            return pause
        metrics.PAYLOAD_RECORDS.inc(len(batch))
        return 0.0
