"""The ASGI middleware that keeps each prediction in an :class:`Exchange` for the log.

It wraps only the routes the table gives an inference ``protocol`` (``routes.protocol_of``),
inside auth (a refused request is not recorded). Every such answer carries ``x-request-id``;
a sampled request's bodies are kept up to ``payload_log_max_body`` as they pass (the chunks
themselves, not copies), and the exchange is handed to the writer once the answer's last byte
is sent (or the client went away mid-stream). Handing over never waits: a full queue drops the
record (``writer.Writer.put``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving_image.contract import REQUEST_ID_HEADER
from serving_image.payload_log.records import Exchange, request_id, sampled
from serving_image.payload_log.writer import Writer
from serving_image.settings import ServerSettings

_ID = REQUEST_ID_HEADER.encode()


class PayloadCapture:
    def __init__(self, app: ASGIApp, protocol_of: Callable[[str, str], str | None],
                 writer: Writer, settings: ServerSettings) -> None:
        self.app = app
        self.protocol_of = protocol_of  # (method, path) -> its inference protocol, or None
        self.writer = writer
        self.share = settings.payload_log_sample
        self.limit = settings.payload_log_max_body
        self.headers = frozenset(name.encode() for name in
                                 (settings.payload_log_headers or "").split(",") if name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protocol = (self.protocol_of(scope["method"], scope["path"])
                    if scope["type"] == "http" else None)
        if protocol is None:
            await self.app(scope, receive, send)
            return
        sent_id = content_type = None
        recorded: dict[str, str] = {}
        wanted = self.headers
        for name, value in scope["headers"]:
            if name == _ID:
                sent_id = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            if wanted and name in wanted:
                recorded[name.decode()] = value.decode("latin-1")
        rid = request_id(sent_id)
        id_header = (_ID, rid.encode("latin-1"))
        if not sampled(rid, self.share):
            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), id_header]
                await send(message)

            await self.app(scope, receive, send_with_id)
            return

        exchange = Exchange(rid, time.time(), scope["path"], protocol, content_type or "",
                            recorded)
        started = time.perf_counter()
        limit = self.limit

        async def receive_and_copy() -> Message:
            message = await receive()
            chunk = message.get("body", b"")
            if chunk:
                exchange.kept += _keep(exchange.request_chunks, chunk, exchange.request_size,
                                       limit)
                exchange.request_size += len(chunk)
            return message

        async def send_and_copy(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                headers = [*message.get("headers", ()), id_header]
                message["headers"] = headers
                for name, value in headers:
                    if name == b"content-type":
                        exchange.response_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    exchange.kept += _keep(exchange.response_chunks, chunk,
                                           exchange.response_size, limit)
                    exchange.response_size += len(chunk)
            await send(message)

        try:
            await self.app(scope, receive_and_copy, send_and_copy)
        finally:
            if exchange.status:  # an answer began: record what went out
                exchange.latency = time.perf_counter() - started
                self.writer.put(exchange)


def _keep(kept: list[bytes], chunk: bytes, before: int, limit: int) -> int:
    """Keep what fits of ``chunk`` under the record's limit, after ``before`` bytes of the same
    body: the chunk itself when it fits whole (ASGI bodies are immutable ``bytes``). Returns
    the bytes kept."""
    room = limit - before
    if room <= 0:
        return 0
    if len(chunk) > room:
        chunk = chunk[:room]
    kept.append(chunk)
    return len(chunk)
