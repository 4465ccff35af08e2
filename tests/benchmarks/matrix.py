"""The model matrix's figures: one row per model saved by MLflow 2.16, 2.22 and 3.17.

    python tests/benchmarks/matrix.py [--starts 3] [--only 3.17.2/xgboost ...]

Per model: cold create (no environment image for it yet; pip's download cache stays warm),
warm create (the same requirements, a new deployment), image size, container start to ready
(median), and whether the deployment's predictions equal the model's own (saved with its own
MLflow, in its own virtualenv: tests/model_matrix.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

import docker
import docker.errors
import pytest
import requests
from mlflow.deployments import get_deploy_client

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlflow_docker_target.config import Settings
from mlflow_docker_target.image_build.model_fetch import resolve
from mlflow_docker_target.record import ENVIRONMENT
from mlflow_docker_target.runtimes.server_spec import Spec
from tests.benchmarks.deploy import delete, start_to_ready, timed
from tests.helpers.model_matrix import FLAVORS, PINS, saved, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="version/flavor pairs")
    args = parser.parse_args()
    docker_client = docker.from_env(timeout=300)
    client = get_deploy_client("dockerhost")
    rows = []
    for version in PINS:
        for flavor in FLAVORS:
            if args.only and f"{version}/{flavor}" not in args.only:
                continue
            model = saved(version, flavor)
            name = f"matrix-{version.replace('.', '')}-{flavor}"
            create = partial(client.create_deployment, name, str(model.path))
            # Cold: learn the environment, remove it, create again.
            _, created = timed(create)
            environment = docker_client.images.get(created["image"]).labels[ENVIRONMENT]
            delete(client, name)
            try:
                docker_client.images.remove(environment)
            except docker.errors.APIError as exc:
                print(f"{name}: keeping {environment} ({exc.explanation}); cold is warm")
            cold, created = timed(create)
            url = client.get_deployment(name)["endpoint"]
            answer = requests.post(f"{url}/invocations", json=model.rows, timeout=60)
            match = (answer.status_code == 200 and values(answer.json()["predictions"])
                     == pytest.approx(model.expected, rel=1e-6))
            image = docker_client.images.get(created["image"])
            size_mb = image.attrs["Size"] / 1e6
            delete(client, name)
            warm, created = timed(create)
            starts = start_to_ready(Spec(f"{name}-start", created["image"],
                                         resolve(str(model.path)), {}, Settings(),
                                         f"{name}-start"), args.starts)
            delete(client, name)
            row = (version, flavor, cold, warm, size_mb, statistics.median(starts), match)
            print(f"{name}: cold {cold:.1f} s, warm {warm:.1f} s, {size_mb:.0f} MB, "
                  f"ready {row[5]:.2f} s, match {match}", flush=True)
            rows.append(row)
    print("\n| MLflow | flavor | cold create | warm create | image | start to ready "
          "| predictions match |")
    print("|---|---|---:|---:|---:|---:|---|")
    for version, flavor, cold, warm, size_mb, ready, match in rows:
        print(f"| {version} | {flavor} | {cold:.0f} s | {warm:.1f} s | {size_mb:.0f} MB "
              f"| {ready:.2f} s | {'yes' if match else 'NO'} |")


if __name__ == "__main__":
    main()
