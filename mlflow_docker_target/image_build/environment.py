"""The environment image: a virtualenv with the model's and the server's dependencies, built once.

Its tag (``mlflow-dockerhost/env:<key>``) is a hash of what goes into it but the model, so
models with the same requirements on the same base share one. The client resolves the wheels
for the base image's Python, CPU and glibc (asked of the image itself), and the build installs
them with the network off, in a build stage that loads the model (``serving_image.build_check``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import docker
import docker.errors
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine import lockdown
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.engine.images import ensure_image, image_exists, list_images
from mlflow_docker_target.image_build import environment_cache
from mlflow_docker_target.image_build import requirements as dependencies
from mlflow_docker_target.image_build.docker_build import (
    IMAGE_REPO,
    build,
    build_context,
    server_root,
    template,
)
from mlflow_docker_target.image_build.model_fetch import FetchedModel
from mlflow_docker_target.image_build.requirements import Platform, Requirements
from mlflow_docker_target.record import (
    BASE_IMAGE,
    BUILD,
    KIND,
    REQUIREMENTS,
    SYSTEM_PACKAGES,
)
from serving_image.build_check import BUILD_ERROR

log = logging.getLogger(__name__)

# Holds an environment's build for this client, by its key (``runtimes.lease``).
Hold = Callable[[str], AbstractContextManager[None]]

CACHE_DIR = Path(os.environ.get("MLFLOW_DOCKERHOST_CACHE",
                                Path.home() / ".cache" / "mlflow-docker-target"))
_PROBE = (
    "import json, platform, sys, venv, ensurepip; "
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
    "'machine': platform.machine(), 'libc': platform.libc_ver()}))"
)


# What the environment build runs, in serving_image/.
ENVIRONMENT_BUILD = ("env.Dockerfile", "strip.sh", "build_check.py", "precompile.py",
                     "native_libs.py")


def probe_platform(engine: Engine, base_id: str) -> Platform:
    """Python, CPU and glibc of a base image, asked of the image itself (cached by image ID)."""
    cache = CACHE_DIR / "probes" / f"{base_id.replace(':', '_')}.json"
    if cache.is_file():
        found = json.loads(cache.read_text())
    else:
        try:
            output = engine.client.containers.run(
                base_id, ["python3", "-c", _PROBE], entrypoint=[], remove=True,
                network_disabled=True, stderr=True, **lockdown.container_options())
            found = json.loads(output.decode().strip().splitlines()[-1])
        except (docker.errors.ContainerError, ValueError, IndexError) as exc:
            raise MlflowException(
                f"The base image {base_id[:19]} cannot run `python3` with the venv module "
                f"({exc}). Use a base with Python 3 and venv, such as python:3.11-slim.",
                INVALID_PARAMETER_VALUE) from None
        cache.parent.mkdir(parents=True, exist_ok=True)
        written = cache.with_name(f"{cache.name}.{os.getpid()}")  # another client may write it
        written.write_text(json.dumps(found))
        written.replace(cache)
    libc, version = found["libc"]
    if libc != "glibc":
        raise MlflowException(
            f"The base image {base_id[:19]} uses {libc or 'an unknown libc'}; only glibc-based "
            "images (Debian, Ubuntu, python:*-slim ...) can install manylinux wheels.",
            INVALID_PARAMETER_VALUE)
    return Platform(python=found["python"], machine=found["machine"], glibc=version)


SERVER_PYTHON = (3, 10)  # the oldest Python the scoring server runs on (pyproject's too)


def environment_key(requirements: Requirements, platform: Platform, base_id: str,
                    strip_id: str, keep_cuda: bool) -> str:
    """Hash of everything that goes into an environment image but the model.

    The model only decides which modules get bytecode, and which left-out packages come back,
    so models with the same requirements share one environment. The build stage's own code is
    part of the key: what it leaves out changes what the image holds.
    """
    digest = hashlib.sha256()
    for part in (requirements.text(), requirements.constraints_text(),
                 json.dumps(platform.__dict__, sort_keys=True), base_id, strip_id,
                 *(template(name).decode() for name in ENVIRONMENT_BUILD),
                 "cuda" if keep_cuda else "cpu"):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def check_python(platform: Platform, base: str, model_python: str) -> None:
    """Refuse a base whose Python the server cannot run on, naming both versions."""
    found = tuple(int(part) for part in platform.python.split("."))
    if found < SERVER_PYTHON:
        oldest = ".".join(map(str, SERVER_PYTHON))
        raise MlflowException(
            f"The model was logged with Python {model_python} and the base image {base} has "
            f"Python {platform.python}; the scoring server needs Python {oldest} or newer. Use "
            f"a base with a newer Python (-C base_image=python:{oldest}-slim, for one) if the "
            "model's requirements install there, or log the model again with a newer Python.",
            INVALID_PARAMETER_VALUE)


def ensure_environment(engine: Engine, model: FetchedModel, settings: Settings,
                       hold: Hold) -> str:
    """The tag of this model's environment image on this engine, built only when missing.

    ``hold(key)`` holds the environment's build for this client (``runtimes.lease``): a client
    that needs an environment another is building waits for it, then uses it.
    """
    base = settings.resolved_base_image(model.python_version)
    base_id = ensure_image(engine, base, settings.pull_base)
    model_python = ".".join(model.python_version.split(".")[:2])
    if settings.system_packages:
        base = ensure_system_image(engine, base, base_id, settings.system_packages, hold)
        base_id = engine.client.images.get(base).id
    platform = probe_platform(engine, base_id)
    check_python(platform, base, model_python)
    if model_python != platform.python:
        log.warning("The model was logged with Python %s; the base image %s has Python %s",
                    model_python, base, platform.python)
    strip = settings.resolved_strip_image() or base
    strip_id = base_id if strip == base else ensure_image(engine, strip, settings.pull_base,
                                                          "strip")
    keep_cuda = settings.gpus is not None
    requirements = dependencies.environment_requirements(model, settings.mlflow_package,
                                                         settings.parquet, keep_cuda)
    key = environment_key(requirements, platform, base_id, strip_id, keep_cuda)
    tag = f"{IMAGE_REPO}/env:{key}"
    if image_exists(engine, tag):
        log.info("Environment image %s is already on the engine", tag)
        environment_cache.touch(engine, tag)
        return tag
    with hold(key):
        if image_exists(engine, tag):
            log.info("Environment image %s was built meanwhile by another client; using it", tag)
            return tag
        _build_environment(engine, tag, model, requirements, platform, base, strip, keep_cuda)
    return tag


def _build_environment(engine: Engine, tag: str, model: FetchedModel,
                       requirements: Requirements, platform: Platform, base: str, strip: str,
                       keep_cuda: bool) -> None:
    labels = {KIND: "environment", BASE_IMAGE: base}
    build_id = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="mlflow-dockerhost-wheels-") as wheelhouse:
        requirements = _download(requirements, platform, Path(wheelhouse))
        labels[REQUIREMENTS] = requirements.text()
        files = {"Dockerfile": template("env.Dockerfile")}
        trees = {"wheels": Path(wheelhouse), "server/serving_image": server_root(),
                 "model": model.path}
        try:
            with build_context(files, trees) as context:
                build(engine, context, tag, labels=labels,
                      buildargs={"BASE_IMAGE": base, "STRIP_IMAGE": strip,
                                 "KEEP_CUDA": "1" if keep_cuda else "", "BUILD_ID": build_id})
        finally:
            remove_stages(engine, build_id)


def remove_stages(engine: Engine, build_id: str) -> None:
    """The build's own stage images (wheels and all), left untagged after it, failed or not;
    never reused. Only this build's: an engine-wide prune would meet another client's (the
    engine runs one prune at a time, and refuses a second with 409)."""
    found = list_images(engine.client, f"{BUILD}={build_id}", all=True)
    for image in sorted(found, key=lambda i: i.attrs.get("Created", ""), reverse=True):
        try:  # newest first: a layer before the one it was built on
            engine.client.images.remove(image.id)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            log.info("Keeping build stage image %s: %s", image.short_id,
                     exc.explanation or exc)


def ensure_system_image(engine: Engine, base: str, base_id: str, packages: tuple[str, ...],
                        hold: Hold) -> str:
    """``base`` plus ``-C system_packages``, built once per base and package set (clients that
    need it at once share the build, as for environments).

    The only build with the network: the base's package manager fetches from its archive, so
    an engine that cannot reach it fails here, saying so.
    """
    digest = hashlib.sha256(f"{base_id}\0{' '.join(packages)}\0".encode()
                            + template("system.Dockerfile"))
    tag = f"{IMAGE_REPO}/system:{digest.hexdigest()[:16]}"
    if image_exists(engine, tag):
        log.info("Base image with system packages %s is already on the engine", tag)
        return tag
    with hold(f"system-{digest.hexdigest()[:16]}"):
        if image_exists(engine, tag):
            return tag
        log.info("Installing system packages %s on %s (this step uses the network)",
                 ", ".join(packages), base)
        with build_context({"Dockerfile": template("system.Dockerfile")}) as context:
            build(engine, context, tag, network=True,
                  buildargs={"BASE_IMAGE": base, "PACKAGES": " ".join(packages),
                             "ENGINE": engine.url, "BUILD_ERROR": BUILD_ERROR},
                  labels={KIND: "system", BASE_IMAGE: base,
                          SYSTEM_PACKAGES: ",".join(packages)})
    return tag


def _download(requirements: Requirements, platform: Platform, wheelhouse: Path) -> Requirements:
    """Wheels for the environment, falling back from what the model did not ask for.

    mlflow-skinny becomes full mlflow when it lacks the model's version; a CPU-only build
    (xgboost-cpu) becomes the model's own package when it has no wheel, or when another
    requirement pulls in the full package anyway (both would install into one module).
    """
    try:
        dependencies.download_wheels(requirements, platform, wheelhouse)
        if not requirements.cpu_swaps or not dependencies.also_downloaded(
                requirements, wheelhouse):
            return requirements
        log.info("Another requirement needs %s itself; keeping it",
                 ", ".join(original for original, _ in requirements.cpu_swaps))
    except MlflowException as exc:
        if requirements.skinny_swap is not None and dependencies.skinny_unavailable(exc):
            log.warning("mlflow-skinny %s is not available; serving with mlflow %s instead",
                        requirements.skinny_swap, requirements.skinny_swap)
            return _download(requirements.with_full_mlflow(), platform, wheelhouse)
        if not requirements.cpu_swaps:
            raise
        log.info("No CPU-only build for %s on this platform; keeping the model's own",
                 ", ".join(original for original, _ in requirements.cpu_swaps))
    for wheel in wheelhouse.glob("*"):
        wheel.unlink()
    return _download(requirements.without_cpu_builds(), platform, wheelhouse)
