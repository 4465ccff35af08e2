"""Talking to a deployment's endpoint: MLflow's scoring protocol from the client side."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import requests
from mlflow.deployments import PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

PAYLOAD_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# MLflow's unified LLM input: a body holding one of these is the model's input as it is
LLM_KEYS = ("messages", "prompt", "input")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def payload(inputs: Any) -> dict[str, Any]:
    """The request body for ``inputs`` as MLflow's own clients build it.

    A DataFrame goes as ``dataframe_split``; an ndarray, a list or a dict of columns as
    ``inputs``; a dict that already holds one of the protocol's keys, or is chat-style unified
    input (``messages``, ``prompt``, ``input``), is sent as it is.
    """
    if isinstance(inputs, pd.DataFrame):
        body = _protocol_body(inputs)
        if body is not None:
            return body
        return {"dataframe_split": json.loads(inputs.to_json(orient="split", date_format="iso"))}
    if isinstance(inputs, pd.Series):
        return {"inputs": json.loads(inputs.to_json(orient="values", date_format="iso"))}
    if isinstance(inputs, dict):
        if any(key in inputs for key in PAYLOAD_KEYS + LLM_KEYS):
            return inputs
        return {"inputs": inputs}
    if isinstance(inputs, (np.ndarray, list, tuple)):
        return {"inputs": inputs}
    raise MlflowException(
        f"Cannot send inputs of type {type(inputs).__name__}: pass a pandas DataFrame, a numpy "
        "array, a list or a dict.", INVALID_PARAMETER_VALUE)


def _protocol_body(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The scoring-protocol body that ``pandas.read_json`` turned into ``frame``, if it was one.

    ``mlflow deployments predict --input-path`` reads the file with ``read_json``: a body such
    as ``{"dataframe_split": {...}}`` (what curl sends) becomes one column named after the key
    (and one for ``params``). Rebuilt, the same file works with curl and with predict.
    """
    keys = [c for c in frame.columns if c in PAYLOAD_KEYS]
    if len(keys) != 1 or not set(frame.columns) <= {keys[0], "params"}:
        return None
    cells = frame[keys[0]].dropna()
    if keys[0] in ("inputs", "instances") and not all(isinstance(v, (list, dict))
                                                      for v in cells):
        return None  # a model column that happens to be named so
    body = {}
    for column in frame.columns:
        values = frame[column].dropna()
        if list(values.index) == list(range(len(values))):
            body[column] = values.tolist()
        else:
            body[column] = values.to_dict()
    return body


def _post(url: str, body: dict[str, Any], timeout: float, token: str | None,
          headers: dict[str, str] | None, stream: bool = False) -> requests.Response:
    """POST a scoring-protocol body to ``<url>/invocations``; a status other than 200 becomes
    an MlflowException carrying the server's own message."""
    headers = {**(headers or {}), "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    session = requests.Session()
    session.trust_env = False  # the endpoint is the engine's host, never a proxy's
    try:
        response = session.post(f"{url}/invocations", data=json.dumps(body, default=_jsonable),
                                timeout=timeout, headers=headers, stream=stream,
                                verify=trust())
    except requests.exceptions.SSLError as exc:
        raise MlflowException(
            f"Could not verify the certificate of the deployment at {url}: {exc}. If a CA of "
            f"your own signed it, set {CA_BUNDLE_ENV} to that CA's PEM file (or add the CA to "
            "this machine's trust store).") from exc
    except requests.RequestException as exc:
        raise MlflowException(f"Could not reach the deployment at {url}: {exc}") from exc
    if response.status_code != 200:
        with response:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            raise _server_error(url, response.status_code, answer, response.text)
    return response


CA_BUNDLE_ENV = "REQUESTS_CA_BUNDLE"


def trust() -> str | bool:
    """What an HTTPS endpoint's certificate is verified with, as requests itself chooses (the
    session ignores the environment, so that no proxy is used): the CA file that
    ``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) names, else the system's trust. Never off."""
    return os.environ.get(CA_BUNDLE_ENV) or os.environ.get("CURL_CA_BUNDLE") or True


def invoke(url: str, inputs: Any, timeout: float = 120.0, token: str | None = None,
           headers: dict[str, str] | None = None) -> PredictionsResponse:
    """POST ``inputs`` to ``<url>/invocations``; a server error becomes an MlflowException."""
    response = _post(url, payload(inputs), timeout, token, headers)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise _server_error(url, response.status_code, answer, response.text)
    return PredictionsResponse(answer)


def invoke_stream(url: str, inputs: Any, timeout: float = 120.0, token: str | None = None,
                  headers: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """POST ``inputs`` with ``"stream": true`` and yield the chunks of the Server-Sent Events
    answer as dicts; an error line (or status) becomes an MlflowException.

    ``timeout`` bounds the connection and each wait for a chunk, not the whole stream.
    """
    response = _post(url, {**payload(inputs), "stream": True}, timeout, token,
                     {**(headers or {}), "Accept": "text/event-stream"}, stream=True)
    with response:
        response.encoding = "utf-8"
        for line in response.iter_lines(decode_unicode=True):
            if not line.strip():
                continue
            key, _, value = line.partition(":")
            if key != "data":
                raise MlflowException(f"The deployment at {url} sent {line!r} in a stream, "
                                      "where only 'data: <json>' lines belong.")
            value = value.strip()
            if value == "[DONE]":
                return
            chunk = json.loads(value)
            if isinstance(chunk, dict) and set(chunk) == {"error_code", "message"}:
                raise _server_error(url, 500, chunk, value)
            yield chunk
    raise MlflowException(f"The stream from {url} ended without [DONE]: the connection was "
                          "cut before the model finished.")


def _server_error(url: str, status: int, answer: Any, text: str) -> MlflowException:
    """The server's own message and error code, as an MlflowException."""
    message = code = None
    if isinstance(answer, dict):
        message, code = answer.get("message"), answer.get("error_code")
    if code in ErrorCode.keys():  # noqa: SIM118 (a protobuf enum, not a dict)
        error_code = ErrorCode.Value(code)
    elif 400 <= status < 500:
        error_code = INVALID_PARAMETER_VALUE
    else:
        error_code = ErrorCode.Value("INTERNAL_ERROR")
    return MlflowException(
        f"The deployment at {url} answered {status}: {message or text[:2000]}", error_code)
