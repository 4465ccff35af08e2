"""The routes orchestrators and operators ask: readiness, liveness, version and metrics.

``/ping`` speaks the readiness protocol of ``contract``: 200 once every worker has its model
loaded and warmed, 503 while the server drains; it notes the first check of a front it answers
with 200, which the plugin's probe asks for (``--behind-front``).
"""

from __future__ import annotations

import threading

from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from serving_image import metrics
from serving_image.contract import (
    BEHIND_FRONT,
    FRONT_HEADER,
    HEALTH_PATH,
    PING_PATH,
    PROBE_HEADER,
    VERSION,
)
from serving_image.errors import error
from serving_image.model_state import ModelState
from serving_image.routes import ServerRoute
from serving_image.settings import ServerSettings


def _operation(summary: str, *answers: tuple[str, str]) -> dict[str, object]:
    return {"summary": summary, "responses": {status: {"description": text}
                                              for status, text in answers}}


def routes(state: ModelState, settings: ServerSettings) -> list[ServerRoute]:
    front_seen = threading.Event()  # this worker has noted a front's successful check

    async def ping(request: Request) -> Response:
        readiness = state.readiness
        if readiness.draining():
            return error(503, "TEMPORARILY_UNAVAILABLE", "The server is shutting down.")
        if not (state.ready.is_set() and readiness.all_ready()):
            return error(503, "TEMPORARILY_UNAVAILABLE", "The model is still loading.")
        if FRONT_HEADER in request.headers and not front_seen.is_set():
            readiness.mark_front_seen()
            front_seen.set()
        elif request.headers.get(PROBE_HEADER) == BEHIND_FRONT and not readiness.front_seen():
            return error(503, "TEMPORARILY_UNAVAILABLE", "No front has checked this server yet.")
        return Response(content="\n", media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model_loaded": state.ready.is_set()})

    async def version(request: Request) -> Response:
        import mlflow

        return JSONResponse({
            "server": VERSION,
            "mlflow": mlflow.__version__,
            "model_name": settings.model_name,
            "model_version": settings.model_version,
            "run_id": settings.run_id,
            "image": settings.image,
        })

    async def prometheus_metrics(request: Request) -> Response:
        content, media_type = metrics.render()
        return Response(content=content, media_type=media_type)

    return [
        ServerRoute(PING_PATH, ping, open=True, operation=_operation(
            "Readiness: 200 once every worker has its model loaded and warmed (no token needed)",
            ("200", "Ready"), ("503", "Loading, or shutting down"))),
        ServerRoute(HEALTH_PATH, health, open=True, operation=_operation(
            "Liveness: the process answers, loaded or not (no token needed)", ("200", "Alive"))),
        ServerRoute("/version", version, operation=_operation(
            "The server's, MLflow's and the model's versions", ("200", "Versions"))),
        ServerRoute("/metrics", prometheus_metrics, operation=_operation(
            "Prometheus metrics, summed over the workers", ("200", "Metrics"))),
    ]
