"""The controller's image, built offline from the plugin's own code and its dependencies.

Like every image the plugin makes, it builds with the network off: the client resolves the
wheels of the plugin's dependencies, pinned to the versions the client runs (so the controller
behaves as the client that started it), for the base image's platform. The tag is a hash of
what goes in, so a newer plugin (or other pins) makes a new image and replaces the controller.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import secrets
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.images import ensure_image, image_exists
from mlflow_docker_target.image_build import requirements as dependencies
from mlflow_docker_target.image_build.docker_build import (
    IMAGE_REPO,
    build,
    build_context,
    server_root,
    tree_digest,
)
from mlflow_docker_target.image_build.environment import probe_platform, remove_stages
from mlflow_docker_target.record import BASE_IMAGE, KIND, PLUGIN_VERSION
from serving_image.contract import VERSION

PACKAGE = "mlflow-docker-target"
DOCKERFILE = Path(__file__).with_name("controller.Dockerfile")
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # as the client runs the code


def pinned_requirements() -> list[str]:
    """The plugin's dependencies at the versions this client runs."""
    lines = []
    for text in importlib.metadata.requires(PACKAGE) or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra's (serve, dev): not the controller's
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        version = importlib.metadata.version(requirement.name)
        lines.append(f"{requirement.name}{extras}=={version}")
    return sorted(lines)


def plugin_root() -> Path:
    return Path(__file__).resolve().parents[1]


def ensure_controller_image(engine: Engine, settings: Settings) -> str:
    """The controller image for this plugin on this engine, built only when missing."""
    base = settings.resolved_base_image(PYTHON)
    base_id = ensure_image(engine, base, settings.pull_base)
    lines = pinned_requirements()
    digest = hashlib.sha256("\n".join([base_id, *lines]).encode() + DOCKERFILE.read_bytes())
    tree_digest(plugin_root(), digest)
    tree_digest(server_root(), digest)
    tag = f"{IMAGE_REPO}/controller:{VERSION}-{digest.hexdigest()[:12]}"
    if image_exists(engine, tag):
        return tag
    platform = probe_platform(engine, base_id)
    build_id = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="mlflow-dockerhost-controller-") as wheelhouse:
        dependencies.download_wheels(dependencies.Requirements(tuple(lines)), platform,
                                     Path(wheelhouse))
        files = {"Dockerfile": DOCKERFILE.read_bytes()}
        trees = {"wheels": Path(wheelhouse), "src/mlflow_docker_target": plugin_root(),
                 "src/serving_image": server_root()}
        try:
            with build_context(files, trees) as context:
                build(engine, context, tag, buildargs={"BASE_IMAGE": base, "BUILD_ID": build_id},
                      labels={KIND: "controller", BASE_IMAGE: base, PLUGIN_VERSION: VERSION})
        finally:
            remove_stages(engine, build_id)
    return tag
