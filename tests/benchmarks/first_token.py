"""Time to first token through the front, on the OpenAI routes, with the ``openai`` client.

    python tests/benchmarks/first_token.py [--requests 10]

A ResponsesAgent and a ChatAgent (tests/helpers/agents.py) each stream 5 chunks 200 ms apart,
each chunk saying when the model yielded it (``time.time()``, one host, one clock). The figure
is the time from the model yielding a chunk to the client receiving it, for the first chunk and
for all chunks: medians and maxima over the requests, both routes side by side.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
from mlflow.deployments import get_deploy_client

sys.path.insert(0, str(Path(__file__).parents[2]))
from mlflow_docker_target.demo import register_demo_model
from tests.benchmarks.scratch import scratch_registry
from tests.helpers.agents import CHAT_AGENT, RESPONSES_AGENT
from tests.helpers.models import register_code_model

# Five words, five chunks: "responses: slow a b c", "chat agent: slow a b".
PROMPTS = {"responses": "slow a b c", "chat": "slow a b"}


def chunk_texts(client: openai.OpenAI, route: str) -> Iterator[str]:
    if route == "responses":
        for event in client.responses.create(model="m", input=PROMPTS[route], stream=True):
            if event.type == "response.output_text.delta":
                yield event.delta
    else:
        for chunk in client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": PROMPTS[route]}],
                stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content


def delays(client: openai.OpenAI, route: str) -> list[float]:
    """Milliseconds from yield to arrival, per chunk of one stream."""
    found = []
    for text in chunk_texts(client, route):
        found.append((time.time() - float(text.split()[0])) * 1000)
    assert len(found) == 5, found
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    work = scratch_registry("bench-first-token-")
    iris = register_demo_model("iris")
    deployments = get_deploy_client("dockerhost")
    tag = secrets.token_hex(3)
    clients = {}
    for route, code in (("responses", RESPONSES_AGENT), ("chat", CHAT_AGENT)):
        name = f"ttft-{route}-{tag}"
        model = register_code_model(code, name, iris, work)
        url = deployments.create_deployment(name, model, config={"workers": "1"})["endpoint"]
        clients[route] = (name, openai.OpenAI(base_url=f"{url}/v1", api_key="-",
                                              max_retries=0))
    firsts: dict[str, list[float]] = {route: [] for route in clients}
    every: dict[str, list[float]] = {route: [] for route in clients}
    try:
        for route, (_, client) in clients.items():
            delays(client, route)  # warm-up: the client builds its types on first use
        for _ in range(args.requests):
            for route, (_, client) in clients.items():  # side by side
                measured = delays(client, route)
                firsts[route].append(measured[0])
                every[route].extend(measured)
    finally:
        for name, _ in clients.values():
            deployments.delete_deployment(name)
    print(f"5 chunks 200 ms apart through the front, {args.requests} streams a route: from the "
          "model yielding a chunk to the openai client receiving it\n")
    print("| route | first chunk, median | first chunk, max | every chunk, median | "
          "every chunk, max |\n|---|---:|---:|---:|---:|")
    for route in clients:
        print(f"| /v1/{'responses' if route == 'responses' else 'chat/completions'} | "
              f"{statistics.median(firsts[route]):.1f} ms | {max(firsts[route]):.1f} ms | "
              f"{statistics.median(every[route]):.1f} ms | {max(every[route]):.1f} ms |")


if __name__ == "__main__":
    main()
