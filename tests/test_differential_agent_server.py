"""Our /responses against MLflow's own ``mlflow.genai.agent_server.AgentServer`` serving the same
ResponsesAgent: the same answers, streamed and not, the framing of a failed stream included.
Ids and times are left out of the comparison (the toy agent's are fixed anyway)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from tests.helpers.agents import save_agent
from tests.helpers.servers import answers, free_port, serve_model, stop

# AgentServer registers functions, not models: these call the agent the model file holds.
AGENT_SERVER = """
import sys
import uvicorn
import mlflow
from mlflow.genai.agent_server import AgentServer, invoke, stream

agent = mlflow.pyfunc.load_model(sys.argv[1])._model_impl.get_raw_model()


@invoke()
def answer(request):
    return agent.predict(request)


@stream()
def chunks(request):
    yield from agent.predict_stream(request)


server = AgentServer("ResponsesAgent")
uvicorn.run(server.app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""

INPUT = [{"role": "user", "content": "hi there"}]
BODIES = {
    "plain": {"input": INPUT},
    "params": {"input": INPUT, "temperature": 0.5, "max_output_tokens": 7,
               "custom_inputs": {"k": 1}, "model": "ignored"},
    "conversation": {"input": [{"role": "user", "content": "one"},
                               {"role": "assistant", "content": "two"},
                               {"role": "user", "content": "three"}]},
    "failing": {"input": [{"role": "user", "content": "please fail"}]},
}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Our server and AgentServer on the same agent."""
    root = tmp_path_factory.mktemp("agent")
    model = save_agent("responses", root / "model")
    ours, our_url = serve_model(model, env={"SCORING_WORKERS": "1"})
    port = free_port()
    theirs = subprocess.Popen([sys.executable, "-c", AGENT_SERVER, str(model), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=root)  # its traces go to ./mlruns there
    their_url = f"http://127.0.0.1:{port}"
    try:
        assert answers(f"{their_url}/health", theirs), "AgentServer did not start"
        yield our_url, their_url
    finally:
        stop(ours)
        theirs.terminate()
        theirs.wait(30)


@pytest.mark.parametrize("case", [c for c in BODIES if c != "failing"])
def test_same_answer(both: tuple[str, str], case: str) -> None:
    ours, theirs = (requests.post(f"{url}/responses", json=BODIES[case], timeout=30)
                    for url in both)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json() == theirs.json()


@pytest.mark.parametrize("case", list(BODIES))
def test_same_stream(both: tuple[str, str], case: str) -> None:
    """Every event the same, and a failed stream framed alike: {"error": ...}, then [DONE]."""
    ours, theirs = (_events(f"{url}/responses", {**BODIES[case], "stream": True})
                    for url in both)
    assert ours == theirs
    assert ours[-1] == "[DONE]"
    if case == "failing":
        assert ours[-2] == {"error": "the agent failed mid-stream"}


def _events(url: str, body: dict) -> list[object]:
    answer = requests.post(url, json=body, stream=True, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    found: list[object] = []
    for line in answer.iter_lines(decode_unicode=True):
        if line:
            assert line.startswith("data: "), line
            data = line[len("data: "):]
            found.append(data if data == "[DONE]" else json.loads(data))
    return found

