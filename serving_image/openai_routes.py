"""OpenAI's routes beside ``/invocations``, for MLflow's GenAI models, so that the ``openai``
client (and what is built on it) calls a deployment with ``base_url=<endpoint>/v1``:

- ``POST /responses`` and ``/v1/responses``: a ``ResponsesAgent``, as
  ``mlflow.genai.agent_server.AgentServer`` serves one, stream framing included: a stream that
  goes wrong, even before its first event, ends with ``data: {"error": "<message>"}`` and
  ``data: [DONE]``.
- ``POST /chat/completions`` and ``/v1/chat/completions``: a ``ChatModel`` or ``ChatAgent``,
  answered as ``chat.completion`` (streams as ``chat.completion.chunk``); a stream that goes
  wrong after its first chunk ends with OpenAI's error object and ``data: [DONE]``.
- ``GET /models`` and ``/v1/models``: the deployment that answers, by name.

A model of another kind gets 404 naming the route that fits it. Every error here is OpenAI's
shape (``errors.openai_error``). The ``model`` field is not used for routing: the front routes
on the ``x-mlflow-deployment`` header. Deadlines, the predict threads and the stream threads
are ``/invocations``'s (``request_timeout`` bounds each gap in a stream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from fastapi.responses import Response, StreamingResponse
from starlette.requests import Request

from serving_image import metrics, openai_shapes, streaming
from serving_image.bodies import busy, receive
from serving_image.errors import Refused, describe, openai_body, openai_error, status_of
from serving_image.model_state import ModelState
from serving_image.openapi import openai_operation
from serving_image.predictor import Busy, DeadlineExceeded
from serving_image.routes import ServerRoute
from serving_image.scoring import served_by
from serving_image.settings import ServerSettings

log = logging.getLogger("serving_image")

RESPONSES_PATHS = ("/responses", "/v1/responses")
CHAT_PATHS = ("/chat/completions", "/v1/chat/completions")
MODELS_PATHS = ("/models", "/v1/models")

# The route that fits each kind of model, for the 404 that points there.
_FITS = {openai_shapes.RESPONSES: "/v1/responses (client.responses.create)",
         openai_shapes.CHAT_MODEL: "/v1/chat/completions (client.chat.completions.create)",
         openai_shapes.CHAT_AGENT: "/v1/chat/completions (client.chat.completions.create)"}


# AgentServer's: {"error": "<message>"}, then [DONE]. The openai client raises on both.
RESPONSES_ENDING = streaming.Ending(
    failed=lambda exc: streaming.encode({"error": str(exc)}) + streaming.DONE,
    late=lambda message: streaming.encode({"error": message}) + streaming.DONE)


def _chat_failed(exc: BaseException) -> bytes:
    code, message = describe(exc)
    return streaming.encode(openai_body(status_of(exc), message, code)) + streaming.DONE


# OpenAI's error object, then [DONE].
CHAT_ENDING = streaming.Ending(
    failed=_chat_failed,
    late=lambda message: streaming.encode(openai_body(504, message, "DEADLINE_EXCEEDED"))
    + streaming.DONE)


def routes(state: ModelState, settings: ServerSettings) -> list[ServerRoute]:
    """The OpenAI entries of the route table."""
    name = settings.deployment or settings.model_name or "model"
    headers = served_by(settings)
    created = int(time.time())

    async def responses(request: Request) -> Response:
        """An OpenAI Responses request to a ResponsesAgent."""
        response = await _answer(request, state, settings, name, (openai_shapes.RESPONSES,))
        response.headers.update(headers)  # every answer names the deployment that gave it
        return response

    async def chat_completions(request: Request) -> Response:
        """An OpenAI chat completion from a ChatModel or a ChatAgent."""
        response = await _answer(request, state, settings, name,
                                 (openai_shapes.CHAT_MODEL, openai_shapes.CHAT_AGENT))
        response.headers.update(headers)
        return response

    async def models(request: Request) -> Response:
        """The deployment that answers, as OpenAI's model list."""
        return Response(orjson.dumps(openai_shapes.models_list(name, created)),
                        media_type="application/json", headers=headers)

    table = [(RESPONSES_PATHS, responses, ("POST",), "responses"),
             (CHAT_PATHS, chat_completions, ("POST",), "chat"),
             (MODELS_PATHS, models, ("GET",), "models")]
    return [ServerRoute(path, handler, methods, openai_operation(operation), openai=True,
                        protocol="openai" if methods == ("POST",) else None)
            for paths, handler, methods, operation in table for path in paths]


async def _answer(request: Request, state: ModelState, settings: ServerSettings, name: str,
                  fits: tuple[str, ...]) -> Response:
    timeout = settings.request_timeout
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        raw = await receive(request, settings, deadline)
    except Refused as refused:
        return openai_error(refused.status, refused.message, refused.error_code)
    model = state.model
    model_kind = openai_shapes.kind(model)
    if model_kind not in fits:
        return openai_error(404, _wrong_route(request.url.path, model_kind), "NOT_FOUND")
    try:
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            raise openai_shapes.BadRequest("The body must be a JSON object.")
        if model_kind == openai_shapes.RESPONSES:
            model_input = openai_shapes.responses_input(body)
        else:
            model_input = openai_shapes.chat_input(body, model_kind)
    except (orjson.JSONDecodeError, openai_shapes.BadRequest) as exc:
        return openai_error(400, str(exc), "BAD_REQUEST")
    if body.get("stream") is True:
        return await _stream(state, model, model_kind, model_input, name, timeout, deadline)
    return await _predict(state, model, model_kind, model_input, name, settings, deadline)


async def _predict(state: ModelState, model: Any, model_kind: str, model_input: dict[str, Any],
                   name: str, settings: ServerSettings, deadline: float) -> Response:
    try:
        answer = await state.predictor.run(model.predict, model_input, deadline=deadline)
    except DeadlineExceeded:
        return openai_error(504, f"Request processing time exceeded "
                            f"{settings.request_timeout:g} s.", "DEADLINE_EXCEEDED")
    except Busy:
        return openai_error(503, busy(settings), "TEMPORARILY_UNAVAILABLE",
                            headers={"Retry-After": "1"})
    except Exception as exc:
        log.exception("Prediction failed")
        code, message = describe(exc)
        return openai_error(status_of(exc), message, code)
    if model_kind != openai_shapes.RESPONSES:
        answer = openai_shapes.completion(answer, model_kind, name)
    return Response(orjson.dumps(answer, default=streaming.plain,
                                 option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


async def _stream(state: ModelState, model: Any, model_kind: str, model_input: dict[str, Any],
                  name: str, timeout: float, deadline: float) -> Response:
    if not streaming.can_stream(model):
        return openai_error(400, "This model cannot stream: it has no predict_stream. Send the "
                            "request without stream=True.", "BAD_REQUEST")
    produce: Callable[[], Iterator[Any]]
    if model_kind == openai_shapes.RESPONSES:
        ending = RESPONSES_ENDING
        produce = lambda: model.predict_stream(model_input)  # noqa: E731
    else:
        ending = CHAT_ENDING
        produce = lambda: openai_shapes.completion_chunks(  # noqa: E731
            model.predict_stream(model_input), model_kind, name)
    try:
        stream = state.streams.start(produce)
    except streaming.TooManyStreams:
        return openai_error(503, f"All {state.streams.limit} stream threads of this worker are "
                            "busy (-C max_streams). Retry later.", "TEMPORARILY_UNAVAILABLE",
                            headers={"Retry-After": "1"})
    try:
        first = await stream.next(deadline - asyncio.get_running_loop().time())
    except TimeoutError:
        stream.stop.set()
        metrics.STREAMS.labels("timeout").inc()
        return openai_error(504, f"No chunk came within {timeout:g} s.", "DEADLINE_EXCEEDED")
    if isinstance(first, streaming.Failed) and ending is CHAT_ENDING:
        # OpenAI's own API answers an error status while nothing is sent yet; AgentServer
        # (the Responses routes) always answers 200 and frames the error in the stream.
        metrics.STREAMS.labels("error").inc()
        if isinstance(first.error, NotImplementedError):  # MLflow's default predict_stream
            return openai_error(400, "This model cannot stream: its predict_stream is not "
                                "implemented. Send the request without stream=True.",
                                "BAD_REQUEST")
        code, message = describe(first.error)
        return openai_error(status_of(first.error), message, code)
    return StreamingResponse(stream.lines(first, timeout, ending),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _wrong_route(path: str, model_kind: str | None) -> str:
    if model_kind is None:
        return (f"{path} serves MLflow's GenAI models (ResponsesAgent, ChatModel, ChatAgent); "
                "this deployment's model is none of them: score it on /invocations.")
    return f"{path} does not serve a {model_kind}: call {_FITS[model_kind]}."
