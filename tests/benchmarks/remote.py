"""The same deployment on this machine's engine and on a remote one (tcp+TLS and ssh), side by side.

    python tests/benchmarks/remote.py [--creates 3] [--requests 200]

The remote engine is the test engine of tests/remote_engine.py: its own network namespace and
address, reached over a veth pair (no real network latency, so the difference is the transport:
TLS, ssh, and the build context streamed over the API). Per engine: one cold create (no
environment image: wheels resolved here, streamed and installed there; pip's download cache is
warm), warm creates (the environment image is there, a new model version needs its model
image), then ``predict`` through the plugin
(which asks the engine where the deployment is, then posts) and plain HTTP posts to the endpoint
on one keep-alive connection. Every figure is a median; needs root, like the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests
from mlflow.deployments import get_deploy_client

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlflow_docker_target.demo import register_demo_model
from mlflow_docker_target.record import ENVIRONMENT as ENV_LABEL
from tests.benchmarks.scratch import scratch_registry
from tests.helpers.models import IRIS_INPUT
from tests.helpers.remote_engine import remote_engine


def _median_ms(action: Callable[[], object], count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(target: str, creates: int, count: int) -> dict[str, float]:
    client = get_deploy_client(target)
    name = "bench-remote"
    client.delete_deployment(name, config={"remove_image": "true"})
    created = client.create_deployment(name, register_demo_model("bench-remote"))
    engine = client._connect().client
    environment = engine.images.get(created["image"]).labels[ENV_LABEL]
    client.delete_deployment(name, config={"remove_image": "true"})
    engine.images.remove(environment)  # cold: the environment image is built again
    started = time.perf_counter()
    client.create_deployment(name, register_demo_model("bench-remote"))
    cold = time.perf_counter() - started
    client.delete_deployment(name, config={"remove_image": "true"})
    seconds = []
    for _ in range(creates):
        uri = register_demo_model("bench-remote")
        started = time.perf_counter()
        created = client.create_deployment(name, uri)
        seconds.append(time.perf_counter() - started)
        if len(seconds) < creates:
            client.delete_deployment(name, config={"remove_image": "true"})
    body = {"dataframe_split": IRIS_INPUT}
    session = requests.Session()
    session.trust_env = False
    url = f"{created['endpoint']}/invocations"
    session.post(url, json=body, timeout=30).raise_for_status()
    figures = {
        "cold_s": cold,
        "create_s": statistics.median(seconds),
        "plugin_predict_ms": _median_ms(lambda: client.predict(name, body), count),
        "http_ms": _median_ms(lambda: session.post(url, json=body, timeout=30), count),
    }
    client.delete_deployment(name, config={"remove_image": "true"})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    scratch_registry("bench-remote-")
    rows = []
    with remote_engine([os.environ["MLFLOW_DOCKERHOST_BASE_IMAGE"],
                        os.environ["MLFLOW_DOCKERHOST_PROXY_IMAGE"]]) as remote:
        rows.append(("local (unix socket)", measure("dockerhost", args.creates, args.requests)))
        os.environ.update({"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(remote.certs)})
        rows.append(("remote, tcp+TLS", measure(f"dockerhost:/{remote.tcp_url}", args.creates,
                                                 args.requests)))
        os.environ["HOME"] = str(remote.ssh_home)
        rows.append(("remote, ssh", measure(f"dockerhost:/{remote.ssh_url}", args.creates,
                                             args.requests)))
    print(f"\nMedians: {args.creates} warm creates, {args.requests} requests each "
          "(3-row iris body)")
    print("| engine | cold create s | warm create s | plugin predict ms | HTTP to endpoint ms |")
    print("|---|---:|---:|---:|---:|")
    for label, figures in rows:
        print(f"| {label} | {figures['cold_s']:.1f} | {figures['create_s']:.2f} | "
              f"{figures['plugin_predict_ms']:.1f} | {figures['http_ms']:.2f} |")


if __name__ == "__main__":
    main()
