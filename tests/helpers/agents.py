"""Toy GenAI models of each interface, deterministic (no LLM, no network), as models-from-code so
that an image can load them: a ResponsesAgent, a ChatAgent and a ChatModel.

Each answers "<kind>: <last user text>" and streams it word by word. What the text asks steers
it, so one model serves every test:
- ``fail`` in the text: raise after the first chunk of a stream (and at once when not streamed);
- ``slow`` in the text: 200 ms before each chunk, and each chunk's text starts with the time it
  was yielded (``time.time()``), for time-to-first-token;
- ``stall`` in the text: 1.5 s before the third chunk, for the timeout on gaps in a stream.
Parameters that the interface carries (temperature, max tokens, custom inputs) are echoed.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from tests.helpers.models import HOST_ONLY

RESPONSES_AGENT = '''
import time
import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentResponse, ResponsesAgentStreamEvent


def _text(request):
    for item in reversed(request.input):
        item = item.model_dump()
        if item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content)
            return content or ""
    return ""


class Echo(ResponsesAgent):
    def predict(self, request):
        text = _text(request)
        if "fail" in text:
            raise ValueError("the agent failed: " + text)
        answer = f"responses: {text} t={request.temperature} max={request.max_output_tokens}"
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(answer, "msg-1")],
            custom_outputs=request.custom_inputs)

    def predict_stream(self, request):
        text = _text(request)
        words = f"responses: {text}".split()
        for i, word in enumerate(words):
            if "slow" in text:
                time.sleep(0.2)
                word = f"{time.time():.6f} {word}"
            if i == 2 and "stall" in text:
                time.sleep(1.5)
            if i == 1 and "fail" in text:
                raise ValueError("the agent failed mid-stream")
            yield ResponsesAgentStreamEvent(**self.create_text_delta(word + " ", "msg-1"))
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done",
            item=self.create_text_output_item(" ".join(words), "msg-1"))


mlflow.models.set_model(Echo())
'''

CHAT_AGENT = '''
import time
import mlflow
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentChunk, ChatAgentMessage, ChatAgentResponse


def _text(messages):
    return next((m.content or "" for m in reversed(messages) if m.role == "user"), "")


class Echo(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        text = _text(messages)
        if "fail" in text:
            raise ValueError("the agent failed: " + text)
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=f"chat agent: {text}",
                                       id="msg-1")],
            custom_outputs=custom_inputs)

    def predict_stream(self, messages, context=None, custom_inputs=None):
        text = _text(messages)
        for i, word in enumerate(f"chat agent: {text}".split()):
            if "slow" in text:
                time.sleep(0.2)
                word = f"{time.time():.6f} {word}"
            if i == 2 and "stall" in text:
                time.sleep(1.5)
            if i == 1 and "fail" in text:
                raise ValueError("the agent failed mid-stream")
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=word + " ",
                                                        id="msg-1"))


mlflow.models.set_model(Echo())
'''

CHAT_MODEL = '''
import time
import mlflow
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import (ChatChoice, ChatChoiceDelta, ChatChunkChoice,
                              ChatCompletionChunk, ChatCompletionResponse, ChatMessage)


def _text(messages):
    return next((m.content or "" for m in reversed(messages) if m.role == "user"), "")


class Echo(ChatModel):
    def predict(self, context, messages, params):
        text = _text(messages)
        if "fail" in text:
            raise ValueError("the model failed: " + text)
        answer = f"chat model: {text} t={params.temperature} max={params.max_tokens}"
        return ChatCompletionResponse(choices=[ChatChoice(
            index=0, message=ChatMessage(role="assistant", content=answer))])

    def predict_stream(self, context, messages, params):
        text = _text(messages)
        for i, word in enumerate(f"chat model: {text}".split()):
            if "slow" in text:
                time.sleep(0.2)
                word = f"{time.time():.6f} {word}"
            if i == 2 and "stall" in text:
                time.sleep(1.5)
            if i == 1 and "fail" in text:
                raise ValueError("the model failed mid-stream")
            yield ChatCompletionChunk(choices=[ChatChunkChoice(
                index=0, delta=ChatChoiceDelta(role="assistant", content=word + " "))])


mlflow.models.set_model(Echo())
'''

AGENTS = {"responses": RESPONSES_AGENT, "chat_agent": CHAT_AGENT, "chat_model": CHAT_MODEL}


def save_agent(kind: str, path: Path) -> Path:
    """Save the toy model of ``kind`` (a key of AGENTS) at ``path``."""
    code = path.parent / f"{kind}.py"
    code.write_text(AGENTS[kind])
    mlflow.pyfunc.save_model(path, python_model=str(code), pip_requirements=HOST_ONLY)
    return path
