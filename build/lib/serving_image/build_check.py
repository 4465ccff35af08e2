"""The environment build's last step: prove the model loads, and make the image lean.

Run in the environment image's build stage, after the wheels are installed and before pip is
removed. It

1. leaves out CUDA-only packages (``nvidia-*``, which xgboost, for one, pulls in on every Linux
   machine) unless the deployment has GPUs: a CPU container never loads them, and they can be
   most of an image's size; test tools (``pytest``, inferred into a model's requirements when
   it is logged from a test session) and the virtualenv's ``setuptools``; and what only MLflow's
   client side imports (``cryptography``, ``GitPython``), unless the model asks for them;
2. loads and warms the model (``precompile``, which also writes the bytecode it imports) and, if
   that fails without them, puts back the package with the module it missed (with what that
   needs; all of them when it names none of theirs) and loads again: a model that needs them
   keeps them, and only them;
3. finds shared libraries that nothing in the image provides (``native_libs``): when the model
   cannot load, they are the error, with the Debian packages that fix it; when it can, a warning.

A model that cannot load for another reason (it needs a GPU, a secret, a service) is not an error
here: the server reports it at start, and every module gets bytecode instead.

    python -m serving_image.build_check MODEL_DIR VENV_DIR WHEEL_DIR [--keep-cuda]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Set as AbstractSet
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from serving_image import native_libs
from serving_image.precompile import MISSING_MODULE, compile_all

# Lines the plugin shows as the build's error (image_build.build), without this prefix.
BUILD_ERROR = "mlflow-dockerhost error: "
CUDA_PREFIX = "nvidia-"
# Test tools that MLflow infers into a model's requirements when it is logged from a test
# session, and the venv's own seed: serving never imports them.
NEVER_SERVED = ("pytest", "setuptools")
# What only MLflow's client imports: cryptography signs Databricks' Google credentials
# (mlflow-skinny -> databricks-sdk -> google-auth, 12 MB of Rust), GitPython reads the commit a
# run is logged from. A container serving its own copy of the model does neither.
CLIENT_ONLY = ("cryptography", "gitpython")
# The chain that brings them in. A model whose requirements name one of these but MLflow (to
# call a Google API with google-auth, say), or that needs them through any other package,
# keeps them.
MLFLOW_CLIENT = ("mlflow", "mlflow-skinny", "databricks-sdk", "google-auth")
# Where the virtualenv's own setuptools came from: Debian's, else ensurepip's bundled wheels.
_SEED_WHEELS = (Path("/usr/share/python-wheels"),
                Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                / "ensurepip" / "_bundled")


def _name(dist: metadata.Distribution) -> str:
    return canonicalize_name(dist.metadata["Name"])


def _requires(dist: metadata.Distribution) -> set[str]:
    """What ``dist`` needs installed here: extras and other platforms' markers left out."""
    names: set[str] = set()
    for line in dist.requires or ():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.add(canonicalize_name(requirement.name))
    return names


def requirement_names(requirements: Path) -> set[str]:
    """The distribution names a requirements file asks for (options and comments skipped)."""
    names: set[str] = set()
    for line in requirements.read_text().splitlines():
        try:
            names.add(canonicalize_name(Requirement(line.split("#")[0].strip()).name))
        except InvalidRequirement:
            continue
    return names


def unneeded(keep_cuda: bool,
             requested: AbstractSet[str] = frozenset()) -> list[metadata.Distribution]:
    """Distributions to leave out: CUDA-only ones (unless ``keep_cuda``), test tools, and
    MLflow's client-only packages that nothing ``requested`` needs, with the dependencies of
    theirs that nothing else needs."""
    dists = {_name(dist): dist for dist in metadata.distributions()}
    requires = {name: _requires(dist) & dists.keys() for name, dist in dists.items()}
    asked = set(requested) - {"mlflow", "mlflow-skinny"}

    def needs_it(name: str) -> set[str]:
        """Everything installed that needs ``name``, directly or not."""
        found: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            more = {other for other, deps in requires.items() if current in deps} - found
            found |= more
            todo.extend(more)
        return found

    # Left out even though a kept package declares them (xgboost, google-auth, say).
    forced = {name for name in dists if not keep_cuda and name.startswith(CUDA_PREFIX)}
    forced |= {name for name in CLIENT_ONLY if name in dists and name not in requested
               and (users := needs_it(name)) <= set(MLFLOW_CLIENT) and not users & asked}
    chosen = forced | {name for name in dists if name in NEVER_SERVED}
    while True:
        needed = set().union(*(requires[name] for name in dists if name not in chosen))
        chosen = {name for name in chosen if name in forced or name not in needed}
        more = {dep for name in chosen for dep in requires[name]
                if dep not in chosen and dep not in needed}
        if not more:
            return sorted((dists[name] for name in chosen), key=_name)
        chosen |= more


def _say(text: str) -> None:
    print(text, flush=True)  # before the output of the pip and load steps that follow


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                   check=True)


def _loads(model: str) -> tuple[bool, str | None]:
    """Load and warm the model in a fresh interpreter (a failed import leaves no half-state);
    whether it loaded, and the top-level module it missed, if that is why not."""
    result = subprocess.run([sys.executable, "-m", "serving_image.precompile", model],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(result.stdout, end="", flush=True)
    missing = [line.removeprefix(MISSING_MODULE) for line in result.stdout.splitlines()
               if line.startswith(MISSING_MODULE)]
    return result.returncode == 0, missing[-1] if missing else None


def _modules(dist: metadata.Distribution) -> set[str]:
    """The top-level import names a distribution installs (``cryptography``, ``_cffi_backend``)."""
    names = set()
    for file in dist.files or ():
        top = Path(str(file)).parts[0]
        if not top.endswith(".dist-info") and top not in ("..", "__pycache__"):
            names.add(top.split(".")[0])
    return names


def put_back(missing: str | None, left_out: set[str], modules: dict[str, set[str]],
             requires: dict[str, set[str]]) -> set[str]:
    """Which left-out distributions to put back when the model misses the module ``missing``:
    the one that has it, with the left-out ones it needs; all of them when none has it."""
    chosen = {name for name in left_out if missing in modules[name]} or set(left_out)
    while more := {dep for name in chosen for dep in requires[name] if dep in left_out} - chosen:
        chosen |= more
    return chosen


def main(model: str, venv: str, wheels: str, keep_cuda: bool) -> int:
    dists = unneeded(keep_cuda, requirement_names(Path(wheels) / "requirements.txt"))
    # What the uninstall takes away with the files: read first.
    specs = {_name(dist): f"{dist.metadata['Name']}=={dist.version}" for dist in dists}
    modules = {_name(dist): _modules(dist) for dist in dists}
    requires = {_name(dist): _requires(dist) for dist in dists}
    files = {_name(dist): {Path(str(file)).name for file in dist.files or ()} for dist in dists}
    left_out = set(specs)
    if left_out:
        _say("Leaving out what serving does not load (CUDA-only packages on a CPU deployment, "
             f"test tools, MLflow's client-only packages): {', '.join(specs.values())}")
        _pip("uninstall", "--yes", *[spec.split("==")[0] for spec in specs.values()])
    loaded, missing = _loads(model)
    while not loaded and left_out:
        back = put_back(missing, left_out, modules, requires)
        _say(f"The model did not load without {', '.join(specs[name] for name in sorted(back))};"
             " putting that back")
        _pip("install", "--no-index", "--no-deps", "--no-compile", "--find-links", wheels,
             *[f"--find-links={seeds}" for seeds in _SEED_WHEELS if seeds.is_dir()],
             *[specs[name] for name in back])
        left_out -= back
        loaded, missing = _loads(model)
    dropped_files: set[str] = set().union(*(files[name] for name in left_out))
    needs = {library: users for library, users in native_libs.missing(Path(venv)).items()
             if library not in dropped_files}
    if needs and not loaded:
        _say(f"{BUILD_ERROR}The model cannot load: shared libraries that its packages need "
              "are neither in the wheels nor in the base image:")
        for line in native_libs.describe(needs):
            _say(f"{BUILD_ERROR}  {line}")
        _say(f"{BUILD_ERROR}{native_libs.fix(needs)}")
        return 3
    for line in native_libs.describe(needs):
        _say(f"warning: missing shared library {line}; the model loaded without it")
    if not loaded:
        _say("Compiling every module, since the model could not load here")
        compile_all(venv)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("venv")
    parser.add_argument("wheels")
    parser.add_argument("--keep-cuda", action="store_true")
    args = parser.parse_args()
    sys.exit(main(args.model, args.venv, args.wheels, args.keep_cuda))
