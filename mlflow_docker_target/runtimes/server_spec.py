"""What a serving container (or a swarm's task) is started from: its labels and environment.

Every runtime starts servers from a :class:`Spec`, and so does ``run-local``: the labels are the
deployment record (``record``); the environment is the server's settings
(``serving_image.settings``), derived from the ``-C`` keys that are server settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from docker.types import Mount

from mlflow_docker_target import record
from mlflow_docker_target.config import SERVER_KEYS, Settings
from mlflow_docker_target.record import ModelRef
from mlflow_docker_target.runtimes import payload_log
from serving_image.contract import DRAIN_SECONDS, ENV_PREFIX
from serving_image.settings import ServerSettings


@dataclass(frozen=True)
class Spec:
    """Everything a serving container is started from."""

    deployment: str
    image: str
    model: ModelRef
    config: Mapping[str, str]
    settings: Settings
    plugin_version: str
    local_run: bool = False
    endpoint: str | None = None
    slot: int | None = None  # behind a front
    rollout: str | None = None  # the rollout that starts it (``record.ROLLOUT``)

    def mounts(self) -> list[Mount]:
        """Its inference log's volume, when it has one."""
        return payload_log.mounts(self.deployment, self.settings)

    def labels(self) -> dict[str, str]:
        labels = record.server_labels(self.deployment, self.image, self.model, self.config,
                                      self.plugin_version, self.endpoint)
        if self.local_run:
            labels[record.LOCAL_RUN] = "true"
        if self.slot is not None:
            labels[record.SLOT] = str(self.slot)
        if self.rollout:
            labels[record.ROLLOUT] = self.rollout
        return labels

    def environment(self, replica: str | None = None) -> dict[str, str]:
        """The server's settings from the ``-C`` keys that are server settings, what it
        serves, and how it stops: behind a front, out of its rotation first. ``replica``: the
        name its inference log records give it (a swarm passes a template)."""
        settings = self.settings
        server = ServerSettings(
            **{name: getattr(settings, name) for name in SERVER_KEYS},
            model_uri=self.model.uri, replica=replica,
            model_name=self.model.name, model_version=self.model.version,
            run_id=self.model.run_id, image=self.image, deployment=self.deployment,
            endpoint=self.endpoint, drain_seconds=0.0 if self.local_run else DRAIN_SECONDS,
            preload=not settings.gpus,  # CUDA does not survive a fork: each worker loads
            workers=settings.workers or 1,  # with GPUs, one copy of the model per GPU
        ).to_env()
        if not settings.workers and not settings.gpus:
            del server[f"{ENV_PREFIX}WORKERS"]  # the server counts the CPUs it may use
        return {**settings.env, **server}
