"""What the front costs, side by side: wrk through the endpoint's front against wrk on a replica's
own published port, same image and model, alternating rounds; plus the front's memory and an
update's wall time.

Run from the repository root (``make bench`` does) with the local engine and the base and proxy
images configured through MLFLOW_DOCKERHOST_BASE_IMAGE / MLFLOW_DOCKERHOST_PROXY_IMAGE.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import docker
from mlflow.deployments import get_deploy_client

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlflow_docker_target.config import Settings
from mlflow_docker_target.demo import register_demo_model
from mlflow_docker_target.engine.connection import connect
from mlflow_docker_target.image_build.model_fetch import resolve
from mlflow_docker_target.record import FRONT, FRONT_OF, ROLE
from mlflow_docker_target.runtimes.container import containers
from mlflow_docker_target.runtimes.server_spec import Spec
from tests.benchmarks.scratch import scratch_registry
from tests.benchmarks.server import post_script, wrk
from tests.helpers.models import IRIS_INPUT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--updates", type=int, default=3)
    args = parser.parse_args()

    work = scratch_registry("bench-endpoints-")
    script = post_script(work, "post", {"dataframe_split": IRIS_INPUT})

    client = get_deploy_client("dockerhost")
    docker_client = docker.from_env()
    name = "bench-front"
    client.delete_deployment(name)
    uri = register_demo_model("bench-front-model")
    created = client.create_deployment(name, uri, config={"workers": "1"})
    front_url = created["endpoint"]
    # the same image and settings, publishing its own port: the replica without a front
    spec = Spec("bench-direct", created["image"], resolve(uri), {"workers": "1"},
                Settings(workers=1), "bench")
    engine = connect(None)
    direct = containers.start(engine, spec, None)
    try:
        containers.wait_ready(engine, direct, 300)
        direct_url = containers.published_url(engine, direct)
        assert direct_url, "the direct container publishes no port"
        rows: dict[str, list[dict[str, float]]] = {"front": [], "direct": []}
        for url in (front_url, direct_url):
            wrk(f"{url}/invocations", script, args.connections, 2)  # warm-up, not recorded
        for round_ in range(args.rounds):
            order = ["front", "direct"] if round_ % 2 == 0 else ["direct", "front"]
            for which in order:
                url = front_url if which == "front" else direct_url
                point = wrk(f"{url}/invocations", script, args.connections, args.seconds)
                rows[which].append(point)
                print(f"round {round_ + 1} {which}: {point['rps']:.0f} req/s, "
                      f"p50 {point['p50']:.2f} ms, p99 {point['p99']:.2f} ms, "
                      f"non-2xx {point['errors']:.0f}")
    finally:
        containers.remove(direct, 5)

    front_container = docker_client.containers.list(
        filters={"label": [f"{ROLE}={FRONT}", f"{FRONT_OF}={name}"]})[0]
    memory_mb = front_container.stats(stream=False)["memory_stats"]["usage"] / 1e6

    updates = []
    for run in range(args.updates):
        started = time.perf_counter()
        client.update_deployment(name, config={"env.BENCH_RUN": str(run)})
        updates.append(time.perf_counter() - started)
        print(f"update {run + 1}: {updates[-1]:.1f} s")
    client.delete_deployment(name, config={"remove_image": "true"})

    def med(which: str, key: str) -> float:
        return statistics.median(p[key] for p in rows[which])

    print(f"\n1-row requests, wrk -t1 -c{args.connections} -d{args.seconds}s, one worker per "
          f"replica, {args.rounds} alternating rounds, medians")
    print("| path | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for which in ("direct", "front"):
        print(f"| {which} | {med(which, 'rps'):.0f} | {med(which, 'p50'):.2f} "
              f"| {med(which, 'p99'):.2f} |")
    print(f"\nfront/direct req/s: {med('front', 'rps') / med('direct', 'rps'):.2f}; "
          f"p99 +{med('front', 'p99') - med('direct', 'p99'):.2f} ms")
    print(f"front container memory: {memory_mb:.1f} MB")
    print(f"update wall time (no load), median of {len(updates)}: "
          f"{statistics.median(updates):.1f} s")
    result = {"rows": rows, "front_memory_mb": memory_mb, "update_s": updates}
    out = Path(os.environ.get("BENCH_OUT", work / "endpoints.json"))
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
