"""Our scoring server against MLflow's own, a bare FastAPI app and two hand-written apps that
call the model, side by side, with wrk.

    python tests/benchmarks/server.py [--seconds 8] [--workers N] [--rounds 1]
        [--baseline DIR] [--servers ours,before] [--connections 1,8,32] [--rows 1,100]

The model is a LogisticRegression over 20 float columns (the one in shared/research's
baseline). Each server runs on the host on loopback, started fresh; wrk (one thread) loads it at
concurrency 1, 8 and 32 with a 1-row and a 100-row ``dataframe_split`` body. ``mlflow models
serve --env-manager local`` runs with its default single worker (its multi-worker mode stalls at
c=1 without uvloop); ours and the bare endpoint run with ``--workers`` (default: the CPUs).

The bare app does not call the model, so it is no ceiling for a server that does. Two
hand-written FastAPI apps for the same model are, with one worker each, against ``ours1`` (ours
with one worker): *naive* reads the body with orjson, builds a pandas DataFrame and calls
``model.predict``; *tuned* makes a float64 NumPy array instead, with the model's fitted feature
names removed so that scikit-learn skips its name check. Neither checks a schema or an input,
so tuned is as fast as this model can be served from Python.
The inference log's cost is ours with one worker recording every request (sample 1): *logged*
to the volume sink's files (in a directory here), *logged_http* to an HTTP sink, a bare uvicorn
app on loopback that answers 200 (it shares the two CPUs with the server and wrk).
With several rounds, every figure is the median over rounds, and each round starts with the
next server. ``--baseline DIR`` adds "before": our server from another checkout (a
``git worktree`` of an earlier commit), run the same way, for before/after ratios measured side
by side in interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

BARE_APP = '''
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()

@app.get("/ping")
async def ping():
    return Response("\\n", media_type="application/json")

@app.post("/invocations")
async def invocations(request: Request):
    await request.body()
    return Response('{"predictions": [0]}', media_type="application/json")
'''

# The model's own app, as one would write it by hand (BENCH_MODEL: the model's directory).
HAND_WRITTEN_APP = '''
import os

import mlflow.sklearn
import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response

model = mlflow.sklearn.load_model(os.environ["BENCH_MODEL"])
TUNED = os.environ["BENCH_APP"] == "tuned"
if TUNED:
    del model.feature_names_in_  # a NumPy array has no names to check

app = FastAPI()

@app.get("/ping")
async def ping():
    return Response("\\n", media_type="application/json")

@app.post("/invocations")
async def invocations(request: Request):
    split = orjson.loads(await request.body())["dataframe_split"]
    if TUNED:
        rows = np.asarray(split["data"], dtype=np.float64)
    else:
        rows = pd.DataFrame(split["data"], columns=split["columns"])
    return Response(orjson.dumps({"predictions": model.predict(rows).tolist()}),
                    media_type="application/json")
'''

# The HTTP sink's receiver: takes each CloudEvent and answers 200.
SINK_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
'''

WRK_SCRIPT = '''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
'''


def post_script(work: Path, name: str, body: Any) -> Path:
    """A wrk script that POSTs ``body`` as JSON (written beside it in ``work``)."""
    path = work / f"{name}.json"
    path.write_text(json.dumps(body))
    script = work / f"{name}.lua"
    script.write_text(WRK_SCRIPT.replace("{body}", str(path)))
    return script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_model(path: Path) -> list[str]:
    import mlflow
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    features, target = make_classification(n_samples=2000, n_features=20, n_informative=10,
                                           random_state=42)
    columns = [f"f{i}" for i in range(20)]
    frame = pd.DataFrame(features, columns=columns)
    model = LogisticRegression(max_iter=1000, random_state=42).fit(frame, target)
    mlflow.sklearn.save_model(model, path, input_example=frame.head(5))
    return columns


def write_payloads(work: Path, columns: list[str]) -> dict[str, Path]:
    import numpy as np

    rows = np.random.default_rng(0).normal(size=(100, len(columns))).round(6).tolist()
    payloads = {}
    for name, data in (("1 row", rows[:1]), ("100 rows", rows)):
        payloads[name] = post_script(work, name.replace(" ", "_"), {
            "dataframe_split": {"columns": columns, "data": data}})
    return payloads


def start(command: list[str], port: int, cwd: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    # mlflow models serve runs `uvicorn` by name: the virtualenv's bin goes first on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "PATH": path,
                                    **(env or {})})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                time.sleep(1)  # let every worker finish starting
                return process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"{command} did not become ready")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, script: Path, connections: int, seconds: int,
        cpus: str | None = None) -> dict[str, float]:
    """One wrk run; ``cpus``: the CPUs it runs on (``taskset -c``), else any."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
               "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(["taskset", "-c", cpus, *command] if cpus else command,
                         capture_output=True, text=True, check=True).stdout
    latency = {p: float(v) * _UNITS[u] for p, v, u in
               re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk gave no Requests/sec line:\n{out}")
    return {"rps": float(rps.group(1)),
            "p50": latency["50"], "p99": latency["99"],
            "errors": float(errors.group(1)) if errors else 0.0}


def summary(med: Any, payloads: dict[str, Path], connection_counts: list[int],
            args: argparse.Namespace) -> None:
    """The table of ours, batched, MLflow's server and the bare endpoint."""
    print(f"\nours: {args.workers} workers, defaults; batched: the same with -C batch_max_size=64 "
          f"(no wait); mlflow: 1 worker; bare FastAPI: {args.workers} workers; wrk -t1, "
          f"{args.seconds} s per point, median of {args.rounds} round(s)\n")
    print("| payload | c | ours req/s | batched req/s | mlflow req/s | bare req/s | ours/mlflow "
          "| ours/bare | batched/bare | ours p50 ms | mlflow p50 ms | ours p99 ms | mlflow p99 ms "
          "| p99 mlflow/ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for payload in payloads:
        for c in connection_counts:
            ours, batched, theirs, bare = (med(n, payload, c, "rps")
                                           for n in ("ours", "batched", "mlflow", "bare"))
            p99_ours, p99_theirs = med("ours", payload, c, "p99"), med("mlflow", payload, c, "p99")
            print(f"| {payload} | {c} | {ours:.0f} | {batched:.0f} | {theirs:.0f} | {bare:.0f} | "
                  f"{ours / theirs:.1f}x | {ours / bare:.0%} | {batched / bare:.0%} | "
                  f"{med('ours', payload, c, 'p50'):.2f} | {med('mlflow', payload, c, 'p50'):.2f} "
                  f"| {p99_ours:.2f} | {p99_theirs:.2f} | {p99_theirs / p99_ours:.1f}x |")


def ceilings(med: Any, payloads: dict[str, Path], connection_counts: list[int]) -> None:
    """Ours against the hand-written apps, all with one worker."""
    print("\nceilings: ours, naive and tuned with 1 worker each (goals: ours1/tuned >= 95% at 1 "
          "row, >= 90% at 100 rows)\n")
    print("| payload | c | ours1 req/s | naive req/s | tuned req/s | ours1/tuned | ours1/naive "
          "| ours1 p99 ms | tuned p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for payload in payloads:
        for c in connection_counts:
            ours, naive, tuned = (med(n, payload, c, "rps") for n in ("ours1", "naive", "tuned"))
            p99 = [med(n, payload, c, "p99") for n in ("ours1", "tuned")]
            print(f"| {payload} | {c} | {ours:.0f} | {naive:.0f} | {tuned:.0f} | "
                  f"{ours / tuned:.0%} | {ours / naive:.1f}x | {p99[0]:.2f} | {p99[1]:.2f} |")


def inference_log(med: Any, payloads: dict[str, Path], connection_counts: list[int],
                  records: dict[str, list[tuple[float, float]]]) -> None:
    """Ours with one worker, logging off against each sink."""
    print("\ninference log: ours with 1 worker, off against the volume sink and the HTTP sink, "
          "every request recorded (goal: volume/off >= 95%)\n")
    print("| payload | c | off req/s | volume req/s | http req/s | volume/off | http/off "
          "| off p99 ms | volume p99 ms | http p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for payload in payloads:
        for c in connection_counts:
            off, volume, http = (med(n, payload, c, "rps")
                                 for n in ("ours1", "logged", "logged_http"))
            p99 = [med(n, payload, c, "p99") for n in ("ours1", "logged", "logged_http")]
            print(f"| {payload} | {c} | {off:.0f} | {volume:.0f} | {http:.0f} | "
                  f"{volume / off:.1%} | {http / off:.1%} | {p99[0]:.2f} | {p99[1]:.2f} | "
                  f"{p99[2]:.2f} |")
    for name, totals in records.items():
        written, dropped = sum(t[0] for t in totals), sum(t[1] for t in totals)
        print(f"{name}: {written:.0f} records written, {dropped:.0f} dropped "
              f"({dropped / max(1.0, written + dropped):.1%}), over all rounds")


def ours_command(model: Path, port: int, workers: int) -> list[str]:
    """Our server on the host, on loopback."""
    return [sys.executable, "-m", "serving_image", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]


def volume_log(directory: Path) -> dict[str, str]:
    """The environment that records every request to the volume sink's files in ``directory``."""
    return {"SCORING_PAYLOAD_LOG": "volume", "SCORING_PAYLOAD_LOG_DIR": str(directory)}


def log_totals(port: int) -> tuple[float, float]:
    """Records the server's inference log wrote and dropped, from its /metrics."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    written = dropped = 0.0
    for line in text.splitlines():
        if line.startswith("mlflow_server_payload_log_records_total "):
            written += float(line.split()[-1])
        elif line.startswith("mlflow_server_payload_log_dropped_total{"):
            dropped += float(line.split()[-1])
    return written, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="a checkout whose serving_image is "
                        "benchmarked as 'before'")
    parser.add_argument("--servers", help="comma-separated subset of ours,batched,mlflow,bare,"
                        "ours1,naive,tuned,logged,logged_http,before")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--rows", default="1,100")
    args = parser.parse_args()
    connection_counts = [int(c) for c in args.connections.split(",")]
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    model = work / "model"
    payloads = {name: script for name, script in write_payloads(work, make_model(model)).items()
                if name.split()[0] in args.rows.split(",")}
    (work / "bare_app.py").write_text(BARE_APP)
    (work / "hand_written_app.py").write_text(HAND_WRITTEN_APP)
    (work / "sink_app.py").write_text(SINK_APP)
    sink_port = free_port()
    python = sys.executable
    ours = lambda port: ours_command(model, port, args.workers)  # noqa: E731
    ours1 = lambda port: ours_command(model, port, 1)  # noqa: E731
    environments: dict[str, dict[str, str]] = {
        "batched": {"SCORING_BATCH_MAX_SIZE": "64"},
        "naive": {"BENCH_MODEL": str(model), "BENCH_APP": "naive"},
        "tuned": {"BENCH_MODEL": str(model), "BENCH_APP": "tuned"},
        "logged": volume_log(work / "payload-log"),
        "logged_http": {"SCORING_PAYLOAD_LOG": f"http://127.0.0.1:{sink_port}/events"}}
    (work / "payload-log").mkdir()
    hand_written = [python, "-m", "uvicorn", "hand_written_app:app", "--host", "127.0.0.1",
                    "--workers", "1", "--port"]
    servers = {
        "ours": ours,
        "batched": ours,
        "mlflow": lambda port: [python, "-m", "mlflow", "models", "serve", "-m", str(model),
                                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                                "-w", "1"],
        "bare": lambda port: [python, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1",
                              "--port", str(port), "--workers", str(args.workers)],
        "ours1": ours1,
        "naive": lambda port: [*hand_written, str(port)],
        "tuned": lambda port: [*hand_written, str(port)],
        "logged": ours1,
        "logged_http": ours1,
    }
    if args.baseline:
        servers["before"] = ours
        environments["before"] = {"PYTHONPATH": str(args.baseline.resolve())}
    if args.servers:
        servers = {name: servers[name] for name in args.servers.split(",")}
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    records: dict[str, list[tuple[float, float]]] = {}
    sink = None
    if "logged_http" in servers:
        sink = subprocess.Popen([python, "-m", "uvicorn", "sink_app:app", "--host", "127.0.0.1",
                                 "--port", str(sink_port), "--no-access-log"], cwd=work,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        run_rounds(servers, environments, payloads, connection_counts, args, work, results,
                   records)
    finally:
        if sink is not None:
            stop(sink)
        shutil.rmtree(work / "payload-log", ignore_errors=True)
    report(servers, payloads, connection_counts, args, results, records)


def run_rounds(servers: dict[str, Any], environments: dict[str, dict[str, str]],
               payloads: dict[str, Path], connection_counts: list[int],
               args: argparse.Namespace, work: Path,
               results: dict[tuple[str, str, int], list[dict[str, float]]],
               records: dict[str, list[tuple[float, float]]]) -> None:
    for round_ in range(args.rounds):
        # Each round starts with the next server, so that none always has the same place: in
        # a test here the third server of a round ran 10-20% slower than the second, whichever
        # of two it was.
        names = list(servers)
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            command = servers[name]
            port = free_port()
            process = start(command(port), port, work, environments.get(name))
            try:
                url = f"http://127.0.0.1:{port}/invocations"
                for payload, script in payloads.items():
                    wrk(url, script, 8, 2)  # warm-up, not recorded
                    for connections in connection_counts:
                        point = wrk(url, script, connections, args.seconds)
                        results.setdefault((name, payload, connections), []).append(point)
                        print(f"round {round_ + 1} {name:6} {payload:8} c={connections:<2} "
                              f"{point['rps']:8.0f} req/s  p50 {point['p50']:7.2f} ms  "
                              f"p99 {point['p99']:7.2f} ms  errors {point['errors']:.0f}",
                              flush=True)
                if name.startswith("logged"):
                    time.sleep(1)  # the writer's queue empties
                    records.setdefault(name, []).append(log_totals(port))
            finally:
                stop(process)


def report(servers: dict[str, Any], payloads: dict[str, Path], connection_counts: list[int],
           args: argparse.Namespace,
           results: dict[tuple[str, str, int], list[dict[str, float]]],
           records: dict[str, list[tuple[float, float]]]) -> None:
    def med(name: str, payload: str, c: int, key: str) -> float:
        return statistics.median(p[key] for p in results[(name, payload, c)])

    def spread(name: str, payload: str, c: int) -> str:
        """The req/s of the slowest and the fastest round."""
        rates = [p["rps"] for p in results[(name, payload, c)]]
        return f"{min(rates):.0f}-{max(rates):.0f}"

    if "before" in servers and "ours" in servers:
        print(f"\nbefore/after, median of {args.rounds} interleaved round(s), {args.workers} "
              "workers\n")
        print("| payload | c | before req/s (rounds) | after req/s (rounds) | after/before "
              "| before p99 ms | after p99 ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for payload in payloads:
            for c in connection_counts:
                before, after = med("before", payload, c, "rps"), med("ours", payload, c, "rps")
                print(f"| {payload} | {c} | {before:.0f} ({spread('before', payload, c)}) "
                      f"| {after:.0f} ({spread('ours', payload, c)}) | {after / before:.1%} "
                      f"| {med('before', payload, c, 'p99'):.2f} "
                      f"| {med('ours', payload, c, 'p99'):.2f} |")
    if {"ours", "batched", "mlflow", "bare"} <= set(servers):
        summary(med, payloads, connection_counts, args)
    if {"ours1", "naive", "tuned"} <= set(servers):
        ceilings(med, payloads, connection_counts)
    if {"ours1", "logged", "logged_http"} <= set(servers):
        inference_log(med, payloads, connection_counts, records)
    errors = sum(p["errors"] for points in results.values() for p in points)
    print(f"\nnon-2xx responses: {errors:.0f}")


if __name__ == "__main__":
    main()
