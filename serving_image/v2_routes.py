"""The Open Inference Protocol (V2) beside ``/invocations``, as MLServer's MLflow runtime speaks
it: ``v2`` decodes and encodes; ``{name}`` is the deployment's, its endpoint's or the registered
model's. Errors take V2's shape, ``{"error": "<message>"}``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from serving_image import metrics, v2
from serving_image.bodies import busy, receive
from serving_image.contract import V2_LIVE_PATH, V2_READY_PATH
from serving_image.errors import Refused, describe
from serving_image.model_state import ModelState, predict
from serving_image.openapi import v2_paths
from serving_image.predictor import Busy, DeadlineExceeded
from serving_image.routes import ServerRoute
from serving_image.scoring import served_by
from serving_image.settings import ServerSettings

log = logging.getLogger("serving_image")


def routes(state: ModelState, settings: ServerSettings) -> list[ServerRoute]:
    """The Open Inference Protocol beside /invocations (``serving_image/v2.py`` decodes and
    encodes); ``{name}`` is the deployment's, its endpoint's or the registered model's."""
    names = {n for n in (settings.deployment, settings.endpoint, settings.model_name) if n}
    names = names or {"model"}
    headers = served_by(settings)

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
        response.headers.update(headers)
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
                    predictions = await predict(state, model_input, deadline)
                result = v2.encode(predictions, name, settings.model_version, payload.get("id"))
            else:
                result = await state.predictor.run(_predict_v2, state, payload, name,
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
            return v2_error(503, busy(settings), headers={"Retry-After": "1"})
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException):
                return v2_error(400, exc.message)
            log.exception("V2 inference failed")
            return v2_error(500, describe(exc)[1])

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    documented = v2_paths()

    def entry(path: str, handler: Any, method: str = "GET", **kwargs: Any) -> ServerRoute:
        return ServerRoute(path, handler, (method,), documented[path][method.lower()], **kwargs)

    # one metric label for a model's routes, another for its inference, whatever the version
    return [  # inference first: routes are matched in order
        *(entry(f"{path}/infer", infer, "POST", metric=f"{model}/infer", protocol="v2")
          for path in (model, versioned)),
        entry(V2_LIVE_PATH, live, open=True),
        entry(V2_READY_PATH, server_ready, open=True),
        *(entry(path, model_metadata, metric=model) for path in (model, versioned)),
        *(entry(f"{path}/ready", model_ready, metric=model) for path in (model, versioned)),
    ]


def _predict_v2(state: ModelState, payload: Any, name: str,
                version: str | None) -> dict[str, Any]:
    """A V2 request the fast path does not take, decoded, predicted by MLflow's pyfunc with
    schema enforcement, and encoded, on a predict thread."""
    model_input, params = v2.decode(payload, state.v2_content_type, state.v2_inputs)
    predictions = state.model.predict(model_input, params=params)
    return v2.encode(predictions, name, version, payload.get("id"))
