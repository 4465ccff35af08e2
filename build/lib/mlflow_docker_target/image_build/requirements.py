"""What goes into a serving environment, resolved to wheels on the client.

The image build runs with the network off (a user's engine may be air-gapped), so the client does
the resolving: the model's own requirements plus the server's go to ``pip download`` for the
engine's platform and the base image's Python, honouring the client's pip configuration (index,
proxy, certificates). The build then installs from those wheels with ``--no-index``.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from mlflow_docker_target.image_build.model_fetch import FetchedModel

log = logging.getLogger(__name__)

_MLFLOW_REQ = re.compile(r"^mlflow(\[[^\]]*\])?\s*(?P<spec>(==|~=|>=|<=|>|<|!=).*)?$",
                         re.IGNORECASE)


@dataclass(frozen=True)
class Platform:
    """Where the wheels must run: the engine's CPU and the base image's Python and glibc."""

    python: str  # major.minor, e.g. "3.11"
    machine: str  # uname -m as the engine reports it, e.g. "x86_64", "aarch64"
    glibc: str  # e.g. "2.36"

    def pip_args(self) -> list[str]:
        """pip's target options; every manylinux tag up to the base's glibc (pypa/pip#10760).

        Newest first, as pip orders them on such a machine: pip prefers the earlier tags, and a
        project's wheel for an older glibc can be a lesser build (xgboost's manylinux2014 wheel
        lacks features and warns about its glibc at every import).
        """
        major, minor = (int(part) for part in self.glibc.split(".")[:2])
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)]
        tags += [f"manylinux2014_{self.machine}"]
        python_tag = self.python.replace(".", "")
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python,
                "--abi", f"cp{python_tag}"]
        for tag in tags:
            args += ["--platform", tag]
        return args


@dataclass(frozen=True)
class Requirements:
    """Requirement lines for the environment, in a stable order (they key the environment image)."""

    lines: tuple[str, ...]
    constraints: tuple[str, ...] = ()
    skinny_swap: str | None = None  # the mlflow version swapped for mlflow-skinny, if any
    cpu_swaps: tuple[tuple[str, str], ...] = ()  # (model's line, CPU-only build's line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def constraints_text(self) -> str:
        return "\n".join(self.constraints) + "\n" if self.constraints else ""

    def with_full_mlflow(self) -> Requirements:
        """The same environment with the model's own ``mlflow`` pin instead of mlflow-skinny."""
        if self.skinny_swap is None:
            return self
        swapped = f"mlflow-skinny=={self.skinny_swap}"
        lines = tuple(f"mlflow=={self.skinny_swap}" if line == swapped else line
                      for line in self.lines)
        return Requirements(lines, self.constraints, None, self.cpu_swaps)

    def without_cpu_builds(self) -> Requirements:
        """The same environment with the model's own packages instead of CPU-only builds."""
        back = {cpu: original for original, cpu in self.cpu_swaps}
        lines = tuple(back.get(line, line) for line in self.lines)
        return Requirements(lines, self.constraints, self.skinny_swap)


def server_requirements() -> list[str]:
    """The scoring server's own needs, from ``serving_image/requirements.txt``."""
    text = resources.files("serving_image").joinpath("requirements.txt").read_text()
    return _requirement_lines(text)


def _requirement_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def model_requirements(model: FetchedModel) -> tuple[list[str], list[str]]:
    """The model's pip requirements and constraints, as MLflow logged them."""
    requirements: list[str] = []
    constraints: list[str] = []
    req_file = model.path / "requirements.txt"
    if req_file.is_file():
        for line in _requirement_lines(req_file.read_text()):
            if line.startswith(("-c ", "--constraint ")):
                constraints += _requirement_lines((model.path / line.split(None, 1)[1]).read_text())
            elif line.startswith("-"):
                log.warning("Ignoring pip option %r in the model's requirements.txt", line)
            else:
                requirements.append(line)
    return requirements, constraints


# Projects that publish a CPU-only build of the same module under another name, and the first
# version that has one. xgboost's own wheel carries its CUDA kernels (130 MB) and pulls in
# nvidia-nccl-cu12 (200 MB more); xgboost-cpu is the same package without them.
CPU_BUILDS = {"xgboost": ("xgboost-cpu", Version("2.1.1"))}
_EXACT_PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)\s*==\s*(?P<version>[^\s,;*]+)$")


def _cpu_build(line: str) -> str | None:
    """The CPU-only build's requirement line for an exact pin that has one, else ``None``."""
    match = _EXACT_PIN.match(line)
    if not match:
        return None
    found = CPU_BUILDS.get(canonicalize_name(match.group("name")))
    try:
        if found and Version(match.group("version")) >= found[1]:
            return f"{found[0]}=={match.group('version')}"
    except InvalidVersion:
        pass
    return None


def environment_requirements(model: FetchedModel, mlflow_package: str,
                             parquet: bool = False, gpus: bool = False) -> Requirements:
    """Model requirements plus the server's; ``mlflow`` becomes ``mlflow-skinny`` unless told not.

    Full MLflow drags in its tracking server, UI, pyarrow and more; serving a pyfunc needs only
    mlflow-skinny at the same version, which keeps images small and builds fast. pyarrow
    (large) comes only when asked for, to read Parquet bodies. Without GPUs, packages with a
    CPU-only build (:data:`CPU_BUILDS`) get it.
    """
    requirements, constraints = model_requirements(model)
    has_mlflow = False
    skinny_swap = None
    lines = []
    for line in requirements:
        match = _MLFLOW_REQ.match(line)
        if not match:
            lines.append(line)
            continue
        has_mlflow = True
        pin = (match.group("spec") or "").strip()
        version = pin[2:].strip() if pin.startswith("==") else None
        if mlflow_package != "full" and version:
            lines.append(f"mlflow-skinny=={version}")
            skinny_swap = version if mlflow_package == "auto" else None
        elif mlflow_package == "skinny":
            lines.append(f"mlflow-skinny{pin}")
        else:
            lines.append(line)
    if not has_mlflow:
        version = model.mlflow_version
        package = "mlflow" if mlflow_package == "full" else "mlflow-skinny"
        lines.append(f"{package}=={version}" if version else package)
        if version and mlflow_package == "auto":
            skinny_swap = version
    extras = ["pyarrow"] if parquet else []
    skinny = next((line for line in lines if line.startswith("mlflow-skinny")), None)
    if skinny is not None and _scoring_needs_flask(skinny):
        extras.append("flask")
    lines += [req for req in [*server_requirements(), *extras] if req not in lines]
    cpu_swaps = [] if gpus else [(line, cpu) for line in lines if (cpu := _cpu_build(line))]
    swapped = dict(cpu_swaps)
    lines = [swapped.get(line, line) for line in lines]
    return Requirements(tuple(lines), tuple(constraints), skinny_swap, tuple(cpu_swaps))


FLASK_FREE_SCORING = Version("2.21")


def _scoring_needs_flask(skinny: str) -> bool:
    """Whether this mlflow-skinny's scoring module imports Flask (through ``mlflow.server``).

    Before 2.21 it does, and mlflow-skinny does not depend on Flask; Flask (about 5 MB with
    Werkzeug and Jinja) is far smaller than full MLflow's server, UI and pyarrow. A pin with an
    upper bound may resolve to such a version too, so it gets Flask as well.
    """
    spec = skinny[len("mlflow-skinny"):].strip()
    try:
        if spec.startswith("==") and "*" not in spec:
            return Version(spec[2:].strip()) < FLASK_FREE_SCORING
        return not SpecifierSet(spec).contains("9999", prereleases=True)
    except (InvalidVersion, InvalidSpecifier):
        return True


def download_wheels(requirements: Requirements, platform: Platform, wheelhouse: Path) -> None:
    """Resolve and download every wheel the environment needs into ``wheelhouse``.

    Runs the client's pip, so its index, proxy and certificate settings apply. A requirement
    with no wheel for the target fails here, clearly, rather than inside the offline build.
    """
    wheelhouse.mkdir(parents=True, exist_ok=True)
    (wheelhouse / "requirements.txt").write_text(requirements.text())
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
               "--progress-bar", "off", "-d", str(wheelhouse), *platform.pip_args(),
               "-r", str(wheelhouse / "requirements.txt")]
    if requirements.constraints:
        (wheelhouse / "constraints.txt").write_text(requirements.constraints_text())
        command += ["-c", str(wheelhouse / "constraints.txt")]
    log.info("Resolving wheels for Python %s on %s (glibc %s)", platform.python,
             platform.machine, platform.glibc)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    tail: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        if not line or "is ignored: it is neither a file nor a directory" in line:
            continue
        log.info("  pip: %s", line)
        tail = [*tail[-24:], line]
    if process.wait() != 0:
        raise MlflowException(
            "Could not resolve the model's dependencies as wheels for Python "
            f"{platform.python} on linux/{platform.machine} (glibc {platform.glibc}). The image "
            "builds with no network, so every requirement needs a wheel for that platform; pin "
            "a version that has one, or build a wheel and serve it from your pip index. "
            "pip said:\n" + "\n".join(tail),
            INVALID_PARAMETER_VALUE,
        )


def also_downloaded(requirements: Requirements, wheelhouse: Path) -> bool:
    """Whether a package swapped for its CPU-only build came along anyway, as a dependency."""
    names = {canonicalize_name(wheel.name.split("-")[0]) for wheel in wheelhouse.glob("*.whl")}
    return any(canonicalize_name(Requirement(original).name) in names
               for original, _ in requirements.cpu_swaps)


def skinny_unavailable(error: MlflowException) -> bool:
    """Whether a failed resolution failed only because mlflow-skinny lacks the model's version."""
    return "mlflow-skinny" in error.message and "No matching distribution" in error.message
