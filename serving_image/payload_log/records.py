"""What the inference log records of one prediction, and the record's JSON form.

The request path only keeps what it saw in an :class:`Exchange` (the body chunks themselves, a
status, two times); turning bodies into JSON happens on the writer's thread (``writer``), off
the path that answers. A body is kept as the JSON it was when it is whole JSON (as it came,
when the server has parsed it already), as the events of a stream when it is Server-Sent
Events, as text when it is text (CSV, or JSON cut at ``payload_log_max_body``) and as base64
otherwise (Parquet).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import os
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from serving_image.settings import ServerSettings

MAX_ID = 200  # longest client request id taken as it is


@dataclass(frozen=True)
class Source:
    """Who answered: the same on every record of one worker."""

    deployment: str
    endpoint: str | None
    model_uri: str | None
    model_version: str | None
    replica: str

    @classmethod
    def of(cls, settings: ServerSettings) -> Source:
        return cls(settings.deployment or "", settings.endpoint, settings.model_uri,
                   settings.model_version, settings.replica or socket.gethostname())


@dataclass(slots=True)
class Exchange:
    """One prediction as it went over the wire, bodies cut at the record's limit."""

    id: str
    started: float  # wall clock (time.time) when the request came
    route: str  # the path asked
    protocol: str  # the route table's name for it: mlflow, v2, openai
    request_type: str
    request_headers: dict[str, str]
    # the bodies as they passed, up to the record's limit: the chunks themselves, not copies
    # (joined by the writer's thread, off the request path)
    request_chunks: list[bytes] = field(default_factory=list)
    request_size: int = 0  # the whole body's size
    status: int = 0
    latency: float = 0.0  # seconds until the answer's last byte
    response_type: str = ""
    response_chunks: list[bytes] = field(default_factory=list)
    response_size: int = 0
    # the bytes of both bodies held for the record: what it weighs in the queue (counted as
    # they come, not summed again by the queue and the writer)
    kept: int = 0

    @property
    def request_body(self) -> bytes:
        return b"".join(self.request_chunks)

    @property
    def response_body(self) -> bytes:
        return b"".join(self.response_chunks)


_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)  # RFC 4122: version 4, variant 10
_NOT_RANDOM = ~((0xF000 << 64) | (0xC000 << 48))
_LAST = 0xFFFFFFFFFFFF  # the id's last group: 48 bits
_PREFIX: str  # this process's ids, from _new_ids
_NEXT: Iterator[int]


def _new_ids() -> None:
    """This process's ids: a random version-4 UUID, then the same with its last group counted
    up. Made again in each forked worker, so that no two workers share them."""
    global _PREFIX, _NEXT
    hex_ = f"{random.getrandbits(128) & _NOT_RANDOM | _VERSION_4:032x}"
    _PREFIX = f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-"
    _NEXT = itertools.count(int(hex_[20:], 16))


_new_ids()
os.register_at_fork(after_in_child=_new_ids)


def request_id(sent: str | None) -> str:
    """The client's id when it sends a usable one, else a new one shaped as a version-4 UUID.

    Counted up from a random one (74 random bits per worker) rather than drawn whole on every
    request: 0.4 µs instead of 1-2 µs. An id needs to be unique, not unguessable.
    """
    if sent and len(sent) <= MAX_ID and sent.isprintable():
        return sent
    return f"{_PREFIX}{next(_NEXT) & _LAST:012x}"


def sampled(request_id: str, share: float) -> bool:
    """Whether a request is recorded: a hash of its id against ``share``, so a retried request
    (same id) is decided alike on every replica and worker."""
    if share >= 1:
        return True
    if share <= 0:
        return False
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


def timestamp(seconds: float) -> str:
    """RFC 3339, UTC, microseconds: sorts as text."""
    whole = int(seconds)
    return f"{_second(whole)}.{int((seconds - whole) * 1_000_000):06d}Z"


@functools.lru_cache(maxsize=2)
def _second(whole: int) -> str:
    """A second's part of the timestamp, made once for all the records in it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def body(content_type: str, data: bytes, size: int) -> dict[str, Any]:
    """A body as the record holds it: ``encoding`` says how ``body`` is to be read."""
    truncated = size > len(data)
    kind = _kind(content_type)
    part: dict[str, Any] = {"content_type": content_type or None, "size": size,
                            "truncated": truncated}
    if not truncated and _is_json(kind):
        try:
            return {**part, "encoding": "json", "body": orjson.loads(data)}
        except orjson.JSONDecodeError:
            pass
    if not truncated and kind == "text/event-stream":
        return {**part, "encoding": "events", "body": _events(data)}
    if kind != "application/vnd.apache.parquet" and kind != "application/octet-stream":
        text = _text(data, truncated)
        if text is not None:
            return {**part, "encoding": "text", "body": text}
    return {**part, "encoding": "base64", "body": base64.b64encode(data).decode()}


@functools.lru_cache(maxsize=64)
def _kind(content_type: str) -> str:
    """The media type alone, lower case (a server sees a handful; made once each)."""
    return content_type.split(";")[0].strip().lower()


def _is_json(kind: str) -> bool:
    """Whether a media type (from ``_kind``) is JSON."""
    return kind == "application/json" or kind.endswith("+json")


@functools.lru_cache(maxsize=64)
def _json_type(content_type: str) -> bool:
    """Whether a content type is JSON: made once for each the server sees."""
    return _is_json(_kind(content_type))


def _text(data: bytes, truncated: bool) -> str | None:
    """UTF-8 text; a cut body may end inside a character, whose bytes are dropped."""
    for cut in range(4 if truncated else 1):
        try:
            return data[:len(data) - cut].decode()
        except UnicodeDecodeError:
            continue
    return None


def _events(data: bytes) -> list[Any]:
    """The ``data:`` payloads of a Server-Sent Events answer, JSON where they are JSON."""
    events: list[Any] = []
    for line in data.decode(errors="replace").splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        try:
            events.append(orjson.loads(payload))
        except orjson.JSONDecodeError:
            events.append(payload)
    return events


def _raw_json(content_type: str, data: bytes, size: int, parsed: bool) -> bool:
    """Whether a body can go into the line as it is, unparsed (not parsed and written again).

    ``parsed``: the server has parsed it as JSON (a request it answered with 2xx), or made it
    (an answer). Python's parser, and so MLflow's path, also takes ``NaN`` and ``Infinity``,
    which are not JSON: a body that holds them is parsed here to be sure (a scan for one byte
    first, which costs next to nothing, unlike parsing). Raw line breaks (pretty-printed JSON)
    would split the line.

    The scans are ``bytes.find``, not ``in``: CPython's ``bytes.__contains__`` first tries its
    operand as an integer, and raises and clears a TypeError each time (2k instructions; 8 of
    them were a tenth of a 100-row record's cost).
    """
    if not parsed or size > len(data) or not _json_type(content_type):
        return False
    find = data.find
    return not ((find(b"N") >= 0 and find(b"NaN") >= 0)
                or (find(b"I") >= 0 and find(b"Infinity") >= 0)
                or find(b"\n") >= 0 or find(b"\r") >= 0)


def _part(content_type: str, chunks: list[bytes], size: int, parsed: bool) -> dict[str, Any]:
    data = b"".join(chunks)  # one chunk (the usual) is returned as it is, not copied
    if _raw_json(content_type, data, size, parsed):
        return {"content_type": content_type or None, "size": size, "truncated": False,
                "encoding": "json", "body": orjson.Fragment(data)}
    return body(content_type, data, size)


def json_line(exchange: Exchange, source: Source) -> bytes:
    """The JSON record of one prediction (the README's "Inference logs" shows it), one line.

    A JSON body the server has parsed goes in as it came (an ``orjson.Fragment``), instead of
    being parsed and written again here: at 100 rows that was most of the log's cost. The rest
    is written out by hand (no helper properties, no merged dicts): this runs for every record,
    on the CPU that serves.
    """
    stream = exchange.response_type.startswith("text/event-stream")
    request = _part(exchange.request_type, exchange.request_chunks, exchange.request_size,
                    200 <= exchange.status < 300)
    request["headers"] = exchange.request_headers
    return orjson.dumps({
        "id": exchange.id,
        "time": timestamp(exchange.started),
        "deployment": source.deployment,
        "endpoint": source.endpoint,
        "model_uri": source.model_uri,
        "model_version": source.model_version,
        "replica": source.replica,
        "route": exchange.route,
        "protocol": exchange.protocol,
        "stream": stream,
        "status": exchange.status,
        "latency_ms": round(exchange.latency * 1_000_000) / 1000,  # to the microsecond
        "request": request,
        "response": _part(exchange.response_type, exchange.response_chunks,
                          exchange.response_size, not stream),
    }, option=orjson.OPT_APPEND_NEWLINE)
