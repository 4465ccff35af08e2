"""The FastAPI application: the route table (``routes``) mounted, with auth and metrics around it.

Its entries come from ``scoring`` (``POST /invocations``, MLflow's scoring protocol), ``probes``
(readiness, liveness, version, metrics), ``v2_routes`` (the Open Inference Protocol) and
``openai_routes`` (OpenAI's Responses and Chat Completions, for GenAI models); the
model loads on a thread of its own (``model_state``), and the inference log, when on, records
the predictions (``payload_log``). Auth's open paths, the metrics' route
labels and the OpenAPI document all derive from the table.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from serving_image import (
    metrics,
    openai_routes,
    payload_log,
    probes,
    routes,
    scoring,
    streaming,
    thread_limits,
    v2_routes,
)
from serving_image.auth import BearerAuth
from serving_image.contract import VERSION
from serving_image.model_state import ModelState, load_model
from serving_image.payload_log.capture import PayloadCapture
from serving_image.predictor import Predictor
from serving_image.readiness import READY_DIR_ENV, Readiness
from serving_image.settings import ServerSettings


def create_app(settings: ServerSettings, preloaded: Any = None) -> FastAPI:
    """The server for ``settings``; ``preloaded``: the model, loaded before the fork."""
    state = ModelState(Readiness(os.environ.get(READY_DIR_ENV), settings.workers),
                       Predictor(settings.predict_threads, settings.queue_size),
                       streaming.Streams(settings.max_streams))
    table = [scoring.route(state, settings), *probes.routes(state, settings),
             *v2_routes.routes(state, settings), *openai_routes.routes(state, settings)]
    writer = payload_log.writer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread_limits.restore_environment()  # in the worker, after the fork
        thread_limits.restore()  # the fast path's cheap calls run on this thread
        threading.Thread(target=load_model, args=(settings, state, preloaded),
                         name="model-loader", daemon=True).start()
        if writer is not None:
            writer.start()
        yield
        if writer is not None:  # after the last request was answered
            writer.close(payload_log.flush_budget(settings))

    # Swagger UI and ReDoc from files in the image (fastapi-offline), not a CDN.
    app = FastAPIOffline(title="MLflow model server", version=VERSION, lifespan=lifespan)
    app.state.model_state = state
    app.router.routes[0:0] = routes.mounted(table)  # before FastAPI's own (the docs)
    if writer is not None:  # inside auth: a refused request is not recorded
        app.add_middleware(PayloadCapture, protocol_of=routes.protocol_of(table),
                           writer=writer, settings=settings)
    if settings.auth_token:
        app.add_middleware(BearerAuth, token=settings.auth_token,
                           open_paths=routes.open_paths(table),
                           openai_paths=routes.openai_paths(table))
    # outermost: refused requests count too
    app.add_middleware(metrics.MetricsMiddleware, label=routes.metric_label(table))

    def openapi() -> dict[str, Any]:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schema["paths"].update(routes.openapi_paths(table))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
