"""Streaming and V2: the figures for the protocols closing note.

    python tests/benchmarks/protocols.py [--rounds 5] [--seconds 8] [--workers N]

1. A model that yields 5 chunks 200 ms apart, streamed over HTTP: the time to the first chunk
   at the client against the time to the whole answer (median of 10 requests).
2. V2 against /invocations on the same server and model (the LogisticRegression over 20
   columns of ``server.py``), 1 row, wrk at c=8; the two alternate within each round, and the
   figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parents[2]))
from tests.benchmarks.server import make_model, post_script, wrk
from tests.helpers.models import save_streamer
from tests.helpers.servers import serve_model


def stream_timing(work: Path, requests_count: int = 10) -> tuple[float, float]:
    model = save_streamer(work / "streamer")
    process, url = serve_model(model, env={"SCORING_WORKERS": "1",
                                           "SCORING_ACCESS_LOG": "false"})
    firsts, wholes = [], []
    try:
        for _ in range(requests_count):
            started = time.perf_counter()
            answer = requests.post(f"{url}/invocations", stream=True, timeout=30, json={
                "prompt": "hi", "stream": True, "count": 5, "delay": 0.2})
            lines = answer.iter_lines()
            first = next(line for line in lines if line)
            firsts.append(time.perf_counter() - started)
            rest = [line for line in lines if line]
            wholes.append(time.perf_counter() - started)
            assert first.startswith(b"data: {") and rest[-1] == b"data: [DONE]"
    finally:
        process.terminate()
        process.wait(30)
    return statistics.median(firsts), statistics.median(wholes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-protocols-"))

    first, whole = stream_timing(work)
    print("5 chunks, 200 ms apart, streamed (median of 10 requests): first chunk at the "
          f"client after {first * 1000:.0f} ms, the whole answer after {whole * 1000:.0f} ms\n")

    columns = make_model(work / "model")
    row = [0.5] * len(columns)
    bodies = {
        "/invocations": {"dataframe_split": {"columns": columns, "data": [row]}},
        "/v2/models/model/infer": {"inputs": [
            {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
            for c, v in zip(columns, row, strict=True)]},
    }
    scripts = {}
    for route, body in bodies.items():
        scripts[route] = post_script(work, str(len(scripts)), body)
    process, url = serve_model(work / "model", "--workers", str(args.workers),
                               env={"SCORING_ACCESS_LOG": "false"})
    results: dict[str, list[dict[str, float]]] = {route: [] for route in scripts}
    try:
        for route, script in scripts.items():  # both answer, alike
            assert requests.post(url + route, data=Path(str(script).replace(".lua", ".json"))
                                 .read_bytes(), headers={"Content-Type": "application/json"},
                                 timeout=30).status_code == 200
            wrk(url + route, script, 8, 2)  # warm-up
        for round_ in range(args.rounds):
            order = list(scripts) if round_ % 2 == 0 else list(scripts)[::-1]
            for route in order:
                point = wrk(url + route, scripts[route], 8, args.seconds)
                results[route].append(point)
                print(f"round {round_ + 1} {route:24} {point['rps']:8.0f} req/s  "
                      f"p99 {point['p99']:6.2f} ms  errors {point['errors']:.0f}", flush=True)
    finally:
        process.terminate()
        process.wait(30)
    med = {route: statistics.median(p["rps"] for p in points) for route, points in
           results.items()}
    p99 = {route: statistics.median(p["p99"] for p in points) for route, points in
           results.items()}
    v2, ours = med["/v2/models/model/infer"], med["/invocations"]
    print(f"\n1 row, c=8, {args.workers} workers, median of {args.rounds} alternating rounds\n")
    print("| route | req/s | p99 ms |\n|---|---:|---:|")
    for route in scripts:
        print(f"| {route} | {med[route]:.0f} | {p99[route]:.2f} |")
    print(f"\nV2 / invocations: {v2 / ours:.1%}")


if __name__ == "__main__":
    main()
