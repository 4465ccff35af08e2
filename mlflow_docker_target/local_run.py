"""``mlflow deployments run-local``: the image ``create`` would deploy, run in the foreground."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from docker.models.containers import Container
from mlflow.exceptions import MlflowException

from mlflow_docker_target.config import Settings, normalize, parse_config
from mlflow_docker_target.engine.connection import Engine, connect
from mlflow_docker_target.engine.errors import talking_to
from mlflow_docker_target.engine.images import remove_images
from mlflow_docker_target.image_build import model_fetch
from mlflow_docker_target.image_build.model_image import model_image
from mlflow_docker_target.names import check_name
from mlflow_docker_target.runtimes import lease
from mlflow_docker_target.runtimes.container import containers, gpus
from mlflow_docker_target.runtimes.server_spec import Spec
from serving_image.contract import VERSION

log = logging.getLogger(__name__)
DEFAULT_PORT = 5000


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _follow_logs(container: Container) -> None:
    """Copy the container's output to ours, line by line, until it stops."""
    buffer = b""
    for chunk in container.logs(stream=True, follow=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            sys.stdout.write(line.decode(errors="replace") + "\n")
        sys.stdout.flush()


def run_local(name: str, model_uri: str, flavor: str | None = None,
              config: dict[str, Any] | None = None) -> None:
    """Build the serving image, run it on the local engine until Ctrl-C or SIGTERM, then clean up.

    MLflow passes no target URI here, so the engine comes from ``-C docker_host`` or the
    environment (DOCKER_HOST, DOCKER_CONTEXT, the current context).
    """
    check_name(name)
    model_fetch.check_flavor(flavor)
    settings = parse_config(config, "run_local")
    engine = connect(settings.docker_host, settings)
    with talking_to(engine):
        _serve(engine, name, model_uri, config, settings)


def _serve(engine: Engine, name: str, model_uri: str, config: dict[str, Any] | None,
           settings: Settings) -> None:
    gpus.check(engine, settings)
    image, ref = model_image(engine, name, model_fetch.resolve(model_uri), settings,
                             lease.builds(engine))
    spec = Spec(name, image, ref, normalize(config), settings, VERSION, local_run=True)
    # Both signals stop the server, even where SIGINT was inherited as ignored (a process
    # started in the background by a shell, a supervisor).
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, _interrupt)
        except ValueError:  # not the main thread: signal handling is the caller's
            break
    started = time.time()
    container: Container | None = None
    ready = False
    try:
        # auto-removed by the engine when it ends, however this client ends
        container = containers.start(engine, spec, settings.port or DEFAULT_PORT)
        threading.Thread(target=_follow_logs, args=(container,), daemon=True).start()
        url = containers.wait_ready(engine, container, settings.ready_timeout)
        ready = True
        log.info("Serving %s at %s (container %s); Ctrl-C stops it", ref.resolved_uri, url,
                 container.name)
        status = container.wait()["StatusCode"]
        if containers.out_of_memory(container, since=started):
            raise MlflowException(
                f"The server in {container.name} ran out of memory (exit code {status}): a "
                "process was killed at its memory limit; raise -C memory.")
        raise MlflowException(f"The server in {container.name} exited with code {status}.")
    except KeyboardInterrupt:
        log.info("Stopping %s", container.name if container else name)
    finally:
        if container is not None:
            containers.remove(container, settings.stop_timeout)
        if not ready:  # it never served: what it built goes too
            remove_images(engine, {image})
        for signum, handler in previous.items():
            signal.signal(signum, handler)
