"""The wheel users install holds every file the plugin reads at run time, not only its modules:
setuptools ships a package's other files only when ``package-data`` names them."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_package_data_names_every_file_the_packages_hold() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]
    for package in ("mlflow_docker_target", "serving_image"):
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in \
                    path.parts:
                continue
            name = path.relative_to(ROOT / package).as_posix()
            assert any(fnmatch.fnmatch(name, p) for p in patterns.get(package, [])), (
                f"{package}/{name} is not in pyproject's package-data: the wheel lacks it")
