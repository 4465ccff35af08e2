"""The OpenAPI operation of ``/invocations``: its request body comes from the model's signature
and input example, its answers are the scoring protocol's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_JSON_TYPES = {"double": "number", "float": "number", "long": "integer", "integer": "integer",
               "boolean": "boolean", "string": "string", "binary": "string",
               "datetime": "string"}


def _type(spec: Any) -> dict[str, Any]:
    name = getattr(getattr(spec, "type", None), "name", None)
    return {"type": _JSON_TYPES[name]} if name in _JSON_TYPES else {}


def request_body(model: Any, model_path: str) -> dict[str, Any]:
    """A requestBody object: the scoring protocol's formats, typed by the signature."""
    schema = model.metadata.get_input_schema()
    formats: dict[str, Any] = {"inputs": {}, "instances": {"type": "array"}}
    if schema is not None and schema.has_input_names() and not schema.is_tensor_spec():
        names = schema.input_names()
        types = [_type(spec) for spec in schema.inputs]
        formats["dataframe_split"] = {"type": "object", "required": ["columns", "data"],
                                      "properties": {
            "columns": {"type": "array", "items": {"type": "string", "enum": names}},
            "data": {"type": "array", "items": {"type": "array", "prefixItems": types}}}}
        formats["dataframe_records"] = {"type": "array", "items": {
            "type": "object", "properties": dict(zip(names, types, strict=True)),
            "required": [s.name for s in schema.inputs if getattr(s, "required", True)]}}
    else:
        formats["dataframe_split"] = {"type": "object"}
        formats["dataframe_records"] = {"type": "array"}
    params = model.metadata.get_params_schema()
    body: dict[str, Any] = {
        "type": "object",
        "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs.",
        "properties": formats,
    }
    if params is not None:
        body["properties"]["params"] = {"type": "object", "properties": {
            p.name: {**_type(p), "default": p.default} for p in params.params}}
    content: dict[str, Any] = {"application/json": {"schema": body},
                               "text/csv": {"schema": {"type": "string"}}}
    example = Path(model_path) / "serving_input_example.json"
    if example.is_file():
        content["application/json"]["example"] = json.loads(example.read_text())
    return {"required": True, "content": content}


_ERROR = {"application/json": {"schema": {
    "type": "object", "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}}}}}
_ANSWERS = {
    "400": "The input does not match the protocol or the model's signature",
    "401": "A bearer token is configured and was not sent",
    "413": "The body is larger than the server's limit",
    "415": "Missing or unsupported Content-Type",
    "503": "The model is still loading",
    "504": "Scoring took longer than the request timeout",
}


def invocations_operation(body: dict[str, Any] | None) -> dict[str, Any]:
    """``POST /invocations`` with ``body`` (from :func:`request_body`, ``None`` before the
    model is loaded)."""
    responses: dict[str, Any] = {"200": {
        "description": "Predictions",
        "content": {"application/json": {"schema": {
            "type": "object", "properties": {"predictions": {}}}}}}}
    responses.update({status: {"description": text, "content": _ERROR}
                      for status, text in _ANSWERS.items()})
    return {
        "summary": "Score a batch",
        "description": "MLflow's scoring protocol: JSON (dataframe_split, dataframe_records, "
                       "instances or inputs, with optional params), CSV or Parquet.",
        "operationId": "invocations",
        "requestBody": body or {"required": True, "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}}}},
        "responses": responses,
    }
