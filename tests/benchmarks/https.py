"""What HTTPS at the front costs, side by side: wrk through a front that serves TLS against wrk
through a plain one (keep-alive connections; same model, one worker each; alternating rounds,
medians), and the cost of a new TLS connection (a handshake per request, against a new plain
connection per request).

Run from the repository root (``make bench`` does) with the local engine and the base and proxy
images configured through MLFLOW_DOCKERHOST_BASE_IMAGE / MLFLOW_DOCKERHOST_PROXY_IMAGE. The
certificate is an RSA 2048 one from a CA made here, as the README makes it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from mlflow.deployments import get_deploy_client

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlflow_docker_target.demo import register_demo_model
from tests.benchmarks.scratch import scratch_registry
from tests.benchmarks.server import post_script, wrk
from tests.helpers.models import IRIS_INPUT
from tests.helpers.tls_files import make_ca, make_cert


def new_connections(url: str, count: int, context: ssl.SSLContext | None) -> float:
    """Median milliseconds of ``GET /ping`` on a new connection each time."""
    parts = urlsplit(url)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        connection = (http.client.HTTPSConnection(str(parts.hostname), parts.port,
                                                  context=context, timeout=10) if context
                      else http.client.HTTPConnection(str(parts.hostname), parts.port,
                                                      timeout=10))
        connection.request("GET", "/ping")
        assert connection.getresponse().status == 200
        connection.close()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--handshakes", type=int, default=300)
    args = parser.parse_args()

    work = scratch_registry("bench-https-")
    script = post_script(work, "post", {"dataframe_split": IRIS_INPUT})
    ca = make_ca(work)
    pair = make_cert(work, ca, "endpoint", "127.0.0.1")
    context = ssl.create_default_context(cafile=str(ca.cert))

    client = get_deploy_client("dockerhost")
    uri = register_demo_model("bench-https-model")
    names = {"plain": "bench-plain", "https": "bench-https"}
    for name in names.values():
        client.delete_deployment(name)
    urls = {
        "plain": client.create_deployment(names["plain"], uri, config={"workers": "1"})[
            "endpoint"],
        "https": client.create_deployment(names["https"], uri, config={
            "workers": "1", "https_cert": str(pair.cert), "https_key": str(pair.key)})[
            "endpoint"]}
    try:
        rows: dict[str, list[dict[str, float]]] = {"plain": [], "https": []}
        for url in urls.values():
            wrk(f"{url}/invocations", script, args.connections, 2)  # warm-up, not recorded
        for round_ in range(args.rounds):
            order = ["plain", "https"] if round_ % 2 == 0 else ["https", "plain"]
            for which in order:
                point = wrk(f"{urls[which]}/invocations", script, args.connections,
                            args.seconds)
                rows[which].append(point)
                print(f"round {round_ + 1} {which}: {point['rps']:.0f} req/s, "
                      f"p50 {point['p50']:.2f} ms, p99 {point['p99']:.2f} ms, "
                      f"non-2xx {point['errors']:.0f}")
        fresh = {"plain": [], "https": []}
        for round_ in range(args.rounds):
            for which in ("plain", "https") if round_ % 2 == 0 else ("https", "plain"):
                fresh[which].append(new_connections(
                    urls[which], args.handshakes, context if which == "https" else None))
    finally:
        for name in names.values():
            client.delete_deployment(name)

    def med(which: str, key: str) -> float:
        return statistics.median(p[key] for p in rows[which])

    print(f"\n1-row requests through the front, keep-alive, wrk -t1 -c{args.connections} "
          f"-d{args.seconds}s, one worker, {args.rounds} alternating rounds, medians")
    print("| front | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for which in ("plain", "https"):
        print(f"| {which} | {med(which, 'rps'):.0f} | {med(which, 'p50'):.2f} "
              f"| {med(which, 'p99'):.2f} |")
    ratio = med("https", "rps") / med("plain", "rps")
    extra = med("https", "p99") - med("plain", "p99")
    print(f"\nhttps/plain req/s: {ratio:.2f} (goal >= 0.85); p99 {extra:+.2f} ms (goal <= +1 ms)")
    plain_ms, https_ms = (statistics.median(fresh[w]) for w in ("plain", "https"))
    print(f"a new connection per GET /ping, median of {args.handshakes} x {args.rounds}: plain "
          f"{plain_ms:.2f} ms, https {https_ms:.2f} ms: a TLS handshake (TLS 1.3, RSA 2048) "
          f"costs {https_ms - plain_ms:.2f} ms")
    out = Path(os.environ.get("BENCH_OUT", work / "https.json"))
    out.write_text(json.dumps({"rows": rows, "new_connection_ms": fresh}, indent=1))


if __name__ == "__main__":
    main()
