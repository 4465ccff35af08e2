"""Streaming predictions: ``"stream": true`` on ``/invocations`` answers Server-Sent Events.

The wire format is the one MLflow's Databricks client reads (``predict_stream``): one
``data: <json>`` line per chunk the model's ``predict_stream`` yields, then ``data: [DONE]``.
Nothing else is written (no ``event:`` lines, no comments): that client raises on any line that
is not ``data:``. An error after the first chunk, when the status line is long gone, ends the
stream with one last ``data:`` line holding an MLflow-shaped error, never a silent cut.

Each stream runs its generator on a thread of its own, from a pool of ``max_streams`` per worker
(beyond it, 503 at once), apart from the predict threads so that streams never starve ordinary
requests. Chunks cross to the event loop as the model yields them. ``request_timeout`` bounds the
wait for each chunk: a late first chunk answers 504; a later gap ends the stream with an error
line. How a stream ends badly is the protocol's (an :class:`Ending`): ``/invocations`` writes an
MLflow-shaped error and no ``[DONE]``; the OpenAI routes an error event, then ``[DONE]``. A
stream that ends early (a timeout, the client gone) asks its generator to stop: it is closed
once its current chunk is done.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from serving_image import metrics, thread_limits

DONE = b"data: [DONE]\n\n"
_END = object()  # the generator finished


class TooManyStreams(Exception):
    """Every stream thread of this worker is taken."""


@dataclass
class Failed:
    """The generator (or the parsing before it) raised."""

    error: BaseException


def wants_stream(content_type: str | None, body: bytes) -> bool:
    """Whether a request asks to stream: a JSON object with ``"stream": true``."""
    if b'"stream"' not in body or not (content_type or "").startswith("application/json"):
        return False
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and payload.get("stream") is True


def can_stream(model: Any) -> bool:
    return getattr(model, "_predict_stream_fn", None) is not None


def parse(body: bytes, model: Any) -> tuple[Any, dict[str, Any] | None]:
    """The input and params for ``predict_stream``, parsed as MLflow parses a JSON body (the
    chat-style unified input ``messages`` / ``prompt`` / ``input`` included)."""
    from mlflow.pyfunc import scoring_server

    payload = orjson.loads(body)
    del payload["stream"]
    metadata = model.metadata
    parsed = scoring_server._parse_json_data(json.dumps(payload), metadata,
                                             metadata.get_input_schema())
    return parsed.data, parsed.params


def encode(chunk: Any) -> bytes:
    """One SSE line for a chunk: dicts, lists, strings, numbers, numpy values, and objects with
    ``model_dump`` (pydantic) or ``to_dict``."""
    return b"data: " + orjson.dumps(chunk, default=plain,
                                    option=orjson.OPT_SERIALIZE_NUMPY) + b"\n\n"


def plain(value: Any) -> Any:
    """orjson's ``default``: pydantic models, objects with ``to_dict``, numpy values."""
    for method in ("model_dump", "to_dict", "tolist"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"Cannot send a chunk of type {type(value).__name__} as JSON")


def error_line(error_code: str, message: str) -> bytes:
    return encode({"error_code": error_code, "message": message})


@dataclass(frozen=True)
class Ending:
    """How a protocol ends a stream that goes wrong once its status line is sent: the bytes
    written after the model raised (``failed``), and after no chunk came in time (``late``,
    given the message that says so)."""

    failed: Callable[[BaseException], bytes]
    late: Callable[[str], bytes]


class Streams:
    """The stream threads of one worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.executor = ThreadPoolExecutor(limit, thread_name_prefix="stream",
                                           initializer=thread_limits.restore)
        self.active = 0  # threads running a generator, including ones asked to stop

    def start(self, produce: Callable[[], Iterator[Any]]) -> Stream:
        """Run ``produce()`` on a stream thread; its chunks arrive on the returned Stream."""
        if self.active >= self.limit:
            raise TooManyStreams
        loop = asyncio.get_running_loop()
        stream = Stream(asyncio.Queue(), threading.Event())
        self.active += 1
        metrics.STREAMS_ACTIVE.inc()

        def run() -> None:
            def put(item: Any) -> None:
                loop.call_soon_threadsafe(stream.queue.put_nowait, item)

            try:
                chunks = produce()
                try:
                    for chunk in chunks:
                        put(encode(chunk))
                        if stream.stop.is_set():
                            break
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
                put(_END)
            except BaseException as exc:
                put(Failed(exc))
            finally:
                loop.call_soon_threadsafe(self._ended)

        loop.run_in_executor(self.executor, run)
        return stream

    def _ended(self) -> None:
        self.active -= 1
        metrics.STREAMS_ACTIVE.dec()


@dataclass
class Stream:
    queue: asyncio.Queue[Any]
    stop: threading.Event

    async def next(self, timeout: float) -> Any:
        """The next item: encoded chunk bytes, ``_END`` or ``Failed``; TimeoutError after
        ``timeout`` seconds with none."""
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def lines(self, first: Any, timeout: float, ending: Ending) -> AsyncIterator[bytes]:
        """The SSE body from the first item on, ended as ``ending`` says if it goes wrong."""
        outcome = "cancelled"  # the client went away, unless set below
        chunks, item = 0, first
        try:
            while True:
                if item is _END:
                    outcome = "done"
                    yield DONE
                    return
                if isinstance(item, Failed):
                    outcome = "error"
                    yield ending.failed(item.error)
                    return
                chunks += 1
                yield item
                try:
                    item = await self.next(timeout)
                except TimeoutError:
                    outcome = "timeout"
                    yield ending.late(f"No chunk came within {timeout:g} s of the last one.")
                    return
        finally:
            self.stop.set()
            metrics.STREAMS.labels(outcome).inc()
            metrics.STREAM_CHUNKS.inc(chunks)
