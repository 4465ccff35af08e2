"""Time limits and probes under slow models: the figures for the hardening closing note.

    python tests/benchmarks/hardening.py [--limit 2] [--slow 4] [--probes 50]

1. Every input shape on each path (the fast path, batching, MLflow's path) with
   ``request_timeout=--limit`` and a model that sleeps ``--slow`` seconds: status and time.
2. ``/health`` latency (p50, p99 over ``--probes`` sequential probes) on one worker: idle, while
   four sleeping predictions run (the GIL is released), and while one pure-Python prediction
   spins (the GIL is held, released only at the interpreter's switch interval).

The servers run on the host (``python -m serving_image``, one worker), on loopback.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlflow
import requests
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

sys.path.insert(0, str(Path(__file__).parents[2]))
from tests.helpers.models import SHAPES, SLEEPY_MODEL
from tests.helpers.servers import serve_model

SPINNING_MODEL = """
import time
import mlflow


class Spinning(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        end, turns = time.perf_counter() + float(model_input["x"].iloc[0]), 0
        while time.perf_counter() < end:  # pure Python: holds the GIL
            turns += 1
        return [turns]


mlflow.models.set_model(Spinning())
"""


def save(code: str, path: Path, with_params: bool = False) -> Path:
    source = path.with_suffix(".py")
    source.write_text(code)
    params = ParamSchema([ParamSpec("scale", "double", 1.0)]) if with_params else None
    mlflow.pyfunc.save_model(path, python_model=str(source), signature=ModelSignature(
        inputs=Schema([ColSpec("double", "x")]), params=params))
    return path


def post(url: str, shape: str, seconds: float) -> tuple[int, float]:
    content_type, template = SHAPES[shape]
    started = time.perf_counter()
    answer = requests.post(f"{url}/invocations", data=template % seconds, timeout=60,
                           headers={"Content-Type": content_type})
    return answer.status_code, time.perf_counter() - started


def probe(url: str, count: int) -> tuple[float, float]:
    """p50 and p99 of /health in milliseconds, over ``count`` sequential probes."""
    session = requests.Session()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert session.get(f"{url}/health", timeout=60).status_code == 200
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--slow", type=float, default=4.0)
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-hardening-"))
    sleepy = save(SLEEPY_MODEL, work / "sleepy")
    sleepy_params = save(SLEEPY_MODEL, work / "sleepy_params", with_params=True)
    spinning = save(SPINNING_MODEL, work / "spinning")
    one_worker = {"SCORING_WORKERS": "1", "SCORING_ACCESS_LOG": "false",
                  "SCORING_PREDICT_THREADS": "16", "SCORING_REQUEST_TIMEOUT": str(args.limit)}

    paths = {"fast path": (sleepy, {}), "batching": (sleepy, {"SCORING_BATCH_MAX_SIZE": "8"}),
             "MLflow's path": (sleepy_params, {})}
    results: dict[tuple[str, str], tuple[int, float]] = {}
    for path, (model, extra) in paths.items():
        process, url = serve_model(model, env={**one_worker, **extra})
        try:
            for shape in SHAPES:
                results[(shape, path)] = post(url, shape, args.slow)
                time.sleep(args.slow - args.limit + 0.2)  # let the abandoned work end
        finally:
            process.terminate()
            process.wait(30)
    print(f"request_timeout={args.limit}, a model that sleeps {args.slow:g} s, one worker\n")
    print("| input shape | " + " | ".join(paths) + " |")
    print("|---|" + "---|" * len(paths))
    for shape in SHAPES:
        cells = [f"{results[(shape, p)][0]} in {results[(shape, p)][1]:.2f} s" for p in paths]
        print(f"| {shape} | " + " | ".join(cells) + " |")

    print(f"\n/health on one worker, {args.probes} sequential probes (ms)\n")
    print("| while | p50 | p99 |")
    print("|---|---:|---:|")
    for label, model, running in (
            ("idle", sleepy, 0),
            ("4 predictions sleep (GIL released)", sleepy, 4),
            ("1 prediction spins in Python (GIL held)", spinning, 1)):
        env = {**one_worker, "SCORING_REQUEST_TIMEOUT": "120"}
        process, url = serve_model(model, env=env)
        try:
            busy = [threading.Thread(target=post, args=(url, "dataframe_split", 30))
                    for _ in range(running)]
            for thread in busy:
                thread.start()
            time.sleep(0.5)
            p50, p99 = probe(url, args.probes)
            print(f"| {label} | {p50:.1f} | {p99:.1f} |", flush=True)
        finally:
            process.kill()
            process.wait(30)
            for thread in busy:
                thread.join(0)


if __name__ == "__main__":
    main()
