"""``POST /invocations``: MLflow's scoring protocol (JSON, CSV, Parquet), every answer by the
request's deadline.

A numeric tabular model takes the fast path (``fast_path``: the body decoded straight to an
array, batched when configured); everything else, and every error, takes MLflow's own scoring
function (``mlflow_scoring``), so answers are MLflow's. ``"stream": true`` answers Server-Sent
Events from the model's ``predict_stream`` (``streaming``).
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from serving_image import metrics, mlflow_scoring, streaming
from serving_image.bodies import busy, receive
from serving_image.contract import DEPLOYMENT_HEADER, MODEL_VERSION_HEADER
from serving_image.errors import Refused, describe, error, failure, read_only_hint
from serving_image.fast_path import INLINE_BODY, INLINE_ROWS
from serving_image.model_state import ModelState, predict
from serving_image.openapi import invocations_operation, request_body
from serving_image.predictor import Busy, DeadlineExceeded
from serving_image.routes import ServerRoute
from serving_image.settings import ServerSettings

log = logging.getLogger("serving_image")

PARQUET = "application/vnd.apache.parquet"

# A stream that goes wrong ends with one MLflow-shaped error line and no [DONE] (MLflow's
# Databricks client raises on it).
ENDING = streaming.Ending(
    failed=lambda exc: streaming.error_line(*describe(exc)),
    late=lambda message: streaming.error_line("DEADLINE_EXCEEDED", message))


def served_by(settings: ServerSettings) -> dict[str, str]:
    """The headers every prediction carries: which deployment and model version answered."""
    return {DEPLOYMENT_HEADER: settings.deployment or "",
            MODEL_VERSION_HEADER: settings.model_version or ""}


def route(state: ModelState, settings: ServerSettings) -> ServerRoute:
    """The ``/invocations`` entry of the route table."""
    headers = served_by(settings)

    async def invocations(request: Request) -> Response:
        """Score a batch; every answer says which deployment and model version gave it."""
        response = await score(request)
        response.headers.update(headers)
        return response

    async def score(request: Request) -> Response:
        """MLflow's scoring protocol (JSON, CSV, Parquet), every answer by the deadline."""
        timeout = settings.request_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        if not state.ready.is_set():
            return error(503, "TEMPORARILY_UNAVAILABLE", "The model is still loading.")
        content_type = request.headers.get("content-type")
        if not content_type:
            return error(415, "BAD_REQUEST",
                         "Missing Content-Type. Send application/json or text/csv.")
        try:
            body = await receive(request, settings, deadline)
        except Refused as refused:
            return error(refused.status, refused.error_code, refused.message)
        if streaming.wants_stream(content_type, body):
            return await _stream_answer(state, body, timeout, deadline)
        try:
            if state.fast_path is not None:
                answer = await _fast_answer(state, content_type, body, deadline)
                if answer is not None:
                    metrics.ROWS.inc(answer[1])
                    return Response(content=answer[0], media_type="application/json")
            if content_type.split(";")[0].strip().lower() == PARQUET and not _has_pyarrow():
                return error(415, "BAD_REQUEST",
                             "Parquet input needs pyarrow in the image: deploy with "
                             "-C parquet=true, or send application/json or text/csv.")
            return await _mlflow_answer(state, content_type, body, deadline)
        except DeadlineExceeded:
            return error(504, "DEADLINE_EXCEEDED",
                         f"Request processing time exceeded {timeout:g} s.")
        except Busy:
            return error(503, "TEMPORARILY_UNAVAILABLE", busy(settings),
                         headers={"Retry-After": "1"})
    def operation() -> dict[str, object]:
        """Its request body typed by the model's signature, once the model is loaded."""
        loaded = state.ready.is_set()
        return invocations_operation(request_body(state.model, settings.model_path)
                                     if loaded else None)

    return ServerRoute("/invocations", invocations, ("POST",), operation, protocol="mlflow")


def _as_json_error(status: int, text: str) -> JSONResponse:
    """MLflow answers some errors as plain text; ours are always JSON."""
    try:
        body = json.loads(text)
        if isinstance(body, dict) and "error_code" in body:
            return JSONResponse(body, status_code=status)
    except ValueError:
        pass
    return error(status, "BAD_REQUEST", text)


async def _fast_answer(state: ModelState, content_type: str, body: bytes,
                       deadline: float) -> tuple[str, int] | None:
    """The fast path's answer (batched when configured), or ``None`` to take MLflow's path."""
    fast = state.fast_path
    assert fast is not None
    try:
        if len(body) <= INLINE_BODY:
            model_input = fast.prepare(content_type, body)
        else:
            model_input = await state.predictor.run(fast.prepare, content_type, body,
                                                    deadline=deadline)
        if model_input is None:
            return None
        if state.batcher is not None:
            predictions = await state.batcher.submit(model_input, deadline)
        else:
            predictions = await predict(state, model_input, deadline)
        if len(model_input) <= INLINE_ROWS:
            return fast.encode(predictions)
        return await state.predictor.run(fast.encode, predictions, deadline=deadline)
    except (DeadlineExceeded, Busy):
        raise
    except Exception:  # MLflow's path gives the error its own shape
        return None


async def _mlflow_answer(state: ModelState, content_type: str, body: bytes,
                         deadline: float) -> Response:
    """MLflow's own scoring path, on a predict thread; errors as JSON."""
    from mlflow.exceptions import MlflowException

    try:
        result, count = await state.predictor.run(mlflow_scoring.score, body, content_type,
                                                  state.model, state.input_schema,
                                                  deadline=deadline)
    except (DeadlineExceeded, Busy):
        raise
    except MlflowException as exc:
        exc.message += read_only_hint(exc)  # MLflow's words, and what to do about this one
        return Response(content=exc.serialize_as_json(), status_code=exc.get_http_status_code(),
                        media_type="application/json")
    except Exception as exc:  # MLflow's own server answers a bare 500 here
        log.exception("Scoring failed")
        return error(500, *describe(exc))
    if result.mimetype != "application/json":
        return _as_json_error(result.status, result.response)
    metrics.ROWS.inc(count)
    return Response(content=result.response, status_code=result.status,
                    media_type="application/json")


async def _stream_answer(state: ModelState, body: bytes, timeout: float,
                         deadline: float) -> Response:
    """Server-Sent Events from the model's predict_stream (see serving_image/streaming.py)."""
    model = state.model
    if not streaming.can_stream(model):
        return error(400, "BAD_REQUEST", "This model cannot stream: it has no predict_stream. "
                     "Send the request without \"stream\": true.")
    try:
        stream = state.streams.start(lambda: model.predict_stream(*streaming.parse(body, model)))
    except streaming.TooManyStreams:
        return error(503, "TEMPORARILY_UNAVAILABLE",
                     f"All {state.streams.limit} stream threads of this worker are busy "
                     "(-C max_streams). Retry later.", headers={"Retry-After": "1"})
    try:
        first = await stream.next(deadline - asyncio.get_running_loop().time())
    except TimeoutError:
        stream.stop.set()
        metrics.STREAMS.labels("timeout").inc()
        return error(504, "DEADLINE_EXCEEDED", f"No chunk came within {timeout:g} s.")
    if isinstance(first, streaming.Failed):
        metrics.STREAMS.labels("error").inc()
        return failure(first.error)
    return StreamingResponse(stream.lines(first, timeout, ENDING),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True
