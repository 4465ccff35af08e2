"""Starting, replacing and removing an engine's controller, from the client.

One per engine (role ``controller``, a fixed name, so two clients cannot start two): a
container, or on a swarm manager a service held on that manager (``home``, ``as_container``,
``as_service``). The first deployment that needs it starts it; a client whose plugin builds
another controller image (a newer version) replaces it, after letting a rollout in progress
finish; it goes when the last deployment that needs it is deleted or stops needing it.

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
from mlflow_docker_target.controller import (
    as_container,
    as_service,
    ledger,
    registry_credentials,
)
from mlflow_docker_target.controller.home import Home, Start
from mlflow_docker_target.controller.image import ensure_controller_image
from mlflow_docker_target.controller.watch import STARTED
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.runtimes.swarm import manages_swarm
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
_ENDED = ("exited", "dead", "failed", "rejected")  # a container's or a task's


def home(engine: Engine) -> Home:
    """A swarm manager's controller is a service held on that manager; any other engine's, a
    container."""
    return as_service if manages_swarm(engine.client.info()) else as_container


def describe(engine: Engine) -> Callable[[str], dict[str, object]]:
    """What ``get`` and ``list`` show of a followed deployment, by name: the controller's
    state and its last decision about it (its ledger, read once)."""
    found = home(engine).find(engine)
    if found is None:
        return lambda name: {"controller": "missing"}
    entries: dict[str, dict[str, object]] = {}
    if found.container is not None:
        with contextlib.suppress(docker.errors.APIError, KeyError, ValueError):
            entries = _read_ledger(found.container)
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
    place = home(engine)
    added = registry_credentials.for_registry(settings.registry)
    with hold():
        if place is as_service and as_container.find(engine) is not None:
            log.info("The engine now manages a swarm: its controller becomes a service")
            as_container.remove(engine, STOP_WAIT)
        found = place.find(engine)
        given = found.environment.get(registry_credentials.ENV) if found else None
        credentials = registry_credentials.merged(given, added)
        if found is not None:
            same = image in found.image_tags
            if same and found.status == "running" and credentials == given:
                return
            if same and credentials != given:
                log.info("Starting the engine's controller again with the client's "
                         "credentials for registry %s", ", ".join(added))
            elif same:
                log.info("Starting the engine's controller again (it was %s)", found.status)
            else:
                log.info("Replacing the engine's controller (%s) with plugin %s's; it "
                         "finishes a rollout in progress first",
                         ", ".join(found.image_tags), VERSION)
            place.remove(engine, STOP_WAIT)
            if not same:
                for tag in found.image_tags:
                    with contextlib.suppress(docker.errors.APIError):  # another's in use
                        engine.client.images.remove(tag)
        start(engine, image, credentials)


def check_reaches(engine: Engine, tracking_uri: str) -> None:
    """The registry answers the controller, where the controller runs; else say so before
    anything is built."""
    found = home(engine).find(engine) if not os.environ.get(INSIDE) else None
    if found is None or found.container is None or found.status != "running":
        return
    result = found.container.exec_run(["python", "-c", _REACH, tracking_uri])
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
    place = home(engine)
    with hold():
        if place.find(engine) is not None:
            log.info("No deployment needs the controller any more (none follows an alias or "
                     "rolls out as canaries); removing it")
            place.remove(engine, STOP_WAIT)


def start(engine: Engine, image: str, registry_auth: str | None = None) -> None:
    """Start the controller on ``image``, and wait until it has listed the engine's
    deployments; removed again, with its log in the error, if it does not get there.
    ``registry_auth``: the client's credentials for swarms' registries
    (``registry_credentials``)."""
    socket = (engine.url[len("unix://"):] if engine.url.startswith("unix://")
              else os.environ.get(SOCKET_ENV) or SOCKET)
    environment = {name: os.environ[name] for name in _PASSED if os.environ.get(name)}
    environment.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    environment.update({INSIDE: "1", "DOCKER_HOST": f"unix://{SOCKET}", "HOME": ledger.DIR,
                        "TMPDIR": ledger.DIR, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"})
    if registry_auth:
        environment[registry_credentials.ENV] = registry_auth
    place = home(engine)
    place.start(engine, Start(NAME, image, {record.ROLE: ROLE, record.PLUGIN_VERSION: VERSION},
                              environment, (socket, SOCKET), (VOLUME, ledger.DIR), STOP_WAIT))
    expected = f"{STARTED} on engine {engine.client.info()['ID']}"
    deadline = time.monotonic() + START_WAIT
    logs = ""
    while time.monotonic() < deadline:
        found = place.find(engine)
        if found is not None and found.container is not None:
            logs = found.container.logs().decode(errors="replace")
            if expected in logs:
                log.info("The engine's controller %s runs (plugin %s)", NAME, VERSION)
                return
            if STARTED in logs:
                break
        if found is None or found.status in _ENDED:
            break
        time.sleep(0.5)
    tail = "\n".join(logs.splitlines()[-20:])
    place.remove(engine, 0)
    raise MlflowException(
        f"The engine's controller did not start on {engine.url}: it must reach this engine "
        f"through {socket} on its host (another engine's socket there is refused). Its "
        f"log:\n{tail}")
