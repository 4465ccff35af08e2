"""A prediction request's body: read once the model is ready, within the size limit and the
request's deadline (shared by ``/invocations`` and V2's ``infer``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import Request

from serving_image.errors import Refused
from serving_image.settings import ServerSettings

if TYPE_CHECKING:
    from serving_image.model_state import ModelState


async def receive(request: Request, settings: ServerSettings, deadline: float) -> bytes:
    """The body of a prediction request, once the model is ready, within the size limit and
    the deadline; Refused otherwise."""
    state: ModelState = request.app.state.model_state
    if not state.ready.is_set():
        raise Refused(503, "TEMPORARILY_UNAVAILABLE", "The model is still loading.")
    try:
        async with asyncio.timeout_at(deadline):
            body = await read_body(request, settings.max_body_size)
    except TimeoutError:
        raise Refused(408, "DEADLINE_EXCEEDED", "The request body did not arrive within "
                      f"{settings.request_timeout:g} s.") from None
    if body is None:
        raise Refused(413, "REQUEST_LIMIT_EXCEEDED",
                      f"Request body exceeds the limit of {settings.max_body_size} bytes.")
    return body


def busy(settings: ServerSettings) -> str:
    return (f"All {settings.predict_threads} predict threads of this worker are busy and the "
            "line for them is full, or they all still run predictions whose requests timed "
            "out. Retry later.")


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` once it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
