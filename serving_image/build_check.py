"""The environment build's last step: prove the model loads, and make the image lean.

Run in the environment image's build stage, after the wheels are installed and before pip is
removed. It

1. leaves out CUDA-only packages (``nvidia-*``, which xgboost, for one, pulls in on every Linux
   machine) unless the deployment has GPUs: a CPU container never loads them, and they are most
   of such an image's size;
2. loads and warms the model (``precompile``, which also writes the bytecode it imports) and, if
   that fails without the CUDA packages, puts them back and loads again: a model that needs them
   keeps them;
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
from importlib import metadata
from pathlib import Path

from serving_image import native_libs
from serving_image.precompile import compile_all

# Lines the plugin shows as the build's error (image_build.build), without this prefix.
BUILD_ERROR = "mlflow-dockerhost error: "
CUDA_PREFIX = "nvidia-"


def cuda_distributions() -> list[metadata.Distribution]:
    """Installed CUDA-only distributions (``nvidia-*``): NVIDIA's runtime libraries as wheels."""
    return sorted((dist for dist in metadata.distributions()
                   if dist.metadata["Name"].lower().replace("_", "-").startswith(CUDA_PREFIX)),
                  key=lambda dist: dist.metadata["Name"].lower())


def _say(text: str) -> None:
    print(text, flush=True)  # before the output of the pip and load steps that follow


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                   check=True)


def _loads(model: str) -> bool:
    """Load and warm the model in a fresh interpreter (a failed import leaves no half-state)."""
    return subprocess.run([sys.executable, "-m", "serving_image.precompile", model]).returncode == 0


def main(model: str, venv: str, wheels: str, keep_cuda: bool) -> int:
    dropped: list[str] = []
    dropped_files: set[str] = set()
    if not keep_cuda:
        for dist in cuda_distributions():
            dropped.append(f"{dist.metadata['Name']}=={dist.version}")
            dropped_files |= {Path(str(file)).name for file in dist.files or ()}
        if dropped:
            _say(f"Leaving out CUDA-only packages for a CPU deployment: {', '.join(dropped)}")
            _pip("uninstall", "--yes", *[spec.split("==")[0] for spec in dropped])
    loaded = _loads(model)
    if not loaded and dropped:
        _say("The model did not load without its CUDA packages; putting them back")
        _pip("install", "--no-index", "--no-deps", "--no-compile", "--find-links", wheels,
             *dropped)
        dropped_files = set()
        loaded = _loads(model)
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
