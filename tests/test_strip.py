"""serving_image/strip.sh on real wheels' shared objects: debug symbols go, what the loader
needs stays, libraries that strip would break (patchelf-rewritten) are kept as they were, and
identical files become one.
The images it runs in are built in the integration tests (tests/integration/test_model_matrix.py
checks the stripped uvloop in a deployed image)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import numpy
import pytest
import uvloop

STRIP_SH = Path(str(resources.files("serving_image").joinpath("strip.sh")))
UVLOOP = next(Path(uvloop.__file__).parent.glob("loop*.so"))  # shipped with debug symbols
# auditwheel vendored it and rewrote it with patchelf: strip makes it unloadable
GFORTRAN = next((Path(numpy.__file__).parent.parent / "numpy.libs").glob("libgfortran*"))


def _run(venv: Path, path: str | None = None) -> str:
    env = {**os.environ, "PATH": path if path is not None else os.environ["PATH"]}
    shell = shutil.which("sh") or "/bin/sh"
    return subprocess.run([shell, str(STRIP_SH), str(venv)], env=env, check=True,
                          capture_output=True, text=True).stdout


def _loads(library: Path) -> bool:
    return subprocess.run(["ldd", str(library)], capture_output=True).returncode == 0


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    if shutil.which("strip") is None or shutil.which("nm") is None:
        pytest.fail("GNU binutils (strip, nm) are needed: apt-get install binutils")
    site = tmp_path / "venv" / "lib" / "site-packages"
    (site / "uvloop").mkdir(parents=True)
    (site / "numpy.libs").mkdir()
    shutil.copy2(UVLOOP, site / "uvloop" / UVLOOP.name)
    shutil.copy2(GFORTRAN, site / "numpy.libs" / GFORTRAN.name)
    (site / "scipy.libs").mkdir()  # SciPy's wheel bundles the same libgfortran
    shutil.copy2(GFORTRAN, site / "scipy.libs" / GFORTRAN.name)
    (site / "uvloop" / "data.so.txt").write_text("not a shared object")
    return tmp_path / "venv"


def test_debug_symbols_go_and_what_strip_would_break_stays(venv: Path) -> None:
    uvloop_copy = next(venv.rglob("loop*.so"))
    output = _run(venv)
    assert "(2 left as they were)" in output and "1 identical files linked" in output, output
    assert uvloop_copy.stat().st_size < UVLOOP.stat().st_size / 3  # 13 MB -> 1.4 MB
    assert _loads(uvloop_copy)
    dynamic = ["nm", "-D", "--defined-only"]
    assert subprocess.run([*dynamic, str(uvloop_copy)], capture_output=True).stdout == \
        subprocess.run([*dynamic, str(UVLOOP)], capture_output=True).stdout
    numpy_copy, scipy_copy = sorted(venv.rglob("libgfortran*"))
    assert filecmp.cmp(numpy_copy, GFORTRAN, shallow=False)
    assert os.path.samefile(numpy_copy, scipy_copy) and numpy_copy.stat().st_nlink == 2
    assert _loads(scipy_copy)
    assert not os.path.samefile(uvloop_copy, numpy_copy)
    assert (venv / "lib" / "site-packages" / "uvloop" / "data.so.txt").read_text() == \
        "not a shared object"


def test_without_binutils_nothing_is_stripped(venv: Path, tmp_path: Path) -> None:
    tools = tmp_path / "bin"  # the shell's own tools, but no strip or nm
    tools.mkdir()
    for tool in ("du", "cut", "find", "mktemp", "cp", "cmp", "rm", "ldd", "sha256sum", "sort",
                 "ln", "tr", "xargs"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    output = _run(venv, path=str(tools))
    assert "No GNU binutils" in output, output
    assert filecmp.cmp(next(venv.rglob("loop*.so")), UVLOOP, shallow=False)
    assert "1 identical files linked" in output, output  # that needs no binutils
