"""One build on the engine: a build context from files and folders, and the build run with
its progress streamed and its own error text raised.

Builds use the legacy builder (the engine may have no BuildKit), run with the network off unless
asked, and never pull: a failure leaves nothing tagged behind.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_docker_target.engine.connection import Engine
from serving_image.build_check import BUILD_ERROR
from serving_image.contract import dockerfile_facts

log = logging.getLogger(__name__)


IMAGE_REPO = "mlflow-dockerhost"


def template(name: str) -> bytes:
    """A file shipped in ``serving_image/`` (the Dockerfile templates), with the facts the
    plugin and the server share (``serving_image.contract``) in place of their ``@NAME@``."""
    text = resources.files("serving_image").joinpath(name).read_bytes()
    for placeholder, value in dockerfile_facts().items():
        text = text.replace(placeholder.encode(), value.encode())
    return text


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


def tree_digest(root: Path, digest: Any) -> None:
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


def server_root() -> Path:
    """The serving_image package as installed: it goes into every image."""
    return Path(str(resources.files("serving_image")))
