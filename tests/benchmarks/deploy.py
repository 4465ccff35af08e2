"""Deployment figures on this machine's engine: cold and warm create, start-to-ready, image size.

    python tests/benchmarks/deploy.py [--cold 3] [--warm 5] [--starts 5]

Cold: no environment image yet (it is removed before each run; pip's own download cache stays
warm, as it would for a user deploying a second time). Warm: a new version of the same model,
same requirements. Start-to-ready: container start until ``/ping`` answers 200, from the client.
Every figure is a median; the engine and the base image come from the environment, as for tests.
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
from mlflow_docker_target.record import ENVIRONMENT as ENV_LABEL
from mlflow_docker_target.runtimes.container import containers
from mlflow_docker_target.runtimes.server_spec import Spec
from tests.benchmarks.scratch import scratch_registry


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def delete(client, name: str) -> None:
    client.delete_deployment(name, config={"remove_image": "true"})


def start_to_ready(spec: Spec, runs: int) -> list[float]:
    """Seconds from starting a serving container to its ``/ping`` answering 200, per run."""
    engine = connect(None)
    starts = []
    for run in range(runs):
        started = time.perf_counter()
        container = containers.start(engine, spec, None)
        containers.wait_ready(engine, container, 300)
        starts.append(time.perf_counter() - started)
        print(f"start-to-ready {run + 1}: {starts[-1]:.2f} s")
        containers.remove(container, 10)
    return starts


def _layers(docker_client: docker.DockerClient, image: str) -> list[tuple[float, str]]:
    rows = []
    for layer in docker_client.images.get(image).history():
        if layer["Size"]:
            step = " ".join(layer["CreatedBy"].replace("/bin/sh -c #(nop) ", "").split())
            rows.append((layer["Size"] / 1e6, step[:90]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    work = scratch_registry("bench-deploy-")
    client = get_deploy_client("dockerhost")
    docker_client = docker.from_env()
    name = "bench"
    delete(client, name)

    # One unrecorded create learns which environment image this model needs.
    created = client.create_deployment(name, register_demo_model("bench-model"))
    environment = docker_client.images.get(created["image"]).labels[ENV_LABEL]
    delete(client, name)

    cold = []
    for run in range(args.cold):
        docker_client.images.remove(environment)
        uri = register_demo_model("bench-model")
        seconds, _ = timed(lambda uri=uri: client.create_deployment(name, uri))
        cold.append(seconds)
        print(f"cold create {run + 1}: {seconds:.1f} s")
        delete(client, name)

    warm = []
    for run in range(args.warm):
        uri = register_demo_model("bench-model")
        seconds, created = timed(lambda uri=uri: client.create_deployment(name, uri))
        warm.append(seconds)
        print(f"warm create {run + 1}: {seconds:.1f} s ({uri})")
        image = created["image"]
        if run < args.warm - 1:
            delete(client, name)

    starts = start_to_ready(Spec("bench-start", image, resolve(uri), {}, Settings(), "bench"),
                            args.starts)

    size_mb = docker_client.images.get(image).attrs["Size"] / 1e6
    layers = _layers(docker_client, image)
    delete(client, name)

    print("\n| figure | median | runs | target |")
    print("|---|---:|---:|---|")
    print(f"| cold create (no environment image) | {statistics.median(cold):.1f} s "
          f"| {len(cold)} | |")
    print(f"| warm create (new version, same requirements) | {statistics.median(warm):.1f} s "
          f"| {len(warm)} | <= 10 s |")
    print(f"| container start to ready | {statistics.median(starts):.2f} s | {len(starts)} "
          "| <= 2.5 s |")
    print(f"| demo model image | {size_mb:.0f} MB | | <= 420 MB |")
    print("\n| layer | MB |\n|---|---:|")
    for megabytes, step in layers:
        print(f"| `{step}` | {megabytes:.1f} |")
    result = {"cold_s": cold, "warm_s": warm, "start_to_ready_s": starts, "image_mb": size_mb,
              "layers": layers}
    out = Path(os.environ.get("BENCH_OUT", work / "deploy.json"))
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
