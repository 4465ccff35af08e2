"""The swarm against one engine, side by side: create time (push and pulls included) and
requests per second through the endpoint's front, same model, one replica with one worker each.

A three-node test swarm with its registry (``tests/swarm_cluster.py``) is made for the run and
removed after. Run from the repository root as root (``make bench`` does) with the base, strip
and proxy images configured through the MLFLOW_DOCKERHOST_*_IMAGE variables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from mlflow.deployments import get_deploy_client

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlflow_docker_target.demo import register_demo_model
from tests.benchmarks.scratch import scratch_registry
from tests.benchmarks.server import post_script, wrk
from tests.helpers.models import IRIS_INPUT
from tests.helpers.swarm_cluster import IMAGES, swarm_cluster

PORT = 18090


def _timed_create(client, name: str, uri: str, config: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    created = client.create_deployment(name, uri, config=config)
    return time.perf_counter() - started, created["endpoint"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()

    work = scratch_registry("bench-swarm-")
    script = post_script(work, "post", {"dataframe_split": IRIS_INPUT})
    uri = register_demo_model("bench-swarm-model")
    local = get_deploy_client("dockerhost")
    for name in ("bench-one-a", "bench-one-b"):
        local.delete_deployment(name)

    with swarm_cluster([os.environ[variable] for variable in IMAGES]) as swarm:
        remote = get_deploy_client(f"dockerhost:/{swarm.manager.socket}")
        registry = f"{swarm.registry}/bench"
        times: dict[str, float] = {}
        # the first create on the manager builds its environment: cold
        times["swarm, cold (environment built)"], _ = _timed_create(
            remote, "bench-cold", uri, {"workers": "1", "registry": registry,
                                        "port": str(PORT + 1)})
        remote.delete_deployment("bench-cold")
        times["swarm, warm (model image, push, pull)"], _ = _timed_create(
            remote, "bench-swarm", uri, {"workers": "1", "registry": registry,
                                         "port": str(PORT)})
        times["one engine, warm"], local_url = _timed_create(local, "bench-one-a", uri,
                                                             {"workers": "1"})
        # a node that is not the manager, and its replica on another node or its own
        swarm_url = f"http://{swarm.nodes[1].address}:{PORT}"
        urls = {"one engine": local_url, "swarm": swarm_url}
        rows: dict[str, list[dict[str, float]]] = {which: [] for which in urls}
        try:
            for url in urls.values():
                wrk(f"{url}/invocations", script, args.connections, 2)  # warm-up
            for round_ in range(args.rounds):
                order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
                for which in order:
                    point = wrk(f"{urls[which]}/invocations", script, args.connections,
                                args.seconds)
                    rows[which].append(point)
                    print(f"round {round_ + 1} {which}: {point['rps']:.0f} req/s, "
                          f"p50 {point['p50']:.2f} ms, p99 {point['p99']:.2f} ms, "
                          f"non-2xx {point['errors']:.0f}")
        finally:
            local.delete_deployment("bench-one-a", config={"remove_image": "true"})
            remote.delete_deployment("bench-swarm")

    def med(which: str, key: str) -> float:
        return statistics.median(p[key] for p in rows[which])

    print("\ncreate, same model (s)")
    for what, seconds in times.items():
        print(f"| {what} | {seconds:.1f} |")
    print(f"\n1-row requests through the front, wrk -t1 -c{args.connections} -d{args.seconds}s, "
          f"one replica with one worker, {args.rounds} alternating rounds, medians")
    print("| runtime | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for which in rows:
        print(f"| {which} | {med(which, 'rps'):.0f} | {med(which, 'p50'):.2f} "
              f"| {med(which, 'p99'):.2f} |")
    print(f"\nswarm/one engine req/s: {med('swarm', 'rps') / med('one engine', 'rps'):.2f}")
    out = Path(os.environ.get("BENCH_OUT", work / "swarm.json"))
    out.write_text(json.dumps({"create_s": times, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
