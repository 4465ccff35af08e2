"""Four creates of models that share one new environment: all at once, against one after
another, side by side in rounds (each round on an environment no round has built).

    python tests/benchmarks/builds.py [--rounds 1]

At once, the environment is built once and the others wait for it (its build lease); one after
another, the first builds it and the others find it. Every deployment and environment image
made is removed after its round.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import mlflow

sys.path.insert(0, str(Path(__file__).parents[2]))
from mlflow_docker_target.demo import register_demo_model
from tests.benchmarks.scratch import scratch_registry

MODELS = 4
PLAIN_MODEL = """
import mlflow


class Doubles(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return (model_input["x"] * 2).tolist()


mlflow.models.set_model(Doubles())
"""


def register(work: Path, iris: str, tag: str) -> list[str]:
    """Four models on one environment no round has built: iris's requirements, and one that
    excludes a version no package has."""
    requirements = Path(mlflow.artifacts.download_artifacts(
        f"{iris}/requirements.txt")).read_text().split()
    extra = f"six!=0.0.{secrets.randbelow(10**9)}"
    code = work / "doubles.py"
    code.write_text(PLAIN_MODEL)
    uris = []
    for n in range(MODELS):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                           registered_model_name=f"{tag}-{n}",
                                           pip_requirements=[*requirements, extra])
        uris.append(f"models:/{tag}-{n}/{info.registered_model_version}")
    return uris


def create(name: str, uri: str) -> None:
    subprocess.run([sys.executable, "-m", "mlflow", "deployments", "create", "-t", "dockerhost",
                    "--name", name, "-m", uri], check=True, capture_output=True)


def clean(client: docker.DockerClient, names: list[str]) -> None:
    environments = set()
    for name in names:
        for container in client.containers.list(
                filters={"label": f"io.mlflow.dockerhost.deployment={name}"}):
            environments.add(client.images.get(container.image.id).labels.get(
                "io.mlflow.dockerhost.environment"))
        subprocess.run([sys.executable, "-m", "mlflow", "deployments", "delete", "-t",
                        "dockerhost", "--name", name], check=True, capture_output=True)
    for environment in environments - {None}:
        client.images.remove(environment)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    work = scratch_registry("bench-builds-")
    iris = register_demo_model("iris")
    client = docker.from_env()
    times: dict[str, list[float]] = {"at once": [], "one after another": []}
    for round_ in range(args.rounds):
        order = list(times) if round_ % 2 == 0 else list(reversed(times))
        for way in order:
            tag = f"b{round_}{'a' if way == 'at once' else 's'}{secrets.token_hex(2)}"
            uris = register(work, iris, tag)
            names = [f"{tag}-{n}" for n in range(MODELS)]
            started = time.monotonic()
            if way == "at once":
                with ThreadPoolExecutor(MODELS) as pool:
                    list(pool.map(create, names, uris))
            else:
                for name, uri in zip(names, uris, strict=True):
                    create(name, uri)
            times[way].append(time.monotonic() - started)
            print(f"round {round_ + 1}: {MODELS} creates {way}: {times[way][-1]:.1f} s",
                  flush=True)
            clean(client, names)
    at_once, after = (statistics.median(times[w]) for w in times)
    print(f"\n{MODELS} creates on one new environment, median of {args.rounds} round(s): at "
          f"once {at_once:.1f} s, one after another {after:.1f} s ({at_once / after:.0%})")


if __name__ == "__main__":
    main()
