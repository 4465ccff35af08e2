"""Build the serving image on the engine: an environment image, once, then a thin model image.

The environment image (``mlflow-dockerhost/env:<key>``) holds a virtualenv with every dependency
and is keyed by a hash of what goes into it, so it is built only when missing. The model image
(``mlflow-dockerhost/<deployment>:<hash>``) adds the server and the model on top and takes seconds.
Builds stream their progress, run with the network off, and never pull anything silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
from docker.utils import parse_repository_tag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target.build import model_fetch
from mlflow_docker_target.build import requirements as dependencies
from mlflow_docker_target.build.model_fetch import FetchedModel, ModelRef
from mlflow_docker_target.build.requirements import Platform, Requirements
from mlflow_docker_target.config import Settings
from mlflow_docker_target.engine.connection import Engine
from mlflow_docker_target.record import (
    BASE_IMAGE,
    ENVIRONMENT,
    KIND,
    REQUIREMENTS,
    STAGE,
    SYSTEM_PACKAGES,
    model_labels,
)
from serving_image.build_check import BUILD_ERROR

log = logging.getLogger(__name__)

IMAGE_REPO = "mlflow-dockerhost"
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


def template(name: str) -> bytes:
    """A file shipped in ``serving_image/`` (the Dockerfile templates)."""
    return resources.files("serving_image").joinpath(name).read_bytes()


# ---------------------------------------------------------------------------------------------
# Build contexts and the build stream


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _add_tree(tar: tarfile.TarFile, root: Path, prefix: str) -> None:
    """Add a directory with normalised metadata, so identical files give identical contexts."""
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or path.is_symlink():
            continue
        arcname = f"{prefix}/{path.relative_to(root).as_posix()}"
        info = tar.gettarinfo(str(path), arcname)
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        info.mode = 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644
        if path.is_dir():
            tar.addfile(info)
        else:
            with path.open("rb") as fh:
                tar.addfile(info, fh)


@contextmanager
def build_context(files: Mapping[str, bytes | Path],
                  trees: Mapping[str, Path] | None = None) -> Iterator[IO[bytes]]:
    """A build context as an uncompressed tar in a temporary file (models can be large).

    ``files`` maps names in the context to contents or to files on disk; ``trees`` maps
    folder names in the context to directories on disk.
    """
    with tempfile.TemporaryFile() as fh:
        with tarfile.open(fileobj=fh, mode="w") as tar:
            for name, data in files.items():
                if isinstance(data, Path):
                    info = tar.gettarinfo(str(data), name)
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    with data.open("rb") as source:
                        tar.addfile(info, source)
                else:
                    _add_bytes(tar, name, data)
            for prefix, root in (trees or {}).items():
                _add_tree(tar, root, prefix)
        fh.seek(0)
        yield fh


def _tree_digest(root: Path, digest: Any) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())


def build(engine: Engine, context: IO[bytes], tag: str, *, buildargs: Mapping[str, str],
          labels: Mapping[str, str] | None = None, network: bool = False) -> str:
    """Run one build with streamed progress; raise with the build's own error text.

    Builds have no network unless ``network`` (only the system-packages step asks). The legacy
    builder tags only a successful build, and ``forcerm`` removes the intermediate containers of
    a failed one, so a failure leaves nothing tagged behind. Lines the build prints with
    ``BUILD_ERROR`` in front become the error's message.
    """
    log.info("Building %s on %s", tag, engine.url)
    recent: list[str] = []
    explained: list[str] = []  # the build's own account of its failure (build_check)
    image_id = None
    try:
        stream = engine.client.api.build(
            fileobj=context, custom_context=True, tag=tag, buildargs=dict(buildargs),
            labels=dict(labels or {}), rm=True, forcerm=True, pull=False,
            network_mode="bridge" if network else "none", decode=True,
        )
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk or set(chunk) == {"message"}:
                if explained:
                    raise MlflowException(f"Building image {tag} failed. " + "\n".join(explained),
                                          INVALID_PARAMETER_VALUE)
                detail = chunk.get("error") or chunk.get("errorDetail", {}).get("message") \
                    or chunk.get("message")
                raise MlflowException(
                    f"Building image {tag} failed: {str(detail).strip()}\n"
                    + "\n".join(recent[-20:])
                )
            for line in str(chunk.get("stream", "")).splitlines():
                if line.strip():
                    log.info("  %s", line.rstrip())
                    recent.append(line.rstrip())
                    if line.startswith(BUILD_ERROR):
                        explained.append(line[len(BUILD_ERROR):].rstrip())
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = aux["ID"]
    except docker.errors.APIError as exc:
        raise MlflowException(f"Building image {tag} failed: {exc.explanation or exc}") from None
    return image_id or engine.client.images.get(tag).id


# ---------------------------------------------------------------------------------------------
# Base image


def ensure_image(engine: Engine, image: str, pull: bool, what: str = "base") -> str:
    """An image's ID; pulled (announced, never silently) only when missing and allowed.

    ``what`` names its use in messages: the serving images' ``base``, the environment build's
    ``strip`` image, or the fronts' ``proxy``.
    """
    try:
        return engine.client.images.get(image).id
    except docker.errors.ImageNotFound:
        pass
    hint = (f"Pull or load it on that engine, or choose another with -C {what}_image=<image> or "
            f"MLFLOW_DOCKERHOST_{what.upper()}_IMAGE (`make base-image` builds one from Debian "
            "packages, with no registry).")
    if not pull:
        raise MlflowException(
            f"The {what} image {image} is not on the Docker engine at {engine.url} and "
            f"pull_base is false. {hint}", INVALID_PARAMETER_VALUE)
    log.info("The %s image %s is not on the engine; pulling it", what, image)
    repository, tag = parse_repository_tag(image)
    try:
        return engine.client.images.pull(repository, tag=tag or "latest").id
    except docker.errors.APIError as exc:
        raise MlflowException(
            f"The {what} image {image} is not on the Docker engine at {engine.url} and could "
            f"not be pulled: {exc.explanation or exc}. {hint}", INVALID_PARAMETER_VALUE) from None


def probe_platform(engine: Engine, base_id: str) -> Platform:
    """Python, CPU and glibc of a base image, asked of the image itself (cached by image ID)."""
    cache = CACHE_DIR / "probes" / f"{base_id.replace(':', '_')}.json"
    if cache.is_file():
        found = json.loads(cache.read_text())
    else:
        try:
            output = engine.client.containers.run(
                base_id, ["python3", "-c", _PROBE], entrypoint=[], remove=True,
                network_disabled=True, stderr=True)
            found = json.loads(output.decode().strip().splitlines()[-1])
        except (docker.errors.ContainerError, ValueError, IndexError) as exc:
            raise MlflowException(
                f"The base image {base_id[:19]} cannot run `python3` with the venv module "
                f"({exc}). Use a base with Python 3 and venv, such as python:3.11-slim.",
                INVALID_PARAMETER_VALUE) from None
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(found))
    libc, version = found["libc"]
    if libc != "glibc":
        raise MlflowException(
            f"The base image {base_id[:19]} uses {libc or 'an unknown libc'}; only glibc-based "
            "images (Debian, Ubuntu, python:*-slim ...) can install manylinux wheels.",
            INVALID_PARAMETER_VALUE)
    return Platform(python=found["python"], machine=found["machine"], glibc=version)


# ---------------------------------------------------------------------------------------------
# Environment image


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


def ensure_environment(engine: Engine, model: FetchedModel, settings: Settings) -> str:
    """The tag of this model's environment image on this engine, built only when missing."""
    base = settings.resolved_base_image(model.python_version)
    base_id = ensure_image(engine, base, settings.pull_base)
    model_python = ".".join(model.python_version.split(".")[:2])
    if settings.system_packages:
        base = ensure_system_image(engine, base, base_id, settings.system_packages)
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
    if _image_exists(engine, tag):
        log.info("Environment image %s is already on the engine", tag)
        return tag

    labels = {KIND: "environment", BASE_IMAGE: base}
    with tempfile.TemporaryDirectory(prefix="mlflow-dockerhost-wheels-") as wheelhouse:
        requirements = _download(requirements, platform, Path(wheelhouse))
        labels[REQUIREMENTS] = requirements.text()
        files = {"Dockerfile": template("env.Dockerfile")}
        trees = {"wheels": Path(wheelhouse), "server/serving_image": _server_root(),
                 "model": model.path}
        try:
            with build_context(files, trees) as context:
                build(engine, context, tag, labels=labels,
                      buildargs={"BASE_IMAGE": base, "STRIP_IMAGE": strip,
                                 "KEEP_CUDA": "1" if keep_cuda else ""})
        finally:
            # The build stage (wheels and all) stays behind as untagged images, after a failed
            # build too; it is never reused.
            engine.client.images.prune(filters={"dangling": True, "label": f"{STAGE}=build"})
    return tag


def ensure_system_image(engine: Engine, base: str, base_id: str,
                        packages: tuple[str, ...]) -> str:
    """``base`` plus ``-C system_packages``, built once per base and package set.

    The only build with the network: the base's package manager fetches from its archive, so
    an engine that cannot reach it fails here, saying so.
    """
    digest = hashlib.sha256(f"{base_id}\0{' '.join(packages)}\0".encode()
                            + template("system.Dockerfile"))
    tag = f"{IMAGE_REPO}/system:{digest.hexdigest()[:16]}"
    if _image_exists(engine, tag):
        log.info("Base image with system packages %s is already on the engine", tag)
        return tag
    log.info("Installing system packages %s on %s (this step uses the network)",
             ", ".join(packages), base)
    with build_context({"Dockerfile": template("system.Dockerfile")}) as context:
        build(engine, context, tag, network=True,
              buildargs={"BASE_IMAGE": base, "PACKAGES": " ".join(packages),
                         "ENGINE": engine.url, "BUILD_ERROR": BUILD_ERROR},
              labels={KIND: "system", BASE_IMAGE: base, SYSTEM_PACKAGES: ",".join(packages)})
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


def _image_exists(engine: Engine, tag: str) -> bool:
    try:
        engine.client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


# ---------------------------------------------------------------------------------------------
# Model image


def _server_root() -> Path:
    return Path(str(resources.files("serving_image")))


def image_repository(deployment: str) -> str:
    """Docker repository names are lower case; deployment names need not be."""
    return f"{IMAGE_REPO}/{re.sub(r'[^a-z0-9._-]', '-', deployment.lower())}"


def build_model_image(engine: Engine, environment: str, model: FetchedModel,
                      deployment: str, labels: Mapping[str, str]) -> str:
    """The model image, content-addressed: the same model on the same environment is reused."""
    env_id = engine.client.images.get(environment).id
    digest = hashlib.sha256(env_id.encode() + template("model.Dockerfile"))
    _tree_digest(_server_root(), digest)
    _tree_digest(model.path, digest)
    tag = f"{image_repository(deployment)}:{digest.hexdigest()[:12]}"
    if _image_exists(engine, tag):
        log.info("Model image %s is already on the engine", tag)
        return tag
    labels = {**labels, KIND: "model", ENVIRONMENT: environment}
    label_line = "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    dockerfile = template("model.Dockerfile") + label_line.encode() + b"\n"
    trees = {"server/serving_image": _server_root(), "model": model.path}
    with build_context({"Dockerfile": dockerfile}, trees) as context:
        build(engine, context, tag, buildargs={"ENV_IMAGE": environment})
    return tag


def serving_image(engine: Engine, deployment: str, ref: ModelRef,
                  settings: Settings) -> tuple[str, ModelRef]:
    """Fetch the model and build (or reuse) its serving image; returns the tag and the model."""
    with tempfile.TemporaryDirectory(prefix="mlflow-dockerhost-") as tmp:
        model = model_fetch.fetch(ref, Path(tmp))
        environment = ensure_environment(engine, model, settings)
        labels = model_labels(model.ref)
        return build_model_image(engine, environment, model, deployment, labels), model.ref


def remove_images(engine: Engine, images: set[str]) -> None:
    """Remove model images no container uses any more; one still in use is left alone."""
    for image in sorted(images):
        try:
            engine.client.images.remove(image)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            log.info("Keeping image %s: %s", image, exc.explanation or exc)
