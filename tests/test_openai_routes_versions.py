"""The OpenAI chat route for a ChatModel that MLflow 2.16 saved, served in the model matrix's
2.16 virtualenv as an image of such a model would serve it: that MLflow's own types
(``ChatResponse``, whole-message stream chunks) reach the ``openai`` client as
``chat.completion`` and ``chat.completion.chunk``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import openai
import pytest
import requests

from tests.helpers.model_matrix import ROOT, serving_venv
from tests.helpers.servers import answers, free_port, stop

pytestmark = pytest.mark.venv

# MLflow 2.16's ChatModel: ChatResponse (usage required); predict_stream yields ChatResponses.
CHAT_MODEL_2_16 = '''
import mlflow
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import ChatChoice, ChatMessage, ChatResponse, TokenUsageStats


def _answer(text):
    return ChatResponse(choices=[ChatChoice(index=0, message=ChatMessage(
        role="assistant", content=text))], usage=TokenUsageStats())


class Echo(ChatModel):
    def predict(self, context, messages, params):
        return _answer(f"old chat: {messages[-1].content} t={params.temperature}")

    def predict_stream(self, context, messages, params):
        for word in f"old chat: {messages[-1].content}".split():
            yield _answer(word + " ")


mlflow.models.set_model(Echo())
'''

SAVE = """
import sys
import mlflow
mlflow.pyfunc.save_model(sys.argv[2], python_model=sys.argv[1], pip_requirements=["mlflow"])
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = str(serving_venv("2.16.2") / "bin" / "python")
    work = tmp_path_factory.mktemp("chat-2.16")
    code = work / "chat.py"
    code.write_text(CHAT_MODEL_2_16)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "PYTHONPATH": str(ROOT)}
    subprocess.run([python, "-c", SAVE, str(code), str(work / "model")], check=True, cwd=work,
                   env=env, capture_output=True, timeout=300)
    port = free_port()
    process = subprocess.Popen(
        [python, "-m", "serving_image", "--model", str(work / "model"), "--host", "127.0.0.1",
         "--port", str(port)], env={**env, "SCORING_WORKERS": "1"}, cwd=work,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        assert answers(f"{url}/ping", process), f"the 2.16 server did not start ({process.poll()})"
        yield url
    finally:
        stop(process)


def test_a_2_16_chat_model_answers_the_openai_client(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="-", max_retries=0)
    messages = [{"role": "user", "content": "hi there"}]
    answer = client.chat.completions.create(model="m", messages=messages, temperature=0.5)
    assert answer.choices[0].message.content == "old chat: hi there t=0.5"
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion"
    chunks = list(client.chat.completions.create(model="m", messages=messages, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "old chat: hi there "
    version = requests.get(f"{server}/version", timeout=30).json()
    assert version["mlflow"] == "2.16.2"

