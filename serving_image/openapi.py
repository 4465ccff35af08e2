"""The OpenAPI operations of the plain routes: ``/invocations`` (its request body from the
model's signature and input example, its answers the scoring protocol's, a stream of
Server-Sent Events with ``"stream": true``), the Open Inference Protocol's ``/v2`` routes and
OpenAI's routes for GenAI models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving_image.contract import V2_LIVE_PATH, V2_READY_PATH

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
    "503": "The model is still loading, or every predict thread is busy",
    "504": "Scoring took longer than the request timeout",
}
_STREAM = {"text/event-stream": {"schema": {"type": "string", "description": (
    "With \"stream\": true in a JSON body: one 'data: <json>' line per chunk the model's "
    "predict_stream yields, then 'data: [DONE]'; an error after the first chunk ends the "
    "stream with a 'data:' line holding {\"error_code\", \"message\"}.")}}}


def invocations_operation(body: dict[str, Any] | None) -> dict[str, Any]:
    """``POST /invocations`` with ``body`` (from :func:`request_body`, ``None`` before the
    model is loaded)."""
    responses: dict[str, Any] = {"200": {
        "description": "Predictions",
        "content": {"application/json": {"schema": {
            "type": "object", "properties": {"predictions": {}}}}, **_STREAM}}}
    responses.update({status: {"description": text, "content": _ERROR}
                      for status, text in _ANSWERS.items()})
    return {
        "summary": "Score a batch",
        "description": "MLflow's scoring protocol: JSON (dataframe_split, dataframe_records, "
                       "instances or inputs, with optional params; messages, prompt or input "
                       "for chat-style models; \"stream\": true for Server-Sent Events), CSV "
                       "or Parquet.",
        "operationId": "invocations",
        "requestBody": body or {"required": True, "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}}}},
        "responses": responses,
    }


_V2_ERROR = {"application/json": {"schema": {"type": "object", "required": ["error"],
                                             "properties": {"error": {"type": "string"}}}}}
_V2_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
                                            "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                                            "FP64", "BYTES"]},
    "parameters": {"type": "object", "properties": {"content_type": {"type": "string"}}},
    "data": {"type": "array"}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "The deployment's name, or its endpoint's"}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The registered model version"}


def v2_paths() -> dict[str, Any]:
    """The Open Inference Protocol's routes, as MLServer's MLflow runtime serves them."""
    def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        content = {"application/json": {"schema": schema}} if schema else None
        return {"description": description, **({"content": content} if content else {})}

    errors = {status: {"description": text, "content": _V2_ERROR} for status, text in (
        ("400", "The inputs cannot be decoded, or the model refuses them"),
        ("401", "A bearer token is configured and was not sent"),
        ("404", "No model of that name (or version) here"),
        ("503", "The model is still loading, or every predict thread is busy"),
        ("504", "Scoring took longer than the request timeout"))}
    infer = {"post": {
        "summary": "V2 inference", "tags": ["Open Inference Protocol (V2)"],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object", "description": "content_type (pd, np, str, "
                               "dict) and the model's params"},
                "inputs": {"type": "array", "items": _V2_TENSOR}}}}}},
        "responses": {"200": answer("Outputs, encoded by type", {
            "type": "object", "properties": {
                "model_name": {"type": "string"}, "model_version": {"type": "string"},
                "id": {"type": "string"}, "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": _V2_TENSOR}}}), **errors}}}
    metadata = {"get": {"summary": "V2 model metadata, from the signature",
                        "tags": ["Open Inference Protocol (V2)"],
                        "responses": {"200": answer("Inputs and outputs", {"type": "object"}),
                                      "404": errors["404"]}}}
    ready = {"get": {"summary": "V2 model readiness", "tags": ["Open Inference Protocol (V2)"],
                     "responses": {"200": answer("Ready"), "503": answer("Loading"),
                                   "404": errors["404"]}}}
    paths: dict[str, Any] = {
        V2_LIVE_PATH: {"get": {"summary": "V2 liveness (no token needed)",
                               "tags": ["Open Inference Protocol (V2)"],
                               "responses": {"200": answer("Alive")}}},
        V2_READY_PATH: {"get": {"summary": "V2 readiness (no token needed)",
                                "tags": ["Open Inference Protocol (V2)"],
                                "responses": {"200": answer("Ready"),
                                              "503": answer("Loading")}}}}
    for base, parameters in (("/v2/models/{name}", [_NAME]),
                             ("/v2/models/{name}/versions/{version}", [_NAME, _VERSION])):
        for suffix, operation in (("", metadata), ("/ready", ready), ("/infer", infer)):
            paths[base + suffix] = {method: {**spec, "parameters": parameters}
                                    for method, spec in operation.items()}
    return paths


_OPENAI_ERROR = {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}}}
_OPENAI_ANSWERS = {
    "400": "The body does not fit the model's interface",
    "401": "A bearer token is configured and was not sent (the openai client's api_key)",
    "404": "The model is of another kind: the message names the route that fits it",
    "503": "The model is still loading, or every predict or stream thread is busy",
    "504": "The model took longer than the request timeout",
}
_MESSAGES = {"type": "array", "items": {"type": "object", "required": ["role"], "properties": {
    "role": {"type": "string"}, "content": {}}}}
_OPENAI_BODIES: dict[str, dict[str, Any]] = {
    "responses": {"type": "object", "required": ["input"], "properties": {
        "model": {"type": "string", "description": "Accepted, not used for routing"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array"}]},
        "instructions": {"type": "string", "description": "A system message before the input"},
        "stream": {"type": "boolean"}, "temperature": {"type": "number"},
        "max_output_tokens": {"type": "integer"}, "tools": {"type": "array"},
        "metadata": {"type": "object"}, "custom_inputs": {"type": "object"},
        "context": {"type": "object"}}},
    "chat": {"type": "object", "required": ["messages"], "properties": {
        "model": {"type": "string", "description": "Accepted, not used for routing"},
        "messages": _MESSAGES, "stream": {"type": "boolean"},
        "temperature": {"type": "number"}, "max_tokens": {"type": "integer"},
        "max_completion_tokens": {"type": "integer"}, "top_p": {"type": "number"},
        "stop": {}, "n": {"type": "integer"}, "tools": {"type": "array"},
        "custom_inputs": {"type": "object"}, "context": {"type": "object"}}},
}
_OPENAI_SUMMARIES = {
    "responses": ("OpenAI Responses, from a ResponsesAgent",
                  "As mlflow.genai.agent_server.AgentServer answers it; with stream: true, "
                  "'data: <event>' lines, then 'data: [DONE]'; a stream that fails ends with "
                  "'data: {\"error\": \"<message>\"}' and 'data: [DONE]'."),
    "chat": ("OpenAI Chat Completions, from a ChatModel or a ChatAgent",
             "A chat.completion; with stream: true, chat.completion.chunk lines, then "
             "'data: [DONE]'; a stream that fails after its first chunk ends with an OpenAI "
             "error object and 'data: [DONE]'."),
}


def openai_operation(kind: str) -> dict[str, Any]:
    """The operation of an OpenAI route: ``responses``, ``chat`` or ``models``."""
    tags = ["OpenAI (GenAI models)"]
    if kind == "models":
        return {"summary": "The deployment that answers, as OpenAI's model list", "tags": tags,
                "responses": {"200": {"description": "{object: list, data: [{id: <name>}]}",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}}}
    summary, description = _OPENAI_SUMMARIES[kind]
    responses: dict[str, Any] = {"200": {"description": "The answer, or its stream", "content": {
        "application/json": {"schema": {"type": "object"}},
        "text/event-stream": {"schema": {"type": "string"}}}}}
    responses.update({status: {"description": text, "content": _OPENAI_ERROR}
                      for status, text in _OPENAI_ANSWERS.items()})
    return {"summary": summary, "description": description, "tags": tags,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _OPENAI_BODIES[kind]}}},
            "responses": responses}
