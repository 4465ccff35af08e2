"""The controller's process: ``python -m mlflow_docker_target.controller`` in its container.

Its decisions and its builds' progress go to stderr through the plugin's logger, as a
client's do: ``docker logs`` shows them."""

import signal
import threading

import docker

from mlflow_docker_target.client import DockerHostDeploymentClient
from mlflow_docker_target.controller import registry_credentials, replica_metrics, watch
from serving_image.contract import SCRATCH_DIR


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    registry_credentials.install(SCRATCH_DIR)  # before any client loads its Docker config
    engine = docker.from_env()
    unreachable: set[str] = set()  # containers read through exec (replica_metrics)
    watch.run(DockerHostDeploymentClient("dockerhost"), engine.info()["ID"],
              lambda names: replica_metrics.read(engine, names, unreachable), stop=stop)


if __name__ == "__main__":
    main()
