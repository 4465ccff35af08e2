"""The FastAPI application: MLflow's scoring protocol plus readiness, liveness, version, metrics.

The model loads in a background thread so that ``/health`` (liveness) answers while a large
model loads and ``/ping`` (readiness) answers 200 only once every worker has it loaded and
warmed. A model that fails to load ends the worker with uvicorn's start-up failure code, which
stops the server, so a broken deployment exits at once instead of restarting forever.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, NoReturn

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from starlette.routing import Route

from serving_image import __version__, metrics, streaming, thread_limits, v2
from serving_image.auth import BearerAuth
from serving_image.batching import Batcher, Input
from serving_image.fast_path import INLINE_BODY, INLINE_ROWS, FastPath
from serving_image.openapi import invocations_operation, request_body, v2_paths
from serving_image.predictor import Busy, DeadlineExceeded, Predictor
from serving_image.readiness import READY_DIR_ENV, STARTUP_FAILURE, Readiness
from serving_image.settings import ServerSettings

log = logging.getLogger("serving_image")

PARQUET = "application/vnd.apache.parquet"
FRONT_HEADER = "x-mlflow-front"  # sent by an endpoint's front with its health checks
PROBE_HEADER = "x-mlflow-probe"  # healthcheck --behind-front


def error(status: int, error_code: str, message: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """An error shaped like MLflow's: ``{"error_code": ..., "message": ...}``."""
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status,
                        headers=headers)


@dataclass
class ModelState:
    """The loaded model, set once by the loader thread."""

    readiness: Readiness
    predictor: Predictor
    streams: streaming.Streams
    model: Any = None
    input_schema: Any = None
    fast_path: FastPath | None = None
    batcher: Batcher | None = None
    v2_content_type: str | None = None  # the signature's, for V2 requests that name none
    v2_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the signature's
    ready: threading.Event = field(default_factory=threading.Event)


def _load(model_path: str) -> Any:
    import mlflow.pyfunc

    os.environ.setdefault("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")
    return mlflow.pyfunc.load_model(model_path)


def preload(settings: ServerSettings) -> Any:
    """Load the model in the parent process, before it forks the workers: they share its
    memory and start with the model in place. Nothing is predicted here (see thread_limits);
    each worker warms the model up itself. A model that cannot load ends the server."""
    started = time.perf_counter()
    try:
        model = _load(settings.model_path)
    except BaseException:
        _fail(settings)
    # Frozen, the loaded objects stay out of the collector's passes, which would otherwise
    # write to (and so copy) every page of them in every worker.
    gc.collect()
    gc.freeze()
    log.info("Model loaded in %.2f s, before the workers start", time.perf_counter() - started)
    return model


def _fail(settings: ServerSettings) -> NoReturn:
    log.error("Loading the model from %s failed:\n%s", settings.model_path,
              traceback.format_exc())
    Readiness(os.environ.get(READY_DIR_ENV), settings.workers).mark_failed()
    logging.shutdown()
    os._exit(STARTUP_FAILURE)


def load_and_warm(model_path: str, model: Any = None) -> tuple[Any, Any]:
    """Load the pyfunc model (unless given, preloaded) and score its own serving example once.

    The warm-up makes the first real request as fast as the rest; a stale example only warns.
    """
    from mlflow.pyfunc.scoring_server import invocations

    model = model if model is not None else _load(model_path)
    input_schema = model.metadata.get_input_schema()
    example = Path(model_path) / "serving_input_example.json"
    if example.is_file():
        try:
            invocations(mlflow_body(example.read_bytes()), "application/json", model,
                        input_schema)
        except Exception as exc:
            log.warning("Warm-up with serving_input_example.json failed: %s", exc)
    return model, input_schema


def load_model(settings: ServerSettings, state: ModelState, preloaded: Any = None) -> None:
    """The loader thread: load (or take the preloaded model) and warm up, then mark ready; on
    failure end this worker so the server stops."""
    started = time.perf_counter()
    thread_limits.restore()
    try:
        state.model, state.input_schema = load_and_warm(settings.model_path, preloaded)
        state.fast_path = FastPath.for_model(state.model)
        state.v2_content_type = v2.model_content_type(state.model)
        state.v2_inputs = v2.input_tensors(state.model)
        if state.fast_path and settings.batch_max_size > 1:
            state.batcher = Batcher(partial(_predict, state), settings.batch_max_size,
                                    settings.batch_max_wait_ms / 1000)
    except BaseException:
        _fail(settings)
    # What is loaded by now (MLflow, the model, their libraries: ~250k objects) lives as long as
    # the worker. Frozen, it is left out of the collector's full collections, which otherwise
    # scan all of it every few seconds under load and stall every request for ~150 ms.
    gc.collect()
    gc.freeze()
    seconds = time.perf_counter() - started
    metrics.MODEL_LOAD.set(seconds)
    state.ready.set()
    state.readiness.mark_ready()
    fast = state.fast_path
    log.info("Model loaded and warmed in %.2f s%s", seconds,
             "" if fast is None else " (numeric tabular fast path on; "
             + ("cheap calls on the event loop)" if fast.cost else "on predict threads)"))


class Refused(Exception):
    """A request refused before the model sees it; each protocol shapes the answer."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


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


def _busy(settings: ServerSettings) -> str:
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


def _as_json_error(status: int, text: str) -> JSONResponse:
    """MLflow answers some errors as plain text; ours are always JSON."""
    try:
        body = json.loads(text)
        if isinstance(body, dict) and "error_code" in body:
            return JSONResponse(body, status_code=status)
    except ValueError:
        pass
    return error(status, "BAD_REQUEST", text)


def _prediction_count(response: str) -> int:
    predictions = json.loads(response).get("predictions")
    return len(predictions) if isinstance(predictions, list) else 1


@cache
def _scoring_takes_bytes() -> bool:
    """MLflow's scoring function takes the raw body from 2.21 on (its FastAPI server passes
    bytes); before, its Flask server decoded the body as UTF-8 first."""
    from mlflow.version import VERSION
    from packaging.version import Version

    return Version(VERSION) >= Version("2.21")


def mlflow_body(body: bytes) -> bytes | str:
    """The body as this MLflow version's scoring function takes it."""
    if _scoring_takes_bytes():
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import BAD_REQUEST

        raise MlflowException(f"Ensure that input is a valid UTF-8 encoded string. Error: "
                              f"'{exc!r}'", BAD_REQUEST) from exc


def _mlflow_score(body: bytes, content_type: str, model: Any, schema: Any) -> tuple[Any, int]:
    """MLflow's scoring function, and how many predictions it answered (counted here, on the
    predict thread: decoding a large answer would hold the event loop)."""
    from mlflow.pyfunc import scoring_server

    result = scoring_server.invocations(mlflow_body(body), content_type, model, schema)
    ok = result.status == 200 and result.mimetype == "application/json"
    return result, _prediction_count(result.response) if ok else 0


async def _predict(state: ModelState, model_input: Input, deadline: float) -> Any:
    """The fast path's predictions: on the event loop when known to be cheap, else on a
    predict thread."""
    fast = state.fast_path
    assert fast is not None
    if fast.cheap(len(model_input)):
        return fast.predict_input(model_input)
    return await state.predictor.run(fast.predict_input, model_input, deadline=deadline)


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
            predictions = await _predict(state, model_input, deadline)
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
        result, count = await state.predictor.run(_mlflow_score, body, content_type,
                                                  state.model, state.input_schema,
                                                  deadline=deadline)
    except (DeadlineExceeded, Busy):
        raise
    except MlflowException as exc:
        return Response(content=exc.serialize_as_json(), status_code=exc.get_http_status_code(),
                        media_type="application/json")
    except Exception as exc:  # MLflow's own server answers a bare 500 here
        log.exception("Scoring failed")
        return error(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
    if result.mimetype != "application/json":
        return _as_json_error(result.status, result.response)
    metrics.ROWS.inc(count)
    return Response(content=result.response, status_code=result.status,
                    media_type="application/json")


def _describe(exc: BaseException) -> tuple[str, str]:
    """An MLflow error code and message for an exception raised by the model."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return str(exc.error_code), exc.message
    return "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"


def _failure(exc: BaseException) -> Response:
    from mlflow.exceptions import MlflowException

    status = exc.get_http_status_code() if isinstance(exc, MlflowException) else 500
    return error(status, *_describe(exc))


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
        return _failure(first.error)
    return StreamingResponse(stream.lines(first, timeout, _describe),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def create_app(settings: ServerSettings, preloaded: Any = None) -> FastAPI:
    state = ModelState(Readiness(os.environ.get(READY_DIR_ENV), settings.workers),
                       Predictor(settings.predict_threads, settings.queue_size),
                       streaming.Streams(settings.max_streams))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread_limits.restore_environment()  # in the worker, after the fork
        thread_limits.restore()  # the fast path's cheap calls run on this thread
        threading.Thread(target=load_model, args=(settings, state, preloaded),
                         name="model-loader", daemon=True).start()
        yield

    # Swagger UI and ReDoc from files in the image (fastapi-offline), not a CDN.
    app = FastAPIOffline(title="MLflow model server", version=__version__, lifespan=lifespan)
    app.state.model_state = state
    if settings.auth_token:
        app.add_middleware(BearerAuth, token=settings.auth_token)
    app.add_middleware(metrics.MetricsMiddleware)  # outermost: refused requests count too

    def openapi() -> dict[str, Any]:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        body = request_body(state.model, settings.model_path) if state.ready.is_set() else None
        schema["paths"]["/invocations"] = {"post": invocations_operation(body)}
        schema["paths"].update(v2_paths())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    front_seen = threading.Event()  # this worker has noted a front's successful check

    @app.get("/ping")
    async def ping(request: Request) -> Response:
        """Readiness: 200 once every worker has its model loaded and warmed, 503 while the
        server drains before it stops."""
        readiness = state.readiness
        if readiness.draining():
            return error(503, "TEMPORARILY_UNAVAILABLE", "The server is shutting down.")
        if not (state.ready.is_set() and readiness.all_ready()):
            return error(503, "TEMPORARILY_UNAVAILABLE", "The model is still loading.")
        if FRONT_HEADER in request.headers and not front_seen.is_set():
            readiness.mark_front_seen()
            front_seen.set()
        elif request.headers.get(PROBE_HEADER) == "behind-front" and not readiness.front_seen():
            return error(503, "TEMPORARILY_UNAVAILABLE", "No front has checked this server yet.")
        return Response(content="\n", media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        """Liveness: the process answers, whether or not the model is loaded yet."""
        return JSONResponse({"status": "ok", "model_loaded": state.ready.is_set()})

    @app.get("/version")
    async def version() -> Response:
        import mlflow

        return JSONResponse({
            "server": __version__,
            "mlflow": mlflow.__version__,
            "model_name": settings.model_name,
            "model_version": settings.model_version,
            "run_id": settings.run_id,
            "image": settings.image,
        })

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        content, media_type = metrics.render()
        return Response(content=content, media_type=media_type)

    served_by = {"x-mlflow-deployment": settings.deployment or "",
                 "x-mlflow-model-version": settings.model_version or ""}

    async def invocations(request: Request) -> Response:
        """Score a batch; every answer says which deployment and model version gave it."""
        response = await score(request)
        response.headers.update(served_by)
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
            return error(503, "TEMPORARILY_UNAVAILABLE", _busy(settings),
                         headers={"Retry-After": "1"})

    # Plain Starlette routes, matched first: FastAPI's per-request dependency solving and
    # response handling cost more than a bare answer, and these handlers read the request
    # themselves. The OpenAPI document describes them (``serving_image/openapi.py``).
    app.router.routes[0:0] = [Route("/invocations", invocations, methods=["POST"]),
                              *_v2_routes(state, settings, served_by)]
    return app


def _v2_routes(state: ModelState, settings: ServerSettings,
               served_by: dict[str, str]) -> list[Route]:
    """The Open Inference Protocol beside /invocations (``serving_image/v2.py`` decodes and
    encodes); ``{name}`` is the deployment's, its endpoint's or the registered model's."""
    names = {n for n in (settings.deployment, settings.endpoint, settings.model_name) if n}
    names = names or {"model"}

    def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def find(request: Request) -> tuple[str, str | None]:
        name, version = request.path_params["name"], request.path_params.get("version")
        if name not in names:
            raise v2.V2Error(f"Model {name} not found", 404)
        if version is not None and version != settings.model_version:
            raise v2.V2Error(f"Model {name} with version {version} not found", 404)
        return name, version

    def ready() -> bool:
        return state.ready.is_set() and state.readiness.all_ready()

    async def live(request: Request) -> Response:
        return Response(status_code=200)

    async def server_ready(request: Request) -> Response:
        return Response(status_code=200 if ready() else 503)

    async def model_metadata(request: Request) -> Response:
        try:
            name, _ = find(request)
        except v2.V2Error as exc:
            return v2_error(exc.status, str(exc))
        if not state.ready.is_set():
            return v2_error(503, f"Model {name} is not ready yet")
        return JSONResponse(v2.metadata(state.model, name, settings.model_version))

    async def model_ready(request: Request) -> Response:
        try:
            find(request)
        except v2.V2Error as exc:
            return v2_error(exc.status, str(exc))
        return Response(status_code=200 if ready() else 503)

    async def infer(request: Request) -> Response:
        response = await answer(request)
        response.headers.update(served_by)
        return response

    async def answer(request: Request) -> Response:
        deadline = asyncio.get_running_loop().time() + settings.request_timeout
        try:
            name, _ = find(request)
            body = await receive(request, settings, deadline)
            payload = orjson.loads(body)
            fast = state.fast_path
            columns = (v2.columns_of(payload, state.v2_content_type, state.v2_inputs)
                       if fast else None)
            model_input = fast.from_columns(columns) if fast and columns else None
            if fast and model_input is not None:
                if state.batcher is not None:
                    predictions = await state.batcher.submit(model_input, deadline)
                else:
                    predictions = await _predict(state, model_input, deadline)
                result = v2.encode(predictions, name, settings.model_version, payload.get("id"))
            else:
                result = await state.predictor.run(_v2_predict, state, payload, name,
                                                   settings.model_version, deadline=deadline)
            metrics.ROWS.inc(result["outputs"][0]["shape"][0] if result["outputs"] else 0)
            return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY),
                            media_type="application/json")
        except v2.V2Error as exc:
            return v2_error(exc.status, str(exc))
        except Refused as refused:
            return v2_error(refused.status, refused.message)
        except orjson.JSONDecodeError as exc:
            return v2_error(400, f"The body is not valid JSON: {exc}")
        except DeadlineExceeded:
            return v2_error(504, f"Request processing time exceeded "
                                 f"{settings.request_timeout:g} s.")
        except Busy:
            return v2_error(503, _busy(settings), headers={"Retry-After": "1"})
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException):
                return v2_error(400, exc.message)
            log.exception("V2 inference failed")
            return v2_error(500, f"{type(exc).__name__}: {exc}")

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [  # inference first: routes are matched in order
        *(Route(f"{path}/infer", infer, methods=["POST"]) for path in (model, versioned)),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", server_ready, methods=["GET"]),
        *(Route(path, model_metadata, methods=["GET"]) for path in (model, versioned)),
        *(Route(f"{path}/ready", model_ready, methods=["GET"]) for path in (model, versioned)),
    ]


def _v2_predict(state: ModelState, payload: Any, name: str,
                version: str | None) -> dict[str, Any]:
    """A V2 request the fast path does not take, decoded, predicted by MLflow's pyfunc with
    schema enforcement, and encoded, on a predict thread."""
    model_input, params = v2.decode(payload, state.v2_content_type, state.v2_inputs)
    predictions = state.model.predict(model_input, params=params)
    return v2.encode(predictions, name, version, payload.get("id"))
