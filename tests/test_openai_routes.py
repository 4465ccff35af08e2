"""OpenAI's routes for GenAI models, called with the official ``openai`` client against real
server processes serving toy models of each interface (tests/helpers/agents.py); and the
mapping of OpenAI's bodies onto MLflow's interfaces."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import openai
import pytest
import requests

from serving_image import openai_shapes
from tests.helpers.agents import save_agent
from tests.helpers.models import save_iris
from tests.helpers.servers import serve_model, stop

TOKEN = "sk-test-token"
SETTINGS = {"SCORING_WORKERS": "1", "SCORING_AUTH_TOKEN": TOKEN, "SCORING_DEPLOYMENT": "echo",
            "SCORING_MAX_STREAMS": "1", "SCORING_REQUEST_TIMEOUT": "5"}
USER = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A server per model kind: the three GenAI interfaces and a tabular model."""
    root = tmp_path_factory.mktemp("agents")
    started = {}
    try:
        for kind in ("responses", "chat_model", "chat_agent"):
            started[kind] = serve_model(save_agent(kind, root / kind), env=SETTINGS)
        save_iris(root / "iris")
        started["iris"] = serve_model(root / "iris", env=SETTINGS)
        yield {kind: url for kind, (_, url) in started.items()}
    finally:
        for process, _ in started.values():
            stop(process)


def client(url: str) -> openai.OpenAI:
    """The openai client as users make it: the endpoint's /v1, the token as api_key."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)


def test_responses_answered_and_streamed(servers: dict[str, str]) -> None:
    agent = client(servers["responses"])
    answer = agent.responses.create(model="echo", input="hi there", temperature=0.5,
                                    max_output_tokens=7, extra_body={"custom_inputs": {"k": 1}})
    assert answer.output_text == "responses: hi there t=0.5 max=7"
    assert answer.model_extra and answer.model_extra["custom_outputs"] == {"k": 1}
    # a list of items, as the client sends a conversation; /responses without /v1 too
    bare = openai.OpenAI(base_url=servers["responses"], api_key=TOKEN, max_retries=0)
    assert bare.responses.create(model="x", input=USER).output_text.startswith("responses: hi")
    events = list(agent.responses.create(model="echo", input="hi there", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["responses: ", "hi ", "there "]
    assert events[-1].type == "response.output_item.done"


def test_instructions_become_a_system_message_before_the_input(servers: dict[str, str]) -> None:
    """The toy agent answers the last user message; the system message must not displace it."""
    answer = client(servers["responses"]).responses.create(
        model="echo", input="hi there", instructions="be brief")
    assert answer.output_text.startswith("responses: hi there")
    request = openai_shapes.responses_input({"input": "hi", "instructions": "be brief"})
    assert [i["role"] for i in request["input"]] == ["system", "user"]


@pytest.mark.parametrize("kind", ["chat_model", "chat_agent"])
def test_chat_completions_answered_and_streamed(servers: dict[str, str], kind: str) -> None:
    chat = client(servers[kind])
    answer = chat.chat.completions.create(model="echo", messages=USER, temperature=0.25,
                                          max_completion_tokens=9)
    prefix = kind.replace("_", " ")
    text = answer.choices[0].message.content
    assert text is not None and text.startswith(f"{prefix}: hi there")
    if kind == "chat_model":  # ChatParams carries both; a ChatAgent has no such params
        assert text.endswith("t=0.25 max=9")
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == "echo"
    chunks = list(chat.chat.completions.create(model="echo", messages=USER, stream=True))
    words = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert words == f"{prefix}: hi there "
    assert {c.id for c in chunks} == {chunks[0].id}  # one id for the whole stream
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_models_list_names_the_deployment(servers: dict[str, str]) -> None:
    for url in servers.values():
        assert [m.id for m in client(url).models.list()] == ["echo"]


@pytest.mark.parametrize("kind", ["responses", "chat_model", "chat_agent"])
def test_a_stream_that_fails_after_its_first_chunk_makes_the_client_raise(
        servers: dict[str, str], kind: str) -> None:
    got: list[object] = []
    with pytest.raises(openai.APIError):
        if kind == "responses":
            stream = client(servers[kind]).responses.create(
                model="echo", input="please fail now", stream=True)
        else:
            stream = client(servers[kind]).chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "please fail now"}],
                stream=True)
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 1  # the first chunk came, then the error


def test_failed_stream_framing(servers: dict[str, str]) -> None:
    """Responses: AgentServer's {"error": "<message>"}; chat: OpenAI's error object; each then
    [DONE]."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    lines = _sse(f"{servers['responses']}/v1/responses", auth,
                 {"input": "please fail now", "stream": True})
    assert lines[-2:] == ['data: {"error":"the agent failed mid-stream"}', "data: [DONE]"]
    lines = _sse(f"{servers['chat_agent']}/v1/chat/completions", auth,
                 {"messages": [{"role": "user", "content": "please fail now"}], "stream": True})
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["message"] == "ValueError: the agent failed mid-stream"
    assert error["type"] == "server_error"


def test_an_error_before_any_chunk(servers: dict[str, str]) -> None:
    """Not streamed, a model error is an OpenAI error with its status; the client raises the
    matching class."""
    with pytest.raises(openai.InternalServerError, match="the agent failed"):
        client(servers["responses"]).responses.create(model="echo", input="fail")
    with pytest.raises(openai.InternalServerError, match="the model failed"):
        client(servers["chat_model"]).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "fail"}])


@pytest.mark.parametrize(("kind", "route", "fits"), [
    ("responses", "chat", "/v1/responses"),
    ("chat_model", "responses", "/v1/chat/completions"),
    ("chat_agent", "responses", "/v1/chat/completions"),
    ("iris", "responses", "/invocations"),
    ("iris", "chat", "/invocations"),
])
def test_a_model_of_another_kind_gets_404_naming_the_route_that_fits(
        servers: dict[str, str], kind: str, route: str, fits: str) -> None:
    with pytest.raises(openai.NotFoundError, match=fits) as raised:
        if route == "responses":
            client(servers[kind]).responses.create(model="echo", input="hi")
        else:
            client(servers[kind]).chat.completions.create(model="echo", messages=USER)
    assert set(raised.value.body) >= {"message", "type", "code"}  # type: ignore[arg-type]
    assert raised.value.response.headers["x-mlflow-deployment"] == "echo"


def test_the_token_is_the_api_key_and_refusals_are_openai_shaped(
        servers: dict[str, str]) -> None:
    wrong = openai.OpenAI(base_url=f"{servers['chat_model']}/v1", api_key="wrong",
                          max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.chat.completions.create(model="echo", messages=USER)
    assert raised.value.body["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="'messages' is required"):
        client(servers["chat_model"]).chat.completions.create(model="echo", messages=[])
    with pytest.raises(openai.BadRequestError, match="Invalid parameters for ResponsesAgent"):
        client(servers["responses"]).responses.create(model="echo", input=[{"role": 3}])
    # /invocations keeps MLflow's shape
    plain = requests.post(f"{servers['chat_model']}/invocations", json={"messages": USER},
                          timeout=30)
    assert plain.status_code == 401 and set(plain.json()) == {"error_code", "message"}


def test_streams_beyond_max_streams_are_refused_at_once(servers: dict[str, str]) -> None:
    """One stream thread (max_streams=1): a slow stream holds it, the next gets 503."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.stream("POST", f"{servers['chat_agent']}/v1/chat/completions", headers=auth,
                      json={"messages": [{"role": "user", "content": "slow one two"}],
                            "stream": True}, timeout=30) as held:
        next(held.iter_lines())
        with pytest.raises(openai.InternalServerError, match="max_streams"):
            list(client(servers["chat_agent"]).chat.completions.create(
                model="echo", messages=USER, stream=True))
    # the held stream's generator stops after its current chunk, and frees its thread
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(openai.InternalServerError):
            list(client(servers["chat_agent"]).chat.completions.create(
                model="echo", messages=USER, stream=True))
            return
        time.sleep(0.1)
    raise AssertionError("the stream thread was not freed")


def test_metrics_carry_the_route_and_openapi_describes_it(servers: dict[str, str]) -> None:
    url, auth = servers["chat_model"], {"Authorization": f"Bearer {TOKEN}"}
    client(url).chat.completions.create(model="echo", messages=USER)
    metrics = requests.get(f"{url}/metrics", headers=auth, timeout=30).text
    assert 'route="/v1/chat/completions"' in metrics
    paths = requests.get(f"{url}/openapi.json", headers=auth, timeout=30).json()["paths"]
    for path in ("/v1/responses", "/responses", "/v1/chat/completions", "/v1/models"):
        assert path in paths
    assert "messages" in paths["/v1/chat/completions"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]


def test_invocations_unchanged_for_genai_models(servers: dict[str, str]) -> None:
    """The same agent on /invocations: MLflow's answer and MLflow's stream framing."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = requests.post(f"{servers['chat_agent']}/invocations", headers=auth,
                           json={"messages": USER}, timeout=30).json()
    assert answer["messages"][0]["content"] == "chat agent: hi there"
    lines = _sse(f"{servers['chat_agent']}/invocations", auth,
                 {"messages": [{"role": "user", "content": "please fail"}], "stream": True})
    assert json.loads(lines[-1][6:])["error_code"] == "INTERNAL_ERROR"  # no [DONE]


def test_chat_input_mapping(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serving_image")
    body = {"model": "m", "messages": [{"role": "developer", "content": "be brief"}, *USER],
            "max_completion_tokens": 5, "temperature": 0.1, "seed": 3, "stream": True}
    mapped = openai_shapes.chat_input(body, openai_shapes.CHAT_MODEL)
    assert mapped == {"messages": [{"role": "system", "content": "be brief"}, *USER],
                      "max_tokens": 5, "temperature": 0.1}
    assert "Ignored seed" in caplog.text
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                       {"type": "text", "text": "b"}]}],
             "custom_inputs": {"x": 1}, "temperature": 0.3}
    assert openai_shapes.chat_input(parts, openai_shapes.CHAT_AGENT) == {
        "messages": [{"role": "user", "content": "ab"}], "custom_inputs": {"x": 1}}
    with pytest.raises(openai_shapes.BadRequest):
        openai_shapes.responses_input({"model": "m"})


def _sse(url: str, headers: dict[str, str], body: dict) -> list[str]:
    answer = requests.post(url, headers=headers, json=body, stream=True, timeout=30)
    assert answer.status_code == 200, answer.text
    return [line for line in answer.iter_lines(decode_unicode=True) if line]



@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Servers whose request_timeout (1 s) is shorter than the toy models' stall (1.5 s)."""
    root = tmp_path_factory.mktemp("impatient")
    started = {kind: serve_model(save_agent(kind, root / kind),
                                 env={"SCORING_WORKERS": "1", "SCORING_REQUEST_TIMEOUT": "1"})
               for kind in ("responses", "chat_agent")}
    yield {kind: url for kind, (_, url) in started.items()}
    for process, _ in started.values():
        stop(process)


def test_request_timeout_bounds_each_gap_in_a_stream(impatient: dict[str, str]) -> None:
    late = "No chunk came within 1 s of the last one."
    lines = _sse(f"{impatient['responses']}/v1/responses", {},
                 {"input": "stall here now", "stream": True})
    assert len(lines) == 4  # two chunks, then the error and [DONE]
    assert lines[-2:] == [f'data: {{"error":"{late}"}}', "data: [DONE]"]
    lines = _sse(f"{impatient['chat_agent']}/v1/chat/completions", {},
                 {"messages": [{"role": "user", "content": "stall here now"}], "stream": True})
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert (error["message"], error["code"]) == (late, "deadline_exceeded")


NO_STREAM_CHAT_MODEL = """
import mlflow
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import ChatChoice, ChatCompletionResponse, ChatMessage


class NoStream(ChatModel):
    def predict(self, context, messages, params):
        return ChatCompletionResponse(choices=[ChatChoice(
            index=0, message=ChatMessage(role="assistant", content="whole"))])


mlflow.models.set_model(NoStream())
"""


def test_a_chat_model_without_predict_stream_refuses_streams_with_400(tmp_path: Path) -> None:
    """MLflow's ChatModel.predict_stream raises NotImplementedError unless overridden: a 400
    that says so, which the client does not retry (it retries a 500)."""
    code = tmp_path / "no_stream.py"
    code.write_text(NO_STREAM_CHAT_MODEL)
    mlflow.pyfunc.save_model(tmp_path / "model", python_model=str(code),
                             pip_requirements=["mlflow"])
    process, url = serve_model(tmp_path / "model", env={"SCORING_WORKERS": "1"})
    try:
        chat = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
        assert chat.chat.completions.create(
            model="m", messages=USER).choices[0].message.content == "whole"
        with pytest.raises(openai.BadRequestError, match="cannot stream"):
            list(chat.chat.completions.create(model="m", messages=USER, stream=True))
    finally:
        stop(process)
