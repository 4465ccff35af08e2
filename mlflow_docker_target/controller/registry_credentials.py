"""The client's credentials for a swarm's registry, handed to the controller.

On a swarm, the controller's rollouts push each new version's image to ``-C registry``, as a
client's ``update`` does. docker-py pushes with the Docker config of the process that pushes
(``docker login``, or a credential helper), and the client's is on the user's machine: so the
client resolves its entry for the registry's host and hands it to the controller in its
environment (a secret there, as the registry's own credentials are), and the controller writes
it as its own Docker config, in its in-memory scratch directory, before it connects.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import docker.auth
import docker.errors

log = logging.getLogger(__name__)

ENV = "MLFLOW_DOCKERHOST_REGISTRY_AUTH"  # in the controller: a Docker config's ``auths``


def for_registry(registry: str | None) -> dict[str, dict[str, str]]:
    """The client's ``auths`` entry for the host of ``registry`` (``host:port[/prefix]``), as a
    Docker config holds it; empty when the client has none (an open registry)."""
    if not registry:
        return {}
    host = registry.split("/", 1)[0]
    try:
        found = docker.auth.resolve_authconfig(docker.auth.load_config(), host) or {}
    except (docker.errors.DockerException, OSError) as exc:  # a credential helper failed
        log.warning("The credentials for registry %s could not be read (%s); the engine's "
                    "controller pushes to it without them", host, exc)
        return {}
    user = found.get("username") or found.get("Username")
    password = found.get("password") or found.get("Password")
    entry = {}
    if found.get("IdentityToken"):
        entry["identitytoken"] = found["IdentityToken"]
    elif user and password:
        entry["auth"] = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {host: entry} if entry else {}


def merged(given: str | None, added: dict[str, dict[str, str]]) -> str | None:
    """The value of :data:`ENV`: what the controller was ``given``, with ``added`` (newer
    credentials for a host replace older ones); ``None`` when there are none."""
    auths = json.loads(given)["auths"] if given else {}
    auths.update(added)
    return json.dumps({"auths": auths}, sort_keys=True) if auths else None


def install(directory: str) -> None:
    """In the controller, before it connects: its Docker config (``DOCKER_CONFIG``) under
    ``directory`` from what the client handed over, if anything."""
    given = os.environ.get(ENV)
    if not given:
        return
    config = Path(directory) / "docker-config"
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "config.json").write_text(given)
    os.environ["DOCKER_CONFIG"] = str(config)
