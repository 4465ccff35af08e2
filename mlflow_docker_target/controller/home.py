"""Where the controller runs, as ``lifecycle`` sees it: a container of one engine
(``as_container``) or, on a swarm manager, a service held on that manager (``as_service``).
Both are modules with the functions of :class:`Home`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from docker.models.containers import Container

from mlflow_docker_target.engine.connection import Engine


@dataclass(frozen=True)
class Found:
    """An engine's controller: the tags of the image it runs, its state (Docker's word for a
    container's or a Swarm task's: running, exited, failed, ...) and its newest container on
    the engine asked, if there is one (its logs, its ledger, a command run in it); and the
    environment it was started with."""

    image_tags: list[str]
    status: str
    container: Container | None
    environment: dict[str, str]


@dataclass(frozen=True)
class Start:
    """What a controller starts with: its name, image, labels and environment, and what it
    mounts (the engine's socket at ``socket[1]`` from the host's ``socket[0]``, its volume at
    ``volume[1]``)."""

    name: str
    image: str
    labels: dict[str, str]
    environment: dict[str, str]
    socket: tuple[str, str]
    volume: tuple[str, str]
    stop_wait: int  # seconds a stopped controller may take to finish a rollout in progress


def environment_of(variables: list[str] | None) -> dict[str, str]:
    """A container's or a task's environment (``NAME=value`` lines) by name."""
    return dict(line.split("=", 1) for line in variables or [])


class Home(Protocol):
    def find(self, engine: Engine) -> Found | None: ...

    def start(self, engine: Engine, start: Start) -> None: ...

    def remove(self, engine: Engine, stop_wait: int) -> None:
        """Stop it (a rollout in progress may take ``stop_wait`` seconds to finish), and
        return once it is gone."""
