"""GPUs: ``-C gpus`` as Docker device requests, and the engine's own answer to whether it can
give them.

Docker hands GPUs to a container through a device driver that the NVIDIA Container Toolkit
registers with the engine; without it, starting such a container fails ("could not select
device driver"). The engine is the only judge (a runtime list or a CDI spec may or may not be
how a given host does it), so ``check`` starts a throwaway container with the same request
before anything is built.
"""

from __future__ import annotations

import contextlib

import docker.errors
from docker.types import DeviceRequest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target import record
from mlflow_docker_target.config import Settings
from mlflow_docker_target.config_values import GPU_DEVICES
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.images import ensure_image

HINT = ("Install the NVIDIA driver and the NVIDIA Container Toolkit on the engine's host and "
        "configure Docker for it (nvidia-ctk runtime configure --runtime=docker, then restart "
        "dockerd), or deploy without -C gpus.")


def device_requests(value: str) -> list[DeviceRequest]:
    """The device requests ``docker run --gpus <value>`` makes."""
    capabilities = [["gpu"]]
    if value == "all":
        return [DeviceRequest(count=-1, capabilities=capabilities)]
    devices = GPU_DEVICES.match(value)
    if devices:
        return [DeviceRequest(device_ids=devices.group(1).split(","),
                              capabilities=capabilities)]
    return [DeviceRequest(count=int(value), capabilities=capabilities)]


def check(engine: Engine, settings: Settings) -> None:
    """Fail with a clear error, leaving nothing behind, unless the engine starts a container
    with ``-C gpus`` (the front's image, which every deployment needs, runs ``haproxy -v``).

    ``create`` and ``run-local`` call it before they build: a build takes minutes, the
    engine's refusal a fraction of a second.
    """
    value = settings.gpus
    if not value:
        return
    image = ensure_image(engine, settings.resolved_proxy_image(), settings.pull_base, "proxy")
    container = engine.client.containers.create(image, entrypoint=["haproxy", "-v"],
                                                device_requests=device_requests(value),
                                                labels={record.ROLE: record.PROBE_ROLE},
                                                **lockdown.container_options())
    try:
        container.start()
        container.wait(timeout=60)
    except docker.errors.APIError as exc:
        raise MlflowException(
            f"The engine at {engine.url} cannot give containers GPUs (-C gpus={value}): "
            f"{exc.explanation or exc}. {HINT}", INVALID_PARAMETER_VALUE) from exc
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
