"""GenAI models on a real engine, called through the front with the official ``openai`` client:
a ResponsesAgent alone, and a ChatModel and a ChatAgent sharing one endpoint, picked by the
``x-mlflow-deployment`` header (the client's ``default_headers``)."""

from __future__ import annotations

import time

import openai
import pytest
from mlflow.deployments import get_deploy_client

from tests.helpers.agents import CHAT_AGENT, CHAT_MODEL, RESPONSES_AGENT
from tests.helpers.models import register_code_model

TOKEN = "sk-engine-token"
CONFIG = {"workers": "1", "auth_token": TOKEN, "request_timeout": "10"}


def test_a_responses_agent_through_the_front(iris_versions, deployment_name,
                                             tmp_path) -> None:
    model = register_code_model(RESPONSES_AGENT, "responses-agent", iris_versions["v1"],
                                tmp_path)
    deployments = get_deploy_client("dockerhost")
    url = deployments.create_deployment(deployment_name, model, config=CONFIG)["endpoint"]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)

    assert [m.id for m in client.models.list()] == [deployment_name]
    answer = client.responses.create(model=deployment_name, input="hi there",
                                     temperature=0.5)
    assert answer.output_text == "responses: hi there t=0.5 max=None"
    deltas = [e.delta for e in client.responses.create(model=deployment_name, input="hi there",
                                                       stream=True)
              if e.type == "response.output_text.delta"]
    assert deltas == ["responses: ", "hi ", "there "]

    # chunks pass the front as the agent yields them: each arrives before the next is even
    # yielded (five chunks 200 ms apart; each says when it was yielded). A front that holds a
    # small chunk until more data comes lets it go only once the next one is yielded.
    arrived, yielded = [], []
    for event in client.responses.create(model=deployment_name, input="slow a b c",
                                         stream=True):
        if event.type == "response.output_text.delta":
            arrived.append(time.time())
            yielded.append(float(event.delta.split()[0]))
    assert len(arrived) == 5
    assert all(arrived[i] < yielded[i + 1] for i in range(4)), (arrived, yielded)

    got = []
    with pytest.raises(openai.APIError):
        for event in client.responses.create(model=deployment_name, input="please fail",
                                             stream=True):
            got.append(event)
    assert len(got) == 1
    with pytest.raises(openai.NotFoundError, match="/v1/responses"):
        client.chat.completions.create(model=deployment_name,
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    deployments.delete_deployment(deployment_name)


def test_chat_models_share_an_endpoint_picked_by_header(iris_versions, endpoint_name,
                                                        tmp_path) -> None:
    deployments = get_deploy_client("dockerhost")
    names = {"chat model": f"{endpoint_name}-model", "chat agent": f"{endpoint_name}-agent"}
    for (kind, name), code in zip(names.items(), (CHAT_MODEL, CHAT_AGENT), strict=True):
        model = register_code_model(code, kind.replace(" ", "-"), iris_versions["v1"], tmp_path)
        deployments.create_deployment(name, model, endpoint=endpoint_name, config=CONFIG)
    url = deployments.get_endpoint(endpoint_name)["url"]
    messages = [{"role": "user", "content": "hi there"}]
    for kind, name in names.items():
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0,
                               default_headers={"x-mlflow-deployment": name})
        assert [m.id for m in client.models.list()] == [name]
        answer = client.chat.completions.create(model=name, messages=messages)
        text = answer.choices[0].message.content
        assert text is not None and text.startswith(f"{kind}: hi there")
        chunks = client.chat.completions.create(model=name, messages=messages, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks
                       if c.choices) == f"{kind}: hi there "
        got = []
        with pytest.raises(openai.APIError):
            for chunk in client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "please fail"}],
                    stream=True):
                got.append(chunk)
        assert len(got) == 1
        with pytest.raises(openai.NotFoundError, match="/v1/chat/completions"):
            client.responses.create(model=name, input="hi")
    for name in names.values():
        deployments.delete_deployment(name)
    deployments.delete_endpoint(endpoint_name)
