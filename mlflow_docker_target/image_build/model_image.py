"""The model image: the environment image plus the server and the model, content-addressed.

``model_image`` is the whole build of a deployment's image: fetch the model, make sure of its
environment, then add the thin top layers (seconds; the same model on the same environment is
reused).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.images import image_exists
from mlflow_docker_target.image_build import model_fetch
from mlflow_docker_target.image_build.docker_build import (
    IMAGE_REPO,
    build,
    build_context,
    server_root,
    template,
    tree_digest,
)
from mlflow_docker_target.image_build.environment import Hold, ensure_environment
from mlflow_docker_target.image_build.model_fetch import FetchedModel
from mlflow_docker_target.record import (
    ENVIRONMENT,
    KIND,
    ModelRef,
    model_labels,
)

log = logging.getLogger(__name__)

# What a new inference log volume starts with (it takes the image's directory).
VOLUME_README = (server_root() / "payload_log" / "VOLUME_README.txt").read_bytes()



def image_repository(deployment: str) -> str:
    """Docker repository names are lower case; deployment names need not be."""
    return f"{IMAGE_REPO}/{re.sub(r'[^a-z0-9._-]', '-', deployment.lower())}"


def build_model_image(engine: Engine, environment: str, model: FetchedModel,
                      deployment: str, labels: Mapping[str, str]) -> str:
    """The model image, content-addressed: the same model on the same environment is reused."""
    env_id = engine.client.images.get(environment).id
    digest = hashlib.sha256(env_id.encode() + template("model.Dockerfile"))
    tree_digest(server_root(), digest)
    tree_digest(model.path, digest)
    tag = f"{image_repository(deployment)}:{digest.hexdigest()[:12]}"
    if image_exists(engine, tag):
        log.info("Model image %s is already on the engine", tag)
        return tag
    labels = {**labels, KIND: "model", ENVIRONMENT: environment}
    label_line = "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    dockerfile = template("model.Dockerfile") + label_line.encode() + b"\n"
    trees = {"server/serving_image": server_root(), "model": model.path}
    files = {"Dockerfile": dockerfile, "payload-log/README.txt": VOLUME_README}
    with build_context(files, trees) as context:
        build(engine, context, tag, buildargs={"ENV_IMAGE": environment})
    return tag


def model_image(engine: Engine, deployment: str, ref: ModelRef, settings: Settings,
                hold: Hold) -> tuple[str, ModelRef]:
    """Fetch the model and build (or reuse) its serving image; returns the tag and the model.
    ``hold`` holds the build of its environment (``environment.ensure_environment``)."""
    with tempfile.TemporaryDirectory(prefix="mlflow-dockerhost-") as tmp:
        model = model_fetch.fetch(ref, Path(tmp))
        environment = ensure_environment(engine, model, settings, hold)
        labels = model_labels(model.ref)
        return build_model_image(engine, environment, model, deployment, labels), model.ref
