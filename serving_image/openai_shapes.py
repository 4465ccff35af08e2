"""OpenAI's request and answer shapes, mapped onto MLflow's GenAI interfaces and back.

Which interface a model has (``kind``) decides which OpenAI route fits it:
- ``ResponsesAgent`` (MLflow 2.22 on): ``/v1/responses``. The body becomes a
  ``ResponsesAgentRequest`` as ``mlflow.genai.agent_server.AgentServer`` takes it, and the
  agent's response and stream events are already OpenAI's Responses shapes.
- ``ChatModel`` (MLflow 2.11 on; streams from 2.14): ``/v1/chat/completions``. It answers in
  ``chat.completion`` shape already; the ids OpenAI's types require are filled in when missing,
  and the whole-message chunks of MLflow before 2.19 become deltas.
- ``ChatAgent`` (MLflow 2.21 on): ``/v1/chat/completions``. Its messages become one
  ``chat.completion`` and its chunks ``chat.completion.chunk``s.

Plain functions on dicts: the routes (``openai_routes``) run them around the model's own
``predict`` and ``predict_stream``, on the model's thread for streams.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("serving_image")

RESPONSES = "ResponsesAgent"
CHAT_MODEL = "ChatModel"
CHAT_AGENT = "ChatAgent"

# MLflow's pyfunc wrapper of each interface (mlflow/pyfunc/loaders/), by class name: the same
# in every MLflow version that has the interface, and for models logged from code too.
_WRAPPERS = {"_ResponsesAgentPyfuncWrapper": RESPONSES, "_ChatModelPyfuncWrapper": CHAT_MODEL,
             "_ChatAgentPyfuncWrapper": CHAT_AGENT}

# What the OpenAI client sends that is not the model's input: routing and streaming are ours.
_OURS = {"model", "stream", "stream_options"}


class BadRequest(ValueError):
    """A body the route cannot map onto the model's interface."""


def kind(model: Any) -> str | None:
    """The GenAI interface of a loaded pyfunc model, or None for any other model."""
    return _WRAPPERS.get(type(getattr(model, "_model_impl", None)).__name__)


def responses_input(body: dict[str, Any]) -> dict[str, Any]:
    """A ``ResponsesAgentRequest`` as a dict, from the body the OpenAI client posts to
    ``/responses``. A string ``input`` becomes one user message; ``instructions`` a system
    message before the input (OpenAI's meaning of it); ``custom_inputs`` and ``context`` come
    in ``extra_body``. Fields the request type does not have are left out, with a log line."""
    from mlflow.types.responses import ResponsesAgentRequest

    given = body.get("input")
    if isinstance(given, str):
        items: list[Any] = [{"role": "user", "content": given}]
    elif isinstance(given, list):
        items = list(given)
    else:
        raise BadRequest("'input' is required: a string or a list of input items.")
    if body.get("instructions"):
        items.insert(0, {"role": "system", "content": body["instructions"]})
    known = set(ResponsesAgentRequest.model_fields)
    request = {k: v for k, v in body.items() if k in known and k != "stream"}
    _log_ignored(body, known | _OURS | {"instructions"}, "ResponsesAgent")
    request["input"] = items
    try:
        ResponsesAgentRequest(**request)
    except ValueError as exc:  # pydantic's ValidationError: say it before the agent runs
        raise BadRequest(f"Invalid parameters for ResponsesAgent: {exc}") from exc
    return request


def chat_input(body: dict[str, Any], model_kind: str) -> dict[str, Any]:
    """The model's input from a ``/chat/completions`` body: the messages, and the parameters
    that ChatModel's ``ChatParams`` has (a ChatAgent takes ``context`` and ``custom_inputs``);
    the rest is left out, with a log line, as MLflow does. ``max_completion_tokens`` (OpenAI's
    newer name) is ``max_tokens``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required: a non-empty list of chat messages.")
    if model_kind == CHAT_AGENT:
        known = {"context", "custom_inputs"}
        converted = [_agent_message(m) for m in messages]
    else:
        from mlflow.types.llm import ChatParams

        known = {f.name for f in dataclasses.fields(ChatParams)} - {"stream"}
        converted = [_developer_as_system(m) for m in messages]
    given = dict(body)
    if "max_completion_tokens" in given and "max_tokens" in known:
        given.setdefault("max_tokens", given.pop("max_completion_tokens"))
    _log_ignored(given, known | _OURS | {"messages"}, model_kind)
    return {"messages": converted, **{k: v for k, v in given.items() if k in known}}


def completion(answer: dict[str, Any], model_kind: str, model_name: str) -> dict[str, Any]:
    """A ``chat.completion`` from the model's answer: a ChatModel's, with OpenAI's required
    fields filled in where missing; a ChatAgent's messages as one assistant message."""
    if model_kind == CHAT_MODEL:
        return {**answer, "id": answer.get("id") or _completion_id(),
                "object": "chat.completion", "created": answer.get("created") or int(time.time()),
                "model": answer.get("model") or model_name}
    said = [m for m in answer.get("messages", []) if m.get("role") == "assistant"]
    text = "".join(m.get("content") or "" for m in said)
    found: dict[str, Any] = {
        "id": _completion_id(), "object": "chat.completion", "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": answer.get("finish_reason") or "stop"}],
        # the agent's own turn (tool calls and their results too), for clients that want it
        "messages": answer.get("messages", [])}
    for extra in ("custom_outputs", "usage"):
        if answer.get(extra) is not None:
            found[extra] = answer[extra]
    return found


def completion_chunks(chunks: Iterator[dict[str, Any]], model_kind: str,
                      model_name: str) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk``s from the model's stream: a ChatModel's as they are (ids filled
    in), a ChatAgent's assistant deltas as content deltas, then a last chunk that says
    ``finish_reason``. One id for the whole stream, as OpenAI's."""
    stream_id, created = _completion_id(), int(time.time())
    head = {"id": stream_id, "object": "chat.completion.chunk", "created": created,
            "model": model_name}
    try:
        if model_kind == CHAT_MODEL:
            for chunk in chunks:
                yield {**chunk, **{k: chunk.get(k) or v for k, v in head.items()},
                       "object": "chat.completion.chunk",
                       "choices": [_delta(choice) for choice in chunk.get("choices", [])]}
            return
        finish = "stop"
        for chunk in chunks:
            delta = chunk.get("delta") or {}
            finish = chunk.get("finish_reason") or finish
            if delta.get("role", "assistant") != "assistant" or not delta.get("content"):
                continue
            yield {**head, "choices": [{"index": 0, "finish_reason": None, "delta": {
                "role": "assistant", "content": delta["content"]}}]}
        yield {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # the model's generator stops with ours


def models_list(model_name: str, created: int) -> dict[str, Any]:
    """``GET /v1/models``: the deployment that answers, by name."""
    return {"object": "list", "data": [
        {"id": model_name, "object": "model", "created": created, "owned_by": "mlflow"}]}


def _delta(choice: dict[str, Any]) -> dict[str, Any]:
    """A chunk's choice with a ``delta``: before MLflow 2.19, a ChatModel streamed whole
    ``chat.completion`` objects, each choice with a ``message``."""
    if "delta" in choice or "message" not in choice:
        return choice
    found = {k: v for k, v in choice.items() if k != "message"}
    return {**found, "delta": choice["message"]}


def _agent_message(message: Any) -> dict[str, Any]:
    """A ChatAgent message from an OpenAI one: text parts joined (its content is a string)."""
    if not isinstance(message, dict):
        raise BadRequest("Each message must be an object with 'role' and 'content'.")
    found = _developer_as_system(message)
    content = found.get("content")
    if isinstance(content, list):
        found["content"] = "".join(part.get("text", "") for part in content
                                   if isinstance(part, dict))
    return found


def _developer_as_system(message: Any) -> dict[str, Any]:
    """OpenAI's ``developer`` role is what MLflow's interfaces call ``system``."""
    if not isinstance(message, dict):
        raise BadRequest("Each message must be an object with 'role' and 'content'.")
    return {**message, "role": "system"} if message.get("role") == "developer" else message


def _log_ignored(body: dict[str, Any], known: set[str], model_kind: str) -> None:
    ignored = sorted(set(body) - known)
    if ignored:
        log.info("Ignored %s: a %s has no such parameter", ", ".join(ignored), model_kind)


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
