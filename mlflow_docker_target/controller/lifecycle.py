"""Starting, replacing and removing an engine's controller, from the client.

One container per engine (role ``controller``, a fixed name, so two clients cannot start two).
The first deployment that follows an alias starts it; a client whose plugin builds another
controller image (a newer version) replaces it, after letting a rollout in progress finish;
it goes when the last deployment that follows an alias is deleted or stops following.

It runs on the engine host's network, so that it reaches endpoints and the registry as a client
on that host would: a rollout checks that the endpoint answers at its URL (a port published on
the host's 127.0.0.1, by default), which no bridge network reaches. It holds the engine's
socket, which is root on that host: it runs locked down otherwise (read-only root filesystem,
every capability dropped), and its image holds only the plugin and its dependencies. What it
remembers is on its volume, which outlives it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import docker.errors
from docker.models.containers import Container
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target import record
from mlflow_docker_target.config import (
    BASE_IMAGE_ENV,
    PROXY_IMAGE_ENV,
    STRIP_IMAGE_ENV,
    Settings,
)
from mlflow_docker_target.controller import ledger
from mlflow_docker_target.controller.image import ensure_controller_image
from mlflow_docker_target.controller.watch import STARTED
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.containers import list_containers
from serving_image.contract import VERSION

log = logging.getLogger(__name__)

ROLE = record.CONTROLLER
NAME = "mlflow-dockerhost-controller"
VOLUME = NAME  # its ledger, its builds' scratch space and caches
SOCKET = "/var/run/docker.sock"  # in the controller; and on the engine's host, unless:
SOCKET_ENV = "MLFLOW_DOCKERHOST_ENGINE_SOCKET"  # where a tcp:// or ssh:// engine's socket is
START_WAIT = 60  # seconds for a new controller to list the engine's deployments
STOP_WAIT = 600  # seconds a replaced controller may take to finish a rollout in progress
# what the controller takes from the client's environment: the registry's credentials, pip's
# settings (index, proxy) for new requirements, and the images its builds use
_PASSED = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
           "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
           BASE_IMAGE_ENV, STRIP_IMAGE_ENV, PROXY_IMAGE_ENV,
           "MLFLOW_DOCKERHOST_KEEP_ENVIRONMENTS")

INSIDE = "MLFLOW_DOCKERHOST_CONTROLLER"  # set in the controller's own environment
# asks a tracking server's health probe, from the controller
_REACH = ("import sys, urllib.request; "
          "urllib.request.urlopen(sys.argv[1] + '/health', timeout=10).read()")

Hold = Callable[[], AbstractContextManager[None]]


def find(engine: Engine) -> Container | None:
    found = list_containers(engine.client, f"{record.ROLE}={ROLE}")
    return found[0] if found else None


def describe(engine: Engine) -> Callable[[str], dict[str, object]]:
    """What ``get`` and ``list`` show of a followed deployment, by name: the controller's
    state and its last decision about it (its ledger, read once)."""
    found = find(engine)
    if found is None:
        return lambda name: {"controller": "missing"}
    entries: dict[str, dict[str, object]] = {}
    with contextlib.suppress(docker.errors.APIError, KeyError, ValueError):
        entries = _read_ledger(found)
    return lambda name: {"controller": found.status, **entries.get(name, {})}


def _read_ledger(container: Container) -> dict[str, dict[str, object]]:
    stream, _ = container.get_archive(f"{ledger.DIR}/{ledger.FILE}")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.extractfile(ledger.FILE)
        return json.loads(member.read()) if member else {}


def ensure(engine: Engine, settings: Settings, hold: Hold) -> None:
    """The engine's controller runs this plugin's image; started or replaced if not. Inside
    the controller (its own rollouts), it is running."""
    if os.environ.get(INSIDE):
        return
    image = ensure_controller_image(engine, settings)
    with hold():
        found = find(engine)
        if found is not None:
            same = image in found.image.tags
            if same and found.status == "running":
                return
            if same:
                log.info("Starting the engine's controller again (it was %s)", found.status)
            else:
                log.info("Replacing the engine's controller (plugin %s) with plugin %s's; it "
                         "finishes a rollout in progress first",
                         found.labels.get(record.PLUGIN_VERSION), VERSION)
            _remove(found)
            if not same:
                with contextlib.suppress(docker.errors.APIError):  # another client's in use
                    engine.client.images.remove(found.image.id)
        _start(engine, image)


def check_reaches(engine: Engine, tracking_uri: str) -> None:
    """The registry answers the controller, where the controller runs; else say so before
    anything is built."""
    found = find(engine)
    if os.environ.get(INSIDE) or found is None:
        return
    result = found.exec_run(["python", "-c", _REACH, tracking_uri])
    if result.exit_code != 0:
        said = result.output.decode(errors="replace").strip().splitlines()[-1:]
        raise MlflowException(
            f"The model registry at {tracking_uri} does not answer from the engine's "
            f"controller on {engine.url} ({' '.join(said) or 'no answer'}). Give -C "
            "tracking_uri with an address the engine's containers reach, where the tracking "
            "server listens (not only on 127.0.0.1).", INVALID_PARAMETER_VALUE)


def release(engine: Engine, still_needed: bool, hold: Hold) -> None:
    """Remove the controller once no deployment follows an alias (its volume stays: a later
    controller picks up its ledger)."""
    if still_needed:
        return
    with hold():
        found = find(engine)
        if found is not None:
            log.info("No deployment needs the controller any more (none follows an alias or "
                     "rolls out as canaries); removing it")
            _remove(found)


def _remove(container: Container) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.stop(timeout=STOP_WAIT)
        container.remove(force=True)


def _start(engine: Engine, image: str) -> None:
    socket = (engine.url[len("unix://"):] if engine.url.startswith("unix://")
              else os.environ.get(SOCKET_ENV) or SOCKET)
    environment = {name: os.environ[name] for name in _PASSED if os.environ.get(name)}
    environment.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    environment.update({INSIDE: "1", "DOCKER_HOST": f"unix://{SOCKET}", "HOME": ledger.DIR,
                        "TMPDIR": ledger.DIR, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"})
    volume = engine.client.volumes.create(VOLUME, labels={record.ROLE: ROLE})
    container = engine.client.containers.run(
        image, name=NAME, detach=True, user="0:0",
        labels={record.ROLE: ROLE, record.PLUGIN_VERSION: VERSION},
        environment=environment, restart_policy={"Name": "unless-stopped"},
        network_mode="host",
        volumes={socket: {"bind": SOCKET, "mode": "rw"},
                 volume.name: {"bind": ledger.DIR, "mode": "rw"}},
        **lockdown.container_options())
    expected = f"{STARTED} on engine {engine.client.info()['ID']}"
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        container.reload()
        logs = container.logs().decode(errors="replace")
        if expected in logs:
            log.info("The engine's controller %s runs (plugin %s)", NAME, VERSION)
            return
        if STARTED in logs or container.status == "exited":
            break
        time.sleep(0.5)
    tail = "\n".join(container.logs().decode(errors="replace").splitlines()[-20:])
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)
    raise MlflowException(
        f"The engine's controller did not start on {engine.url}: it must reach this engine "
        f"through {socket} on its host (another engine's socket there is refused). Its "
        f"log:\n{tail}")
