"""MLflow's own scoring function, called as the MLflow version in the image expects.

The server answers what its fast path does not take with ``mlflow.pyfunc.scoring_server``'s
``invocations``, so that answers and errors are MLflow's to the letter.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any


def _prediction_count(response: str) -> int:
    """The predictions in an answer: under ``predictions``, or the answer itself for a unified
    LLM input (``{"prompt": ...}``, ``{"messages": ...}``), which MLflow answers unwrapped."""
    answer = json.loads(response)
    predictions = answer.get("predictions") if isinstance(answer, dict) else answer
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


def score(body: bytes, content_type: str, model: Any, schema: Any) -> tuple[Any, int]:
    """MLflow's scoring function, and how many predictions it answered (counted here, on the
    predict thread: decoding a large answer would hold the event loop)."""
    from mlflow.pyfunc import scoring_server

    result = scoring_server.invocations(mlflow_body(body), content_type, model, schema)
    ok = result.status == 200 and result.mimetype == "application/json"
    return result, _prediction_count(result.response) if ok else 0
