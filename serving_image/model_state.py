"""The model a worker serves: loaded (or taken from the preloading parent) on a thread of its
own, warmed up, then marked ready; and how its fast path predicts.

The model loads in a background thread so that ``/health`` (liveness) answers while a large
model loads, and ``/ping`` (readiness) answers 200 only once every worker has it loaded and
warmed. A model that fails to load ends the worker with uvicorn's start-up failure code, which
stops the server, so a broken deployment exits at once instead of restarting forever.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from serving_image import errors, metrics, streaming, thread_limits, v2
from serving_image.batching import Batcher, Input
from serving_image.fast_path import FastPath
from serving_image.mlflow_scoring import mlflow_body
from serving_image.predictor import Predictor
from serving_image.readiness import READY_DIR_ENV, STARTUP_FAILURE, Readiness
from serving_image.settings import ServerSettings

log = logging.getLogger("serving_image")


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


async def predict(state: ModelState, model_input: Input, deadline: float) -> Any:
    """The fast path's predictions: on the event loop when known to be cheap, else on a
    predict thread."""
    fast = state.fast_path
    assert fast is not None
    if fast.cheap(len(model_input)):
        return fast.predict_input(model_input)
    return await state.predictor.run(fast.predict_input, model_input, deadline=deadline)


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
    exc = sys.exc_info()[1]
    hint = errors.read_only_hint(exc).strip() if exc else ""
    log.error("Loading the model from %s failed:\n%s%s", settings.model_path,
              traceback.format_exc(), hint)
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
            state.batcher = Batcher(partial(predict, state), settings.batch_max_size,
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
