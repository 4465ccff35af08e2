"""Build a local base image from Debian packages, for engines that can pull nothing.

``python -m mlflow_docker_target.base_image`` (``make base-image``) runs mmdebstrap to make a
minimal Debian bookworm root file system with Python 3.11 and venv, then imports it with a
``FROM scratch`` build. Real users with a registry keep the default ``python:X.Y-slim`` base;
tests and offline users point ``-C base_image`` or MLFLOW_DOCKERHOST_BASE_IMAGE at this one.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker.errors
from mlflow.exceptions import MlflowException

from mlflow_docker_target.engine import connect
from mlflow_docker_target.image_build import LABEL, build, build_context, template

log = logging.getLogger(__name__)

DEFAULT_TAG = "mlflow-dockerhost/base:bookworm-python3.11"
SUITE = "bookworm"
PACKAGES = ["python3", "python3-venv", "ca-certificates", "netbase", "tzdata"]


def make_rootfs(tarball: Path, suite: str = SUITE) -> None:
    """Debian minbase plus Python, docs and locales left out, as a reproducible tarball."""
    if shutil.which("mmdebstrap") is None:
        raise MlflowException(
            "mmdebstrap is not installed; on Debian or Ubuntu: apt-get install mmdebstrap.")
    command = [
        "mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright", suite, str(tarball),
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "1700000000")}
    log.info("Bootstrapping Debian %s with %s", suite, ", ".join(PACKAGES))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise MlflowException(f"mmdebstrap failed:\n{result.stderr[-4000:]}")


def build_base_image(tag: str = DEFAULT_TAG, engine: str | None = None,
                     force: bool = False) -> str:
    """Build ``tag`` on the engine unless it is there already; returns the tag."""
    connected = connect(engine)
    if not force:
        try:
            connected.client.images.get(tag)
            log.info("Base image %s is already on %s", tag, connected.url)
            return tag
        except docker.errors.ImageNotFound:
            pass
    with tempfile.TemporaryDirectory(prefix="mlflow-dockerhost-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        make_rootfs(rootfs)
        labels = {f"{LABEL}.kind": "base", f"{LABEL}.base-suite": SUITE,
                  f"{LABEL}.base-packages": ",".join(PACKAGES)}
        files: dict[str, bytes | Path] = {"Dockerfile": template("base.Dockerfile"),
                                          "rootfs.tar": rootfs}
        with build_context(files) as context:
            build(connected, context, tag, buildargs={}, labels=labels)
    return tag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--engine", help="engine URL or context (default: the environment's)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[base-image] %(message)s")
    print(build_base_image(args.tag, args.engine, args.force))


if __name__ == "__main__":
    main()
