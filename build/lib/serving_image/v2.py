"""The Open Inference Protocol (V2), as MLServer's MLflow runtime speaks it.

Requests are decoded by their ``content_type`` parameters as MLServer's codecs decode them: at
the request level ``pd`` (each input one column of a DataFrame), ``np`` (the first input as a
tensor), ``str`` (the first input as strings) or ``dict`` (a tensor per input name); per input
``np``, ``str``, ``base64``, ``datetime`` and ``pd_json``. Where the request names none, the
model's signature decides, as MLServer's MLflow runtime makes it decide: ``pd`` for column-based
signatures, ``dict`` or ``np`` for tensor ones, and each column's own type. Predictions are
encoded the same way: an array as one ``output-1`` tensor, a DataFrame as a tensor per column,
strings as ``BYTES``, a dict of arrays as a tensor per key.

Where MLServer fails with a bare 500 (a prediction MLflow refuses, a malformed body, an output
its codecs cannot encode: a list, a Series), this module answers a V2 error, ``{"error": ...}``
with a 4xx, or encodes the output as an array. ``tests/test_v2.py`` compares both servers.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import secrets
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

INPUT_PREFIX, OUTPUT_PREFIX = "input-", "output-"
# Response ids where the request gives none: unique per process start and answer, and cheaper
# than a uuid4 on every request.
_IDS = (f"{secrets.token_hex(6)}-{n}" for n in itertools.count())
_TO_NUMPY = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
             "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
             "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64",
             "BYTES": "bytes"}
_TO_DATATYPE = {v: k for k, v in _TO_NUMPY.items()} | {"object": "BYTES", "S": "BYTES",
                                                        "U": "BYTES"}
# MLflow column types: V2 datatype and content type (MLServer's _MLflowToContentType)
_COLUMN_TYPES = {"boolean": ("BOOL", "np"), "integer": ("INT32", "np"), "long": ("INT64", "np"),
                 "float": ("FP32", "np"), "double": ("FP64", "np"), "string": ("BYTES", "str"),
                 "binary": ("BYTES", "base64"), "datetime": ("BYTES", "datetime")}


class V2Error(Exception):
    """An answer ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# Metadata, from the signature


def _tensor_metadata(schema: Any, prefix: str) -> list[dict[str, Any]]:
    tensors = []
    for index, spec in enumerate(schema.inputs):
        if schema.is_tensor_spec():
            datatype, content_type, shape = to_datatype(spec.type), "np", list(spec.shape)
        else:
            kind = str(getattr(spec.type, "name", ""))
            datatype, content_type = _COLUMN_TYPES.get(kind, ("BYTES", "pd_json"))
            shape = [-1, 1]
        tensors.append({"name": spec.name or f"{prefix}{index}", "datatype": datatype,
                        "shape": shape, "parameters": {"content_type": content_type}})
    return tensors


def model_content_type(model: Any) -> str | None:
    """The request-level content type the signature implies (MLServer's
    ``to_model_content_type``), ``None`` without a signature."""
    schema = model.metadata.get_input_schema()
    if schema is None:
        return None
    if schema.is_tensor_spec():
        return "dict" if schema.has_input_names() else "np"
    return "pd"


def metadata(model: Any, name: str, version: str | None) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs from the signature."""
    signature = model.metadata.signature
    answer: dict[str, Any] = {"name": name, "versions": [version] if version else [],
                              "platform": "", "inputs": [], "outputs": []}
    if signature is not None:
        answer["inputs"] = _tensor_metadata(signature.inputs, INPUT_PREFIX)
        if signature.outputs is not None:
            answer["outputs"] = _tensor_metadata(signature.outputs, OUTPUT_PREFIX)
        answer["parameters"] = {"content_type": model_content_type(model)}
    return answer


def input_tensors(model: Any) -> dict[str, dict[str, Any]]:
    """The signature's inputs by name, as metadata tensors: their datatypes and content types
    decide for requests that name none."""
    signature = model.metadata.signature
    if signature is None:
        return {}
    return {t["name"]: t for t in _tensor_metadata(signature.inputs, INPUT_PREFIX)}


# ---------------------------------------------------------------------------------------------
# Decoding


def to_datatype(dtype: Any) -> str:
    """A NumPy (or pandas) dtype's V2 datatype: by name, else by kind (strings, objects and
    pandas' string dtype are BYTES)."""
    return _TO_DATATYPE.get(str(dtype)) or _TO_DATATYPE.get(getattr(dtype, "kind", ""), "BYTES")


def _content_type(item: dict[str, Any]) -> str | None:
    parameters = item.get("parameters") or {}
    return parameters.get("content_type") if isinstance(parameters, dict) else None


def _check_input(item: Any) -> dict[str, Any]:
    if (not isinstance(item, dict) or not isinstance(item.get("name"), str)
            or item.get("datatype") not in _TO_NUMPY or not isinstance(item.get("shape"), list)
            or "data" not in item):
        raise V2Error("Each input needs a name, a shape, a datatype (BOOL, INT8-64, UINT8-64, "
                      "FP16/32/64 or BYTES) and data.")
    return item


def _dtype(item: dict[str, Any]) -> np.dtype:
    if item["datatype"] == "BYTES":
        data = item["data"]
        if isinstance(data, list) and all(isinstance(v, str) for v in data):
            return np.dtype(str)
        return np.dtype((bytes, item["shape"][-1]))
    return np.dtype(_TO_NUMPY[item["datatype"]])


def _strings(data: Any) -> list[str]:
    values = data if isinstance(data, list) else [data]
    return [v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else ""
            for v in values]


def _decode_input(item: dict[str, Any], content_type: str | None) -> Any:
    """One input by its content type (MLServer's input codecs); the raw data without one."""
    data = item["data"]
    if content_type == "np":
        return np.array(data, _dtype(item)).reshape(item["shape"])
    if content_type == "str":
        return _strings(data)
    if content_type == "base64":
        return [base64.b64decode(v) for v in _strings(data)]
    if content_type == "datetime":
        return [datetime.fromisoformat(v) for v in _strings(data)]
    return data


def _series(item: dict[str, Any], decoded: Any) -> pd.Series:
    """A DataFrame column (MLServer's ``_to_series``)."""
    if _content_type(item) == "pd_json":
        return pd.Series([json.loads(v) for v in _strings(item["data"])])
    if item["datatype"] == "BYTES":
        return pd.Series(decoded)
    if isinstance(decoded, np.ndarray):
        decoded = decoded.reshape(item["shape"][0], 1).squeeze(axis=1)
    return pd.Series(decoded, dtype=_dtype(item))


def decode(request: Any, default_content_type: str | None,
           tensors: dict[str, dict[str, Any]]) -> tuple[Any, dict[str, Any] | None]:
    """The model input and params for a V2 inference request."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise V2Error("The body must be a JSON object with a list of 'inputs'.")
    inputs = [_check_input(item) for item in request["inputs"]]
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error("'parameters' must be an object.")
    params = {k: v for k, v in parameters.items() if k not in ("content_type", "headers")}
    try:
        decoded = {item["name"]: _decode_input(item, _content_type(item) or _content_type(
            tensors.get(item["name"], {}))) for item in inputs}
        content_type = parameters.get("content_type") or default_content_type
        if content_type == "pd":
            model_input: Any = pd.DataFrame({item["name"]: _series(item, decoded[item["name"]])
                                             for item in inputs})
        elif content_type in ("np", "str"):
            if len(inputs) != 1:
                raise V2Error(f"The '{content_type}' codec only supports a single input "
                              f"tensor ({len(inputs)} were received)")
            model_input = _decode_input(inputs[0], content_type)
        elif content_type in ("dict", None):
            model_input = decoded
        else:
            raise V2Error(f"Unknown content type '{content_type}': use pd, np, str or dict.")
    except (ValueError, TypeError) as exc:  # data that does not fit its shape or datatype
        raise V2Error(f"The inputs cannot be decoded: {exc}") from exc
    return model_input, params or None


def columns_of(request: Any, default_content_type: str | None,
               tensors: dict[str, dict[str, Any]]) -> dict[str, list[Any]] | None:
    """For the fast path: a ``pd`` request's numeric columns, each of the very datatype of its
    signature column (FP64 for double, INT64 for long: values that MLflow's schema enforcement
    keeps as they are, where it refuses int64 for double), or ``None``."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        return None
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict) or set(parameters) - {"content_type"}:
        return None
    if (parameters.get("content_type") or default_content_type) != "pd":
        return None
    columns: dict[str, list[Any]] = {}
    for item in request["inputs"]:
        try:
            name, data, shape = item["name"], item["data"], item["shape"]
            if (item["datatype"] != tensors[name]["datatype"] or "parameters" in item
                    or type(data) is not list or shape[0] != len(data)
                    or (len(shape) > 1 and shape[1:] != [1])):  # a column: [N] or [N, 1]
                return None
        except (KeyError, TypeError, IndexError):
            return None
        columns[name] = data
    return columns


# ---------------------------------------------------------------------------------------------
# Encoding


def _batch_shape(shape: list[int]) -> list[int]:
    return shape if len(shape) > 1 else [*shape, 1]


def _array_output(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = to_datatype(array.dtype)
    data = array.flatten().tolist()
    if datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else v for v in data]
    elif array.dtype.kind == "f" and np.isnan(array).any():
        data = [None if math.isnan(v) else v for v in data]
    return {"name": name, "shape": _batch_shape(list(array.shape)), "datatype": datatype,
            "parameters": {"content_type": "np"}, "data": data}


def _column_output(series: pd.Series) -> dict[str, Any]:
    datatype = to_datatype(series.dtype)
    data = series.tolist()
    if series.isnull().any():
        data = [None if isinstance(v, float) and math.isnan(v) else v for v in data]
    output: dict[str, Any] = {"name": str(series.name),
                              "shape": _batch_shape(list(series.shape)), "datatype": datatype}
    if datatype == "BYTES":
        if all(isinstance(v, (str, bytes)) for v in data):
            data = [v.decode() if isinstance(v, bytes) else v for v in data]
            output["parameters"] = {"content_type": "str"}
        else:
            data = [json.dumps(v) for v in data]
            output["parameters"] = {"content_type": "pd_json"}
    output["data"] = data
    return output


def encode(predictions: Any, name: str, version: str | None,
           request_id: str | None) -> dict[str, Any]:
    """The V2 inference response for what the model returned."""
    if isinstance(predictions, pd.DataFrame):
        content_type, outputs = "pd", [_column_output(predictions[c]) for c in predictions]
    elif isinstance(predictions, dict) and all(isinstance(v, np.ndarray)
                                               for v in predictions.values()):
        content_type = "dict"
        outputs = [_array_output(str(k), v) for k, v in predictions.items()]
    elif isinstance(predictions, list) and predictions and all(isinstance(v, str)
                                                               for v in predictions):
        content_type = "str"
        outputs = [{"name": f"{OUTPUT_PREFIX}1", "shape": [len(predictions), 1],
                    "datatype": "BYTES", "parameters": {"content_type": "str"},
                    "data": predictions}]
    else:  # an array; also a Series or a list of numbers, which MLServer cannot encode
        content_type = "np"
        outputs = [_array_output(f"{OUTPUT_PREFIX}1", np.asarray(predictions))]
    answer: dict[str, Any] = {"model_name": name}
    if version:
        answer["model_version"] = version
    answer.update({"id": request_id or next(_IDS),
                   "parameters": {"content_type": content_type}, "outputs": outputs})
    return answer
