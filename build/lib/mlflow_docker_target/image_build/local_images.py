"""Build local images from Debian packages, for engines that can pull nothing.

``python -m mlflow_docker_target.image_build.local_images`` (``make base-image``) runs mmdebstrap to
make a minimal Debian bookworm root file system, then imports it with a ``FROM scratch`` build:
``--kind base`` gives Python 3.11 with venv, ``--kind proxy`` gives HAProxy for the endpoints'
fronts, ``--kind binutils`` gives GNU binutils for the environment build's strip step. Real users
with a registry keep the defaults (``python:X.Y-slim``, ``haproxy``, no strip image); tests and
offline users point MLFLOW_DOCKERHOST_BASE_IMAGE, MLFLOW_DOCKERHOST_PROXY_IMAGE and
MLFLOW_DOCKERHOST_STRIP_IMAGE (or ``-C base_image`` / ``-C proxy_image`` / ``-C strip_image``)
at these.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from mlflow.exceptions import MlflowException

from mlflow_docker_target.engine.connection import connect
from mlflow_docker_target.image_build.docker_build import build, build_context, template
from mlflow_docker_target.record import BASE_PACKAGES, BASE_SUITE, KIND

log = logging.getLogger(__name__)

SUITE = "bookworm"


@dataclass(frozen=True)
class Kind:
    """One kind of local image: its default tag, its Debian packages, its Dockerfile."""

    tag: str
    packages: tuple[str, ...]
    dockerfile: str


KINDS = {
    # libgomp1: the OpenMP runtime that LightGBM's and XGBoost's wheels leave to the system.
    "base": Kind("mlflow-dockerhost/base:bookworm-python3.11",
                 ("python3", "python3-venv", "ca-certificates", "netbase", "tzdata", "libgomp1"),
                 "base.Dockerfile"),
    # Debian's haproxy package makes the 'haproxy' user the image runs as.
    "proxy": Kind("mlflow-dockerhost/haproxy:bookworm", ("haproxy",), "proxy.Dockerfile"),
    # Only the environment build's strip stage runs it: no serving image carries binutils.
    "binutils": Kind("mlflow-dockerhost/binutils:bookworm", ("binutils",), "binutils.Dockerfile"),
}


def make_rootfs(tarball: Path, packages: tuple[str, ...], suite: str = SUITE) -> None:
    """Debian minbase plus Python, docs and locales left out, as a reproducible tarball."""
    if shutil.which("mmdebstrap") is None:
        raise MlflowException(
            "mmdebstrap is not installed; on Debian or Ubuntu: apt-get install mmdebstrap.")
    command = [
        "mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(packages)}",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright", suite, str(tarball),
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "1700000000")}
    log.info("Bootstrapping Debian %s with %s", suite, ", ".join(packages))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise MlflowException(f"mmdebstrap failed:\n{result.stderr[-4000:]}")


def build_local_image(kind: Kind, tag: str | None = None, engine: str | None = None,
                      force: bool = False) -> str:
    """Build ``kind`` as ``tag`` on the engine unless it is there already; returns the tag."""
    tag = tag or kind.tag
    connected = connect(engine)
    if not force:
        try:
            image = connected.client.images.get(tag)
            if image.labels.get(BASE_PACKAGES) == ",".join(kind.packages):
                log.info("Base image %s is already on %s", tag, connected.url)
                return tag
            log.info("Base image %s has other packages than this recipe; building it again",
                     tag)
        except docker.errors.ImageNotFound:
            pass
    with tempfile.TemporaryDirectory(prefix="mlflow-dockerhost-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        make_rootfs(rootfs, kind.packages)
        labels = {KIND: "base", BASE_SUITE: SUITE, BASE_PACKAGES: ",".join(kind.packages)}
        files: dict[str, bytes | Path] = {"Dockerfile": template(kind.dockerfile),
                                          "rootfs.tar": rootfs}
        with build_context(files) as context:
            build(connected, context, tag, buildargs={}, labels=labels)
    return tag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(KINDS), default="base")
    parser.add_argument("--tag", help="image tag (default: the kind's)")
    parser.add_argument("--engine", help="engine URL or context (default: the environment's)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[base-image] %(message)s")
    print(build_local_image(KINDS[args.kind], args.tag, args.engine, args.force))


if __name__ == "__main__":
    main()
