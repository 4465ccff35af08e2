"""Bearer-token authentication for every route but the health probes.

A plain ASGI middleware in front of the whole application, so that a route added later is
guarded without anyone remembering to: ``/invocations``, ``/version`` (model, version, run id),
``/metrics`` (Prometheus sends bearer tokens), ``/openapi.json`` and ``/docs`` (which show the
model's input example, often real rows), unknown paths too. Only the probes that orchestrators
send without credentials stay open: the route table's ``open`` entries. The OpenAI routes'
refusal takes OpenAI's error shape (the ``openai`` client's ``api_key`` is the token).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from serving_image.errors import openai_body

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def authorized(header: bytes, token: bytes) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer token."""
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)


class BearerAuth:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 token: str, open_paths: Collection[str],
                 openai_paths: Collection[str] = ()) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = frozenset(open_paths)
        self.openai_paths = frozenset(openai_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not authorized(header, self.token):
                message = "Send 'Authorization: Bearer <token>'."
                body = (openai_body(401, message, "UNAUTHENTICATED")
                        if scope["path"] in self.openai_paths
                        else {"error_code": "UNAUTHENTICATED", "message": message})
                response = JSONResponse(body, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
